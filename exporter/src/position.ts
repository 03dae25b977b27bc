import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import type { LossCounters__Output } from './generated/filewatcher/v1/LossCounters';
import type { Logger } from './log';

/**
 * StreamPosition is where the exporter stands in the loader's stream: the
 * run it follows, the last sequence number it accounted for, and the loader's
 * loss counters as it last saw them (LossDeltas' baseline).
 *
 * The exporter saves it (--state-file) through a PositionKeeper, which says
 * when and which position.
 */
export interface StreamPosition {
  runId: string;
  lastSequence: number;
  loss: Partial<Record<keyof LossCounters__Output, number>>;
}

const VERSION = 1;

/**
 * loadPosition reads a position file. It returns undefined when the file
 * does not exist, and throws, saying what is wrong, when it is not one.
 */
export function loadPosition(path: string): StreamPosition | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: not JSON: ${(err as Error).message}`);
  }
  const o = raw as Record<string, unknown>;
  const ok =
    typeof o === 'object' &&
    o !== null &&
    o.version === VERSION &&
    typeof o.run_id === 'string' &&
    o.run_id !== '' &&
    Number.isSafeInteger(o.last_sequence) &&
    (o.last_sequence as number) >= 0 &&
    typeof o.loss === 'object' &&
    o.loss !== null &&
    Object.values(o.loss).every((v) => Number.isSafeInteger(v) && (v as number) >= 0);
  if (!ok) {
    throw new Error(
      `${path}: not a position file of version ${VERSION} ({"version","run_id","last_sequence","loss"})`,
    );
  }
  return {
    runId: o.run_id as string,
    lastSequence: o.last_sequence as number,
    loss: o.loss as StreamPosition['loss'],
  };
}

/**
 * savePosition replaces the position file atomically (a temporary file
 * renamed over it), so a crash leaves the old position or the new one.
 */
export function savePosition(path: string, position: StreamPosition): void {
  const text = JSON.stringify({
    version: VERSION,
    run_id: position.runId,
    last_sequence: position.lastSequence,
    loss: position.loss,
  });
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, `${text}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/**
 * PositionKeeper is the one place that decides which stream position is
 * saved, and when. Each consumer of the stream has a position: the metrics
 * (as of the start of the latest collection: a scrape of /metrics or an OTLP
 * push) and, with --otlp-events, the event export (every event up to it
 * exported or counted lost). The saved position is the earliest of them, so
 * that the next exporter process resumes where the slowest consumer stood:
 * the events the loader's replay buffer still holds are counted and exported
 * by the new process (Prometheus reads its counters from zero as a reset),
 * not skipped. What the dead process handled after that was never seen and
 * is handled again (at least once, never lost).
 *
 * It saves when the metrics are collected, and when the event export moves
 * (at most once per minIntervalMs: a move within it is saved at its end),
 * and once more at shutdown (flush). When nothing collects the metrics (no
 * scrapes, no OTLP metrics), the event export alone decides.
 */
export class PositionKeeper {
  private metricsAt: StreamPosition | undefined;
  private eventsAt: { runId: string; lastSequence: number } | undefined;
  /** Runs in the order they were first seen: a consumer in an earlier run is behind. */
  private readonly runOrder = new Map<string, number>();
  private saved = '';
  private failing = false;
  private lastSave = 0;
  private pending: NodeJS.Timeout | undefined;

  constructor(
    private readonly path: string,
    private readonly log: Logger,
    private readonly current: () => StreamPosition | undefined,
    /** undefined: events are not exported; else whether the export has nothing pending. */
    private readonly eventsIdle: (() => boolean) | undefined,
    initial: StreamPosition | undefined,
    private readonly minIntervalMs = 1000,
  ) {
    if (initial !== undefined) {
      this.seen(initial.runId);
      this.eventsAt = { runId: initial.runId, lastSequence: initial.lastSequence };
    }
  }

  /** metricsCollected records that a collection of the metrics starts now. */
  metricsCollected(): void {
    const p = this.current();
    if (p === undefined) return;
    this.seen(p.runId);
    this.metricsAt = p;
    this.save();
  }

  /**
   * eventsOffered records the first event handed to the event export in a
   * run it had none of yet: what came before it is not the export's concern.
   */
  eventsOffered(runId: string, firstSequence: number): void {
    this.seen(runId);
    const e = this.eventsAt;
    if (e === undefined || this.order(runId) > this.order(e.runId))
      this.eventsAt = { runId, lastSequence: firstSequence - 1 };
  }

  /** eventsSettled records that every event up to (runId, sequence) was exported or counted lost. */
  eventsSettled(runId: string, sequence: number): void {
    this.seen(runId);
    // The tail of a run the stream has left cannot be resumed: the newer run's position stands.
    if (this.eventsAt !== undefined && this.order(runId) < this.order(this.eventsAt.runId)) return;
    this.eventsAt = { runId, lastSequence: sequence };
    const wait = this.lastSave + this.minIntervalMs - Date.now();
    if (wait <= 0) this.save();
    else if (this.pending === undefined) {
      // Saved a moment ago: save again once the interval is over.
      this.pending = setTimeout(() => {
        this.pending = undefined;
        this.save();
      }, wait);
      this.pending.unref();
    }
  }

  /** flush saves what is due now (at shutdown, after the last export). */
  flush(): void {
    clearTimeout(this.pending);
    this.pending = undefined;
    this.save();
  }

  /** target is the position to save: the earliest of the consumers' (see the class comment). */
  target(): StreamPosition | undefined {
    const m = this.metricsAt;
    if (this.eventsIdle === undefined) return m;
    // Nothing pending: every event the stream delivered is settled.
    const e = this.eventsIdle() ? this.current() : this.eventsAt && { ...this.eventsAt, loss: {} };
    if (e === undefined) return m;
    if (m === undefined) return e; // nothing reads the metrics: the event export decides
    const em = this.order(e.runId);
    const mm = this.order(m.runId);
    if (em > mm) return m;
    if (em < mm) return e;
    return { ...m, lastSequence: Math.min(m.lastSequence, e.lastSequence) };
  }

  private order(runId: string): number {
    return this.runOrder.get(runId) ?? 0;
  }

  private seen(runId: string): void {
    if (!this.runOrder.has(runId)) this.runOrder.set(runId, this.runOrder.size);
  }

  private save(): void {
    if (this.path === '') return;
    const position = this.target();
    if (position === undefined) return;
    const key = JSON.stringify(position);
    if (key === this.saved) return;
    this.lastSave = Date.now();
    try {
      savePosition(this.path, position);
      this.saved = key;
      if (this.failing)
        this.log.info('saving the stream position works again', { state_file: this.path });
      this.failing = false;
    } catch (err) {
      if (!this.failing)
        this.log.warn('cannot save the stream position', {
          state_file: this.path,
          error: String(err),
        });
      this.failing = true;
    }
  }
}
