import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { Exporter } from './exporter';
import { LoaderDouble } from './testing/loader-double';
import type { Subscriber } from './testing/loader-double';
import { promtoolCheck, sample, scrape, startExporter, waitFor } from './testing/helpers';
import type { LogCapture } from './testing/helpers';

const SCOPE = 'otel_scope_name="filewatcher"';
const metric = (name: string, labels = ''): string =>
  `${name}{${labels === '' ? '' : labels + ','}${SCOPE}}`;

/** Running is one exporter subscribed to its own loader double. */
interface Running {
  loader: LoaderDouble;
  exporter: Exporter;
  log: LogCapture;
  url: string;
  sub: Subscriber;
}

async function run(...flags: string[]): Promise<Running> {
  const loader = new LoaderDouble();
  const target = await loader.listen();
  const { exporter, log, url } = await startExporter(target, ...flags);
  const sub = await loader.subscriber(1);
  await waitFor('subscribed', () => exporter.stream.ready);
  return { loader, exporter, log, url, sub };
}

async function stop(r: Running): Promise<void> {
  await r.exporter.stop();
  r.loader.close();
}

/** scrapeUntil scrapes until the sample named by prefix reaches want. */
async function scrapeUntil(url: string, prefix: string, want: number): Promise<string> {
  let last = '';
  try {
    await waitFor(`${prefix} = ${want}`, async () => {
      last = await scrape(url);
      return sample(last, prefix) === want;
    });
    // One scrape is not a snapshot: events that arrive during it can be in
    // the stream's counters (collected last) but not yet in
    // file_created_total (written first). The tests send everything before
    // waiting, so a scrape that starts after the condition holds is exact.
    return await scrape(url);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${last}`);
  }
}

const ev = (sequence: number, p: string | Buffer, flags = 0) => ({
  sequence,
  path: typeof p === 'string' ? Buffer.from(p) : p,
  flags,
});

describe('file_created_total', () => {
  it('renders any bytes as parseable exposition (promtool)', async () => {
    const r = await run();
    try {
      const names: Buffer[] = [
        Buffer.from('/tmp/non-utf8-\xff\xfe\x80', 'latin1'),
        Buffer.from('/tmp/new\nline'),
        Buffer.from('/tmp/quote"double\'single'),
        Buffer.from('/tmp/back\\slash'),
        Buffer.from('/tmp/with space and\ttab\r'),
        Buffer.from('/tmp/ünïcödé-名前'),
        Buffer.from('/tmp/dir\xc0\xaf/x', 'latin1'),
        Buffer.from('/tmp/"}\\n'),
        Buffer.from('/tmp/\\xff'),
      ];
      r.sub.send({ run_id: 'run-1', events: names.map((p, i) => ev(i + 1, p)) });
      const text = await scrapeUntil(
        r.url,
        metric('filewatcher_exporter_events_received_total'),
        9,
      );
      const lines = text.split('\n').filter((l) => l.startsWith('file_created_total{'));
      assert.deepEqual(lines, [
        `file_created_total{name="non-utf8-\\\\xff\\\\xfe\\\\x80",path="/tmp",${SCOPE}} 1`,
        `file_created_total{name="new\\nline",path="/tmp",${SCOPE}} 1`,
        `file_created_total{name="quote\\"double'single",path="/tmp",${SCOPE}} 1`,
        `file_created_total{name="back\\\\slash",path="/tmp",${SCOPE}} 1`,
        `file_created_total{name="with space and\ttab\r",path="/tmp",${SCOPE}} 1`,
        `file_created_total{name="ünïcödé-名前",path="/tmp",${SCOPE}} 1`,
        `file_created_total{name="x",path="/tmp/dir\\\\xc0\\\\xaf",${SCOPE}} 1`,
        `file_created_total{name="\\"}\\\\n",path="/tmp",${SCOPE}} 1`,
        `file_created_total{name="\\\\xff",path="/tmp",${SCOPE}} 1`,
      ]);
      const check = promtoolCheck(text);
      assert.ok(check.ok, check.output);
    } finally {
      await stop(r);
    }
  });

  it('caps label sets and counts the rest in the overflow series', async () => {
    const r = await run('--max-series', '3');
    try {
      const paths = ['/a/1', '/a/2', '/a/3', '/a/4', '/b/1', '/a/1', '/c/9'];
      r.sub.send({ run_id: 'run-1', events: paths.map((p, i) => ev(i + 1, p)) });
      const text = await scrapeUntil(
        r.url,
        metric('filewatcher_exporter_events_received_total'),
        7,
      );
      assert.deepEqual(
        text.split('\n').filter((l) => l.startsWith('file_created_total{')),
        [
          `file_created_total{name="1",path="/a",${SCOPE}} 2`,
          `file_created_total{name="2",path="/a",${SCOPE}} 1`,
          `file_created_total{name="3",path="/a",${SCOPE}} 1`,
          `file_created_total{otel_metric_overflow="true",${SCOPE}} 3`,
        ],
      );
      assert.equal(sample(text, metric('filewatcher_exporter_overflow_events_total')), 3);
      assert.equal(sample(text, metric('filewatcher_exporter_series')), 3);
      assert.equal(sample(text, metric('filewatcher_exporter_series_limit')), 3);
    } finally {
      await stop(r);
    }
  });

  for (const [flags, want] of [
    [
      ['--path-label', 'depth', '--path-depth', '2'],
      [`file_created_total{name="f",path="/home/alice",${SCOPE}} 2`],
    ],
    [['--path-label', 'none'], [`file_created_total{name="f",${SCOPE}} 2`]],
    [
      ['--name-label', 'false'],
      [
        `file_created_total{path="/home/alice/src",${SCOPE}} 1`,
        `file_created_total{path="/home/alice/tmp",${SCOPE}} 1`,
      ],
    ],
  ] as const) {
    it(`labels with ${flags.join(' ')}`, async () => {
      const r = await run(...flags);
      try {
        r.sub.send({
          run_id: 'run-1',
          events: [ev(1, '/home/alice/src/f'), ev(2, '/home/alice/tmp/f')],
        });
        const text = await scrapeUntil(
          r.url,
          metric('filewatcher_exporter_events_received_total'),
          2,
        );
        assert.deepEqual(
          text.split('\n').filter((l) => l.startsWith('file_created_total{')),
          want,
        );
      } finally {
        await stop(r);
      }
    });
  }
});

describe('loader info', () => {
  it('shows which probe the loader runs, and why, in filewatcher_loader_info', async () => {
    const r = await run('--status-interval=100ms');
    try {
      r.loader.status = {
        run_id: 'run-1',
        source: 'kernel',
        loader_version: '1.2.3',
        module_version: '',
        kernel_release: '6.1.0-50-cloud-amd64',
        probe: 'bpf',
        probe_reason: 'lockdown',
        probe_function: 'do_filp_open',
      };
      const want = metric(
        'filewatcher_loader_info',
        'loader_version="1.2.3",module_version="",kernel_release="6.1.0-50-cloud-amd64",source="kernel",' +
          'probe="bpf",probe_reason="lockdown",probe_function="do_filp_open"',
      );
      const text = await scrapeUntil(r.url, want, 1);
      assert.equal(sample(text, want), 1);
    } finally {
      await stop(r);
    }
  });
});

describe('loss accounting', () => {
  it('counts reported gaps by reason, unreported sequence gaps, and the loader counters', async () => {
    const r = await run();
    try {
      r.sub.send({
        run_id: 'run-1',
        events: [ev(1, '/d/a'), ev(2, '/d/b'), ev(6, '/d/c'), ev(9, '/d/d')],
        gaps: [
          { first_sequence: 3, last_sequence: 5, reason: 'GAP_REASON_RINGBUF_FULL' },
          { first_sequence: 10, last_sequence: 10, reason: 42 as never }, // from a newer API
          { first_sequence: 11, last_sequence: 14, reason: 'GAP_REASON_SUBSCRIBER_OVERFLOW' },
        ],
        filtered_count: 5,
        // The run as this exporter joins it: a baseline, not new loss.
        loss: { ringbuf_full: 3, kprobe_missed: 1, subscriber_dropped: 4, path_unresolved: 2 },
      });
      r.sub.send({
        run_id: 'run-1',
        events: [ev(15, '/d/e')],
        gaps: [
          // As loaders before kprobe_missed became an upper bound sent them.
          { first_sequence: 16, last_sequence: 16, reason: 'GAP_REASON_KPROBE_MISSED' },
          // Malformed: rejected before it can move the sequence tracker.
          { first_sequence: 30, last_sequence: 20, reason: 'GAP_REASON_RINGBUF_FULL' },
        ],
        loss: { ringbuf_full: 5, kprobe_missed: 4, subscriber_dropped: 6, path_unresolved: 3 },
      });
      r.sub.send({ run_id: 'run-1', events: [ev(17, '/d/f')] });
      const text = await scrapeUntil(
        r.url,
        metric('filewatcher_exporter_batches_received_total'),
        3,
      );
      const lost = (reason: string) =>
        sample(text, metric('filewatcher_exporter_events_lost_total', `reason="${reason}"`));
      const loaderLost = (reason: string) =>
        sample(text, metric('filewatcher_loader_events_lost_total', `reason="${reason}"`));
      assert.equal(sample(text, metric('filewatcher_exporter_events_received_total')), 6);
      assert.equal(lost('ringbuf_full'), 3);
      assert.equal(lost('sequence_gap'), 2); // 7 and 8, not 17..20 of the malformed gap
      assert.equal(lost('unknown'), 1);
      assert.equal(lost('subscriber_overflow'), 4);
      assert.equal(lost('kprobe_missed'), 1);
      // The loader's counters grew by 2, 3, 2 and 1 after the exporter joined.
      assert.equal(loaderLost('ringbuf_full'), 2);
      assert.equal(loaderLost('subscriber_overflow'), 2);
      // Missed opens are an upper bound on missed creations, not lost events.
      assert.equal(sample(text, metric('filewatcher_loader_opens_missed_total')), 3);
      assert.ok(
        !text.includes('filewatcher_loader_events_lost_total{reason="kprobe_missed"'),
        text,
      );
      assert.equal(sample(text, metric('filewatcher_loader_path_unresolved_events_total')), 1);
      assert.equal(sample(text, metric('filewatcher_exporter_events_filtered_total')), 5);
      assert.equal(
        sample(text, metric('filewatcher_exporter_malformed_total', 'reason="invalid_gap"')),
        1,
      );
      assert.equal(text.includes('reason="sequence_regression"'), false);
      const check = promtoolCheck(text);
      assert.ok(check.ok, check.output);
    } finally {
      await stop(r);
    }
  });
});

describe('a misbehaving loader', () => {
  it('survives a message that does not parse: counts it, reconnects live, carries on', async () => {
    const r = await run();
    try {
      r.sub.send({ run_id: 'run-1', events: [ev(1, '/d/a'), ev(2, '/d/b')] });
      await scrapeUntil(r.url, metric('filewatcher_exporter_events_received_total'), 2);
      r.sub.send(Buffer.from([0x12, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01])); // events: length past the end
      const sub2 = await r.loader.subscriber(2);
      assert.equal(sub2.request.resume_run_id, '', 'resuming would replay the bad message');
      r.sub = sub2;
      r.loader.nextSequence = 5; // the loader moved on meanwhile: 3 and 4 are lost to us
      r.sub.send({ run_id: 'run-1', events: [ev(5, '/d/c')] });
      const text = await scrapeUntil(
        r.url,
        metric('filewatcher_exporter_events_received_total'),
        3,
      );
      assert.equal(
        sample(text, metric('filewatcher_exporter_malformed_total', 'reason="decode"')),
        1,
      );
      assert.equal(sample(text, metric('filewatcher_exporter_reconnects_total')), 1);
      assert.equal(
        sample(text, metric('filewatcher_exporter_stream_ends_total', 'code="INTERNAL"')),
        1,
      );
      assert.equal(
        sample(text, metric('filewatcher_exporter_events_lost_total', 'reason="sequence_gap"')),
        2,
      );
      assert.equal(sample(text, metric('filewatcher_exporter_stream_connected')), 1);
    } finally {
      await stop(r);
    }
  });

  it('ignores unknown fields from a newer API', async () => {
    const r = await run();
    try {
      const known = r.loader.encodeResponse({ run_id: 'run-1', events: [ev(1, '/d/a')] });
      // field 99 (varint 7) and field 100 (bytes "new") appended: what a v1.x loader may add.
      const unknown = Buffer.from([0x98, 0x06, 0x07, 0xa2, 0x06, 0x03, 0x6e, 0x65, 0x77]);
      r.sub.send(Buffer.concat([known, unknown]));
      const text = await scrapeUntil(
        r.url,
        metric('filewatcher_exporter_events_received_total'),
        1,
      );
      assert.equal(sample(text, `file_created_total{name="a",path="/d",${SCOPE}}`), 1);
      assert.equal(text.includes('filewatcher_exporter_malformed_total'), false);
      assert.equal(r.loader.subscribers.length, 1, 'no reconnect');
    } finally {
      await stop(r);
    }
  });

  it('replaces a stream that stalls while the loader moves on', async () => {
    const r = await run('--stall-timeout', '1s');
    try {
      r.sub.send({ run_id: 'run-1', events: [ev(1, '/d/a')] });
      await scrapeUntil(r.url, metric('filewatcher_exporter_events_received_total'), 1);
      r.loader.status = { run_id: 'run-1', last_sequence: 50 }; // ahead, and the stream says nothing
      const sub2 = await r.loader.subscriber(2);
      assert.equal(sub2.request.resume_run_id, 'run-1');
      assert.equal(Number(sub2.request.resume_after_sequence), 1);
      await waitFor('the stalled call cancelled', () => r.sub.cancelled);
      const text = await scrapeUntil(r.url, metric('filewatcher_exporter_stalls_total'), 1);
      assert.equal(sample(text, metric('filewatcher_exporter_reconnects_total')), 1);
      assert.equal(r.log.messages('warn').filter((m) => m.includes('stalled')).length, 1);
    } finally {
      await stop(r);
    }
  });

  it('replaces a stream when the loader stops answering', async () => {
    const r = await run('--stall-timeout', '1s');
    try {
      r.loader.statusHangs = true;
      await r.loader.subscriber(2);
      const text = await scrapeUntil(r.url, metric('filewatcher_exporter_stalls_total'), 1);
      assert.ok(text.includes('filewatcher_exporter_stalls_total'));
    } finally {
      r.loader.statusHangs = false;
      await stop(r);
    }
  });

  it('does not mistake an idle host for a stall', async () => {
    const r = await run('--stall-timeout', '1s');
    try {
      r.loader.status = { run_id: 'run-1', last_sequence: 0 };
      await new Promise((resolve) => setTimeout(resolve, 3500));
      const text = await scrape(r.url);
      assert.equal(text.includes('filewatcher_exporter_stalls_total'), false);
      assert.equal(sample(text, metric('filewatcher_exporter_stream_connected')), 1);
      assert.equal(r.loader.subscribers.length, 1);
      assert.equal((await fetch(`${r.url}/readyz`)).status, 200);
    } finally {
      await stop(r);
    }
  });

  it('is ready on an idle loader that sends no headers (probes it)', async () => {
    const loader = new LoaderDouble();
    loader.sendRunHeaders = false;
    const target = await loader.listen();
    const { exporter, url } = await startExporter(target);
    try {
      await waitFor('ready', async () => (await fetch(`${url}/readyz`)).status === 200);
    } finally {
      await exporter.stop();
      loader.close();
    }
  });
});

describe('reconnection', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fw-exporter-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('waits for a loader that is not there yet, logging the failure once', async () => {
    const socket = `unix://${dir}/late.sock`;
    const { exporter, log, url } = await startExporter(socket, '--reconnect-max-delay', '200ms');
    const loader = new LoaderDouble();
    try {
      assert.equal((await fetch(`${url}/healthz`)).status, 200);
      const notReady = await fetch(`${url}/readyz`);
      assert.equal(notReady.status, 503);
      assert.match(await notReady.text(), /not ready: loader stream/);
      await scrapeUntil(url, metric('filewatcher_exporter_reconnects_total'), 4);
      await loader.listen(socket);
      await waitFor('ready', async () => (await fetch(`${url}/readyz`)).status === 200);
      const warnings = log.messages('warn');
      assert.deepEqual(warnings, ['cannot subscribe to loader, retrying with backoff']);
      assert.equal(log.messages('info').filter((m) => m === 'subscribed to loader').length, 1);
    } finally {
      await exporter.stop();
      loader.close();
    }
  });

  it('resumes the same run after the stream ends, and starts over with a new run', async () => {
    const r = await run();
    try {
      r.sub.send({ run_id: 'run-1', events: [ev(1, '/d/a'), ev(2, '/d/a'), ev(3, '/d/a')] });
      await scrapeUntil(r.url, metric('filewatcher_exporter_events_received_total'), 3);
      r.sub.end(grpc.status.UNAVAILABLE, 'server shutting down');
      const sub2 = await r.loader.subscriber(2);
      assert.equal(sub2.request.resume_run_id, 'run-1');
      assert.equal(Number(sub2.request.resume_after_sequence), 3);
      sub2.send({ run_id: 'run-1', events: [ev(4, '/d/a')] });
      await scrapeUntil(r.url, metric('filewatcher_exporter_events_received_total'), 4);

      // The loader restarts: a new run, sequences from 1 again, which has
      // numbered 2 events before the exporter is back: it asks the loader's
      // run (GetStatus) and reads the new run from its start.
      sub2.end(grpc.status.UNAVAILABLE, 'server shutting down');
      r.loader.status = { run_id: 'run-2' };
      r.loader.nextSequence = 3;
      const sub3 = await r.loader.subscriber(3);
      assert.equal(sub3.request.resume_run_id, 'run-2');
      assert.equal(Number(sub3.request.resume_after_sequence), 0);
      sub3.send({
        run_id: 'run-2',
        events: [ev(1, '/d/a'), ev(2, '/d/b')],
        loss: { ringbuf_full: 3, kprobe_missed: 0, subscriber_dropped: 0, path_unresolved: 0 },
      });
      let text = await scrapeUntil(r.url, metric('filewatcher_exporter_events_received_total'), 6);
      assert.equal(sample(text, metric('filewatcher_exporter_loader_restarts_total')), 1);
      assert.equal(sample(text, metric('filewatcher_exporter_reconnects_total')), 2);
      assert.equal(sample(text, `file_created_total{name="a",path="/d",${SCOPE}}`), 5);
      assert.equal(text.includes('reason="sequence_gap"'), false);
      // A run that began while the exporter followed another counts its
      // loss from zero.
      assert.equal(
        sample(text, metric('filewatcher_loader_events_lost_total', 'reason="ringbuf_full"')),
        3,
      );
      assert.deepEqual(
        r.log.messages('info').filter((m) => m.startsWith('loader restarted')),
        ['loader restarted with a new run; sequences start again'],
      );
      assert.equal(
        r.log.messages('warn').filter((m) => m.startsWith('stream from loader ended')).length,
        2,
      );

      // Restarted again, but the exporter cannot learn the new run first
      // (GetStatus still names run-2): it resumes run-2, the loader starts it
      // live at 40 of run-3, and 1..39 of run-3 are counted lost.
      sub3.end(grpc.status.UNAVAILABLE, 'server shutting down');
      r.loader.status = { run_id: 'run-2' };
      const sub4 = await r.loader.subscriber(4);
      assert.equal(sub4.request.resume_run_id, 'run-2');
      r.loader.status = { run_id: 'run-3' };
      sub4.send({ run_id: 'run-3', events: [ev(40, '/d/a')] });
      text = await scrapeUntil(r.url, metric('filewatcher_exporter_events_received_total'), 7);
      assert.equal(
        sample(text, metric('filewatcher_exporter_events_lost_total', 'reason="sequence_gap"')),
        39,
      );
    } finally {
      await stop(r);
    }
  });
});
