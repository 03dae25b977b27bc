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

/**
 * Series is one label set of file_created_total: its exposition line up to
 * the value, its count, and its place in the recency list.
 */
interface Series {
  /** `file_created_total{name="...",path="...",otel_scope_name="filewatcher"} ` */
  readonly prefix: string;
  /** Its labels as attributes, for OTLP (collect). */
  readonly attributes: Attributes;
  count: number;
  /** count when the series' line was last rendered into a scrape. */
  shown: number;
  /** When it last counted an event (clock milliseconds). */
  lastUsed: number;
  /** The LabelMapper keys that lead here: one, save for aliases (see admit). */
  readonly keys: string[];
  /** Neighbours in the recency list: newer is towards the most recently used. */
  newer: Series | undefined;
  older: Series | undefined;
}

/** HEADER introduces file_created_total in the exposition. */
const HEADER = `# HELP ${FILE_CREATED} Number of files created\n# TYPE ${FILE_CREATED} counter\n`;

/** SeriesTableOptions bound file_created_total. */
export interface SeriesTableOptions {
  /**
   * The maximum number of distinct label sets at any moment, the overflow
   * series not included (byte strings that map to a label set already
   * admitted count as well; in practice they do not occur).
   */
  limit: number;
  /** A series that counted nothing for this long is dropped; 0: never. @default 0 */
  idleTtlMs?: number;
  /** Milliseconds, monotonic enough; tests pass a simulated clock. @default Date.now */
  clock?: () => number;
}

/**
 * SeriesTable is file_created_total: its cardinality budget, its counts and
 * its exposition.
 *
 * It holds the label sets that are active now, at most `limit` of them:
 * - a series that counted nothing for idleTtlMs expires (it leaves the
 *   exposition, and Prometheus marks it stale);
 * - when a new label set arrives and the table is full, the least recently
 *   used series is evicted to make room.
 * Either way a series goes only once its latest count has been rendered into
 * a scrape, so no increment disappears unseen; when the least recently used
 * series has counted since the last scrape (everything is busier than the
 * scrapes), the new label set is counted in the single overflow series
 * instead. A label set that comes back after a scrape has shown it gone
 * starts a new series from 0 (Prometheus saw it go stale: increase() and
 * rate() count from its return); before that, its events overflow. With one
 * scraper, every event is in a count that scraper saw (pinned by a
 * randomized test); a second scraper may miss a drop and see a reset. An
 * OTLP push (counts) is a collection like a scrape: run both, and each may
 * miss the last counts of a series the other saw before it was dropped.
 *
 * It renders itself rather than going through the OpenTelemetry SDK, unlike
 * the exporter's other (small) metrics: at 100k series a collection and
 * serialization by the SDK took ~1.3 s of one uninterrupted event-loop turn
 * (make bench, before this table rendered itself), during which no event was
 * read. Here a series' labels are escaped once, when it is admitted, record()
 * bumps a number and moves the series to the front of the recency list, and
 * chunks() hands the exposition out in pieces so that the caller can yield to
 * the event loop between them. The text is the SDK's, byte for byte (pinned by
 * a test against its serializer).
 */
export class SeriesTable {
  /** Series by LabelMapper key, the per-event lookup. */
  private readonly index = new Map<string, Series>();
  /** Series by rendered labels, in admission order: what a scrape renders. */
  private readonly byPrefix = new Map<string, Series>();
  /** The recency list: newest is the most recently used series, oldest the least. */
  private newest: Series | undefined;
  private oldest: Series | undefined;
  private readonly overflowSeries: Series = {
    prefix: samplePrefix(OVERFLOW_ATTRIBUTES),
    attributes: OVERFLOW_ATTRIBUTES,
    count: 0,
    shown: 0,
    lastUsed: 0,
    keys: [],
    newer: undefined,
    older: undefined,
  };
  readonly limit: number;
  readonly idleTtlMs: number;
  private readonly clock: () => number;
  private expiredCount = 0;
  private evictedCount = 0;
  /**
   * Keys of series dropped since the last scrape. Until a scrape has shown a
   * series gone, its label set is not admitted again (its events overflow):
   * otherwise the scraper would see 5, then 7 of a series that restarted
   * from 0 and took 7 events, and undercount. At most `limit` keys: a series
   * admitted since the last scrape has an unseen count and is never dropped.
   */
  private readonly dropped = new Set<string>();

  constructor(
    private readonly mapper: LabelMapper,
    options: SeriesTableOptions,
  ) {
    this.limit = options.limit;
    this.idleTtlMs = options.idleTtlMs ?? 0;
    this.clock = options.clock ?? Date.now;
  }

  /**
   * record counts one created file, made by a task in cgroup cgroupId. now
   * is the clock's time (callers that record a batch read the clock once
   * for all of it).
   */
  record(path: Buffer, flags: number, now = this.clock(), cgroupId = 0): void {
    const key = this.mapper.key(path, flags, cgroupId);
    let s = this.index.get(key);
    if (s === undefined) s = this.admit(key, path, flags, now, cgroupId);
    s.count++;
    if (s === this.overflowSeries) return;
    s.lastUsed = now;
    if (s !== this.newest) {
      this.unlink(s);
      this.pushNewest(s);
    }
  }

  /** size is the number of distinct label sets held now (the overflow series not included). */
  get size(): number {
    return this.byPrefix.size;
  }

  /** overflowEvents is how many events were counted in the overflow series. */
  get overflowEvents(): number {
    return this.overflowSeries.count;
  }

  /** expired is how many series were dropped for being idle longer than idleTtlMs. */
  get expired(): number {
    return this.expiredCount;
  }

  /** evicted is how many series were dropped, least recently used first, to admit new ones. */
  get evicted(): number {
    return this.evictedCount;
  }

  /**
   * chunks yields the exposition of file_created_total (HELP, TYPE, one line
   * per series, the overflow series last once it has counted anything) in
   * strings of about chunkBytes. It first expires idle series, then renders
   * the series held at that moment; each line carries the count at the moment
   * its chunk is built. Series admitted after the first chunk wait for the
   * next scrape; one dropped meanwhile is still rendered, once.
   */
  *chunks(chunkBytes = 64 * 1024): Generator<string, void, void> {
    let chunk = HEADER;
    for (const s of this.collect()) {
      chunk += s.prefix + String(s.count) + '\n';
      if (chunk.length >= chunkBytes) {
        yield chunk;
        chunk = '';
      }
    }
    if (chunk !== '') yield chunk;
  }

  /**
   * counts is a collection as OTLP pushes it: every series held and its
   * count, the overflow series last once it has counted anything. Like a
   * scrape, it shows the counts (series may then be dropped) and every
   * dropped series gone.
   */
  counts(): { attributes: Attributes; count: number }[] {
    return [...this.collect()].map((s) => ({ attributes: s.attributes, count: s.count }));
  }

  /**
   * collect is what a scrape and an OTLP push share: it expires idle
   * series, then yields the series held at that moment, marking each count
   * seen as it goes, and the overflow series. Series admitted meanwhile wait
   * for the next collection; one dropped meanwhile is still yielded, once.
   */
  private *collect(): Generator<Series, void, void> {
    this.expire(this.clock());
    // This collection shows every dropped series gone: they may come back.
    this.dropped.clear();
    const held = [...this.byPrefix.values()];
    for (const s of held) {
      s.shown = s.count;
      yield s;
    }
    if (this.overflowSeries.count > 0) yield this.overflowSeries;
  }

  /**
   * expire drops the series idle for idleTtlMs or more whose latest count has
   * been rendered, oldest first. The recency list is ordered by last use, so
   * the walk stops at the first series that is not idle.
   */
  private expire(now: number): void {
    if (this.idleTtlMs <= 0) return;
    const before = now - this.idleTtlMs;
    let s = this.oldest;
    while (s !== undefined && s.lastUsed <= before) {
      const next = s.newer;
      if (s.shown === s.count) {
        this.remove(s);
        this.expiredCount++;
      }
      s = next;
    }
  }

  private admit(key: string, path: Buffer, flags: number, now: number, cgroupId: number): Series {
    if (this.dropped.has(key)) return this.overflowSeries;
    if (this.index.size >= this.limit) {
      this.expire(now);
      // The least recently used series goes, if a scrape has seen its count.
      // If it has counted since (then so has every other: they were all used
      // more recently), the new label set goes to the overflow series. Not
      // stored: a refused label set costs no memory, however many there are.
      const lru = this.oldest;
      if (this.index.size >= this.limit) {
        if (lru === undefined || lru.shown !== lru.count) return this.overflowSeries;
        this.remove(lru);
        this.evictedCount++;
      }
    }
    // Distinct keys can render to the same labels (a name that literally
    // contains "\xff" and one with the byte 0xff; "//f" and "/f"): they share
    // a series, since an exposition must not repeat one. Such aliases count
    // against the limit like series, which keeps the index bounded too.
    const attributes = this.mapper.labels(path, flags, cgroupId);
    const prefix = samplePrefix(attributes);
    let s = this.byPrefix.get(prefix);
    if (s === undefined) {
      s = {
        prefix,
        attributes,
        count: 0,
        shown: 0,
        lastUsed: now,
        keys: [],
        newer: undefined,
        older: undefined,
      };
      this.byPrefix.set(prefix, s);
      this.pushNewest(s);
    }
    s.keys.push(key);
    this.index.set(key, s);
    return s;
  }

  /** remove drops a series and every key that leads to it. */
  private remove(s: Series): void {
    this.unlink(s);
    this.byPrefix.delete(s.prefix);
    for (const k of s.keys) {
      this.index.delete(k);
      this.dropped.add(k);
    }
  }

  private unlink(s: Series): void {
    if (s.newer === undefined) this.newest = s.older;
    else s.newer.older = s.older;
    if (s.older === undefined) this.oldest = s.newer;
    else s.older.newer = s.newer;
    s.newer = s.older = undefined;
  }

  private pushNewest(s: Series): void {
    s.older = this.newest;
    s.newer = undefined;
    if (this.newest === undefined) this.oldest = s;
    else this.newest.newer = s;
    this.newest = s;
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
