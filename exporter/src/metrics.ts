import type { Counter, Meter } from '@opentelemetry/api';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { Resource } from '@opentelemetry/resources';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import type { IMetricReader } from '@opentelemetry/sdk-metrics';

/** METER_NAME is the instrumentation scope of every metric: otel_scope_name="filewatcher". */
export const METER_NAME = 'filewatcher';

/** Telemetry is the OpenTelemetry pipeline: a MeterProvider read by a pull-mode Prometheus exporter. */
export interface Telemetry {
  provider: MeterProvider;
  prometheus: PrometheusExporter;
  meter: Meter;
}

/**
 * createTelemetry builds the pipeline of the exporter's own metrics. The
 * Prometheus exporter's server is not started: our HTTP server serves its
 * collections on /metrics, followed by file_created_total (SeriesTable, which
 * renders itself), beside /healthz and /readyz, on one port.
 */
export function createTelemetry(
  version: string,
  options: { resource?: Resource; readers?: IMetricReader[] } = {},
): Telemetry {
  const prometheus = new PrometheusExporter({ preventServerStart: true });
  const provider = new MeterProvider({
    resource:
      options.resource ??
      resourceFromAttributes({
        'service.name': 'filewatcher-exporter',
        'service.version': version,
      }),
    readers: [prometheus, ...(options.readers ?? [])],
  });
  return { provider, prometheus, meter: provider.getMeter(METER_NAME) };
}

/** StreamMetrics are the counters the event stream updates as things happen. */
export interface StreamMetrics {
  eventsReceived: Counter;
  batchesReceived: Counter;
  /** Events this exporter's stream will never receive, by reason (in-band gaps, or sequence_gap). */
  eventsLost: Counter;
  /** The loader's own loss counters (all subscribers), accumulated across loader runs. */
  loaderEventsLost: Counter;
  loaderPathUnresolved: Counter;
  loaderOpensMissed: Counter;
  eventsFiltered: Counter;
  reconnects: Counter;
  streamEnds: Counter;
  stalls: Counter;
  loaderRestarts: Counter;
  malformed: Counter;
}

/** createStreamMetrics creates the stream's counters on meter. */
export function createStreamMetrics(meter: Meter): StreamMetrics {
  const counter = (name: string, description: string): Counter =>
    meter.createCounter(name, { description });
  return {
    eventsReceived: counter(
      'filewatcher_exporter_events_received_total',
      'File-creation events received from the loader.',
    ),
    batchesReceived: counter(
      'filewatcher_exporter_batches_received_total',
      'Stream messages (batches of events and gaps) received from the loader.',
    ),
    eventsLost: counter(
      'filewatcher_exporter_events_lost_total',
      'Events this exporter will never receive, by reason: gaps reported by the loader (ringbuf_full, read_error, program_skipped, unexplained, loader_restart, subscriber_overflow, replay_expired; kprobe_missed only from older loaders) or sequence_gap, found from sequence numbers.',
    ),
    loaderEventsLost: counter(
      'filewatcher_loader_events_lost_total',
      "The loader's own loss counters (all subscribers), summed over loader runs, by reason.",
    ),
    loaderOpensMissed: counter(
      'filewatcher_loader_opens_missed_total',
      "Calls of the open function the loader's probe missed (kretprobe misses, or skipped runs of the eBPF-only probe), summed over loader runs: an upper bound on creations missed, not events lost (most opens create nothing).",
    ),
    loaderPathUnresolved: counter(
      'filewatcher_loader_path_unresolved_events_total',
      'Events the loader delivered without a resolvable directory (not lost), summed over loader runs.',
    ),
    eventsFiltered: counter(
      'filewatcher_exporter_events_filtered_total',
      "Events the loader did not send because they did not match this subscriber's filter.",
    ),
    reconnects: counter(
      'filewatcher_exporter_reconnects_total',
      'Attempts to subscribe again after the stream ended or could not be opened.',
    ),
    streamEnds: counter(
      'filewatcher_exporter_stream_ends_total',
      'Streams (or attempts) that ended, by gRPC status code.',
    ),
    stalls: counter(
      'filewatcher_exporter_stalls_total',
      'Streams abandoned because they stalled: silent while the loader was ahead or did not answer.',
    ),
    loaderRestarts: counter(
      'filewatcher_exporter_loader_restarts_total',
      'Times the loader was seen with a new run id (it restarted; sequences start again).',
    ),
    malformed: counter(
      'filewatcher_exporter_malformed_total',
      'Malformed input from the loader, by reason: decode (a message that did not parse), sequence_regression, invalid_gap, exception.',
    ),
  };
}
