import { readFileSync } from 'node:fs';
import type http from 'node:http';
import type { ObservableResult } from '@opentelemetry/api';
import type { Config, LoaderTls } from './config';
import { boundAddress, closeHttpServer, startHttpServer } from './http';
import { CgroupResolver, cgroup2Root } from './cgroup';
import { boundLabelValue, LabelMapper } from './labels';
import { loadLabelRules } from './labelrules';
import type { Logger } from './log';
import { MetricsHandler } from './exposition';
import { METER_NAME, createStreamMetrics, createTelemetry } from './metrics';
import type { Telemetry } from './metrics';
import {
  EventExport,
  createOtlpMetrics,
  otlpLogExporter,
  otlpMetricReader,
  otlpResource,
} from './otlp';
import type { OtlpMetrics } from './otlp';
import { loadPosition, PositionKeeper } from './position';
import type { StreamPosition } from './position';
import { FILE_CREATED, SeriesTable } from './series';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { LoaderStream } from './stream';
import { loadWebConfig } from './webconfig';
import type { WebConfig } from './webconfig';
import type { LoaderStreamOptions } from './stream';

/**
 * Exporter is the whole service: the loader stream feeding the series table,
 * the OpenTelemetry pipeline, and the HTTP server. main.ts runs one; tests
 * and benchmarks run as many as they like, on port 0.
 */
export class Exporter {
  private constructor(
    readonly stream: LoaderStream,
    readonly series: SeriesTable,
    private readonly telemetry: Telemetry,
    private readonly server: http.Server,
    private readonly log: Logger,
    private readonly otlp: {
      /** file_created_total's own provider: only OTLP reads it (/metrics renders the table). */
      seriesProvider?: MeterProvider;
      events?: EventExport;
    },
    private readonly keeper: PositionKeeper,
  ) {}

  /** start builds everything, starts listening and begins subscribing. */
  static async start(config: Config, log: Logger, version = ''): Promise<Exporter> {
    // Read before anything opens, so that a bad file stops the start cleanly.
    const web = config.webConfigFile === '' ? undefined : loadWebConfig(config.webConfigFile);
    const otlp = config.otlp;
    const resource = otlp === undefined ? undefined : otlpResource(version);
    // The OTLP readers exist before the provider; their counters after it.
    let otlpMetrics: OtlpMetrics | undefined;
    const telemetry = createTelemetry(version, {
      resource,
      readers: otlp?.metrics === true ? [otlpMetricReader(otlp, () => otlpMetrics)] : [],
    });
    const { meter } = telemetry;
    if (otlp !== undefined) otlpMetrics = createOtlpMetrics(meter);
    const rules = config.labelRulesFile === '' ? [] : loadLabelRules(config.labelRulesFile, config);
    let cgroups: CgroupResolver | undefined;
    if (config.serviceLabel) {
      const root = cgroup2Root(config.cgroupRoot);
      if (root === undefined) {
        log.warn('no cgroup v2 hierarchy: every service label is <unknown>', {
          cgroup_root: config.cgroupRoot,
        });
      }
      cgroups = new CgroupResolver({ root });
    }
    const mapper = new LabelMapper({
      pathLabel: config.pathLabel,
      pathDepth: config.pathDepth,
      nameLabel: config.nameLabel,
      rules,
      service: cgroups?.service,
    });
    const series = new SeriesTable(mapper, {
      limit: config.maxSeries,
      idleTtlMs: config.seriesIdleTtlMs,
    });
    // Read the clock per event: held events are counted later than their batch.
    const recordWithService = (e: { path: Buffer; flags: number; cgroup_id: number }): void =>
      series.record(e.path, e.flags, Date.now(), e.cgroup_id);
    const position = readPosition(config.stateFile, log);
    let events: EventExport | undefined;
    const keeper = new PositionKeeper(
      config.stateFile,
      log,
      () => stream.position(),
      otlp?.events === true ? () => events === undefined || events.queued === 0 : undefined,
      position,
    );
    if (otlp?.events === true && otlpMetrics !== undefined && resource !== undefined) {
      events = new EventExport({
        exporter: otlpLogExporter(otlp),
        resource,
        queueSize: otlp.eventsQueueSize,
        queueBytes: otlp.eventsQueueBytes,
        batchSize: otlp.eventsBatchSize,
        batchDelayMs: otlp.eventsBatchDelayMs,
        retryForMs: otlp.eventsRetryForMs,
        metrics: otlpMetrics,
        log,
        onSettled: (runId, sequence) => keeper.eventsSettled(runId, sequence),
      });
    }
    const stream = new LoaderStream({
      position,
      target: config.loader.target,
      tls: readLoaderTls(config.loaderTls),
      batchSize: config.batchSize,
      batchDelayMs: config.batchDelayMs,
      overflowPolicy: config.overflowPolicy,
      stallTimeoutMs: config.stallTimeoutMs,
      statusIntervalMs: config.statusIntervalMs,
      backoff: { initialMs: config.reconnectInitialDelayMs, maxMs: config.reconnectMaxDelayMs },
      log,
      metrics: createStreamMetrics(meter),
      onEvents: (batch) => {
        const run = stream.run;
        if (events !== undefined && run !== undefined) {
          keeper.eventsOffered(run, batch[0].sequence);
          events.offer(run, batch);
        }
        const now = Date.now();
        if (cgroups === undefined) {
          for (const e of batch) series.record(e.path, e.flags, now);
          return;
        }
        // Events of cgroups not seen yet wait for the next walk of the tree.
        for (const e of batch) cgroups.whenKnown(e.cgroup_id, e, recordWithService);
      },
    });
    registerObservables(telemetry, stream, series, cgroups);
    if (events !== undefined) {
      const queue = events;
      meter
        .createObservableGauge('filewatcher_exporter_otlp_events_queued', {
          description:
            'Events waiting to be exported as OTLP log records (--otlp-events-queue-size at most).',
        })
        .addCallback((r) => r.observe(queue.queued));
    }
    let seriesProvider: MeterProvider | undefined;
    if (otlp?.metrics === true) {
      seriesProvider = new MeterProvider({
        resource,
        readers: [
          otlpMetricReader(
            otlp,
            () => otlpMetrics,
            () => keeper.metricsCollected(),
          ),
        ],
      });
      seriesProvider
        .getMeter(METER_NAME)
        .createObservableCounter(FILE_CREATED, { description: 'Number of files created' })
        .addCallback((r) => {
          for (const { attributes, count } of series.counts()) r.observe(count, attributes);
        });
    }

    const server = await startHttpServer(
      config.listen,
      {
        metricsPath: config.metricsPath,
        metrics: new MetricsHandler(telemetry, series, log, () => keeper.metricsCollected()).handle,
        notReadyReason: () => (stream.ready ? undefined : `loader stream ${stream.state}`),
      },
      web,
    );
    const exporter = new Exporter(
      stream,
      series,
      telemetry,
      server,
      log,
      { seriesProvider, events },
      keeper,
    );
    const { host, port } = exporter.address;
    log.info('ready', {
      listen: `${host.includes(':') ? `[${host}]` : host}:${port}`,
      metrics_path: config.metricsPath,
      loader: config.loader.target,
      path_label: config.pathLabel === 'depth' ? `depth:${config.pathDepth}` : config.pathLabel,
      name_label: config.nameLabel,
      label_rules: rules.length,
      service_label: config.serviceLabel,
      ...(cgroups !== undefined && { cgroup_root: cgroups.root ?? 'none' }),
      max_series: config.maxSeries,
      series_idle_ttl: config.seriesIdleTtlMs === 0 ? 'never' : `${config.seriesIdleTtlMs}ms`,
      metrics_access: describeAccess(web),
      ...(otlp !== undefined && {
        otlp_endpoint: otlp.endpoint === '' ? 'OTEL_EXPORTER_OTLP_*_ENDPOINT' : otlp.endpoint,
        otlp_protocol: otlp.protocol,
        otlp_metrics: otlp.metrics ? `every ${otlp.metricsIntervalMs}ms` : 'off',
        otlp_events: otlp.events,
      }),
    });
    stream.start();
    return exporter;
  }

  /** address is where the HTTP server listens. */
  get address(): { host: string; port: number } {
    return boundAddress(this.server);
  }

  /**
   * stop unsubscribes, exports the events still queued (for at most
   * flushTimeoutMs), finishes in-flight scrapes, pushes the metrics a last
   * time, saves the stream position and shuts the pipeline down.
   */
  async stop(flushTimeoutMs = 10_000): Promise<void> {
    this.stream.stop();
    await this.otlp.events?.shutdown(flushTimeoutMs);
    await closeHttpServer(this.server);
    await this.otlp.seriesProvider?.shutdown();
    await this.telemetry.provider.shutdown();
    this.keeper.flush();
    this.log.info('stopped');
  }
}

/**
 * readPosition reads --state-file. One that cannot be read is reported and
 * ignored (the stream then joins live), never a reason not to start.
 */
function readPosition(path: string, log: Logger): StreamPosition | undefined {
  if (path === '') return undefined;
  try {
    const position = loadPosition(path);
    if (position === undefined) log.info('no saved stream position yet', { state_file: path });
    else
      log.info('resuming from the saved stream position', {
        state_file: path,
        run_id: position.runId,
        last_sequence: position.lastSequence,
      });
    return position;
  } catch (err) {
    log.warn('cannot read the saved stream position: joining the stream live', {
      state_file: path,
      error: String(err),
    });
    return undefined;
  }
}

/** registerObservables exports state that is read rather than counted: gauges and the loader's status. */
function registerObservables(
  telemetry: Telemetry,
  stream: LoaderStream,
  series: SeriesTable,
  cgroups: CgroupResolver | undefined,
): void {
  const { meter } = telemetry;
  const gauge = (name: string, description: string, read: (r: ObservableResult) => void): void =>
    meter.createObservableGauge(name, { description }).addCallback(read);
  const counter = (name: string, description: string, read: (r: ObservableResult) => void): void =>
    meter.createObservableCounter(name, { description }).addCallback(read);

  gauge('filewatcher_exporter_stream_connected', '1 while subscribed to the loader, else 0.', (r) =>
    r.observe(stream.ready ? 1 : 0),
  );
  gauge(
    'filewatcher_exporter_series',
    'Distinct label sets of file_created_total (overflow series not included).',
    (r) => r.observe(series.size),
  );
  gauge(
    'filewatcher_exporter_series_limit',
    'The cap on distinct label sets of file_created_total (--max-series).',
    (r) => r.observe(series.limit),
  );
  counter(
    'filewatcher_exporter_overflow_events_total',
    'Events counted in the otel_metric_overflow="true" series of file_created_total because the series cap was reached.',
    (r) => r.observe(series.overflowEvents),
  );
  if (cgroups !== undefined) {
    counter(
      'filewatcher_exporter_cgroup_walks_total',
      'Walks of the cgroup tree made to name the service of cgroup ids not seen before (--service-label).',
      (r) => r.observe(cgroups.walks),
    );
    counter(
      'filewatcher_exporter_cgroup_held_events_total',
      'Events counted only after a walk of the cgroup tree, their cgroup being new (--service-label).',
      (r) => r.observe(cgroups.held),
    );
  }
  counter(
    'filewatcher_exporter_series_expired_total',
    'Series of file_created_total dropped after counting nothing for --series-idle-ttl (Prometheus marks them stale).',
    (r) => r.observe(series.expired),
  );
  counter(
    'filewatcher_exporter_series_evicted_total',
    'Series of file_created_total dropped, least recently used first, to make room for new label sets at --max-series.',
    (r) => r.observe(series.evicted),
  );

  // The loader's status, as last reported by GetStatus. These counters are
  // the loader's own and restart from zero with each loader run.
  const status =
    (read: (s: NonNullable<LoaderStream['status']>, r: ObservableResult) => void) =>
    (r: ObservableResult): void => {
      const s = stream.status;
      if (s !== undefined) read(s, r);
    };
  gauge(
    'filewatcher_loader_info',
    "The loader's versions, event source and probe (which, why, on what function), as labels; always 1.",
    status((s, r) =>
      r.observe(
        1,
        Object.fromEntries(
          Object.entries({
            loader_version: s.loader_version,
            module_version: s.module_version,
            kernel_release: s.kernel_release,
            source: s.source,
            probe: s.probe,
            probe_reason: s.probe_reason,
            probe_function: s.probe_function,
          }).map(([k, v]) => [k, boundLabelValue(v)]),
        ),
      ),
    ),
  );
  gauge(
    'filewatcher_loader_pinned',
    '1 if the loader keeps its probe and ring buffer pinned (--pin-dir), so that a loader that dies is replaced without losing its run; 0 if not (the loader status says why).',
    status((s, r) => r.observe(s.pin_dir !== '' ? 1 : 0)),
  );
  gauge(
    'filewatcher_loader_run_resumes',
    "Times the loader's current run was taken over from a loader that died or handed over.",
    status((s, r) => r.observe(s.resumes)),
  );
  gauge(
    'filewatcher_loader_last_sequence',
    'Last sequence number the loader assigned in its current run.',
    status((s, r) => r.observe(s.last_sequence)),
  );
  counter(
    'filewatcher_loader_module_events_fired_total',
    "Events the kernel module fired in the loader's current run.",
    status((s, r) => r.observe(s.module_events_fired)),
  );
  counter(
    'filewatcher_loader_ringbuf_full_per_cpu_total',
    "Ring buffer full events per CPU in the loader's current run.",
    status((s, r) =>
      s.ringbuf_full_per_cpu.forEach((n, cpu) => r.observe(n, { cpu: String(cpu) })),
    ),
  );
  gauge(
    'filewatcher_loader_kprobe_maxactive',
    'maxactive of the kretprobe on do_filp_open.',
    status((s, r) => r.observe(s.kprobe_maxactive)),
  );
  gauge(
    'filewatcher_loader_ringbuf_size_bytes',
    'Size of the BPF ring buffer.',
    status((s, r) => r.observe(s.ringbuf_size_bytes)),
  );
  gauge(
    'filewatcher_loader_max_subscribers',
    'The cap on concurrent subscriptions to the loader.',
    status((s, r) => r.observe(s.max_subscribers)),
  );
  counter(
    'filewatcher_loader_subscribers_refused_total',
    "Subscriptions the loader refused at its cap, in the loader's current run.",
    status((s, r) => r.observe(s.subscribers_refused)),
  );
  counter(
    'filewatcher_loader_requests_denied_total',
    "Requests the loader's access control denied, in its current run.",
    status((s, r) => r.observe(s.requests_denied)),
  );
  counter(
    'filewatcher_loader_handshakes_failed_total',
    'TLS handshakes that failed at the loader, in its current run.',
    status((s, r) => r.observe(s.handshakes_failed)),
  );
  gauge(
    'filewatcher_loader_subscribers',
    'Live subscriptions to the loader, this one included.',
    status((s, r) => r.observe(s.subscribers.length)),
  );
}

/** readLoaderTls reads the PEM files of --loader-tls-*, with errors that name the flag. */
function readLoaderTls(tls: LoaderTls | undefined): LoaderStreamOptions['tls'] {
  if (tls === undefined) return undefined;
  const read = (flag: string, file: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new Error(`--${flag} ${file}: ${(err as Error).message}`);
    }
  };
  return {
    ca: read('loader-tls-ca', tls.ca),
    ...(tls.cert !== undefined &&
      tls.key !== undefined && {
        cert: read('loader-tls-cert', tls.cert),
        key: read('loader-tls-key', tls.key),
      }),
    ...(tls.serverName !== undefined && { serverName: tls.serverName }),
  };
}

/** describeAccess says who can read /metrics, for the ready log line. */
function describeAccess(web: WebConfig | undefined): string {
  if (web === undefined)
    return 'plain HTTP: anyone who can reach the listen address (--web-config-file to protect it)';
  const parts = [
    web.tls === undefined ? 'plain HTTP' : `HTTPS, client certificates ${web.tls.clientAuth}`,
  ];
  if (web.tls !== undefined && web.tls.clientAllowedSans.length > 0)
    parts.push(`SANs ${web.tls.clientAllowedSans.join(' ')}`);
  parts.push(web.users.size > 0 ? `basic auth (${web.users.size} users)` : 'no basic auth');
  return parts.join(', ');
}
