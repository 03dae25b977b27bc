'use strict';
// exporter-probe.js: measurement hooks for the benchmarks (bench/), loaded
// into the real exporter with `node --require bench/probe/exporter-probe.js
// exporter/dist/main.js ...`. The exporter itself has no latency histogram
// and no event-loop-delay metric, so this adds them from the outside:
//
//  - ingest -> counter latency: LoaderStream.handle() is wrapped; once it
//    returns, every event of the message has been counted in the series table
//    (what the next scrape exports). The latency of each event is "now" minus
//    its time_unix_nano, which the loader stamps when the event enters it (the
//    synthetic source stamps each batch as it makes it). Both clocks are this
//    host's CLOCK_REALTIME.
//  - event-loop delay: perf_hooks.monitorEventLoopDelay at 1 ms resolution.
//
// The cost is one subtraction and one array increment per event, one clock
// read per message (~0.1% of the exporter's per-event cost).
//
// It serves its numbers as JSON on 127.0.0.1:<random port>, written to the
// file named by FWBENCH_PROBE_FILE:
//   GET /stats           events and messages seen, latency percentiles (ms)
//   GET /stats?reset=1   the same, then start counting afresh
//   GET /eld/reset       restart the event-loop delay histogram
//   GET /eld             event-loop delay since the reset (ms); stops measuring
//   GET /profile/start   start the V8 CPU profiler (100 µs sampling)
//   GET /profile/stop?file=PATH   stop it and write the .cpuprofile to PATH
const fs = require('node:fs');
const inspector = require('node:inspector');
const http = require('node:http');
const path = require('node:path');
const { monitorEventLoopDelay, performance } = require('node:perf_hooks');

const dist = process.env.FWBENCH_EXPORTER_DIST || path.resolve(__dirname, '../../exporter/dist');
const { LoaderStream } = require(path.join(dist, 'stream.js'));

// Latency histogram: 10 µs buckets up to 5 s, then one overflow bucket.
const BUCKET_US = 10;
const BUCKETS = 500_000;
let hist = new Uint32Array(BUCKETS + 1);
let events = 0;
let messages = 0;
let maxUs = 0;
let negative = 0;

const originalHandle = LoaderStream.prototype.handle;
if (typeof originalHandle !== 'function') {
  throw new Error('exporter-probe: LoaderStream.prototype.handle not found: update bench/probe');
}
LoaderStream.prototype.handle = function handle(response) {
  originalHandle.call(this, response);
  const list = response.events;
  const n = list.length;
  if (n === 0) return;
  messages++;
  events += n;
  // µs since the epoch; time_unix_nano is a Number (ns, ~256 ns precision).
  const nowUs = (performance.timeOrigin + performance.now()) * 1000;
  for (let i = 0; i < n; i++) {
    const us = nowUs - list[i].time_unix_nano / 1000;
    if (us < 0) {
      negative++;
      continue;
    }
    if (us > maxUs) maxUs = us;
    const b = Math.floor(us / BUCKET_US);
    hist[b < BUCKETS ? b : BUCKETS]++;
  }
};

function percentile(q) {
  let total = 0;
  for (let i = 0; i <= BUCKETS; i++) total += hist[i];
  if (total === 0) return null;
  const rank = Math.ceil(q * total);
  let seen = 0;
  for (let i = 0; i <= BUCKETS; i++) {
    seen += hist[i];
    if (seen >= rank) return i === BUCKETS ? maxUs / 1000 : ((i + 0.5) * BUCKET_US) / 1000;
  }
  return maxUs / 1000;
}

function stats() {
  return {
    events,
    messages,
    negative,
    latency_ms: {
      p50: percentile(0.5),
      p90: percentile(0.9),
      p99: percentile(0.99),
      p999: percentile(0.999),
      max: events > 0 ? maxUs / 1000 : null,
    },
    rss_bytes: process.memoryUsage.rss(),
  };
}

// Enabled only between /eld/reset and /eld: its 1 ms timer costs CPU.
let eld = monitorEventLoopDelay({ resolution: 1 });

function eldStats() {
  const ms = (ns) => ns / 1e6;
  return {
    count: eld.count,
    max_ms: ms(eld.max),
    p50_ms: ms(eld.percentile(50)),
    p99_ms: ms(eld.percentile(99)),
    mean_ms: ms(eld.mean),
  };
}

// The profiler runs in this thread, so it sees the exporter's own work only
// between /profile/start and /profile/stop (not start-up, not shutdown).
let session;
function profile(action, file, done) {
  if (action === 'start') {
    session = new inspector.Session();
    session.connect();
    session.post('Profiler.enable', () =>
      session.post('Profiler.setSamplingInterval', { interval: 100 }, () =>
        session.post('Profiler.start', (err) => done(err, { started: true })),
      ),
    );
    return;
  }
  if (session === undefined) {
    done(new Error('profiler not started'));
    return;
  }
  session.post('Profiler.stop', (err, result) => {
    if (err) {
      done(err);
      return;
    }
    fs.writeFileSync(file, JSON.stringify(result.profile));
    session.disconnect();
    session = undefined;
    done(null, { written: file });
  });
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://probe');
  let body;
  if (url.pathname === '/profile/start' || url.pathname === '/profile/stop') {
    const action = url.pathname.slice('/profile/'.length);
    profile(action, url.searchParams.get('file'), (err, result) => {
      res
        .writeHead(err ? 500 : 200, { 'content-type': 'application/json' })
        .end(JSON.stringify(err ? { error: String(err) } : result));
    });
    return;
  }
  if (url.pathname === '/stats') {
    body = stats();
    if (url.searchParams.get('reset') === '1') {
      hist = new Uint32Array(BUCKETS + 1);
      events = messages = maxUs = negative = 0;
    }
  } else if (url.pathname === '/eld/reset') {
    eld.disable();
    eld = monitorEventLoopDelay({ resolution: 1 });
    eld.enable();
    body = { ok: true };
  } else if (url.pathname === '/eld') {
    body = eldStats();
    eld.disable();
  } else {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
});
// The probe must never keep the exporter alive on its own.
server.unref();
server.listen(0, '127.0.0.1', () => {
  const file = process.env.FWBENCH_PROBE_FILE;
  if (file) fs.writeFileSync(file, `127.0.0.1:${server.address().port}\n`);
});
