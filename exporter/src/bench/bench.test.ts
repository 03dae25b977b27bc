import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pipeline } from './run';

// A smoke run of the benchmark code, so that it keeps working; no timing is asserted.
describe('benchmarks', () => {
  it('pipeline runs', (t) => {
    const lines: string[] = [];
    t.mock.method(console, 'log', (line: string) => lines.push(line));
    pipeline(64, 0.2);
    assert.match(lines[0], /^batch=64 events=\d+ events_per_s=\d+ us_per_event=[\d.]+$/);
  });
});
