import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Exporter } from './exporter';
import { sample, scrape, startExporter, waitFor } from './testing/helpers';
import { LoaderDouble } from './testing/loader-double';
import type { Subscriber } from './testing/loader-double';
import { Prometheus } from './testing/prometheus';

// The active series set and the rollup rules end to end: loader doubles send
// chosen paths to two exporters with a small cap (one also with a short
// idle TTL, one with a rules file), and a real Prometheus scrapes both every
// second. What Prometheus stores is what is asserted: new paths get series
// after the cap was reached, idle ones go stale, rules fold paths into fixed
// labels.

const SCOPE = 'otel_scope_name="filewatcher"';

/** Fed is one exporter and the loader double that feeds it. */
class Fed {
  private sequence = 1;
  private constructor(
    readonly job: string,
    readonly loader: LoaderDouble,
    readonly exporter: Exporter,
    readonly url: string,
    private readonly sub: Subscriber,
  ) {}

  static async start(job: string, ...flags: string[]): Promise<Fed> {
    const loader = new LoaderDouble();
    const { exporter, url } = await startExporter(await loader.listen(), ...flags);
    const sub = await loader.subscriber(1);
    await waitFor('subscribed', () => exporter.stream.ready);
    return new Fed(job, loader, exporter, url, sub);
  }

  /** send has the loader report one creation per path. */
  send(...paths: string[]): void {
    this.sub.send({
      run_id: 'run-1',
      events: paths.map((p) => ({ sequence: this.sequence++, path: Buffer.from(p), flags: 0 })),
    });
  }

  async self(metric: string): Promise<number | undefined> {
    return sample(await scrape(this.url), `filewatcher_exporter_${metric}{${SCOPE}}`);
  }

  async stop(): Promise<void> {
    await this.exporter.stop();
    this.loader.close();
  }
}

describe('active series set and rollup rules, scraped by Prometheus', () => {
  let lru: Fed; // --max-series 4, no TTL, rules
  let ttl: Fed; // --max-series 4, --series-idle-ttl 3s
  let prom: Prometheus;

  /** series are Prometheus' current file_created_total series of fed's job matching selector. */
  const series = async (fed: Fed, selector = ''): Promise<string[]> =>
    (await prom.query(`file_created_total{job="${fed.job}"${selector}}`))
      .map((s) => {
        const labels = Object.fromEntries(
          Object.entries(s.metric).filter(
            ([k]) => !['__name__', 'instance', 'job', 'otel_scope_name'].includes(k),
          ),
        );
        return `${JSON.stringify(labels)} ${s.value[1]}`;
      })
      .sort();
  const until = async (fed: Fed, what: string, want: string[], selector = ''): Promise<void> => {
    let got: string[] = [];
    try {
      await waitFor(
        what,
        async () => {
          got = await series(fed, selector);
          return JSON.stringify(got) === JSON.stringify(want);
        },
        30_000,
      );
    } catch (err) {
      throw new Error(
        `${(err as Error).message}\nPrometheus has:\n${got.join('\n')}\nwant:\n${want.join('\n')}\n` +
          `exporter:\n${await scrape(fed.url)}\nprometheus log:\n${prom.log}`,
      );
    }
  };

  before(async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'filewatcher-activeset-'));
    const rules = path.join(dir, 'rules.yml');
    fs.writeFileSync(rules, "rules:\n  - match: /tmp/**\n    path: /tmp\n    name: ''\n");
    lru = await Fed.start(
      'lru',
      '--max-series',
      '4',
      '--series-idle-ttl',
      '0',
      '--label-rules',
      rules,
    );
    ttl = await Fed.start('ttl', '--max-series', '4', '--series-idle-ttl', '3s');
    const job = (f: Fed): string =>
      `  - job_name: ${f.job}\n    static_configs: [{targets: ['127.0.0.1:${f.exporter.address.port}']}]\n`;
    prom = await Prometheus.start(dir, job(lru) + job(ttl));
  });

  after(async () => {
    await prom?.stop();
    await lru?.stop();
    await ttl?.stop();
  });

  it('after the cap was reached, paths created now get their own series', async () => {
    lru.send('/old/a', '/old/b', '/old/c', '/old/d', '/old/a');
    await until(lru, 'the four old series are stored', [
      '{"name":"a","path":"/old"} 2',
      '{"name":"b","path":"/old"} 1',
      '{"name":"c","path":"/old"} 1',
      '{"name":"d","path":"/old"} 1',
    ]);
    // The cap is full and every old series has been scraped: new paths take
    // the least recently used slots (/old/b first; /old/a was used last).
    lru.send('/new/1', '/new/2', '/new/3');
    await until(lru, 'three new series are stored and three old ones went stale', [
      '{"name":"1","path":"/new"} 1',
      '{"name":"2","path":"/new"} 1',
      '{"name":"3","path":"/new"} 1',
      '{"name":"a","path":"/old"} 2',
    ]);
    assert.equal(await lru.self('series_evicted_total'), 3);
    assert.equal(await lru.self('overflow_events_total'), 0);
    assert.equal(await lru.self('series'), 4);
  });

  it('folds the paths a rule matches into its fixed labels', async () => {
    lru.send('/tmp/a/1', '/tmp/b/c/2', '/tmp/3');
    // name="" is, to Prometheus, no name label at all.
    await until(lru, 'one /tmp series counts all three', ['{"path":"/tmp"} 3'], ',path="/tmp"');
  });

  it('idle series expire while active ones stay, and their slots go to new paths', async () => {
    ttl.send('/idle/a', '/idle/b', '/idle/c', '/busy/x');
    await until(ttl, 'the four series are stored', [
      '{"name":"a","path":"/idle"} 1',
      '{"name":"b","path":"/idle"} 1',
      '{"name":"c","path":"/idle"} 1',
      '{"name":"x","path":"/busy"} 1',
    ]);
    // Keep /busy/x busy for twice the TTL; the others fall idle and go.
    let busy = 1;
    for (const start = Date.now(); Date.now() - start < 6_000; busy++) {
      ttl.send('/busy/x');
      await new Promise((r) => setTimeout(r, 200));
    }
    await until(ttl, 'only the busy series is left', [`{"name":"x","path":"/busy"} ${busy}`]);
    assert.equal(await ttl.self('series_expired_total'), 3);
    assert.equal(await ttl.self('series'), 1);
    ttl.send('/later/y');
    await until(
      ttl,
      'a new path gets its own series',
      ['{"name":"y","path":"/later"} 1'],
      ',path="/later"',
    );
    assert.equal(await ttl.self('overflow_events_total'), 0);
  });
});
