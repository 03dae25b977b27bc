import type { LossCounters__Output } from './generated/filewatcher/v1/LossCounters';

/**
 * SequenceTracker checks that a run's sequence numbers arrive dense: every
 * number is either delivered as an event or covered by an in-band Gap. What
 * is neither is loss the loader did not report, found by the stream itself.
 */
export class SequenceTracker {
  private next: number | undefined;

  /** reset forgets the run: the next range observed starts a new baseline. */
  reset(): void {
    this.next = undefined;
  }

  /**
   * expectFrom starts a run that must be accounted for from `first` (1: a
   * loader run that began while we followed the previous one): whatever
   * arrives later than first without a gap is missing, not a baseline.
   */
  expectFrom(first: number): void {
    this.next = first;
  }

  /** last is the highest sequence number observed in this run, or 0. */
  get last(): number {
    return this.next === undefined ? 0 : this.next - 1;
  }

  /** known says whether a baseline exists (something of this run was observed). */
  get known(): boolean {
    return this.next !== undefined;
  }

  /**
   * startAt moves the baseline to start, the first number a new stream
   * accounts for. It returns how many numbers between the last observed and
   * start the stream skipped (0 for a first baseline or a resume).
   */
  startAt(start: number): number {
    const next = this.next;
    if (next !== undefined && start <= next) return 0;
    this.next = start;
    return next === undefined ? 0 : start - next;
  }

  /**
   * observe accounts for the range [first, last] (an event, or a gap). It
   * returns how many numbers before it were skipped without explanation, or
   * -1 if the range starts before numbers already observed (a regression).
   */
  observe(first: number, last: number): number {
    const next = this.next;
    if (next === undefined || first === next) {
      this.next = Math.max(next ?? 0, last + 1);
      return 0;
    }
    if (first > next) {
      this.next = last + 1;
      return first - next;
    }
    this.next = Math.max(next, last + 1);
    return -1;
  }
}

/**
 * LOSS_FIELDS are LossCounters' loss fields and the `reason` label each is
 * exported with. Not kprobe_missed: those are missed opens, an upper bound on
 * creations missed, exported on their own (filewatcher_loader_opens_missed_total).
 */
export const LOSS_FIELDS = [
  ['ringbuf_full', 'ringbuf_full'],
  ['read_errors', 'read_error'],
  ['subscriber_dropped', 'subscriber_overflow'],
  ['program_skipped', 'program_skipped'],
  ['unexplained', 'unexplained'],
  ['loader_restart', 'loader_restart'],
] as const satisfies ReadonlyArray<readonly [keyof LossCounters__Output, string]>;

type CounterName = keyof LossCounters__Output;

/**
 * LossDeltas turns the loader's cumulative, per-run LossCounters into
 * increments for our own counters, which must keep growing across loader
 * restarts. A run that began while we followed the previous one counts from
 * zero. The first run this process sees is joined mid-way: its values so far
 * are a baseline, not increments (they were the last exporter's to count,
 * and counting them again would show every exporter restart as a burst of
 * loss). A value that went down within a run is ignored (it cannot be newer
 * information).
 */
export class LossDeltas {
  private seen = new Map<CounterName, number>();
  private joined = true;

  /** newRun forgets the previous run's values: the next run counts from zero. */
  newRun(): void {
    this.seen = new Map();
    this.joined = false;
  }

  /** snapshot is the values last seen, to restore in another process. */
  snapshot(): Partial<Record<CounterName, number>> {
    return Object.fromEntries(this.seen);
  }

  /**
   * restore takes a snapshot of another process that followed the same run:
   * growth past those values is counted; a counter it lacks is joined.
   */
  restore(values: Partial<Record<CounterName, number>>): void {
    this.seen = new Map(Object.entries(values) as Array<[CounterName, number]>);
    this.joined = true;
  }

  /** delta returns how much `name` grew since the last call, and remembers value. */
  delta(name: CounterName, value: number): number {
    if (this.joined && !this.seen.has(name)) {
      this.seen.set(name, value);
      return 0;
    }
    const before = this.seen.get(name) ?? 0;
    if (value <= before) return 0;
    this.seen.set(name, value);
    return value - before;
  }
}
