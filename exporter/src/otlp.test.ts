import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { Attributes, Counter } from '@opentelemetry/api';
import { ExportResultCode } from '@opentelemetry/core';
import type { ExportResult } from '@opentelemetry/core';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { LogRecordExporter, ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { parseConfig } from './config';
import type { FileCreatedEvent__Output } from './generated/filewatcher/v1/FileCreatedEvent';
import { EventExport, eventAttributes, eventCost, failureReason } from './otlp';
import type { OtlpMetrics } from './otlp';
import { loadPosition, PositionKeeper } from './position';
import type { StreamPosition } from './position';
import { LogCapture, sample, scrape, startExporter, waitFor } from './testing/helpers';
import { LoaderDouble } from './testing/loader-double';

/** CountingCounter is a Counter that sums what it is given, by its attributes. */
class CountingCounter implements Counter {
  readonly sums = new Map<string, number>();
  add(value: number, attributes: Attributes = {}): void {
    const key = JSON.stringify(attributes);
    this.sums.set(key, (this.sums.get(key) ?? 0) + value);
  }
  get(attributes: Attributes = {}): number {
    return this.sums.get(JSON.stringify(attributes)) ?? 0;
  }
  total(): number {
    return [...this.sums.values()].reduce((a, b) => a + b, 0);
  }
}

function counters(): OtlpMetrics & Record<keyof OtlpMetrics, CountingCounter> {
  return {
    exportsFailed: new CountingCounter(),
    eventsExported: new CountingCounter(),
    eventsDropped: new CountingCounter(),
  };
}

/** FakeLogExporter records what it is sent; `fail` decides each export's fate. */
class FakeLogExporter implements LogRecordExporter {
  readonly received: ReadableLogRecord[][] = [];
  fail: (attempt: number) => Error | undefined = () => undefined;
  attempts = 0;
  shutDown = false;
  export(records: ReadableLogRecord[], done: (result: ExportResult) => void): void {
    this.attempts++;
    const error = this.fail(this.attempts);
    setImmediate(() => {
      if (error === undefined) {
        this.received.push(records);
        done({ code: ExportResultCode.SUCCESS });
      } else done({ code: ExportResultCode.FAILED, error });
    });
  }
  shutdown(): Promise<void> {
    this.shutDown = true;
    return Promise.resolve();
  }
  forceFlush(): Promise<void> {
    return Promise.resolve();
  }
  sequences(): number[] {
    return this.received.flat().map((r) => r.attributes['filewatcher.sequence'] as number);
  }
}

function event(sequence: number, path = `/tmp/f${sequence}`): FileCreatedEvent__Output {
  return {
    sequence,
    ktime_ns: 0,
    time_unix_nano: 1_700_000_000_000_000_000,
    pid: 101,
    tgid: 100,
    uid: 1000,
    gid: 1001,
    comm: Buffer.from('touch'),
    cgroup_id: 7,
    path: Buffer.from(path, 'latin1'),
    flags: 0o101,
    kind: 1,
    fsuid: 0,
    fsgid: 1002,
  };
}

function events(from: number, to: number): FileCreatedEvent__Output[] {
  const out = [];
  for (let s = from; s <= to; s++) out.push(event(s));
  return out;
}

function exportOf(
  exporter: FakeLogExporter,
  overrides: Partial<ConstructorParameters<typeof EventExport>[0]> = {},
): { ex: EventExport; m: ReturnType<typeof counters>; settled: number[] } {
  const m = counters();
  const settled: number[] = [];
  const ex = new EventExport({
    exporter,
    resource: resourceFromAttributes({ 'host.name': 'h' }),
    queueSize: 100,
    queueBytes: 1 << 20,
    batchSize: 10,
    retryForMs: 1_000,
    retryDelayMs: 5,
    metrics: m,
    log: new LogCapture().logger,
    onSettled: (_run, seq) => settled.push(seq),
    ...overrides,
  });
  return { ex, m, settled };
}

describe('OTLP event export', () => {
  it('exports every event once, in order, in batches, and settles each batch', async () => {
    const fake = new FakeLogExporter();
    const { ex, m, settled } = exportOf(fake);
    ex.offer('run-a', events(1, 25));
    ex.offer('run-a', events(26, 30));
    await waitFor('all exported', () => ex.queued === 0 && settled.length === 3);
    assert.deepEqual(
      fake.sequences(),
      events(1, 30).map((e) => e.sequence),
    );
    assert.ok(
      fake.received.every((b) => b.length <= 10),
      'batches bounded by batchSize',
    );
    assert.deepEqual(settled, [10, 20, 30]);
    assert.equal(m.eventsExported.total(), 30);
    assert.equal(m.eventsDropped.total(), 0);
  });

  it('holds a partial batch for batchDelayMs, sends a full one at once', async () => {
    const fake = new FakeLogExporter();
    const { ex } = exportOf(fake, { batchDelayMs: 300 });
    ex.offer('r', events(1, 3));
    await new Promise((resolve) => setTimeout(resolve, 100));
    ex.offer('r', events(4, 6));
    assert.equal(fake.attempts, 0, 'partial: waiting for more');
    await waitFor('sent after the delay', () => fake.received.length === 1);
    assert.deepEqual(fake.sequences(), [1, 2, 3, 4, 5, 6], 'one request');
    ex.offer('r', events(7, 16));
    await waitFor('full: sent at once', () => fake.received.length === 2, 150);
    assert.equal(fake.received[1].length, 10);
  });

  it('counts what does not fit in the queue as queue_full, never waits', async () => {
    const fake = new FakeLogExporter();
    const { ex, m } = exportOf(fake, { queueSize: 20 });
    ex.offer('r', events(1, 15));
    ex.offer('r', events(16, 30)); // 5 fit
    assert.equal(ex.queued, 20);
    assert.equal(m.eventsDropped.get({ reason: 'queue_full' }), 10);
    await waitFor('drained', () => ex.queued === 0);
    assert.deepEqual(
      fake.sequences(),
      events(1, 20).map((e) => e.sequence),
    );
    assert.equal(
      m.eventsExported.total() + m.eventsDropped.total(),
      30,
      'every event counted once',
    );
  });

  it('bounds the queue in bytes too, and frees them as batches settle', async () => {
    const fake = new FakeLogExporter();
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const inner = fake.export.bind(fake);
    fake.export = (records, done) => void gate.then(() => inner(records, done));
    const long = (s: number) => event(s, '/' + 'x'.repeat(1000) + String(s).padStart(3, '0'));
    const cost = eventCost(long(1));
    const { ex, m } = exportOf(fake, { queueSize: 1000, queueBytes: 5 * cost });
    ex.offer('r', [1, 2, 3, 4, 5, 6, 7].map(long));
    assert.equal(ex.queued, 5);
    assert.equal(m.eventsDropped.get({ reason: 'queue_full' }), 2);
    release();
    await waitFor('drained', () => ex.queued === 0);
    ex.offer('r', [8, 9, 10, 11, 12].map(long));
    assert.equal(ex.queued, 5, 'the bytes of exported events were given back');
    await waitFor('drained again', () => ex.queued === 0);
    assert.equal(m.eventsExported.total(), 10);
  });

  it('retries a failed batch through a short outage, then delivers it', async () => {
    const fake = new FakeLogExporter();
    const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    fake.fail = (attempt) => (attempt <= 3 ? refused : undefined);
    const { ex, m } = exportOf(fake);
    ex.offer('r', events(1, 5));
    await waitFor('delivered', () => m.eventsExported.total() === 5);
    assert.deepEqual(fake.sequences(), [1, 2, 3, 4, 5], 'once, after the retries');
    assert.equal(m.exportsFailed.get({ signal: 'logs', reason: 'econnrefused' }), 3);
    assert.equal(m.eventsDropped.total(), 0);
  });

  it('counts a batch lost (export_failed) past the retry budget, and goes on', async () => {
    const fake = new FakeLogExporter();
    let down = true;
    fake.fail = () =>
      down ? Object.assign(new Error('Service Unavailable'), { code: 503 }) : undefined;
    const { ex, m, settled } = exportOf(fake, { retryForMs: 40 });
    ex.offer('r', events(1, 10));
    await waitFor('given up', () => m.eventsDropped.get({ reason: 'export_failed' }) === 10);
    assert.deepEqual(settled, [10], 'a lost batch settles too: it is accounted for');
    down = false;
    ex.offer('r', events(11, 12));
    await waitFor('next delivered', () => m.eventsExported.total() === 2);
    assert.deepEqual(fake.sequences(), [11, 12]);
    assert.ok(m.exportsFailed.get({ signal: 'logs', reason: 'http_503' }) >= 2, 'retried');
  });

  it('does not retry what the endpoint refuses as malformed (HTTP 400)', async () => {
    const fake = new FakeLogExporter();
    fake.fail = () => Object.assign(new Error('Bad Request'), { code: 400 });
    const { ex, m } = exportOf(fake, { retryForMs: 60_000 });
    ex.offer('r', events(1, 3));
    await waitFor('dropped', () => m.eventsDropped.get({ reason: 'export_failed' }) === 3);
    assert.equal(fake.attempts, 1);
  });

  it('flushes the queue at shutdown, and counts what the deadline leaves as shutdown', async () => {
    const fake = new FakeLogExporter();
    const { ex, m } = exportOf(fake, { queueSize: 1000 });
    ex.offer('r', events(1, 55));
    await ex.shutdown(5_000);
    assert.equal(m.eventsExported.total(), 55, 'flushed');
    assert.ok(fake.shutDown);
    ex.offer('r', events(56, 57));
    assert.equal(m.eventsDropped.get({ reason: 'shutdown' }), 2, 'offered after shutdown');

    // A batch waiting for its next attempt is tried at once, not at the deadline.
    const flaky = new FakeLogExporter();
    flaky.fail = (attempt) =>
      attempt === 1 ? Object.assign(new Error('down'), { code: 'ECONNREFUSED' }) : undefined;
    const w = exportOf(flaky, { queueSize: 1000, retryDelayMs: 60_000, retryForMs: 120_000 });
    w.ex.offer('r', events(1, 5));
    await waitFor('first attempt failed', () => flaky.attempts === 1);
    const t0 = Date.now();
    await w.ex.shutdown(30_000);
    assert.ok(Date.now() - t0 < 5_000, 'did not wait for the retry delay or the deadline');
    assert.equal(w.m.eventsExported.total(), 5, 'retried at shutdown');

    const stuck = new FakeLogExporter();
    stuck.export = () => undefined; // an endpoint that never answers
    const s = exportOf(stuck, { queueSize: 1000, retryForMs: 60_000 });
    s.ex.offer('r', events(1, 25));
    await s.ex.shutdown(50);
    assert.equal(s.m.eventsDropped.get({ reason: 'shutdown' }), 25, 'nothing lost silently');
    assert.equal(s.m.eventsExported.total(), 0);
  });

  it('uses semantic-convention attributes, and keeps the bytes of a path that is not UTF-8', () => {
    const a = eventAttributes('run-x', event(42, '/srv/dir/caf\xe9'));
    assert.equal(a['file.path'], '/srv/dir/caf\ufffd');
    assert.equal(a['file.directory'], '/srv/dir');
    assert.equal(a['file.name'], 'caf\ufffd');
    assert.deepEqual(
      Buffer.from(a['filewatcher.file.path_bytes'] as Uint8Array),
      Buffer.from('/srv/dir/caf\xe9', 'latin1'),
    );
    assert.equal(a['process.pid'], 100);
    assert.equal(a['thread.id'], 101);
    assert.equal(a['user.id'], '1000');
    assert.equal(a['process.real_group.id'], 1001);
    assert.equal(a['process.executable.name'], 'touch');
    assert.equal(a['filewatcher.run_id'], 'run-x');
    assert.equal(a['filewatcher.sequence'], 42);
    assert.equal(a['filewatcher.kind'], 'open');
    assert.equal(a['filewatcher.fsuid'], 0);
    assert.equal(a['filewatcher.fsgid'], 1002);
    assert.equal(eventAttributes('r', { ...event(1), kind: 0 })['filewatcher.kind'], 'unspecified');
    const unknown = { ...event(1), kind: 77 } as unknown as FileCreatedEvent__Output;
    assert.equal(
      eventAttributes('r', unknown)['filewatcher.kind'],
      '77',
      'a kind this exporter does not know',
    );
    const u = eventAttributes('r', event(1, '/f'));
    assert.equal(u['file.directory'], '/');
    assert.equal(u['file.name'], 'f');
    assert.equal(u['filewatcher.file.path_bytes'], undefined, 'UTF-8 paths: strings only');
  });

  it('names failures with bounded reasons', () => {
    assert.equal(failureReason(Object.assign(new Error('x'), { code: 503 })), 'http_503');
    assert.equal(
      failureReason(Object.assign(new Error('x'), { code: 'ECONNRESET' })),
      'econnreset',
    );
    assert.equal(failureReason(new Error('Concurrency Limit reached')), 'concurrency_limit');
    assert.equal(failureReason(new Error('Request Timeout')), 'timeout');
    assert.equal(
      failureReason(Object.assign(new Error('14 UNAVAILABLE'), { code: 14 })),
      'grpc_14',
    );
    assert.equal(failureReason(new Error('something else')), 'other');
  });
});

describe('stream position with OTLP events', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fw-keeper-'));
  const pos = (runId: string, lastSequence: number): StreamPosition => ({
    runId,
    lastSequence,
    loss: { ringbuf_full: lastSequence },
  });

  it('saves the earliest of the metrics and the event export', () => {
    const file = path.join(dir, 'k1.json');
    let current: StreamPosition | undefined = pos('a', 100);
    let idle = false;
    const k = new PositionKeeper(
      file,
      new LogCapture().logger,
      () => current,
      () => idle,
      undefined,
      0,
    );
    k.eventsOffered('a', 31);
    k.metricsCollected();
    assert.equal(loadPosition(file)?.lastSequence, 30, 'up to the first event offered');
    k.eventsSettled('a', 40);
    assert.deepEqual(loadPosition(file), {
      runId: 'a',
      lastSequence: 40,
      loss: { ringbuf_full: 100 },
    });
    current = pos('a', 150);
    k.eventsSettled('a', 120);
    assert.equal(loadPosition(file)?.lastSequence, 100, 'the metrics are behind now');
    idle = true;
    k.metricsCollected();
    assert.equal(loadPosition(file)?.lastSequence, 150, 'nothing pending: the metrics decide');
    // A new loader run: events still exporting the old run's are behind it.
    idle = false;
    current = pos('b', 5);
    k.metricsCollected();
    assert.deepEqual(loadPosition(file), { runId: 'a', lastSequence: 120, loss: {} });
    k.eventsOffered('b', 1);
    k.eventsSettled('a', 130); // the old run's tail, settled late: the new run stands
    k.eventsSettled('b', 3);
    assert.equal(loadPosition(file)?.runId, 'b');
    assert.equal(loadPosition(file)?.lastSequence, 3);
  });

  it('with nothing reading the metrics, saves what the event export settled', () => {
    const file = path.join(dir, 'k4.json');
    const k = new PositionKeeper(
      file,
      new LogCapture().logger,
      () => pos('a', 90),
      () => false,
      undefined,
      0,
    );
    k.eventsOffered('a', 11);
    k.eventsSettled('a', 20);
    assert.deepEqual(loadPosition(file), { runId: 'a', lastSequence: 20, loss: {} });
  });

  it('saves a move made within the interval at its end', async () => {
    const file = path.join(dir, 'k5.json');
    const k = new PositionKeeper(
      file,
      new LogCapture().logger,
      () => pos('a', 90),
      () => false,
      undefined,
      50,
    );
    k.eventsOffered('a', 1);
    k.eventsSettled('a', 10);
    k.eventsSettled('a', 20);
    assert.equal(loadPosition(file)?.lastSequence, 10, 'throttled');
    await waitFor('the trailing save', () => loadPosition(file)?.lastSequence === 20);
  });

  it('without event export, saves the metrics position at each collection', () => {
    const file = path.join(dir, 'k2.json');
    const k = new PositionKeeper(
      file,
      new LogCapture().logger,
      () => pos('a', 7),
      undefined,
      undefined,
    );
    k.metricsCollected();
    assert.deepEqual(loadPosition(file), pos('a', 7));
  });

  it('starts from the saved position: events not settled since do not move it', () => {
    const file = path.join(dir, 'k3.json');
    const k = new PositionKeeper(
      file,
      new LogCapture().logger,
      () => pos('a', 90),
      () => false,
      pos('a', 50),
      0,
    );
    k.metricsCollected();
    assert.equal(loadPosition(file)?.lastSequence, 50);
  });
});

describe('OTLP configuration', () => {
  const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseConfig(argv, env);
  it('is off unless an endpoint is set', () => {
    const p = parse([]);
    assert.ok('config' in p && p.config.otlp === undefined);
  });
  it('reads --otlp-endpoint or OTEL_EXPORTER_OTLP_ENDPOINT, and the standard interval', () => {
    const p = parse(['--otlp-events', 'true'], {
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318',
      OTEL_METRIC_EXPORT_INTERVAL: '5000',
    });
    assert.ok('config' in p);
    assert.equal(p.config.otlp?.endpoint, 'http://127.0.0.1:4318');
    assert.equal(p.config.otlp?.protocol, 'http/protobuf');
    assert.equal(p.config.otlp?.metricsIntervalMs, 5000);
    assert.equal(p.config.otlp?.events, true);
    const g = parse(['--otlp-endpoint', 'http://127.0.0.1:4317', '--otlp-protocol', 'grpc']);
    assert.ok('config' in g && g.config.otlp?.protocol === 'grpc');
  });
  it('refuses what cannot work, saying why', () => {
    for (const [argv, why] of [
      [['--otlp-events', 'true'], /needs an OTLP endpoint/],
      [['--otlp-endpoint', 'localhost:4318'], /http:\/\/ or https:\/\//],
      [['--otlp-endpoint', 'not a url'], /must be a URL/],
      [
        ['--otlp-endpoint', 'http://h:1', '--otlp-protocol', 'http/json'],
        /one of http\/protobuf, grpc/,
      ],
    ] as const) {
      const p = parse([...argv]);
      assert.ok('exit' in p && p.exit.code === 2, String(argv));
      assert.match(p.exit.text, why);
    }
  });
});

describe('OTLP over HTTP, from a running exporter', () => {
  /** A bare OTLP/HTTP endpoint: records each request's path, headers and body size; down answers 503. */
  class Endpoint {
    readonly requests: Array<{ path: string; headers: http.IncomingHttpHeaders; bytes: number }> =
      [];
    down = false;
    private readonly server = http.createServer((req, res) => {
      let bytes = 0;
      req.on('data', (c: Buffer) => (bytes += c.length));
      req.on('end', () => {
        if (this.down) {
          res.writeHead(503).end();
          return;
        }
        this.requests.push({ path: req.url ?? '', headers: req.headers, bytes });
        res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      });
    });
    async listen(): Promise<string> {
      await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
      return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    }
    close(): void {
      this.server.close();
    }
    paths(): string[] {
      return this.requests.map((r) => r.path);
    }
  }

  it('sends to /v1/logs and /v1/metrics under --otlp-endpoint, with OTEL_EXPORTER_OTLP_HEADERS', async () => {
    const endpoint = new Endpoint();
    const base = await endpoint.listen();
    const loader = new LoaderDouble();
    const target = await loader.listen();
    process.env.OTEL_EXPORTER_OTLP_HEADERS = 'authorization=Bearer fleet-token';
    try {
      const { exporter } = await startExporter(
        target,
        '--otlp-endpoint',
        `${base}/prefix/`,
        '--otlp-events',
        'true',
        '--otlp-metrics-interval',
        '200',
      );
      const sub = await loader.subscriber(1);
      sub.send({
        run_id: 'run-1',
        events: [1, 2, 3].map((s) => ({ sequence: s, path: Buffer.from(`/d/f${s}`) })),
      });
      await waitFor('logs and metrics pushed', () => {
        const p = endpoint.paths();
        return p.includes('/prefix/v1/logs') && p.includes('/prefix/v1/metrics');
      });
      for (const r of endpoint.requests) {
        assert.equal(r.headers.authorization, 'Bearer fleet-token', r.path);
        assert.equal(r.headers['content-type'], 'application/x-protobuf', r.path);
        assert.ok(r.bytes > 0, r.path);
      }
      await exporter.stop();
    } finally {
      delete process.env.OTEL_EXPORTER_OTLP_HEADERS;
      loader.close();
      endpoint.close();
    }
  });

  it('at stop, exports what is queued before exiting', async () => {
    const endpoint = new Endpoint();
    const base = await endpoint.listen();
    const loader = new LoaderDouble();
    const target = await loader.listen();
    const { exporter, url } = await startExporter(
      target,
      '--otlp-endpoint',
      base,
      '--otlp-events',
      'true',
      '--otlp-metrics',
      'false',
    );
    try {
      const sub = await loader.subscriber(1);
      endpoint.down = true;
      sub.send({
        run_id: 'run-1',
        events: [1, 2, 3, 4].map((s) => ({ sequence: s, path: Buffer.from(`/d/g${s}`) })),
      });
      await waitFor('queued while the endpoint is down', async () => {
        const text = await scrape(url);
        return (
          sample(text, 'filewatcher_exporter_otlp_events_queued{otel_scope_name="filewatcher"}') ===
          4
        );
      });
      endpoint.down = false;
      await exporter.stop();
      assert.deepEqual(endpoint.paths(), ['/v1/logs'], 'the queue went out at stop, once');
    } finally {
      loader.close();
      endpoint.close();
    }
  });
});
