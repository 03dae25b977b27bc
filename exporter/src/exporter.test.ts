import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { LoaderDouble } from './testing/loader-double';
import { promtoolCheck, sample, scrape, startExporter, waitFor } from './testing/helpers';

const SCOPE = 'otel_scope_name="filewatcher"';

describe('exporter against a loader double', () => {
  const loader = new LoaderDouble();
  let target: string;
  before(async () => {
    target = await loader.listen();
  });
  after(() => loader.close());

  it('serves the seed walkthrough line, healthz and readyz', async () => {
    const n = loader.subscribers.length + 1;
    const { exporter, url } = await startExporter(target);
    try {
      assert.equal((await fetch(`${url}/healthz`)).status, 200);
      const sub = await loader.subscriber(n);
      await waitFor('ready', async () => (await fetch(`${url}/readyz`)).status === 200);
      sub.send({
        run_id: 'run-1',
        events: [
          {
            sequence: 1,
            path: Buffer.from('/Users/baluchicken/prj/riptidesio/ebpf-tracing-demo/riptides-demo'),
          },
        ],
      });
      const text = await waitFor('the event', async () => {
        const t = await scrape(url);
        return t.includes('file_created_total{') ? t : undefined;
      });
      const lines = text.split('\n').filter((l) => l.startsWith('file_created'));
      assert.deepEqual(lines, [
        `file_created_total{name="riptides-demo",path="/Users/baluchicken/prj/riptidesio/ebpf-tracing-demo",${SCOPE}} 1`,
      ]);
      assert.ok(text.includes('# TYPE file_created_total counter\n'));
      assert.equal(sample(text, `filewatcher_exporter_stream_connected{${SCOPE}}`), 1);
      assert.equal(sample(text, `filewatcher_exporter_events_received_total{${SCOPE}}`), 1);
      const check = promtoolCheck(text);
      assert.ok(check.ok, check.output);
    } finally {
      await exporter.stop();
    }
  });
});
