import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { OPTIONS } from './config';
import { LoaderDouble } from './testing/loader-double';
import { waitFor } from './testing/helpers';

const MAIN = path.join(__dirname, 'main.js');

describe('node exporter/dist/main.js', () => {
  it('prints --help with every option, its variable and default', () => {
    const result = spawnSync(process.execPath, [MAIN, '--help'], { encoding: 'utf8' });
    assert.equal(result.status, 0);
    for (const o of OPTIONS) {
      assert.ok(result.stdout.includes(`--${o.flag} ${o.arg}`), o.flag);
      assert.ok(result.stdout.includes(`env ${o.env}, default ${o.default}`), o.env);
    }
  });

  it('refuses a bad setting with a message naming it', () => {
    const result = spawnSync(process.execPath, [MAIN], {
      encoding: 'utf8',
      env: { ...process.env, FILEWATCHER_EXPORTER_MAX_SERIES: 'many' },
    });
    assert.equal(result.status, 2);
    assert.match(result.stderr, /FILEWATCHER_EXPORTER_MAX_SERIES="many": must be an integer/);
  });

  it('starts from environment variables, serves, and exits 0 on SIGTERM', async () => {
    const loader = new LoaderDouble();
    const target = await loader.listen();
    const child = spawn(process.execPath, [MAIN, '--log-format', 'json'], {
      env: {
        ...process.env,
        FILEWATCHER_EXPORTER_LOADER: target,
        FILEWATCHER_EXPORTER_LISTEN: '127.0.0.1:0',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      const listen = await waitFor(
        'ready line',
        () => /"msg":"ready","listen":"([^"]+)"/.exec(stderr)?.[1],
      );
      const sub = await loader.subscriber(1);
      sub.send({ run_id: 'r', events: [{ sequence: 1, path: Buffer.from('/tmp/riptides-demo') }] });
      const text = await waitFor('the counter', async () => {
        const t = await (await fetch(`http://${listen}/metrics`)).text();
        return t.includes('file_created_total{') ? t : undefined;
      });
      assert.ok(
        text.includes(
          'file_created_total{name="riptides-demo",path="/tmp",otel_scope_name="filewatcher"} 1',
        ),
      );
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
      const messages = stderr
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { msg: string }).msg);
      assert.deepEqual(messages.slice(-2), ['shutting down', 'stopped']);
      // The stream ended, and the exporter did not subscribe again while
      // shutting down (its reconnect loop stopped first).
      await waitFor('the stream ended', () => sub.cancelled);
      assert.equal(loader.subscribers.length, 1, 'no new subscription during shutdown');
    } finally {
      child.kill('SIGKILL');
      loader.close();
    }
  });
});
