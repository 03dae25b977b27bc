import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { loadPosition, savePosition } from './position';
import { LossDeltas } from './sequence';

describe('stream position file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fw-position-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('round-trips, replaces atomically and is private', () => {
    const file = path.join(dir, 'p.json');
    assert.equal(loadPosition(file), undefined, 'no file yet');
    savePosition(file, { runId: 'r1', lastSequence: 41, loss: { ringbuf_full: 3 } });
    savePosition(file, { runId: 'r1', lastSequence: 42, loss: { ringbuf_full: 5 } });
    assert.deepEqual(loadPosition(file), {
      runId: 'r1',
      lastSequence: 42,
      loss: { ringbuf_full: 5 },
    });
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.deepEqual(fs.readdirSync(dir), ['p.json'], 'no temporary file left');
  });

  it('says what is wrong with a file that is not a position', () => {
    const file = path.join(dir, 'bad.json');
    for (const [text, why] of [
      ['{', /not JSON/],
      ['{"version":2,"run_id":"r","last_sequence":1,"loss":{}}', /version 1/],
      ['{"version":1,"run_id":"","last_sequence":1,"loss":{}}', /version 1/],
      ['{"version":1,"run_id":"r","last_sequence":-1,"loss":{}}', /version 1/],
      ['{"version":1,"run_id":"r","last_sequence":1,"loss":{"read_errors":"x"}}', /version 1/],
    ] as const) {
      fs.writeFileSync(file, text);
      assert.throws(() => loadPosition(file), why, text);
    }
  });

  it("restores the loader's loss counters so that only growth since is counted", () => {
    const before = new LossDeltas();
    assert.equal(before.delta('ringbuf_full', 10), 0, 'joined: a baseline');
    assert.equal(before.delta('ringbuf_full', 12), 2);
    const next = new LossDeltas();
    next.restore(before.snapshot());
    assert.equal(next.delta('ringbuf_full', 20), 8, 'growth while no exporter ran');
    assert.equal(next.delta('read_errors', 7), 0, 'a counter not saved is joined');
    assert.equal(next.delta('read_errors', 9), 2);
  });
});
