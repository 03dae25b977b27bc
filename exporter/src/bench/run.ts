// Benchmarks of the exporter against the real loader's synthetic source.
// They print numbers; they assert nothing (timing belongs here, not in tests).
//
//   node exporter/dist/bench/run.js throughput [RATE...]   events/s, CPU µs/event, loss
//   node exporter/dist/bench/run.js memory [MAX_SERIES...]  RSS after 1,000,000 distinct paths
//   node exporter/dist/bench/run.js churn [SMOKE]            the series table over hours of simulated
//       time with new paths all the time: series, memory and scrape time per half hour (JSON lines;
//       run with node --expose-gc for the heap after a collection)
//   node exporter/dist/bench/run.js pipeline                 the exporter's own work per event, in
//       process: decoding (decode.ts; and proto-loader's deserializer, for comparison) + sequence
//       accounting + series table, on one core, with no transport (what the exporter could take
//       if the loader sent faster)
//
// The exporter runs as its own process (node exporter/dist/main.js), so its
// CPU time and RSS are read from /proc without the benchmark's own.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import type {
  SubscribeResponse,
  SubscribeResponse__Output,
} from '../generated/filewatcher/v1/SubscribeResponse';
import { decodeSubscribeResponse } from '../decode';
import { LabelMapper } from '../labels';
import { PROTO_FILE, PROTO_LOADER_OPTIONS } from '../proto';
import { SeriesTable } from '../series';
import { SequenceTracker } from '../sequence';
import { sample, waitFor } from '../testing/helpers';
import { RealLoader } from '../testing/real-loader';

const MAIN = path.join(__dirname, '..', 'main.js');
const SCOPE = 'otel_scope_name="filewatcher"';
const RECEIVED = `filewatcher_exporter_events_received_total{${SCOPE}}`;

/** cpuSeconds is a process's user+system CPU time, from /proc. */
function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? NaN : Number(m[1]) / 1024;
}

interface RunningExporter {
  child: ChildProcess;
  url: string;
}

async function startExporter(loader: string, flags: string[]): Promise<RunningExporter> {
  const child = spawn(
    process.execPath,
    [MAIN, '--loader', loader, '--listen', '127.0.0.1:0', ...flags],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let log = '';
  child.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));
  try {
    const listen = await waitFor(
      'exporter ready',
      () => / msg=ready listen=(\S+)/.exec(log)?.[1],
      30_000,
    );
    return { child, url: `http://${listen}` };
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
}

async function stopExporter(e: RunningExporter): Promise<void> {
  const exited = new Promise((resolve) => e.child.once('exit', resolve));
  e.child.kill('SIGTERM');
  await exited;
}

async function metrics(url: string): Promise<string> {
  return (await fetch(`${url}/metrics`)).text();
}

/** lost sums filewatcher_exporter_events_lost_total over reasons. */
function lost(text: string): number {
  return text
    .split('\n')
    .filter((l) => l.startsWith('filewatcher_exporter_events_lost_total{'))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function throughput(rate: number, seconds = 10): Promise<void> {
  const loader = await RealLoader.start(['--listen', '127.0.0.1:0', '--rate', String(rate)]);
  let exporter: RunningExporter | undefined;
  try {
    exporter = await startExporter(loader.listen, []);
    await sleep(3000); // connect and warm up the JIT
    const pid = exporter.child.pid ?? 0;
    const lpid = loader.process.pid ?? 0;
    const before = await metrics(exporter.url);
    const [c0, l0, t0] = [cpuSeconds(pid), cpuSeconds(lpid), process.hrtime.bigint()];
    await sleep(seconds * 1000);
    const after = await metrics(exporter.url);
    const [c1, l1, t1] = [cpuSeconds(pid), cpuSeconds(lpid), process.hrtime.bigint()];
    const elapsed = Number(t1 - t0) / 1e9;
    const events = (sample(after, RECEIVED) ?? 0) - (sample(before, RECEIVED) ?? 0);
    const dropped = lost(after) - lost(before);
    console.log(
      [
        `rate=${rate === 0 ? 'max' : rate}`,
        `received=${Math.round(events / elapsed)}/s`,
        `lost=${dropped}`,
        `exporter_cpu=${(((c1 - c0) / elapsed) * 100).toFixed(0)}%`,
        `exporter_us_per_event=${(((c1 - c0) * 1e6) / Math.max(1, events)).toFixed(2)}`,
        `loader_cpu=${(((l1 - l0) / elapsed) * 100).toFixed(0)}%`,
        `exporter_rss=${rssMiB(pid).toFixed(0)}MiB`,
      ].join(' '),
    );
  } finally {
    if (exporter !== undefined) await stopExporter(exporter);
    await loader.stop('SIGKILL');
  }
}

async function memory(maxSeries: number): Promise<void> {
  // 1000 directories x 1000 names: the first 1,000,000 events are 1,000,000 distinct paths.
  const loader = await RealLoader.start([
    '--listen',
    '127.0.0.1:0',
    '--rate',
    '100000',
    '--synthetic-dirs',
    '1000',
    '--synthetic-names',
    '1000',
  ]);
  let exporter: RunningExporter | undefined;
  try {
    const e = (exporter = await startExporter(loader.listen, ['--max-series', String(maxSeries)]));
    const pid = e.child.pid ?? 0;
    const idle = rssMiB(pid);
    await waitFor(
      '1,000,000 events',
      async () => (sample(await metrics(e.url), RECEIVED) ?? 0) >= 1_000_000,
      120_000,
    );
    await loader.stop('SIGKILL');
    const t0 = process.hrtime.bigint();
    const text = await metrics(e.url);
    const scrapeMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const series = sample(text, `filewatcher_exporter_series{${SCOPE}}`);
    const overflow = sample(text, `filewatcher_exporter_overflow_events_total{${SCOPE}}`);
    console.log(
      [
        `max_series=${maxSeries}`,
        `events=${sample(text, RECEIVED)}`,
        `series=${series}`,
        `overflow_events=${overflow}`,
        `rss_idle=${idle.toFixed(0)}MiB`,
        `rss_after=${rssMiB(pid).toFixed(0)}MiB`,
        `scrape=${scrapeMs.toFixed(0)}ms`,
        `exposition=${(text.length / 1024 / 1024).toFixed(1)}MiB`,
      ].join(' '),
    );
  } finally {
    if (exporter !== undefined) await stopExporter(exporter);
    await loader.stop('SIGKILL');
  }
}

/** pipeline measures the exporter's in-process work per event and prints it. */
export function pipeline(batch = 1024, seconds = 5, protobufjs = false): void {
  const definition = protoLoader.loadSync(PROTO_FILE, PROTO_LOADER_OPTIONS);
  const method = (definition['filewatcher.v1.EventService'] as protoLoader.ServiceDefinition)
    .Subscribe;
  // The loader's default synthetic mix: 100 directories (one ~4 KB deep) x 1000 names.
  const dirs = Array.from({ length: 100 }, (_, i) =>
    i === 1
      ? '/var/tmp/synthetic/deep' + '/' + 'd'.repeat(254) + '/x'.repeat(1800)
      : `/var/tmp/synthetic/d${String(i).padStart(3, '0')}`,
  );
  const messages: Buffer[] = [];
  for (let m = 0; m < 50; m++) {
    const events = Array.from({ length: batch }, (_, k) => {
      const i = m * batch + k;
      return {
        sequence: i + 1,
        ktime_ns: 1e12 + i,
        time_unix_nano: 1.7e18,
        pid: 1000 + (i % 50),
        tgid: 1000,
        uid: 1000,
        gid: 1000,
        comm: Buffer.from('synth-1'),
        cgroup_id: 1 + (i % 4),
        path: Buffer.from(
          `${dirs[i % 100]}/file-${String(Math.floor(i / 100) % 1000).padStart(5, '0')}.log`,
        ),
      };
    });
    const response: SubscribeResponse = { run_id: 'bench', events, loss: { ringbuf_full: 0 } };
    messages.push(method.responseSerialize(response));
  }
  const series = new SeriesTable(
    new LabelMapper({ pathLabel: 'full', pathDepth: 3, nameLabel: true }),
    { limit: 10_000, idleTtlMs: 3_600_000 },
  );
  const tracker = new SequenceTracker();
  // What the exporter uses, or proto-loader's own deserializer (for comparison).
  const decode = protobufjs
    ? (b: Buffer) => method.responseDeserialize(b) as SubscribeResponse__Output
    : decodeSubscribeResponse;
  let events = 0;
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(seconds * 1e9);
  while (process.hrtime.bigint() < deadline) {
    for (const bytes of messages) {
      const response = decode(bytes);
      const evs = response.events;
      tracker.reset();
      tracker.observe(evs[0].sequence, evs[evs.length - 1].sequence);
      const now = Date.now();
      for (const e of evs) series.record(e.path, e.flags, now);
      events += evs.length;
    }
  }
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(
    `batch=${batch}${protobufjs ? ' decoder=protobufjs' : ''} events=${events} events_per_s=${Math.round(events / elapsed)} us_per_event=${((elapsed * 1e6) / events).toFixed(2)}`,
  );
}

/** ChurnScenario is a steady mix of new paths and a hot set, over simulated hours. */
interface ChurnScenario {
  name: string;
  hours: number;
  /** Distinct new paths per simulated second. */
  newPerSecond: number;
  /** Paths created again and again (each once per simulated second). */
  hot: number;
}

/**
 * churn runs the exporter's SeriesTable (default cap and idle TTL) on a
 * simulated clock: every simulated second, newPerSecond paths never seen
 * before and each hot path once; a scrape every 15 simulated seconds, as
 * Prometheus makes them. Every half hour it prints a JSON line: series held,
 * where they were created (by hour), evictions, expirations, overflow since
 * the last line, heap and RSS, and the real time of that scrape. Paths are
 * /churn/h<hour>/<n>, so the exposition tells which hour a series is from.
 */
function churn(sc: ChurnScenario, checkpointMinutes = 30): void {
  const limit = 10_000;
  const ttl = 3_600_000;
  let now = 0;
  const t = new SeriesTable(new LabelMapper({ pathLabel: 'full', pathDepth: 3, nameLabel: true }), {
    limit,
    idleTtlMs: ttl,
    clock: () => now,
  });
  const hot = Array.from({ length: sc.hot }, (_, i) => Buffer.from(`/churn/hot/${i}`));
  let fresh = 0;
  let lastOverflow = 0;
  for (let second = 1; second <= sc.hours * 3600; second++) {
    now = second * 1000;
    const hour = Math.floor((second - 1) / 3600);
    for (let i = 0; i < sc.newPerSecond; i++) {
      t.record(Buffer.from(`/churn/h${hour}/${fresh++}`), 0, now);
    }
    for (const p of hot) t.record(p, 0, now);
    if (second % 15 !== 0) continue;
    const start = process.hrtime.bigint();
    const text = [...t.chunks()].join('');
    const scrapeMs = Number(process.hrtime.bigint() - start) / 1e6;
    if (second % (checkpointMinutes * 60) !== 0) continue;
    const byHour: Record<string, number> = {};
    for (const m of text.matchAll(/path="\/churn\/(h\d+|hot)"/g))
      byHour[m[1]] = (byHour[m[1]] ?? 0) + 1;
    // Live memory, not garbage waiting for the collector (node --expose-gc).
    (globalThis as { gc?: () => void }).gc?.();
    const mem = process.memoryUsage();
    console.log(
      JSON.stringify({
        scenario: sc.name,
        minutes: second / 60,
        paths: fresh,
        series: t.size,
        by_hour: byHour,
        evicted: t.evicted,
        expired: t.expired,
        overflow_since: t.overflowEvents - lastOverflow,
        heap_mb: Math.round(mem.heapUsed / 1e5) / 10,
        rss_mb: Math.round(mem.rss / 1e5) / 10,
        scrape_ms: Math.round(scrapeMs * 10) / 10,
        exposition_bytes: text.length,
      }),
    );
    lastOverflow = t.overflowEvents;
  }
}

async function main(): Promise<void> {
  const [mode = 'throughput', ...args] = process.argv.slice(2);
  console.log(
    `# ${mode} — node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'})`,
  );
  if (mode === 'throughput') {
    for (const rate of args.length > 0 ? args.map(Number) : [100_000, 200_000, 300_000, 0]) {
      await throughput(rate);
    }
  } else if (mode === 'pipeline') {
    pipeline(256);
    pipeline(1024);
    pipeline(1024, 5, true);
  } else if (mode === 'churn') {
    const smoke = args[0] === 'smoke';
    const scenarios: ChurnScenario[] = smoke
      ? [{ name: 'high churn', hours: 2, newPerSecond: 20, hot: 10 }]
      : [
          // ~500,000 new paths an hour (a build farm, a package cache).
          { name: 'high churn', hours: 6, newPerSecond: 140, hot: 200 },
          // one new path a second over a busy hot set (a web server's temp files).
          { name: 'moderate churn', hours: 6, newPerSecond: 1, hot: 500 },
        ];
    for (const sc of scenarios) churn(sc);
  } else if (mode === 'memory') {
    for (const cap of args.length > 0 ? args.map(Number) : [10_000, 100_000]) await memory(cap);
  } else {
    throw new Error(`unknown mode ${mode}: throughput, pipeline, churn or memory`);
  }
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
