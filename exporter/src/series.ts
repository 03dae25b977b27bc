import type { Attributes } from '@opentelemetry/api';
import type { LabelMapper } from './labels';

/**
 * OVERFLOW_ATTRIBUTES label the one series that counts events whose label set
 * did not fit under the cap. It is OpenTelemetry's own overflow marker, so it
 * is exported as otel_metric_overflow="true".
 */
export const OVERFLOW_ATTRIBUTES: Attributes = Object.freeze({ 'otel.metric.overflow': true });

/** Series is one label set of file_created_total and its not yet exported count. */
interface Series {
  readonly attributes: Attributes;
  pending: number;
}

/** AddFunction is Counter.add: it receives each series' accumulated count. */
export type AddFunction = (value: number, attributes: Attributes) => void;

/**
 * SeriesTable is the cardinality budget of file_created_total. It admits at
 * most `limit` distinct label sets for the life of the process; events of any
 * other label set are counted in a single overflow series. This bounds memory
 * whatever is created, which OpenTelemetry cannot do for us: its
 * aggregationCardinalityLimit applies per collection, and a cumulative counter
 * never forgets an attribute set.
 *
 * It also aggregates: record() only bumps a number, and flush() hands each
 * touched series' sum to Counter.add() once, right before a collection. That
 * keeps the ~2 µs cost of Counter.add() per series and scrape, not per event.
 */
export class SeriesTable {
  private readonly series = new Map<string, Series>();
  private readonly touched: Series[] = [];
  private readonly overflowSeries: Series = { attributes: OVERFLOW_ATTRIBUTES, pending: 0 };
  private overflowTotal = 0;

  constructor(
    private readonly mapper: LabelMapper,
    /** The maximum number of distinct label sets, the overflow series not included. */
    readonly limit: number,
  ) {}

  /** record counts one created file. */
  record(path: Buffer, flags: number): void {
    const key = this.mapper.key(path, flags);
    let s = this.series.get(key);
    if (s === undefined) s = this.admit(key, path, flags);
    if (s.pending === 0) this.touched.push(s);
    s.pending++;
  }

  /** flush passes the counts recorded since the last flush to add, one call per series. */
  flush(add: AddFunction): void {
    for (const s of this.touched) {
      add(s.pending, s.attributes);
      s.pending = 0;
    }
    this.touched.length = 0;
  }

  /** size is the number of distinct label sets admitted (the overflow series not included). */
  get size(): number {
    return this.series.size;
  }

  /** overflowEvents is how many events were counted in the overflow series. */
  get overflowEvents(): number {
    return this.overflowTotal;
  }

  private admit(key: string, path: Buffer, flags: number): Series {
    if (this.series.size >= this.limit) {
      // Not stored: a refused label set costs no memory, however many there are.
      this.overflowTotal++;
      return this.overflowSeries;
    }
    const s: Series = { attributes: this.mapper.labels(path, flags), pending: 0 };
    this.series.set(key, s);
    return s;
  }
}
