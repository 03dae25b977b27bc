import { parseArgs } from 'node:util';
import { parseListenAddress, parseLoaderAddress } from './address';
import type { LoaderAddress, ListenAddress } from './address';
import type { PathLabelMode } from './labels';
import type { LogFormat, LogLevel } from './log';
import type { OtlpConfig } from './otlp';

/** OverflowPolicyName is the loader's per-subscriber overflow policy, as a flag value. */
export type OverflowPolicyName = 'drop-oldest' | 'drop-newest' | 'close';

/** Config is the exporter's whole configuration, after defaults, environment and flags. */
/** LoaderTls names the PEM files that reach a TLS loader (all unset: no TLS). */
export interface LoaderTls {
  /** CA certificates that verify the loader's certificate. */
  ca: string;
  /** This exporter's client certificate and key, for a loader that requires mutual TLS. */
  cert?: string;
  key?: string;
  /** Name to verify in the loader's certificate instead of the host of --loader. */
  serverName?: string;
}

export interface Config {
  loader: LoaderAddress;
  /** TLS to the loader; undefined: plaintext (a unix socket, or loopback TCP). */
  loaderTls: LoaderTls | undefined;
  listen: ListenAddress;
  metricsPath: string;
  /** --web-config-file: TLS and basic auth for /metrics; '' serves plain HTTP to anyone. */
  webConfigFile: string;
  pathLabel: PathLabelMode;
  pathDepth: number;
  nameLabel: boolean;
  /** --service-label: the service label from the creator's cgroup, under cgroupRoot. */
  serviceLabel: boolean;
  cgroupRoot: string;
  /** --label-rules: a YAML file of rollup rules (labelrules.ts); '' for none. */
  labelRulesFile: string;
  maxSeries: number;
  /** --series-idle-ttl; 0: series never expire. */
  seriesIdleTtlMs: number;
  batchSize: number;
  batchDelayMs: number;
  overflowPolicy: OverflowPolicyName;
  stallTimeoutMs: number;
  statusIntervalMs: number;
  reconnectInitialDelayMs: number;
  reconnectMaxDelayMs: number;
  logLevel: LogLevel;
  logFormat: LogFormat;
  /** --state-file: where the stream position is kept across restarts; '' for nowhere. */
  stateFile: string;
  /** OTLP push (--otlp-*); undefined: none. */
  otlp: OtlpConfig | undefined;
}

interface OptionSpec {
  flag: string;
  env: string;
  default: string;
  arg: string;
  help: string;
}

/**
 * OPTIONS is the single table of settings: flag, environment variable,
 * default and help text. --help and the README are written from it.
 */
export const OPTIONS: readonly OptionSpec[] = [
  {
    flag: 'loader',
    env: 'FILEWATCHER_EXPORTER_LOADER',
    default: 'unix:///run/filewatcher/loader.sock',
    arg: 'ADDRESS',
    help: "the loader's gRPC address: unix:///absolute/path or host:port",
  },
  {
    flag: 'loader-tls-ca',
    env: 'FILEWATCHER_EXPORTER_LOADER_TLS_CA',
    default: '',
    arg: 'FILE',
    help: "PEM CA certificates that verify a TCP loader's certificate: connect with TLS (required by the other --loader-tls-* flags)",
  },
  {
    flag: 'loader-tls-cert',
    env: 'FILEWATCHER_EXPORTER_LOADER_TLS_CERT',
    default: '',
    arg: 'FILE',
    help: 'PEM client certificate for a loader that requires mutual TLS (with --loader-tls-key)',
  },
  {
    flag: 'loader-tls-key',
    env: 'FILEWATCHER_EXPORTER_LOADER_TLS_KEY',
    default: '',
    arg: 'FILE',
    help: 'PEM private key of --loader-tls-cert',
  },
  {
    flag: 'loader-tls-server-name',
    env: 'FILEWATCHER_EXPORTER_LOADER_TLS_SERVER_NAME',
    default: '',
    arg: 'NAME',
    help: "name to verify in the loader's certificate (default: the host of --loader)",
  },
  {
    flag: 'listen',
    env: 'FILEWATCHER_EXPORTER_LISTEN',
    default: '127.0.0.1:8080',
    arg: 'HOST:PORT',
    help: 'where to serve /metrics, /healthz and /readyz; loopback only by default, :8080 or 0.0.0.0:8080 for every interface',
  },
  {
    flag: 'metrics-path',
    env: 'FILEWATCHER_EXPORTER_METRICS_PATH',
    default: '/metrics',
    arg: 'PATH',
    help: 'HTTP path of the Prometheus exposition',
  },
  {
    flag: 'web-config-file',
    env: 'FILEWATCHER_EXPORTER_WEB_CONFIG_FILE',
    default: '',
    arg: 'FILE',
    help: 'Prometheus exporter-toolkit web configuration (YAML: tls_server_config, basic_auth_users with bcrypt hashes) protecting /metrics; empty: plain HTTP, readable by whoever reaches --listen',
  },
  {
    flag: 'path-label',
    env: 'FILEWATCHER_EXPORTER_PATH_LABEL',
    default: 'full',
    arg: 'full|depth|none',
    help: 'the path label: the whole directory, its first --path-depth components, or no path label',
  },
  {
    flag: 'path-depth',
    env: 'FILEWATCHER_EXPORTER_PATH_DEPTH',
    default: '3',
    arg: 'N',
    help: 'directory components kept by --path-label depth (/a/b/c/d at 2 is /a/b)',
  },
  {
    flag: 'name-label',
    env: 'FILEWATCHER_EXPORTER_NAME_LABEL',
    default: 'true',
    arg: 'true|false',
    help: "whether file_created_total has the name label (the file's base name)",
  },
  {
    flag: 'service-label',
    env: 'FILEWATCHER_EXPORTER_SERVICE_LABEL',
    default: 'false',
    arg: 'true|false',
    help: "add the service label: the systemd unit (nginx.service) or container (docker:0123456789ab) of the creating task's cgroup; within --max-series like every label set",
  },
  {
    flag: 'cgroup-root',
    env: 'FILEWATCHER_EXPORTER_CGROUP_ROOT',
    default: '/sys/fs/cgroup',
    arg: 'DIR',
    help: "the host's cgroup mount, where --service-label looks cgroup ids up (its unified/ on a hybrid v1+v2 host)",
  },
  {
    flag: 'label-rules',
    env: 'FILEWATCHER_EXPORTER_LABEL_RULES',
    default: '',
    arg: 'FILE',
    help: 'YAML rollup rules, first match wins: paths matching a glob get fixed path and/or name label values (e.g. /tmp/** → path=/tmp); empty: none',
  },
  {
    flag: 'max-series',
    env: 'FILEWATCHER_EXPORTER_MAX_SERIES',
    default: '10000',
    arg: 'N',
    help: 'hard cap on distinct label sets of file_created_total at any moment; when full, the least recently used series makes room (once scraped), else the otel_metric_overflow="true" series counts',
  },
  {
    flag: 'series-idle-ttl',
    env: 'FILEWATCHER_EXPORTER_SERIES_IDLE_TTL',
    default: '1h',
    arg: 'DURATION',
    help: 'a series of file_created_total that counted nothing this long leaves the exposition (Prometheus marks it stale; if it comes back it starts from 0); 0: never',
  },
  {
    flag: 'batch-size',
    env: 'FILEWATCHER_EXPORTER_BATCH_SIZE',
    default: '1024',
    arg: 'N',
    help: 'events per message asked of the loader (1-4096)',
  },
  {
    flag: 'batch-delay',
    env: 'FILEWATCHER_EXPORTER_BATCH_DELAY',
    default: '20ms',
    arg: 'DURATION',
    help: 'how long the loader may hold a partial batch',
  },
  {
    flag: 'overflow-policy',
    env: 'FILEWATCHER_EXPORTER_OVERFLOW_POLICY',
    default: 'drop-newest',
    arg: 'drop-oldest|drop-newest|close',
    help: 'what the loader does when this exporter falls behind (drops are reported as gaps and counted)',
  },
  {
    flag: 'stall-timeout',
    env: 'FILEWATCHER_EXPORTER_STALL_TIMEOUT',
    default: '30s',
    arg: 'DURATION',
    help: 'silence after which the loader is asked for its status; a stream behind it (or no answer) is a stall: reconnect',
  },
  {
    flag: 'status-interval',
    env: 'FILEWATCHER_EXPORTER_STATUS_INTERVAL',
    default: '15s',
    arg: 'DURATION',
    help: "how often the loader's status (versions, per-CPU ring buffer losses, subscribers) is refreshed",
  },
  {
    flag: 'reconnect-initial-delay',
    env: 'FILEWATCHER_EXPORTER_RECONNECT_INITIAL_DELAY',
    default: '500ms',
    arg: 'DURATION',
    help: 'first delay before reconnecting; it doubles per failed attempt, with ±20% jitter',
  },
  {
    flag: 'reconnect-max-delay',
    env: 'FILEWATCHER_EXPORTER_RECONNECT_MAX_DELAY',
    default: '30s',
    arg: 'DURATION',
    help: 'largest delay between reconnection attempts',
  },
  {
    flag: 'log-level',
    env: 'FILEWATCHER_EXPORTER_LOG_LEVEL',
    default: 'info',
    arg: 'debug|info|warn|error',
    help: 'least important log lines written',
  },
  {
    flag: 'log-format',
    env: 'FILEWATCHER_EXPORTER_LOG_FORMAT',
    default: 'text',
    arg: 'text|json',
    help: 'log lines as logfmt or JSON, on stderr',
  },
  {
    flag: 'state-file',
    env: 'FILEWATCHER_EXPORTER_STATE_FILE',
    default: '',
    arg: 'FILE',
    help: "keep the stream position (loader run and sequence) here at every metrics collection and as the event export moves, so that a restarted exporter counts and exports the events the loader's replay buffer still holds instead of skipping them; empty: a restart joins the stream live",
  },
  {
    flag: 'otlp-endpoint',
    env: 'OTEL_EXPORTER_OTLP_ENDPOINT',
    default: '',
    arg: 'URL',
    help: 'push OTLP to this base URL (http://127.0.0.1:4318: metrics to /v1/metrics, events to /v1/logs; with grpc, http://127.0.0.1:4317), as OTEL_EXPORTER_OTLP_ENDPOINT means; the other OTEL_EXPORTER_OTLP_* variables (headers, certificates, timeout, compression, per-signal endpoints) apply; empty: no OTLP unless OTEL_EXPORTER_OTLP_METRICS_ENDPOINT or _LOGS_ENDPOINT is set',
  },
  {
    flag: 'otlp-protocol',
    env: 'OTEL_EXPORTER_OTLP_PROTOCOL',
    default: 'http/protobuf',
    arg: 'http/protobuf|grpc',
    help: "OTLP transport; http/protobuf retries through short outages, the SDK's grpc exporter does not (the event export retries either way, --otlp-events-retry-for)",
  },
  {
    flag: 'otlp-metrics',
    env: 'FILEWATCHER_EXPORTER_OTLP_METRICS',
    default: 'true',
    arg: 'true|false',
    help: 'push the metrics /metrics serves (file_created_total and the health counters) over OTLP, when an OTLP endpoint is set',
  },
  {
    flag: 'otlp-metrics-interval',
    env: 'OTEL_METRIC_EXPORT_INTERVAL',
    default: '60000',
    arg: 'MILLISECONDS',
    help: 'how often the metrics are pushed over OTLP',
  },
  {
    flag: 'otlp-events',
    env: 'FILEWATCHER_EXPORTER_OTLP_EVENTS',
    default: 'false',
    arg: 'true|false',
    help: 'also export every event as an OTLP log record (file.path, file.directory, file.name, process.pid, user.id, filewatcher.run_id, filewatcher.sequence, ...); needs an OTLP endpoint',
  },
  {
    flag: 'otlp-events-queue-size',
    env: 'FILEWATCHER_EXPORTER_OTLP_EVENTS_QUEUE_SIZE',
    default: '65536',
    arg: 'N',
    help: 'events waiting for export at most; one that finds the queue full is counted in filewatcher_exporter_otlp_events_dropped_total{reason="queue_full"}',
  },
  {
    flag: 'otlp-events-queue-bytes',
    env: 'FILEWATCHER_EXPORTER_OTLP_EVENTS_QUEUE_BYTES',
    default: '67108864',
    arg: 'BYTES',
    help: 'memory the queued events may hold at most (each counted as 2 x (path + comm) + 256 bytes, as the loader counts); past it events are counted as queue_full too',
  },
  {
    flag: 'otlp-events-batch-size',
    env: 'FILEWATCHER_EXPORTER_OTLP_EVENTS_BATCH_SIZE',
    default: '1024',
    arg: 'N',
    help: 'log records per OTLP export (one export in flight)',
  },
  {
    flag: 'otlp-events-batch-delay',
    env: 'FILEWATCHER_EXPORTER_OTLP_EVENTS_BATCH_DELAY',
    default: '200ms',
    arg: 'DURATION',
    help: 'how long a partial batch of log records waits for more before it is sent (a full one goes at once); 0: send at once',
  },
  {
    flag: 'otlp-events-retry-for',
    env: 'FILEWATCHER_EXPORTER_OTLP_EVENTS_RETRY_FOR',
    default: '60s',
    arg: 'DURATION',
    help: 'how long a batch of log records is retried through an outage before its events are counted lost (reason export_failed); meanwhile new events queue',
  },
];

/** ParseResult is either a configuration to run with, or text to print and exit. */
export type ParseResult = { config: Config } | { exit: { code: number; text: string } };

/**
 * parseConfig reads flags (argv, without node and the script) over
 * environment variables over defaults. Errors name the flag or variable at fault.
 */
export function parseConfig(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  version = '',
): ParseResult {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean' },
        ...Object.fromEntries(OPTIONS.map((o) => [o.flag, { type: 'string' as const }])),
      },
    });
  } catch (err) {
    return { exit: { code: 2, text: `${(err as Error).message}\nRun with --help for usage.\n` } };
  }
  if (parsed.values.help === true) return { exit: { code: 0, text: usage() } };
  if (parsed.values.version === true) return { exit: { code: 0, text: `${version}\n` } };

  const values = parsed.values as Record<string, string | undefined>;
  try {
    const get = (flag: string): Setting => {
      const spec = OPTIONS.find((o) => o.flag === flag);
      if (spec === undefined) throw new Error(`internal: no option ${flag}`);
      const fromFlag = values[flag];
      if (fromFlag !== undefined) return new Setting(`--${flag}`, fromFlag);
      const fromEnv = env[spec.env];
      if (fromEnv !== undefined && fromEnv !== '') return new Setting(spec.env, fromEnv);
      return new Setting(`--${flag} default`, spec.default);
    };
    const loader = get('loader').map(parseLoaderAddress);
    const config: Config = {
      loader,
      loaderTls: loaderTls(loader, (flag) => get(flag).map((v) => v)),
      listen: get('listen').map(parseListenAddress),
      metricsPath: get('metrics-path').map((v) => {
        if (!v.startsWith('/')) throw new Error('must start with /');
        return v;
      }),
      webConfigFile: get('web-config-file').map((v) => v),
      pathLabel: get('path-label').oneOf(['full', 'depth', 'none'] as const),
      pathDepth: get('path-depth').integer(1, 4096),
      nameLabel: get('name-label').boolean(),
      serviceLabel: get('service-label').boolean(),
      cgroupRoot: get('cgroup-root').map((v) => {
        if (!v.startsWith('/')) throw new Error('must be an absolute path');
        return v;
      }),
      labelRulesFile: get('label-rules').map((v) => v),
      maxSeries: get('max-series').integer(1, 10_000_000),
      seriesIdleTtlMs: get('series-idle-ttl').duration(0, 366 * 86_400_000),
      batchSize: get('batch-size').integer(1, 4096),
      batchDelayMs: get('batch-delay').duration(1, 60_000),
      overflowPolicy: get('overflow-policy').oneOf([
        'drop-oldest',
        'drop-newest',
        'close',
      ] as const),
      stallTimeoutMs: get('stall-timeout').duration(1_000, 3_600_000),
      statusIntervalMs: get('status-interval').duration(100, 3_600_000),
      reconnectInitialDelayMs: get('reconnect-initial-delay').duration(1, 3_600_000),
      reconnectMaxDelayMs: get('reconnect-max-delay').duration(1, 3_600_000),
      logLevel: get('log-level').oneOf(['debug', 'info', 'warn', 'error'] as const),
      logFormat: get('log-format').oneOf(['text', 'json'] as const),
      stateFile: get('state-file').map((v) => v),
      otlp: undefined,
    };
    config.otlp = otlpConfig(get, env);
    if (config.reconnectMaxDelayMs < config.reconnectInitialDelayMs) {
      throw new Error('--reconnect-max-delay must not be shorter than --reconnect-initial-delay');
    }
    return { config };
  } catch (err) {
    return { exit: { code: 2, text: `${(err as Error).message}\nRun with --help for usage.\n` } };
  }
}

/**
 * otlpConfig reads the --otlp-* settings. OTLP is on when an endpoint is set:
 * --otlp-endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) or a per-signal
 * OTEL_EXPORTER_OTLP_*_ENDPOINT, which the SDK reads itself.
 */
function otlpConfig(
  get: (flag: string) => Setting,
  env: NodeJS.ProcessEnv,
): OtlpConfig | undefined {
  const protocol = get('otlp-protocol').oneOf(['http/protobuf', 'grpc'] as const);
  const endpoint = get('otlp-endpoint').map((v) => {
    if (v === '') return v;
    let url: URL;
    try {
      url = new URL(v);
    } catch {
      throw new Error('must be a URL such as http://127.0.0.1:4318');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new Error('must be an http:// or https:// URL');
    return v;
  });
  const signalEndpoint = (signal: string): boolean =>
    (env[`OTEL_EXPORTER_OTLP_${signal}_ENDPOINT`] ?? '') !== '';
  const metrics = get('otlp-metrics').boolean();
  const events = get('otlp-events').boolean();
  const config: OtlpConfig = {
    endpoint,
    protocol,
    metrics: metrics && (endpoint !== '' || signalEndpoint('METRICS')),
    metricsIntervalMs: get('otlp-metrics-interval').integer(100, 86_400_000),
    events,
    eventsQueueSize: get('otlp-events-queue-size').integer(1, 10_000_000),
    eventsQueueBytes: get('otlp-events-queue-bytes').integer(65_536, 68_719_476_736),
    eventsBatchSize: get('otlp-events-batch-size').integer(1, 65_536),
    eventsBatchDelayMs: get('otlp-events-batch-delay').duration(0, 60_000),
    eventsRetryForMs: get('otlp-events-retry-for').duration(0, 86_400_000),
  };
  if (events && endpoint === '' && !signalEndpoint('LOGS'))
    throw new Error(
      '--otlp-events needs an OTLP endpoint: --otlp-endpoint, OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_LOGS_ENDPOINT',
    );
  return config.metrics || config.events ? config : undefined;
}

/**
 * loaderTls reads the --loader-tls-* settings: none means plaintext; any
 * means TLS, which needs --loader-tls-ca, a TCP loader, and a client
 * certificate and key together or not at all.
 */
function loaderTls(loader: LoaderAddress, get: (flag: string) => string): LoaderTls | undefined {
  const [ca, cert, key, serverName] = [
    'loader-tls-ca',
    'loader-tls-cert',
    'loader-tls-key',
    'loader-tls-server-name',
  ].map(get);
  if (ca === '' && cert === '' && key === '' && serverName === '') return undefined;
  if (loader.kind === 'unix') {
    throw new Error(
      '--loader-tls-* apply to a TCP loader: the unix socket is guarded by its mode and peer credentials',
    );
  }
  if (ca === '')
    throw new Error(
      '--loader-tls-cert, --loader-tls-key and --loader-tls-server-name need --loader-tls-ca',
    );
  if ((cert === '') !== (key === ''))
    throw new Error('--loader-tls-cert and --loader-tls-key go together');
  return {
    ca,
    ...(cert !== '' && { cert, key }),
    ...(serverName !== '' && { serverName }),
  };
}

/** Setting is one raw value and where it came from, for error messages. */
class Setting {
  constructor(
    private readonly source: string,
    private readonly raw: string,
  ) {}

  map<T>(parse: (raw: string) => T): T {
    try {
      return parse(this.raw);
    } catch (err) {
      throw new Error(`${this.source}=${JSON.stringify(this.raw)}: ${(err as Error).message}`);
    }
  }

  oneOf<T extends string>(choices: readonly T[]): T {
    return this.map((v) => {
      if (!(choices as readonly string[]).includes(v))
        throw new Error(`must be one of ${choices.join(', ')}`);
      return v as T;
    });
  }

  integer(min: number, max: number): number {
    return this.map((v) => {
      if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) {
        throw new Error(`must be an integer from ${min} to ${max}`);
      }
      return Number(v);
    });
  }

  boolean(): boolean {
    return this.map((v) => {
      if (['true', '1', 'yes', 'on'].includes(v)) return true;
      if (['false', '0', 'no', 'off'].includes(v)) return false;
      throw new Error('must be true or false');
    });
  }

  duration(minMs: number, maxMs: number): number {
    return this.map((v) => {
      const ms = parseDuration(v);
      if (ms < minMs || ms > maxMs) throw new Error(`must be from ${minMs}ms to ${maxMs}ms`);
      return ms;
    });
  }
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** parseDuration reads "250ms", "1.5s", "2m", "1h" (Go-style, one unit), or "0", into milliseconds. */
export function parseDuration(text: string): number {
  if (text === '0') return 0;
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text);
  if (match === null) throw new Error('must be a duration such as 500ms, 30s or 2m');
  return Math.round(Number(match[1]) * UNITS[match[2]]);
}

/** usage is the --help text. */
export function usage(): string {
  const lines = [
    'Usage: filewatcher-exporter [options]',
    '',
    "Subscribes to filewatcher-loader's event stream and serves the file_created_total",
    'counter (labels path and name) and its own health as Prometheus metrics.',
    '',
    'Options (each also settable by the environment variable shown; flags win):',
  ];
  for (const o of OPTIONS) {
    lines.push(
      `  --${o.flag} ${o.arg}`,
      `      ${o.help}`,
      `      env ${o.env}, default ${o.default}`,
    );
  }
  lines.push(
    '  -h, --help',
    '      print this help and exit',
    '  --version',
    '      print the version and exit',
    '',
  );
  return lines.join('\n');
}
