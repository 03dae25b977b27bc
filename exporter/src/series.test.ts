import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Attributes } from '@opentelemetry/api';
import { LabelMapper } from './labels';
import { OVERFLOW_ATTRIBUTES, SeriesTable } from './series';

function table(limit: number): SeriesTable {
  return new SeriesTable(
    new LabelMapper({ pathLabel: 'full', pathDepth: 3, nameLabel: true }),
    limit,
  );
}

function flushed(t: SeriesTable): Array<[number, Attributes]> {
  const adds: Array<[number, Attributes]> = [];
  t.flush((value, attributes) => adds.push([value, attributes]));
  return adds;
}

describe('SeriesTable', () => {
  it('aggregates events per label set and hands each sum over once', () => {
    const t = table(10);
    for (let i = 0; i < 1000; i++) t.record(Buffer.from(`/d/f${i % 3}`), 0);
    assert.deepEqual(flushed(t), [
      [334, { name: 'f0', path: '/d' }],
      [333, { name: 'f1', path: '/d' }],
      [333, { name: 'f2', path: '/d' }],
    ]);
    assert.deepEqual(flushed(t), [], 'a second flush has nothing new');
    t.record(Buffer.from('/d/f1'), 0);
    assert.deepEqual(flushed(t), [[1, { name: 'f1', path: '/d' }]]);
  });

  it('caps distinct label sets and counts the rest in one overflow series', () => {
    const t = table(2);
    for (const p of ['/a/1', '/a/2', '/a/3', '/a/4', '/a/1', '/a/3']) t.record(Buffer.from(p), 0);
    assert.deepEqual(flushed(t), [
      [2, { name: '1', path: '/a' }],
      [1, { name: '2', path: '/a' }],
      [3, OVERFLOW_ATTRIBUTES],
    ]);
    assert.equal(t.size, 2);
    assert.equal(t.overflowEvents, 3);
  });

  it('does not grow past the cap however many distinct paths arrive', () => {
    const t = table(100);
    for (let i = 0; i < 100_000; i++) t.record(Buffer.from(`/dir${i}/file`), 0);
    assert.equal(t.size, 100);
    assert.equal(t.overflowEvents, 100_000 - 100);
    const adds = flushed(t);
    assert.equal(adds.length, 101);
    assert.deepEqual(adds[100], [99_900, OVERFLOW_ATTRIBUTES]);
  });
});
