import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promtoolCheck, sample, scrape, startExporter, waitFor } from './testing/helpers';
import { RealLoader } from './testing/real-loader';

// Integration: the real Go loader (synthetic source) → this exporter → /metrics.

const SCOPE = 'otel_scope_name="filewatcher"';
const metric = (name: string, labels = ''): string =>
  `${name}{${labels === '' ? '' : labels + ','}${SCOPE}}`;

// The loader's synthetic mix with --synthetic-dirs 1 --synthetic-names 7
// (loader-go/internal/synthetic): event i (0-based, sequence i+1) is named
// NAMES[i % 7] in DIR, and every 997th sequence carries only its name.
const DIR = '/var/tmp/synthetic/d000';
const NAMES = [
  'non-utf8-\\xff\\xfe\\x80', // how the exporter spells the bytes ff fe 80
  'new\nline',
  `quote"double'single`,
  'back\\slash',
  'with space and\ttab',
  'ünïcödé-名前',
  'file-00006.log',
];
const UNRESOLVED_EVERY = 997;
// The loader's flags for that mix, at 3,000 events/s.
const SYNTHETIC_MIX = ['--rate', '3000', '--synthetic-dirs', '1', '--synthetic-names', '7'];

/** exposition escapes a label value as the Prometheus text format does. */
const exposition = (value: string): string =>
  value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

/** expectedLines are the file_created_total lines for sequences first..last of each range (one per loader run). */
function expectedLines(...ranges: Array<[first: number, last: number]>): string[] {
  const counts = new Map<string, number>();
  for (const [first, last] of ranges) {
    for (let seq = first; seq <= last; seq++) {
      const name = NAMES[(seq - 1) % NAMES.length];
      const dir = seq % UNRESOLVED_EVERY === 0 ? '<unresolved>' : DIR;
      const labels = `name="${exposition(name)}",path="${exposition(dir)}"`;
      counts.set(labels, (counts.get(labels) ?? 0) + 1);
    }
  }
  return [...counts].map(([labels, n]) => `file_created_total{${labels},${SCOPE}} ${n}`).sort();
}

const fileLines = (text: string): string[] =>
  text
    .split('\n')
    .filter((l) => l.startsWith('file_created_total{'))
    .sort();

describe('integration with the real loader', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fw-integration-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('counts exactly what the loader sent, and every event of the next loader run', async () => {
    const socket = `unix://${dir}/loader.sock`;
    const loaderArgs = ['--listen', socket, ...SYNTHETIC_MIX];
    let loader = await RealLoader.start(loaderArgs);
    const { exporter, log, url } = await startExporter(socket);
    try {
      await waitFor('subscribed', () => exporter.stream.ready);
      const subscribed = log.lines.find((l) => l.msg === 'subscribed to loader');
      const start = Number(subscribed?.start_sequence);
      assert.ok(start >= 1, `start_sequence in ${JSON.stringify(subscribed)}`);
      await waitFor('3000 events', async () => {
        const n = sample(await scrape(url), metric('filewatcher_exporter_events_received_total'));
        return n !== undefined && n >= 3000;
      });

      // A graceful stop drains every stream, so the exporter ends with all of it.
      await loader.stop('SIGTERM');
      await waitFor('stream ended', () => !exporter.stream.ready);
      const text = await scrape(url);
      const received = sample(text, metric('filewatcher_exporter_events_received_total'));
      assert.ok(received !== undefined);
      assert.deepEqual(fileLines(text), expectedLines([start, start + received - 1]));
      assert.equal(
        text.includes('filewatcher_exporter_events_lost_total'),
        false,
        'no loss at 3000/s',
      );
      assert.equal(text.includes('filewatcher_exporter_malformed_total'), false);
      const check = promtoolCheck(text);
      assert.ok(check.ok, check.output);

      // A new loader, a new run on the same socket. It numbers events before
      // the exporter's reconnect backoff brings it back: the exporter must
      // read the new run from its first event (the replay buffer holds it),
      // so that after this run too is stopped it has counted exactly both
      // runs, sequence by sequence, and lost nothing.
      loader = await RealLoader.start(loaderArgs);
      await waitFor(
        'events of the new run',
        async () => {
          const t = await scrape(url);
          const n = sample(t, metric('filewatcher_exporter_events_received_total')) ?? 0;
          return (
            n > received + 1000 && sample(t, metric('filewatcher_exporter_stream_connected')) === 1
          );
        },
        20_000,
      );
      assert.equal((await fetch(`${url}/readyz`)).status, 200);
      await loader.stop('SIGTERM');
      await waitFor('stream ended', () => !exporter.stream.ready);
      const after = await scrape(url);
      const total = sample(after, metric('filewatcher_exporter_events_received_total')) ?? 0;
      assert.equal(sample(after, metric('filewatcher_exporter_loader_restarts_total')), 1);
      assert.ok((sample(after, metric('filewatcher_exporter_reconnects_total')) ?? 0) >= 1);
      const subscribedAgain = log.lines.filter((l) => l.msg === 'subscribed to loader').at(-1);
      assert.equal(subscribedAgain?.resumed_after, 0, 'the new run read from its start');
      assert.deepEqual(
        fileLines(after),
        expectedLines([start, start + received - 1], [1, total - received]),
      );
      assert.equal(after.includes('filewatcher_exporter_events_lost_total'), false, 'nothing lost');
      assert.equal(after.includes(`source="synthetic"`), true, 'loader status exported');
      assert.ok(promtoolCheck(after).ok);
      assert.ok(
        log.messages('info').includes('loader restarted with a new run; sequences start again'),
      );
    } finally {
      await exporter.stop();
      await loader.stop('SIGKILL');
    }
  });

  it('resumes the same run after a broken connection and reports what the replay buffer lost', async () => {
    const loader = await RealLoader.start([
      '--listen',
      '127.0.0.1:0',
      '--rate',
      '5000',
      '--replay-buffer-size',
      '100',
    ]);
    const proxy = await CuttableProxy.start(loader.listen);
    const { exporter, url } = await startExporter(`127.0.0.1:${proxy.port}`);
    try {
      await waitFor(
        'events',
        async () =>
          (sample(await scrape(url), metric('filewatcher_exporter_events_received_total')) ?? 0) >
          1000,
      );
      proxy.cut();
      await waitFor('stream lost', () => !exporter.stream.ready);
      await new Promise((resolve) => setTimeout(resolve, 600)); // ~3000 events pass, the replay buffer keeps 100
      proxy.restore();
      const text = await waitFor(
        'resumed with a gap',
        async () => {
          const t = await scrape(url);
          return sample(
            t,
            metric('filewatcher_exporter_events_lost_total', 'reason="replay_expired"'),
          ) !== undefined && exporter.stream.ready
            ? t
            : undefined;
        },
        20_000,
      );
      assert.ok(
        (sample(
          text,
          metric('filewatcher_exporter_events_lost_total', 'reason="replay_expired"'),
        ) ?? 0) > 1000,
      );
      assert.equal(
        text.includes('reason="sequence_gap"'),
        false,
        'every sequence number accounted for',
      );
      assert.equal(
        text.includes('filewatcher_exporter_loader_restarts_total'),
        false,
        'the same run',
      );
      assert.ok((sample(text, metric('filewatcher_exporter_reconnects_total')) ?? 0) >= 1);
    } finally {
      await exporter.stop();
      proxy.close();
      await loader.stop('SIGKILL');
    }
  });

  it('after kill -9, a new exporter process resumes from its saved position: nothing skipped', async () => {
    const socket = `unix://${dir}/resume.sock`;
    const stateFile = path.join(dir, 'position.json');
    const loader = await RealLoader.start(['--listen', socket, ...SYNTHETIC_MIX]);
    let first: ExporterProcess | undefined;
    let second: ExporterProcess | undefined;
    try {
      const a = await ExporterProcess.start(socket, stateFile);
      first = a;
      const startA = Number(
        (await waitFor('subscribed', () => a.line('subscribed to loader')))['start_sequence'],
      );
      await waitFor(
        '2000 events',
        async () =>
          (sample(await a.scrape(), metric('filewatcher_exporter_events_received_total')) ?? 0) >=
          2000,
      );
      // The last scrape saves the position as of its start; it shows at
      // least the events up to that position.
      const seenA = fileLines(await a.scrape());
      const saved = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as {
        run_id: string;
        last_sequence: number;
      };
      assert.equal(saved.run_id, loader.runId);
      const countedA = seenA.reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
      assert.deepEqual(seenA, expectedLines([startA, startA + countedA - 1]));
      assert.ok(startA + countedA - 1 >= saved.last_sequence, 'the scrape covers the position');
      a.process.kill('SIGKILL');
      await a.exited;
      // Events go on while no exporter runs; the loader's replay buffer keeps them.
      await new Promise((resolve) => setTimeout(resolve, 1_000));

      second = await ExporterProcess.start(socket, stateFile);
      const resumed = await waitFor('subscribed', () => second?.line('subscribed to loader'));
      assert.equal(resumed['resumed_after'], saved.last_sequence);
      await loader.stop('SIGTERM'); // drains every stream
      await waitFor('stream ended', () => second?.line('stream from loader ended, reconnecting'));
      const text = await second.scrape();
      const countedB = sample(text, metric('filewatcher_exporter_events_received_total')) ?? 0;
      assert.ok(countedB > 3000, `events of the downtime and after: ${countedB}`);
      // Exactly every event after the saved position, none skipped, none lost.
      assert.deepEqual(
        fileLines(text),
        expectedLines([saved.last_sequence + 1, saved.last_sequence + countedB]),
      );
      assert.equal(text.includes('filewatcher_exporter_events_lost_total'), false);
    } finally {
      first?.process.kill('SIGKILL');
      second?.process.kill('SIGKILL');
      await loader.stop('SIGKILL');
    }
  });
});

/** CuttableProxy forwards TCP to target; cut() drops every connection and refuses new ones until restore(). */
class CuttableProxy {
  private readonly sockets = new Set<net.Socket>();
  private readonly server: net.Server;
  private down = false;

  private constructor(target: string) {
    const colon = target.lastIndexOf(':');
    const host = target.slice(0, colon);
    const port = Number(target.slice(colon + 1));
    this.server = net.createServer((client) => {
      if (this.down) {
        client.destroy();
        return;
      }
      const upstream = net.connect(port, host);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(upstream).pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  static async start(target: string): Promise<CuttableProxy> {
    const proxy = new CuttableProxy(target);
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  cut(): void {
    this.down = true;
    for (const s of this.sockets) s.destroy();
  }

  restore(): void {
    this.down = false;
  }

  close(): void {
    this.cut();
    this.server.close();
  }
}

/** ExporterProcess is node exporter/dist/main.js, a real process (so kill -9 is real). */
class ExporterProcess {
  private stderr = '';
  readonly exited: Promise<unknown>;

  private constructor(readonly process: ChildProcess) {
    process.stderr?.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.exited = new Promise((resolve) => process.once('exit', resolve));
  }

  static async start(loader: string, stateFile: string): Promise<ExporterProcess> {
    const child = spawn(
      process.execPath,
      [
        path.join(__dirname, 'main.js'),
        '--loader',
        loader,
        '--listen',
        '127.0.0.1:0',
        '--state-file',
        stateFile,
        '--log-format',
        'json',
        '--reconnect-initial-delay',
        '100ms',
        '--reconnect-max-delay',
        '200ms',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const p = new ExporterProcess(child);
    await waitFor('ready line', () => p.line('ready'));
    return p;
  }

  /** line is the last JSON log line with message msg. */
  line(msg: string): Record<string, unknown> | undefined {
    return this.stderr
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.msg === msg)
      .at(-1);
  }

  async scrape(): Promise<string> {
    return scrape(`http://${String(this.line('ready')?.listen)}`);
  }
}
