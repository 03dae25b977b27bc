import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Backoff } from './backoff';

describe('Backoff', () => {
  it('doubles up to the maximum without jitter', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000, jitter: 0 });
    assert.deepEqual(
      Array.from({ length: 7 }, () => b.next()),
      [100, 200, 400, 800, 1000, 1000, 1000],
    );
  });

  it('spreads each delay by ±jitter', () => {
    const low = new Backoff({ initialMs: 1000, maxMs: 60_000, random: () => 0 });
    const high = new Backoff({ initialMs: 1000, maxMs: 60_000, random: () => 0.999999 });
    assert.deepEqual([low.next(), low.next(), low.next()], [800, 1600, 3200]);
    assert.deepEqual([high.next(), high.next(), high.next()], [1200, 2400, 4800]);
  });

  it('never exceeds the maximum, even with jitter', () => {
    const b = new Backoff({ initialMs: 500, maxMs: 2000, random: () => 0.999999 });
    for (let i = 0; i < 20; i++) assert.ok(b.next() <= 2000);
  });

  it('starts over after reset', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000, jitter: 0 });
    b.next();
    b.next();
    b.reset();
    assert.equal(b.next(), 100);
  });

  it('keeps random delays within bounds', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 10_000 });
    let base = 100;
    for (let i = 0; i < 12; i++) {
      const d = b.next();
      assert.ok(d >= base * 0.8 && d <= Math.min(10_000, base * 1.2), `attempt ${i}: ${d}`);
      base = Math.min(10_000, base * 2);
    }
  });
});
