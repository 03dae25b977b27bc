import type { Attributes } from '@opentelemetry/api';
import type { LabelMapper } from './labels';
import { METER_NAME } from './metrics';

/** FILE_CREATED is the counter of the original design. */
export const FILE_CREATED = 'file_created_total';

/**
 * OVERFLOW_ATTRIBUTES label the one series that counts events whose label set
 * did not fit under the cap. It is OpenTelemetry's own overflow marker, so it
 * is exported as otel_metric_overflow="true".
 */
export const OVERFLOW_ATTRIBUTES: Attributes = Object.freeze({ 'otel.metric.overflow': true });

/** Series is one label set of file_created_total: its exposition line up to the value, and its count. */
interface Series {
  /** `file_created_total{name="...",path="...",otel_scope_name="filewatcher"} ` */
  readonly prefix: string;
  count: number;
}

/** HEADER introduces file_created_total in the exposition. */
const HEADER = `# HELP ${FILE_CREATED} Number of files created\n# TYPE ${FILE_CREATED} counter\n`;

/**
 * SeriesTable is file_created_total: its cardinality budget, its counts and
 * its exposition.
 *
 * It admits at most `limit` distinct label sets for the life of the process;
 * events of any other label set are counted in a single overflow series. This
 * bounds memory whatever is created.
 *
 * It renders itself rather than going through the OpenTelemetry SDK, unlike
 * the exporter's other (small) metrics: at 100k series a collection and
 * serialization by the SDK took ~1.3 s of one uninterrupted event-loop turn
 * (make bench, before this table rendered itself), during which no event was
 * read. Here a series' labels are
 * escaped once, when it is admitted, record() only bumps a number, and
 * chunks() hands the exposition out in pieces so that the caller can yield to
 * the event loop between them. The text is the SDK's, byte for byte (pinned by
 * a test against its serializer).
 */
export class SeriesTable {
  /** Series by LabelMapper key, the per-event lookup. */
  private readonly index = new Map<string, Series>();
  /** Series by rendered labels, consulted when a key is first seen. */
  private readonly byPrefix = new Map<string, Series>();
  /** The admitted series, in admission order; never shrinks. */
  private readonly list: Series[] = [];
  private readonly overflowSeries: Series = { prefix: samplePrefix(OVERFLOW_ATTRIBUTES), count: 0 };

  constructor(
    private readonly mapper: LabelMapper,
    /**
     * The maximum number of distinct label sets, the overflow series not
     * included (byte strings that map to a label set already admitted count
     * as well; in practice they do not occur).
     */
    readonly limit: number,
  ) {}

  /** record counts one created file. */
  record(path: Buffer, flags: number): void {
    const key = this.mapper.key(path, flags);
    let s = this.index.get(key);
    if (s === undefined) s = this.admit(key, path, flags);
    s.count++;
  }

  /** size is the number of distinct label sets admitted (the overflow series not included). */
  get size(): number {
    return this.list.length;
  }

  /** overflowEvents is how many events were counted in the overflow series. */
  get overflowEvents(): number {
    return this.overflowSeries.count;
  }

  /**
   * chunks yields the exposition of file_created_total (HELP, TYPE, one line
   * per series, the overflow series last once it has counted anything) in
   * strings of about chunkBytes. Each line carries the count at the moment
   * its chunk is built; series admitted after the first chunk wait for the
   * next scrape.
   */
  *chunks(chunkBytes = 64 * 1024): Generator<string, void, void> {
    const n = this.list.length;
    let chunk = HEADER;
    for (let i = 0; i < n; i++) {
      const s = this.list[i];
      chunk += s.prefix + String(s.count) + '\n';
      if (chunk.length >= chunkBytes) {
        yield chunk;
        chunk = '';
      }
    }
    const o = this.overflowSeries;
    if (o.count > 0) chunk += o.prefix + String(o.count) + '\n';
    if (chunk !== '') yield chunk;
  }

  private admit(key: string, path: Buffer, flags: number): Series {
    if (this.index.size >= this.limit) {
      // Not stored: a refused label set costs no memory, however many there are.
      return this.overflowSeries;
    }
    // Distinct keys can render to the same labels (a name that literally
    // contains "\xff" and one with the byte 0xff; "//f" and "/f"): they share
    // a series, since an exposition must not repeat one. Such aliases count
    // against the limit like series, which keeps the index bounded too.
    const prefix = samplePrefix(this.mapper.labels(path, flags));
    let s = this.byPrefix.get(prefix);
    if (s === undefined) {
      s = { prefix, count: 0 };
      this.byPrefix.set(prefix, s);
      this.list.push(s);
    }
    this.index.set(key, s);
    return s;
  }
}

/**
 * samplePrefix renders a series' exposition line up to its value, as
 * OpenTelemetry's Prometheus serializer does: labels in attribute order,
 * names with every character outside [a-zA-Z0-9_] replaced by '_', values with
 * backslash, newline and double quote escaped, then the scope label.
 */
export function samplePrefix(attributes: Attributes): string {
  let labels = '';
  for (const [key, value] of Object.entries(attributes)) {
    labels += `${labelName(key)}="${escapeLabelValue(typeof value === 'string' ? value : JSON.stringify(value))}",`;
  }
  return `${FILE_CREATED}{${labels}otel_scope_name="${escapeLabelValue(METER_NAME)}"} `;
}

function labelName(key: string): string {
  return key.replace(/[^a-z0-9_]/gi, '_').replace(/_{2,}/g, '_');
}

function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}
