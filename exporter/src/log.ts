/** LogLevel orders log lines by importance. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** LogFormat is logfmt ("text", like the loader's default) or one JSON object per line. */
export type LogFormat = 'text' | 'json';

const LEVELS: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** LogFields are the key/value pairs of a structured log line. */
export type LogFields = Record<string, string | number | boolean | undefined | null>;

/**
 * Logger writes structured log lines (time, level, msg, fields) to stderr, so
 * stdout stays free and journald or a container runtime collects them.
 */
export class Logger {
  constructor(
    private readonly level: LogLevel = 'info',
    private readonly format: LogFormat = 'text',
    private readonly write: (line: string) => void = (line) => process.stderr.write(line),
    private readonly fields: LogFields = {},
  ) {}

  /** with returns a logger that adds fields to every line. */
  with(fields: LogFields): Logger {
    return new Logger(this.level, this.format, this.write, { ...this.fields, ...fields });
  }

  debug(msg: string, fields?: LogFields): void {
    this.log('debug', msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.log('info', msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.log('warn', msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.log('error', msg, fields);
  }

  /** enabled says whether lines of this level are written. */
  enabled(level: LogLevel): boolean {
    return LEVELS[level] >= LEVELS[this.level];
  }

  private log(level: LogLevel, msg: string, fields: LogFields = {}): void {
    if (!this.enabled(level)) return;
    const record: LogFields = {
      time: new Date().toISOString(),
      level,
      msg,
      ...this.fields,
      ...fields,
    };
    this.write(this.format === 'json' ? JSON.stringify(record) + '\n' : logfmt(record));
  }
}

function logfmt(record: LogFields): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(record)) {
    if (value === undefined) continue;
    const text = String(value);
    parts.push(/^[^\s"=\\]+$/.test(text) ? `${key}=${text}` : `${key}=${JSON.stringify(text)}`);
  }
  return parts.join(' ') + '\n';
}
