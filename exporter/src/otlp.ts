// OTLP push, beside /metrics: the exporter's metrics through the SDK's
// periodic reader, and (--otlp-events) every event as a log record, to an
// OpenTelemetry Collector. The standard OTEL_EXPORTER_OTLP_* variables
// (endpoint, headers, certificates, timeout, compression) are read by the
// SDK's exporters; --otlp-endpoint and --otlp-protocol are ours (config.ts).
import { isUtf8 } from 'node:buffer';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import type { Counter, HrTime, Meter } from '@opentelemetry/api';
import { SeverityNumber } from '@opentelemetry/api-logs';
import type { LogAttributes } from '@opentelemetry/api-logs';
import { ExportResultCode } from '@opentelemetry/core';
import type { ExportResult } from '@opentelemetry/core';
import { OTLPLogExporter as GrpcLogExporter } from '@opentelemetry/exporter-logs-otlp-grpc';
import { OTLPLogExporter as ProtoLogExporter } from '@opentelemetry/exporter-logs-otlp-proto';
import { OTLPMetricExporter as GrpcMetricExporter } from '@opentelemetry/exporter-metrics-otlp-grpc';
import { OTLPMetricExporter as ProtoMetricExporter } from '@opentelemetry/exporter-metrics-otlp-proto';
import { detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import type { Resource } from '@opentelemetry/resources';
import { PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import type { PushMetricExporter, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { LogRecordExporter, ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { EventKind } from './generated/filewatcher/v1/EventKind';
import type { FileCreatedEvent__Output } from './generated/filewatcher/v1/FileCreatedEvent';
import type { Logger } from './log';
import { METER_NAME } from './metrics';

/** OtlpProtocol is how signals travel: OTLP/HTTP with protobuf bodies, or OTLP/gRPC. */
export type OtlpProtocol = 'http/protobuf' | 'grpc';

/** OtlpConfig is the OTLP part of the exporter's configuration (config.ts). */
export interface OtlpConfig {
  /** Base URL (signals go to /v1/metrics and /v1/logs over HTTP); '' leaves it to OTEL_EXPORTER_OTLP_*. */
  endpoint: string;
  protocol: OtlpProtocol;
  /** Whether the metrics are pushed. */
  metrics: boolean;
  metricsIntervalMs: number;
  /** Whether every event is exported as a log record. */
  events: boolean;
  eventsQueueSize: number;
  eventsQueueBytes: number;
  eventsBatchSize: number;
  eventsBatchDelayMs: number;
  /** How long a batch of log records is retried, from its first attempt, before it is counted lost. */
  eventsRetryForMs: number;
}

/**
 * otlpResource describes this host and service: service.name and .version,
 * host.name, host.arch and host.id (the machine id), merged under what
 * OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME say.
 */
export function otlpResource(version: string): Resource {
  let machineId = '';
  try {
    machineId = readFileSync('/etc/machine-id', 'utf8').trim();
  } catch {
    // no machine id: host.id is left out
  }
  const arch = (
    { x64: 'amd64', arm64: 'arm64', ia32: 'x86', arm: 'arm32' } as Record<string, string>
  )[os.arch()];
  const own = resourceFromAttributes({
    'service.name': 'filewatcher-exporter',
    'service.version': version,
    'host.name': os.hostname(),
    ...(arch !== undefined && { 'host.arch': arch }),
    ...(machineId !== '' && { 'host.id': machineId }),
  });
  return own.merge(detectResources({ detectors: [envDetector] }));
}

/** signalUrl is where a signal goes under --otlp-endpoint, as OTEL_EXPORTER_OTLP_ENDPOINT says. */
function signalUrl(config: OtlpConfig, path: 'v1/metrics' | 'v1/logs'): string | undefined {
  if (config.endpoint === '') return undefined; // the SDK reads OTEL_EXPORTER_OTLP_*
  if (config.protocol === 'grpc') return config.endpoint;
  return config.endpoint.endsWith('/') ? config.endpoint + path : `${config.endpoint}/${path}`;
}

/** OtlpMetrics are the counters of the OTLP path itself. */
export interface OtlpMetrics {
  /** Exports that failed for good, by signal and reason (after the SDK's own retries). */
  exportsFailed: Counter;
  /** Events exported as log records that the Collector accepted. */
  eventsExported: Counter;
  /** Events that will never be exported as log records, by reason. */
  eventsDropped: Counter;
}

/** createOtlpMetrics creates the OTLP path's counters on meter (the one /metrics serves). */
export function createOtlpMetrics(meter: Meter): OtlpMetrics {
  return {
    exportsFailed: meter.createCounter('filewatcher_exporter_otlp_exports_failed_total', {
      description:
        'OTLP exports that failed after the SDK exporter gave up (its retries within OTEL_EXPORTER_OTLP_TIMEOUT), by signal (metrics, logs) and reason (http_<status>, a network error code such as econnrefused, timeout, concurrency_limit, other). A failed metrics export heals at the next (counters are cumulative); a failed logs export is retried until --otlp-events-retry-for.',
    }),
    eventsExported: meter.createCounter('filewatcher_exporter_otlp_events_exported_total', {
      description: 'Events the OTLP endpoint accepted as log records (--otlp-events).',
    }),
    eventsDropped: meter.createCounter('filewatcher_exporter_otlp_events_dropped_total', {
      description:
        'Events that will never be exported as log records, by reason: queue_full (--otlp-events-queue-size or --otlp-events-queue-bytes was reached), export_failed (retried for --otlp-events-retry-for, or refused as malformed), shutdown (still queued when the exporter stopped and its flush ran out of time).',
    }),
  };
}

/**
 * failureReason names why an export failed, as a bounded label value: the
 * HTTP status, the network error's code, or a few named cases.
 */
export function failureReason(error: Error | undefined): string {
  if (error === undefined) return 'other';
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'number' && Number.isInteger(code) && code >= 100 && code < 600)
    return `http_${code}`;
  if (typeof code === 'string' && /^E[A-Z0-9_]{1,30}$/.test(code)) return code.toLowerCase();
  const message = error.message.toLowerCase();
  if (message.includes('concurrency limit')) return 'concurrency_limit';
  if (message.includes('timeout') || message.includes('deadline')) return 'timeout';
  const cause = (error as { cause?: unknown }).cause;
  if (cause instanceof Error && cause !== error) return failureReason(cause);
  // gRPC status codes, by name: UNAVAILABLE (14), DEADLINE_EXCEEDED (4), ...
  if (typeof code === 'number' && Number.isInteger(code) && code >= 0 && code <= 16)
    return `grpc_${code}`;
  return 'other';
}

/**
 * otlpMetricReader pushes the metrics of the provider it is given to every
 * metricsIntervalMs, counting exports that fail. onCollect runs as each
 * collection is exported (the stream position it has seen).
 */
export function otlpMetricReader(
  config: OtlpConfig,
  counters: () => OtlpMetrics | undefined,
  onCollect: () => void = () => undefined,
): PeriodicExportingMetricReader {
  const url = signalUrl(config, 'v1/metrics');
  const inner: PushMetricExporter =
    config.protocol === 'grpc'
      ? new GrpcMetricExporter({ ...(url !== undefined && { url }) })
      : new ProtoMetricExporter({ ...(url !== undefined && { url }) });
  const exporter: PushMetricExporter = {
    export(metrics: ResourceMetrics, done: (result: ExportResult) => void): void {
      onCollect();
      inner.export(metrics, (result) => {
        if (result.code !== ExportResultCode.SUCCESS)
          counters()?.exportsFailed.add(1, {
            signal: 'metrics',
            reason: failureReason(result.error),
          });
        done(result);
      });
    },
    forceFlush: () => inner.forceFlush(),
    shutdown: () => inner.shutdown(),
    selectAggregationTemporality: inner.selectAggregationTemporality?.bind(inner),
    selectAggregation: inner.selectAggregation?.bind(inner),
  };
  return new PeriodicExportingMetricReader({
    exporter,
    exportIntervalMillis: config.metricsIntervalMs,
    exportTimeoutMillis: Math.min(config.metricsIntervalMs, 30_000),
  });
}

/** otlpLogExporter is the SDK's OTLP log exporter for config. */
export function otlpLogExporter(config: OtlpConfig): LogRecordExporter {
  const url = signalUrl(config, 'v1/logs');
  return config.protocol === 'grpc'
    ? new GrpcLogExporter({ ...(url !== undefined && { url }) })
    : new ProtoLogExporter({ ...(url !== undefined && { url }) });
}

/** Sequenced is an event and the loader run it belongs to. */
interface Sequenced {
  runId: string;
  event: FileCreatedEvent__Output;
}

/** EventExportOptions configure an EventExport. */
export interface EventExportOptions {
  exporter: LogRecordExporter;
  resource: Resource;
  queueSize: number;
  /** What queued events may hold in memory, counted as eventCost each. */
  queueBytes: number;
  batchSize: number;
  /** How long a partial batch waits for more events. @default 0 */
  batchDelayMs?: number;
  retryForMs: number;
  metrics: OtlpMetrics;
  log: Logger;
  /** Called when every event up to (runId, sequence) has been exported or counted lost. */
  onSettled?: (runId: string, sequence: number) => void;
  /** Delay before retrying a failed batch; doubles up to 5 s. @default 500 */
  retryDelayMs?: number;
}

/**
 * EventExport sends events as OTLP log records, in order, one batch in
 * flight. Its queue is bounded: an event that finds it full is counted as
 * dropped (queue_full), never waited for, so that export lags but never holds
 * up the stream or the metrics. A batch that fails is retried with backoff
 * until retryForMs has passed since its first attempt, then counted lost
 * (export_failed). Every event offered ends up counted exactly once:
 * exported, or dropped by reason.
 *
 * Not the SDK's BatchLogRecordProcessor: it drops without saying which
 * record, does not retry, and its forceFlush reports success when an export
 * failed, so neither exact loss accounting nor the stream position
 * (onSettled) could be built on it.
 */
export class EventExport {
  private readonly queue: Sequenced[] = [];
  private head = 0;
  private inFlight: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Ends the wait for the next attempt at once (shutdown). */
  private retryNow: (() => void) | undefined;
  private stopping = false;
  private abandoned = false;
  /** The queue's size as eventCost counts it. */
  private bytes = 0;
  private readonly scope = { name: METER_NAME };
  private readonly retryDelayMs: number;
  private readonly batchDelayMs: number;
  private linger: NodeJS.Timeout | undefined;

  constructor(private readonly options: EventExportOptions) {
    this.retryDelayMs = options.retryDelayMs ?? 500;
    this.batchDelayMs = options.batchDelayMs ?? 0;
  }

  /** queued is how many events wait to be exported (the batch in flight included). */
  get queued(): number {
    return this.queue.length - this.head;
  }

  /** offer queues events of runId for export; what does not fit is counted dropped. */
  offer(runId: string, events: readonly FileCreatedEvent__Output[]): void {
    if (this.stopping) {
      this.options.metrics.eventsDropped.add(events.length, { reason: 'shutdown' });
      return;
    }
    const room = Math.max(0, this.options.queueSize - this.queued);
    let taken = 0;
    for (; taken < Math.min(room, events.length); taken++) {
      const cost = eventCost(events[taken]);
      if (this.bytes + cost > this.options.queueBytes) break;
      this.bytes += cost;
      this.queue.push({ runId, event: events[taken] });
    }
    if (taken < events.length) {
      this.options.metrics.eventsDropped.add(events.length - taken, { reason: 'queue_full' });
    }
    this.kick();
  }

  /**
   * shutdown exports what is queued, for at most timeoutMs, counts what is
   * left as dropped (shutdown), and shuts the SDK exporter down.
   */
  async shutdown(timeoutMs: number): Promise<void> {
    this.stopping = true;
    const deadline = Date.now() + timeoutMs;
    // A retry was waiting: try now, once (stopping, a failure is final).
    this.retryNow?.();
    while (this.queued > 0 && Date.now() < deadline) {
      this.kick();
      if (this.inFlight === undefined) break;
      let wake: NodeJS.Timeout | undefined;
      await Promise.race([
        this.inFlight,
        new Promise<void>((resolve) => (wake = setTimeout(resolve, deadline - Date.now()))),
      ]);
      clearTimeout(wake);
    }
    const left = this.queued;
    if (left > 0) {
      // An export still in flight is abandoned: its batch is counted here.
      this.abandoned = true;
      this.options.metrics.eventsDropped.add(left, { reason: 'shutdown' });
      this.options.log.warn('exporter stopped before every event was exported', {
        events_dropped: left,
      });
      const last = this.queue[this.queue.length - 1];
      this.queue.length = 0;
      this.head = 0;
      this.bytes = 0;
      this.options.onSettled?.(last.runId, last.event.sequence);
    }
    await this.options.exporter.shutdown();
  }

  /** kick starts the next export unless one is in flight or waiting to be retried. */
  private kick(): void {
    if (this.inFlight !== undefined || this.timer !== undefined || this.queued === 0) return;
    // A batch goes when full; a partial one waits batchDelayMs for more
    // (fewer, larger requests: cheaper here and at the Collector).
    if (this.queued < this.options.batchSize && !this.stopping && this.batchDelayMs > 0) {
      this.linger ??= setTimeout(() => {
        this.linger = undefined;
        this.start();
      }, this.batchDelayMs);
      return;
    }
    this.start();
  }

  private start(): void {
    clearTimeout(this.linger);
    this.linger = undefined;
    if (this.inFlight !== undefined || this.queued === 0) return;
    this.inFlight = this.run().finally(() => {
      this.inFlight = undefined;
      this.kick();
    });
  }

  /** run exports one batch, retrying it until it is accepted or runs out of time. */
  private async run(): Promise<void> {
    // Yield first so that the events offered in this turn join the batch.
    await new Promise<void>((resolve) => setImmediate(resolve));
    const end = Math.min(this.head + this.options.batchSize, this.queue.length);
    const batch = this.queue.slice(this.head, end);
    const records = batch.map((s) => this.record(s));
    const started = Date.now();
    let delay = this.retryDelayMs;
    for (let attempt = 1; ; attempt++) {
      const result = await exportOnce(this.options.exporter, records);
      if (this.abandoned) return; // shutdown counted this batch
      if (result.code === ExportResultCode.SUCCESS) {
        this.options.metrics.eventsExported.add(batch.length);
        break;
      }
      const reason = failureReason(result.error);
      this.options.metrics.exportsFailed.add(1, { signal: 'logs', reason });
      const retryable =
        !/^http_4\d\d$/.test(reason) || reason === 'http_429' || reason === 'http_408';
      if (!retryable || this.stopping || Date.now() - started + delay > this.options.retryForMs) {
        this.options.metrics.eventsDropped.add(batch.length, { reason: 'export_failed' });
        this.options.log.warn('events could not be exported as log records', {
          events_dropped: batch.length,
          attempts: attempt,
          reason,
          error: result.error?.message,
        });
        break;
      }
      await new Promise<void>((resolve) => {
        const fire = (): void => {
          clearTimeout(this.timer);
          this.timer = undefined;
          this.retryNow = undefined;
          resolve();
        };
        this.timer = setTimeout(fire, delay);
        this.retryNow = fire;
      });
      delay = Math.min(delay * 2, 5_000);
    }
    this.head = end;
    for (const s of batch) this.bytes -= eventCost(s.event);
    if (this.head > 4096 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    const last = batch[batch.length - 1];
    this.options.onSettled?.(last.runId, last.event.sequence);
  }

  /** record is an event as an OTLP log record, with semantic-convention attributes where they exist. */
  private record({ runId, event: e }: Sequenced): ReadableLogRecord {
    return {
      hrTime: nanosToHrTime(e.time_unix_nano),
      hrTimeObserved: nanosToHrTime(Date.now() * 1e6),
      severityNumber: SeverityNumber.INFO,
      severityText: 'INFO',
      eventName: 'filewatcher.file_created',
      body: text(e.path),
      resource: this.options.resource,
      instrumentationScope: this.scope,
      attributes: eventAttributes(runId, e),
      droppedAttributesCount: 0,
    };
  }
}

/**
 * eventCost is what a queued event counts against --otlp-events-queue-bytes:
 * its path and comm, twice (the bytes, and the strings a log record makes of
 * them), and 256 bytes of the rest, as the loader counts its queues.
 */
export function eventCost(e: FileCreatedEvent__Output): number {
  return 2 * (e.path.length + e.comm.length) + 256;
}

/**
 * eventAttributes are a file_created event as log attributes. Paths are
 * bytes: a path that is valid UTF-8 is a string in file.path, file.directory
 * and file.name; one that is not is there with U+FFFD for the bad bytes, and
 * its exact bytes are in filewatcher.file.path_bytes. The same for the
 * task's comm (process.executable.name, and ..._bytes when not UTF-8).
 */
export function eventAttributes(runId: string, e: FileCreatedEvent__Output): LogAttributes {
  const slash = e.path.lastIndexOf(0x2f);
  const dir = slash < 0 ? '' : slash === 0 ? '/' : text(e.path.subarray(0, slash));
  const attributes: LogAttributes = {
    'file.path': text(e.path),
    'file.directory': dir,
    'file.name': text(e.path.subarray(slash + 1)),
    'process.pid': e.tgid,
    'thread.id': e.pid,
    'process.executable.name': text(e.comm),
    'user.id': String(e.uid),
    'process.real_user.id': e.uid,
    'process.real_group.id': e.gid,
    'filewatcher.run_id': runId,
    'filewatcher.sequence': e.sequence,
    'filewatcher.cgroup_id': String(e.cgroup_id),
    'filewatcher.open_flags': e.flags,
    'filewatcher.kind': kindName(e.kind),
    'filewatcher.fsuid': e.fsuid,
    'filewatcher.fsgid': e.fsgid,
  };
  if (!isUtf8(e.path)) attributes['filewatcher.file.path_bytes'] = Uint8Array.from(e.path);
  if (!isUtf8(e.comm))
    attributes['filewatcher.process.executable.name_bytes'] = Uint8Array.from(e.comm);
  return attributes;
}

/** KIND_NAMES: each EventKind by number, as the lower-case end of its name (open, ...). */
const KIND_NAMES = new Map<number, string>(
  Object.entries(EventKind).map(([name, n]) => [n, name.slice('EVENT_KIND_'.length).toLowerCase()]),
);

/** kindName is the name of an EventKind for the filewatcher.kind attribute; its number when unknown. */
function kindName(kind: number): string {
  return KIND_NAMES.get(kind) ?? String(kind);
}

function text(b: Buffer): string {
  return b.toString('utf8');
}

function nanosToHrTime(nanos: number): HrTime {
  const s = Math.floor(nanos / 1e9);
  return [s, Math.round(nanos - s * 1e9)];
}

function exportOnce(
  exporter: LogRecordExporter,
  records: ReadableLogRecord[],
): Promise<ExportResult> {
  return new Promise((resolve) => {
    try {
      exporter.export(records, resolve);
    } catch (err) {
      resolve({ code: ExportResultCode.FAILED, error: err as Error });
    }
  });
}
