import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { makeCa } from './testing/certs';
import type { TestCa } from './testing/certs';
import { startExporter, waitFor } from './testing/helpers';
import { Prometheus } from './testing/prometheus';
import { RealLoader } from './testing/real-loader';
import { loadWebConfig } from './webconfig';

// /metrics protected by an exporter-toolkit web configuration, checked with
// real clients: curl, and a real Prometheus that scrapes with TLS and basic
// auth (and fails without them). The loader is the real one, synthetic.

/** curl runs curl and resolves to its exit code and output ("%{http_code}" last). */
function curl(...args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(
      'curl',
      ['-sS', '--max-time', '10', '-w', '\n%{http_code}', ...args],
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, out: `${stdout}${stderr}` });
      },
    );
  });
}
const status = (r: { out: string }): string => r.out.trim().split('\n').pop() ?? '';

describe('web configuration: who may read /metrics', () => {
  let dir: string;
  let ca: TestCa;
  let loader: RealLoader;
  const write = (name: string, text: string): string => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    return file;
  };
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fw-webconfig-'));
    ca = makeCa(dir, 'test');
    loader = await RealLoader.start([`--listen=unix://${dir}/loader.sock`, '--rate=200']);
  });
  after(async () => {
    await loader.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('rejects settings it cannot honour, naming them', () => {
    const server = ca.issue('bad-server', 'server');
    const cases: Array<[string, RegExp]> = [
      ['basic_auth_users: {prometheus: s3cret}\n', /want a bcrypt hash/],
      ['tls_server_config: {cert_file: nope.pem, key_file: nope.pem}\n', /cert_file: ENOENT/],
      [
        `tls_server_config: {cert_file: ${server.cert}, key_file: ${server.key}, cipher_suites: [TLS_AES_128_GCM_SHA256]}\n`,
        /unsupported setting "cipher_suites"/,
      ],
      [
        `tls_server_config: {cert_file: ${server.cert}, key_file: ${server.key}, client_auth_type: RequireAndVerifyClientCert}\n`,
        /needs client_ca_file/,
      ],
      [
        `tls_server_config: {cert_file: ${server.cert}, key_file: ${server.key}, client_auth_type: RequireAnyClientCert, client_ca_file: ${ca.cert}}\n`,
        /authenticate nobody/,
      ],
      [
        `tls_server_config: {cert_file: ${server.cert}, key_file: ${server.key}, min_version: TLS10}\n`,
        /use TLS12 or TLS13/,
      ],
      ['http_server_config: {http2: true}\n', /unsupported setting "http2"/],
      ['basic_auth: {}\n', /unknown or unsupported setting "basic_auth"/],
      ['- a list\n', /must be a mapping/],
    ];
    for (const [text, want] of cases) {
      assert.throws(() => loadWebConfig(write('bad.yml', text)), want, text);
    }
  });

  it('TLS and basic auth: curl without credentials gets 401, with them the metrics; probes stay open', async () => {
    const server = ca.issue('exporter', 'server');
    const hash = bcrypt.hashSync('s3cret', 10).replace(/^\$2b\$/, '$2y$'); // as htpasswd -B writes it
    const config = write(
      'web.yml',
      `tls_server_config:\n  cert_file: ${path.basename(server.cert)}\n  key_file: ${path.basename(server.key)}\n` +
        `http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n` +
        `basic_auth_users:\n  prometheus: '${hash}'\n`,
    );
    const { exporter, log } = await startExporter(
      `unix://${dir}/loader.sock`,
      `--web-config-file=${config}`,
    );
    const base = `https://127.0.0.1:${exporter.address.port}`;
    try {
      await waitFor('subscribed', () => exporter.stream.ready);
      const ready = log.lines.find((l) => l.msg === 'ready');
      assert.match(
        String(ready?.metrics_access),
        /HTTPS, client certificates NoClientCert, basic auth \(1 users\)/,
      );
      const noAuth = await curl('--cacert', ca.cert, `${base}/metrics`);
      assert.equal(status(noAuth), '401', noAuth.out);
      assert.doesNotMatch(noAuth.out, /file_created_total/);
      const wrong = await curl('--cacert', ca.cert, '-u', 'prometheus:guess', `${base}/metrics`);
      assert.equal(status(wrong), '401');
      const nobody = await curl('--cacert', ca.cert, '-u', 'root:s3cret', `${base}/metrics`);
      assert.equal(status(nobody), '401');
      const plain = await curl(`http://127.0.0.1:${exporter.address.port}/metrics`);
      assert.notEqual(status(plain), '200', 'plain HTTP on the TLS port');
      assert.doesNotMatch(plain.out, /file_created_total/);
      await waitFor('a counted file', async () => {
        const ok = await curl(
          '--cacert',
          ca.cert,
          '-u',
          'prometheus:s3cret',
          '-i',
          `${base}/metrics`,
        );
        return (
          status(ok) === '200' &&
          /file_created_total\{/.test(ok.out) &&
          /x-content-type-options: nosniff/i.test(ok.out)
        );
      });
      assert.equal(status(await curl('--cacert', ca.cert, `${base}/healthz`)), '200');
      assert.equal(status(await curl('--cacert', ca.cert, `${base}/readyz`)), '200');

      await prometheusScrapes(exporter.address.port);
    } finally {
      await exporter.stop();
    }
  });

  it('client certificates: none fails the handshake, a SAN not allowed gets 403', async () => {
    const server = ca.issue('exporter-mtls', 'server');
    const allowed = ca.issue('scraper', 'client', ['prometheus.example.org']);
    const other = ca.issue('other', 'client', ['other.example.org']);
    const config = write(
      'mtls.yml',
      `tls_server_config:\n  cert_file: ${server.cert}\n  key_file: ${server.key}\n` +
        `  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ${ca.cert}\n` +
        `  client_allowed_sans: [prometheus.example.org]\n  min_version: TLS13\n`,
    );
    const { exporter } = await startExporter(
      `unix://${dir}/loader.sock`,
      `--web-config-file=${config}`,
    );
    const url = `https://127.0.0.1:${exporter.address.port}/metrics`;
    try {
      const none = await curl('--cacert', ca.cert, url);
      assert.notEqual(none.code, 0, none.out);
      assert.notEqual(status(none), '200');
      const tls12 = await curl(
        '--cacert',
        ca.cert,
        '--tls-max',
        '1.2',
        '--cert',
        allowed.cert,
        '--key',
        allowed.key,
        url,
      );
      assert.notEqual(tls12.code, 0, 'TLS 1.2 below min_version');
      const wrongSan = await curl(
        '--cacert',
        ca.cert,
        '--cert',
        other.cert,
        '--key',
        other.key,
        url,
      );
      assert.equal(status(wrongSan), '403', wrongSan.out);
      const ok = await curl('--cacert', ca.cert, '--cert', allowed.cert, '--key', allowed.key, url);
      assert.equal(status(ok), '200', ok.out);
      assert.match(ok.out, /filewatcher_exporter_events_received_total/);
    } finally {
      await exporter.stop();
    }
  });

  /**
   * prometheusScrapes runs Debian's Prometheus with two jobs on the same
   * exporter: one with the CA and basic auth (must be up, with the file
   * counts), one without basic auth (must be down with a 401).
   */
  async function prometheusScrapes(port: number): Promise<void> {
    const job = (name: string, auth: boolean): string =>
      `  - job_name: ${name}\n    scheme: https\n    scrape_interval: 1s\n    tls_config: {ca_file: ${ca.cert}}\n` +
      (auth ? `    basic_auth: {username: prometheus, password: s3cret}\n` : '') +
      `    static_configs: [{targets: ['127.0.0.1:${port}']}]\n`;
    const prom = await Prometheus.start(
      fs.mkdtempSync(path.join(dir, 'prometheus-')),
      job('with-auth', true) + job('without-auth', false),
    );
    try {
      const targets = await waitFor(
        'both targets scraped',
        async () => {
          const t = await prom.targets();
          return t.length === 2 && t.every((x) => x.health !== 'unknown') ? t : undefined;
        },
        60_000,
      );
      const byJob = Object.fromEntries(targets.map((t) => [t.labels.job, t]));
      assert.equal(byJob['with-auth'].health, 'up', byJob['with-auth'].lastError);
      assert.equal(byJob['without-auth'].health, 'down');
      assert.match(byJob['without-auth'].lastError, /401/);
      await waitFor(
        'Prometheus stores file_created_total',
        async () => {
          const r = await prom.query('count(file_created_total{job="with-auth"})');
          return r.length === 1 && Number(r[0].value[1]) > 0;
        },
        30_000,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}\nprometheus log:\n${prom.log}`);
    } finally {
      await prom.stop();
    }
  }
});
