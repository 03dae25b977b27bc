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
import { createStreamMetrics, createTelemetry } from './metrics';
import type { Telemetry } from './metrics';
import { loadPosition, savePosition } from './position';
import type { StreamPosition } from './position';
import { SeriesTable } from './series';
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
  ) {}

  /** start builds everything, starts listening and begins subscribing. */
  static async start(config: Config, log: Logger, version = ''): Promise<Exporter> {
    // Read before anything opens, so that a bad file stops the start cleanly.
    const web = config.webConfigFile === '' ? undefined : loadWebConfig(config.webConfigFile);
    const telemetry = createTelemetry(version);
    const { meter } = telemetry;
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
      onEvents: (events) => {
        const now = Date.now();
        if (cgroups === undefined) {
          for (const e of events) series.record(e.path, e.flags, now);
          return;
        }
        // Events of cgroups not seen yet wait for the next walk of the tree.
        for (const e of events) cgroups.whenKnown(e.cgroup_id, e, recordWithService);
      },
    });
    registerObservables(telemetry, stream, series, cgroups);

    const server = await startHttpServer(
      config.listen,
      {
        metricsPath: config.metricsPath,
        metrics: new MetricsHandler(
          telemetry,
          series,
          log,
          positionSaver(config.stateFile, stream, log),
        ).handle,
        notReadyReason: () => (stream.ready ? undefined : `loader stream ${stream.state}`),
      },
      web,
    );
    const exporter = new Exporter(stream, series, telemetry, server, log);
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
    });
    stream.start();
    return exporter;
  }

  /** address is where the HTTP server listens. */
  get address(): { host: string; port: number } {
    return boundAddress(this.server);
  }

  /** stop unsubscribes, finishes in-flight scrapes and shuts the pipeline down. */
  async stop(): Promise<void> {
    this.stream.stop();
    await closeHttpServer(this.server);
    await this.telemetry.provider.shutdown();
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

/**
 * positionSaver returns what a scrape calls as it starts: it saves the
 * stream's position when it moved (see position.ts for why at scrapes). A
 * failure is logged once until saving works again.
 */
function positionSaver(path: string, stream: LoaderStream, log: Logger): () => void {
  if (path === '') return () => undefined;
  let saved = '';
  let failing = false;
  return () => {
    const position = stream.position();
    if (position === undefined) return;
    const key = JSON.stringify(position);
    if (key === saved) return;
    try {
      savePosition(path, position);
      saved = key;
      if (failing) log.info('saving the stream position works again', { state_file: path });
      failing = false;
    } catch (err) {
      if (!failing)
        log.warn('cannot save the stream position', { state_file: path, error: String(err) });
      failing = true;
    }
  };
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
