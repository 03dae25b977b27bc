import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LossDeltas, SequenceTracker } from './sequence';

describe('SequenceTracker', () => {
  it('takes the first range as the baseline (a live start is not loss)', () => {
    const t = new SequenceTracker();
    assert.equal(t.observe(500, 500), 0);
    assert.equal(t.last, 500);
  });

  it('finds numbers that were skipped without a gap', () => {
    const t = new SequenceTracker();
    const results = [
      t.observe(1, 10), // events 1..10
      t.observe(11, 20), // a reported gap covers 11..20
      t.observe(21, 21),
      t.observe(25, 30), // 22..24 missing
      t.observe(31, 31),
    ];
    assert.deepEqual(results, [0, 0, 0, 3, 0]);
    assert.equal(t.last, 31);
  });

  it('reports regressions and does not move backwards', () => {
    const t = new SequenceTracker();
    t.observe(1, 10);
    assert.equal(t.observe(5, 5), -1);
    assert.equal(t.last, 10);
    assert.equal(t.observe(11, 11), 0);
  });

  it('accounts a run that began while following another from its first number', () => {
    const t = new SequenceTracker();
    t.observe(1, 100);
    t.expectFrom(1);
    assert.equal(t.startAt(1), 0, 'read from the start: nothing skipped');
    assert.equal(t.observe(1, 5), 0);
    t.expectFrom(1);
    assert.equal(t.startAt(40), 39, 'joined live at 40: 1..39 were missed');
  });

  it('starts over after reset (a new loader run)', () => {
    const t = new SequenceTracker();
    t.observe(1, 100);
    t.reset();
    assert.equal(t.known, false);
    assert.equal(t.observe(1, 1), 0);
    assert.equal(t.last, 1);
  });
});

describe('LossDeltas', () => {
  it('turns cumulative values into increments, per run', () => {
    const d = new LossDeltas();
    assert.equal(d.delta('ringbuf_full', 5), 0, 'the run this process joins: a baseline');
    assert.deepEqual([d.delta('ringbuf_full', 5), d.delta('ringbuf_full', 12)], [0, 7]);
    assert.equal(d.delta('ringbuf_full', 3), 0, 'a value that went down is ignored');
    assert.equal(d.delta('ringbuf_full', 13), 1);
    d.newRun();
    assert.equal(d.delta('ringbuf_full', 4), 4, 'a run that began since counts from zero');
    assert.equal(d.delta('kprobe_missed', 2), 2);
  });
});
