import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import type { LossCounters__Output } from './generated/filewatcher/v1/LossCounters';

/**
 * StreamPosition is where the exporter stands in the loader's stream: the
 * run it follows, the last sequence number it accounted for, and the loader's
 * loss counters as it last saw them (LossDeltas' baseline).
 *
 * The exporter saves it (--state-file) each time a scrape collects the
 * metrics, as of the start of that scrape, so that the next exporter process
 * resumes right after what Prometheus has seen: the events the loader's
 * replay buffer still holds are counted by the new process (Prometheus
 * reads its counters from zero as a reset), not skipped. What the dead
 * process counted after the last scrape was never seen and is counted again
 * by the next; an event that arrived while that scrape was being written may
 * be counted by both (at least once, never lost).
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
