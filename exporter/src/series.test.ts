import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { LabelMapper } from './labels';
import type { LabelPolicy } from './labels';
import { METER_NAME } from './metrics';
import { FILE_CREATED, OVERFLOW_ATTRIBUTES, SeriesTable } from './series';
import { promtoolCheck, seededRandom } from './testing/helpers';

const FULL: LabelPolicy = { pathLabel: 'full', pathDepth: 3, nameLabel: true };
const SCOPE = `otel_scope_name="${METER_NAME}"`;

function table(limit: number, policy: LabelPolicy = FULL): SeriesTable {
  return new SeriesTable(new LabelMapper(policy), { limit });
}

/** Clock is a simulated clock, in milliseconds. */
class Clock {
  now = 0;
  read = (): number => this.now;
}

/** clocked is a table of the full policy on a simulated clock. */
function clocked(limit: number, idleTtlMs: number): { t: SeriesTable; clock: Clock } {
  const clock = new Clock();
  return {
    t: new SeriesTable(new LabelMapper(FULL), { limit, idleTtlMs, clock: clock.read }),
    clock,
  };
}

/** exposition is the whole text of file_created_total. */
function exposition(t: SeriesTable, chunkBytes?: number): string {
  return [...t.chunks(chunkBytes)].join('');
}

/** samples are the sample lines of file_created_total. */
function samples(t: SeriesTable): string[] {
  return exposition(t)
    .split('\n')
    .filter((l) => l.startsWith(FILE_CREATED));
}

/** otelExposition is what the OpenTelemetry SDK and its Prometheus serializer make of the same counts. */
async function otelExposition(
  counts: Array<[Buffer, number]>,
  policy: LabelPolicy,
): Promise<string> {
  const reader = new PrometheusExporter({ preventServerStart: true });
  const provider = new MeterProvider({
    readers: [reader],
    views: [{ instrumentName: FILE_CREATED, aggregationCardinalityLimit: 1_000_000 }],
  });
  const counter = provider.getMeter(METER_NAME).createCounter(FILE_CREATED, {
    description: 'Number of files created',
  });
  const mapper = new LabelMapper(policy);
  for (const [path, n] of counts) counter.add(n, mapper.labels(path, 0));
  const { resourceMetrics } = await reader.collect();
  await provider.shutdown();
  const text = new PrometheusSerializer().serialize(resourceMetrics);
  // Drop target_info: the resource is not SeriesTable's business.
  return text.slice(text.indexOf(`# HELP ${FILE_CREATED}`));
}

/** randomPath is an absolute path of 1-4 components of arbitrary bytes (no NUL), odd ones often. */
function randomPath(rand: () => number): Buffer {
  const odd = [0x61, 0x5c, 0x22, 0x0a, 0x0d, 0x20, 0x7b, 0x3d, 0x2c, 0xc3, 0xa9, 0xff, 0x80, 0xe2];
  const bytes: number[] = [];
  const depth = 1 + Math.floor(rand() * 4);
  for (let d = 0; d < depth; d++) {
    bytes.push(0x2f);
    const len = Math.floor(rand() * 12);
    for (let i = 0; i < len; i++) {
      const b = rand() < 0.5 ? odd[Math.floor(rand() * odd.length)] : 1 + Math.floor(rand() * 255);
      bytes.push(b === 0x2f ? 0x5f : b);
    }
  }
  return Buffer.from(bytes);
}

describe('SeriesTable', () => {
  it('counts events per label set, cumulatively', () => {
    const t = table(10);
    for (let i = 0; i < 1000; i++) t.record(Buffer.from(`/d/f${i % 3}`), 0);
    assert.deepEqual(samples(t), [
      `file_created_total{name="f0",path="/d",${SCOPE}} 334`,
      `file_created_total{name="f1",path="/d",${SCOPE}} 333`,
      `file_created_total{name="f2",path="/d",${SCOPE}} 333`,
    ]);
    t.record(Buffer.from('/d/f1'), 0);
    assert.equal(samples(t)[1], `file_created_total{name="f1",path="/d",${SCOPE}} 334`);
  });

  it('announces the counter even before the first event', () => {
    assert.equal(
      exposition(table(10)),
      '# HELP file_created_total Number of files created\n# TYPE file_created_total counter\n',
    );
  });

  it('caps distinct label sets and counts the rest in one overflow series, last', () => {
    const t = table(2);
    for (const p of ['/a/1', '/a/2', '/a/3', '/a/4', '/a/1', '/a/3']) t.record(Buffer.from(p), 0);
    assert.deepEqual(samples(t), [
      `file_created_total{name="1",path="/a",${SCOPE}} 2`,
      `file_created_total{name="2",path="/a",${SCOPE}} 1`,
      `file_created_total{otel_metric_overflow="true",${SCOPE}} 3`,
    ]);
    assert.equal(t.size, 2);
    assert.equal(t.overflowEvents, 3);
    assert.deepEqual(OVERFLOW_ATTRIBUTES, { 'otel.metric.overflow': true });
  });

  it('does not grow past the cap however many distinct paths arrive', () => {
    const t = table(100);
    for (let i = 0; i < 100_000; i++) t.record(Buffer.from(`/dir${i}/file`), 0);
    assert.equal(t.size, 100);
    assert.equal(t.overflowEvents, 100_000 - 100);
    const lines = samples(t);
    assert.equal(lines.length, 101);
    assert.equal(lines[100], `file_created_total{otel_metric_overflow="true",${SCOPE}} 99900`);
  });

  it('counts byte strings that render to the same labels in one series', () => {
    const t = table(10);
    t.record(Buffer.from('/d/\xff', 'latin1'), 0);
    t.record(Buffer.from('/d/\\xff'), 0); // literally backslash, x, f, f
    t.record(Buffer.from('/f'), 0);
    t.record(Buffer.from('//f'), 0);
    assert.deepEqual(samples(t), [
      `file_created_total{name="\\\\xff",path="/d",${SCOPE}} 2`,
      `file_created_total{name="f",path="/",${SCOPE}} 2`,
    ]);
    assert.equal(t.size, 2);
  });

  for (const policy of [
    FULL,
    { pathLabel: 'depth', pathDepth: 2, nameLabel: true },
    { pathLabel: 'none', pathDepth: 3, nameLabel: false },
  ] satisfies LabelPolicy[]) {
    it(`renders exactly what the OpenTelemetry serializer renders (${JSON.stringify(policy)})`, async () => {
      const rand = seededRandom(20261127);
      const t = table(1_000_000, policy);
      const counts = new Map<string, [Buffer, number]>();
      for (let i = 0; i < 2000; i++) {
        const path = randomPath(rand);
        const n = 1 + Math.floor(rand() * 5);
        for (let k = 0; k < n; k++) t.record(path, 0);
        const key = path.toString('latin1');
        const c = counts.get(key);
        if (c === undefined) counts.set(key, [path, n]);
        else c[1] += n;
      }
      const ours = exposition(t);
      const theirs = await otelExposition([...counts.values()], policy);
      // The SDK orders series by its own hash map; compare header and the set of lines.
      const split = (s: string): { head: string[]; lines: string[] } => {
        const all = s.split('\n').filter((l) => l !== '');
        return { head: all.slice(0, 2), lines: all.slice(2).sort() };
      };
      assert.deepEqual(split(ours), split(theirs));
      assert.equal(split(ours).lines.length, t.size);
      const check = promtoolCheck(ours);
      assert.ok(check.ok, check.output);
    });
  }

  it('splits the exposition into chunks of about the size asked, reading counts as it goes', () => {
    const t = table(10_000);
    for (let i = 0; i < 5000; i++) t.record(Buffer.from(`/dir/file-${i}`), 0);
    const whole = exposition(t);
    const chunks = [...t.chunks(4096)];
    assert.ok(chunks.length > 10, `${chunks.length} chunks`);
    for (const c of chunks.slice(0, -1)) assert.ok(c.length >= 4096 && c.length < 4096 + 200);
    assert.equal(chunks.join(''), whole);

    // A chunk carries the counts of when it is built.
    const it = t.chunks(4096);
    const first = it.next().value as string;
    t.record(Buffer.from('/dir/file-0'), 0); // already written
    t.record(Buffer.from('/dir/file-4999'), 0); // not yet
    t.record(Buffer.from('/dir/new'), 0); // admitted during the scrape: next scrape
    const rest = [...it].join('');
    assert.match(first, /name="file-0",path="\/dir",otel_scope_name="filewatcher"\} 1\n/);
    assert.match(rest, /name="file-4999",path="\/dir",otel_scope_name="filewatcher"\} 2\n/);
    assert.doesNotMatch(rest, /name="new"/);
    assert.match(exposition(t), /name="new",path="\/dir",otel_scope_name="filewatcher"\} 1\n/);
  });

  it('gives the slot of the least recently used series, once scraped, to a new label set', () => {
    const t = table(3);
    for (const p of ['/a/1', '/a/2', '/a/3']) t.record(Buffer.from(p), 0);
    exposition(t); // a scrape sees every count
    t.record(Buffer.from('/a/1'), 0); // /a/2 is now the least recently used
    t.record(Buffer.from('/a/4'), 0);
    assert.equal(t.evicted, 1);
    // A label set that comes back before a scrape has shown it gone overflows ...
    t.record(Buffer.from('/a/2'), 0);
    assert.equal(t.overflowEvents, 1);
    assert.deepEqual(samples(t), [
      `file_created_total{name="1",path="/a",${SCOPE}} 2`,
      `file_created_total{name="3",path="/a",${SCOPE}} 1`,
      `file_created_total{name="4",path="/a",${SCOPE}} 1`,
      `file_created_total{otel_metric_overflow="true",${SCOPE}} 1`,
    ]);
    assert.equal(t.size, 3);
    // ... and after, starts again from 0 (Prometheus saw it go stale).
    t.record(Buffer.from('/a/2'), 0);
    assert.equal(t.evicted, 2); // /a/3 went
    assert.ok(samples(t).includes(`file_created_total{name="2",path="/a",${SCOPE}} 1`));
  });

  it('does not evict a series whose latest count no scrape has seen: the newcomer overflows', () => {
    const t = table(2);
    t.record(Buffer.from('/a/1'), 0);
    t.record(Buffer.from('/a/2'), 0);
    exposition(t);
    t.record(Buffer.from('/a/1'), 0);
    t.record(Buffer.from('/a/2'), 0); // both counted since the scrape
    t.record(Buffer.from('/a/3'), 0);
    assert.equal(t.evicted, 0);
    assert.equal(t.overflowEvents, 1);
    assert.deepEqual(samples(t), [
      `file_created_total{name="1",path="/a",${SCOPE}} 2`,
      `file_created_total{name="2",path="/a",${SCOPE}} 2`,
      `file_created_total{otel_metric_overflow="true",${SCOPE}} 1`,
    ]);
    // That scrape saw them: now the next newcomer gets a slot.
    t.record(Buffer.from('/a/4'), 0);
    assert.equal(t.evicted, 1);
    assert.match(exposition(t), /name="4"/);
  });

  it('expires series idle for the TTL once scraped, and keeps the active ones', () => {
    const { t, clock } = clocked(10, 60_000);
    t.record(Buffer.from('/old/a'), 0, clock.now);
    clock.now = 30_000;
    t.record(Buffer.from('/old/b'), 0, clock.now);
    clock.now = 61_000;
    // /old/a is idle past the TTL but no scrape has seen its count: rendered once more.
    assert.equal(samples(t).length, 2);
    clock.now = 62_000;
    t.record(Buffer.from('/new/c'), 0, clock.now);
    assert.deepEqual(samples(t), [
      `file_created_total{name="b",path="/old",${SCOPE}} 1`,
      `file_created_total{name="c",path="/new",${SCOPE}} 1`,
    ]);
    assert.equal(t.expired, 1);
    clock.now = 90_000; // /old/b idle exactly the TTL
    assert.deepEqual(samples(t), [`file_created_total{name="c",path="/new",${SCOPE}} 1`]);
    assert.equal(t.expired, 2);
    assert.equal(t.size, 1);
  });

  it('after the cap was reached, paths created now get their own series while idle ones expire', () => {
    const { t, clock } = clocked(100, 3_600_000);
    // The first hour fills the cap many times over.
    for (let i = 0; i < 10_000; i++) {
      clock.now = i * 360;
      t.record(Buffer.from(`/hour1/f${i}`), 0, clock.now);
      if (i % 50 === 0) exposition(t); // a scrape now and then
    }
    exposition(t);
    assert.equal(t.size, 100);
    // Two hours later, new paths: each gets a series, none overflows.
    clock.now = 3 * 3_600_000;
    for (let i = 0; i < 10; i++) t.record(Buffer.from(`/hour3/g${i}`), 0, clock.now);
    const lines = samples(t);
    assert.equal(lines.length, 10, lines.join('\n'));
    for (const l of lines) assert.match(l, /path="\/hour3"/);
    assert.equal(t.evicted + t.expired, 10_000 - 10 + 10);
  });

  it('accounts for every event: each count a scrape saw last, plus overflow (randomized)', () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const rand = seededRandom(seed);
      const { t, clock } = clocked(
        1 + Math.floor(rand() * 20),
        rand() < 0.3 ? 0 : 1 + Math.floor(rand() * 5000),
      );
      const universe = 1 + Math.floor(rand() * 60);
      // What a scraper learns: the last value of each series, and the final
      // value of each that left the exposition.
      let current = new Map<string, number>();
      let retired = 0;
      let recorded = 0;
      const scrapeOnce = (): void => {
        const seen = new Map<string, number>();
        for (const l of samples(t)) {
          const cut = l.lastIndexOf(' ');
          seen.set(l.slice(0, cut), Number(l.slice(cut + 1)));
        }
        for (const [k, v] of current) if (!seen.has(k)) retired += v;
        for (const [k, v] of seen) {
          const before = current.get(k);
          // A series seen in two scrapes in a row never went away in between.
          if (before !== undefined) assert.ok(v >= before, `seed ${seed}: ${k} ${before} → ${v}`);
        }
        current = seen;
        assert.ok(t.size <= t.limit);
      };
      for (let step = 0; step < 20_000; step++) {
        clock.now += Math.floor(rand() * 50);
        if (rand() < 0.02) scrapeOnce();
        else {
          t.record(Buffer.from(`/u/${Math.floor(rand() * universe)}`), 0, clock.now);
          recorded++;
        }
      }
      scrapeOnce();
      let shown = 0;
      for (const v of current.values()) shown += v;
      assert.equal(
        retired + shown,
        recorded,
        `seed ${seed}: every event is in a count a scrape saw (retired ${retired}, shown ${shown})`,
      );
    }
  });
});
