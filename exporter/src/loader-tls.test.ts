import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeCa } from './testing/certs';
import type { TestCa } from './testing/certs';
import { sample, scrape, startExporter, testConfig, waitFor } from './testing/helpers';
import { RealLoader } from './testing/real-loader';

// The exporter reaching a loader that serves only mutual TLS and admits one
// named client (--tls-allow-clients): the real loader, certificates made
// with openssl for this run.
describe('exporter to a TLS-only loader', () => {
  let dir: string;
  let ca: TestCa;
  let loader: RealLoader;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fw-loader-tls-'));
    ca = makeCa(dir, 'test');
    const server = ca.issue('loader', 'server');
    loader = await RealLoader.start([
      '--listen=127.0.0.1:0',
      '--rate=500',
      `--tls-cert=${server.cert}`,
      `--tls-key=${server.key}`,
      `--tls-client-ca=${ca.cert}`,
      '--tls-allow-clients=fw-exporter',
    ]);
  });
  after(async () => {
    await loader.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('subscribes with its client certificate and counts events', async () => {
    const client = ca.issue('fw-exporter', 'client');
    const { exporter, url } = await startExporter(
      loader.listen,
      `--loader-tls-ca=${ca.cert}`,
      `--loader-tls-cert=${client.cert}`,
      `--loader-tls-key=${client.key}`,
    );
    try {
      await waitFor('subscribed', () => exporter.stream.ready);
      await waitFor('events counted', async () => {
        const n = sample(
          await scrape(url),
          'filewatcher_exporter_events_received_total{otel_scope_name="filewatcher"}',
        );
        return n !== undefined && n > 0;
      });
    } finally {
      await exporter.stop();
    }
  });

  for (const [what, why, flags] of [
    ['without TLS', /UNAVAILABLE/, () => []],
    ['without a client certificate', /certificate required/, () => [`--loader-tls-ca=${ca.cert}`]],
    [
      'with a certificate the loader does not name',
      /PERMISSION_DENIED client certificate someone-else is not allowed/,
      () => {
        const other = ca.issue('someone-else', 'client');
        return [
          `--loader-tls-ca=${ca.cert}`,
          `--loader-tls-cert=${other.cert}`,
          `--loader-tls-key=${other.key}`,
        ];
      },
    ],
  ] as Array<[string, RegExp, () => string[]]>) {
    it(`is refused ${what}, and says why`, async () => {
      const { exporter, log } = await startExporter(loader.listen, ...flags());
      try {
        await waitFor('the refusal logged', () =>
          log.lines.some(
            (l) =>
              l.msg === 'cannot subscribe to loader, retrying with backoff' &&
              why.test(`${String(l.code)} ${String(l.details)}`),
          ),
        );
        assert.equal(exporter.stream.ready, false);
      } finally {
        await exporter.stop();
      }
    });
  }

  it('rejects --loader-tls-* that cannot work', () => {
    assert.throws(() => testConfig('unix:///run/x.sock', '--loader-tls-ca=ca.pem'), /TCP loader/);
    assert.throws(
      () => testConfig('127.0.0.1:1', '--loader-tls-cert=c.pem'),
      /need --loader-tls-ca/,
    );
    assert.throws(
      () => testConfig('127.0.0.1:1', '--loader-tls-ca=ca.pem', '--loader-tls-key=k.pem'),
      /go together/,
    );
    assert.deepEqual(
      testConfig('127.0.0.1:1', '--loader-tls-ca=ca.pem', '--loader-tls-server-name=fw').loaderTls,
      { ca: 'ca.pem', serverName: 'fw' },
    );
  });
});
