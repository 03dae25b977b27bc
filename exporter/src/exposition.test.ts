import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import zlib from 'node:zlib';
import { MetricsHandler, acceptsGzip } from './exposition';
import { boundAddress, closeHttpServer, startHttpServer } from './http';
import { LabelMapper } from './labels';
import { createTelemetry } from './metrics';
import { SeriesTable } from './series';
import { LogCapture, promtoolCheck } from './testing/helpers';

/** get fetches /metrics with node:http (fetch would decompress for us). */
function get(
  port: number,
  headers: http.OutgoingHttpHeaders = {},
  method = 'GET',
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path: '/metrics', method, headers },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (b: Buffer) => parts.push(b));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(parts),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('acceptsGzip', () => {
  const cases: Array<[string | undefined, boolean]> = [
    [undefined, false],
    ['', false],
    ['gzip', true],
    ['identity', false],
    ['deflate, gzip;q=0.5', true],
    ['GZIP', true],
    ['gzip;q=0', false],
    ['gzip; q=0.0', false],
    ['x-gzip', false],
  ];
  for (const [header, want] of cases) {
    it(`${JSON.stringify(header)} → ${want}`, () => assert.equal(acceptsGzip(header), want));
  }
});

describe('MetricsHandler', () => {
  const SERIES = 50_000;
  const log = new LogCapture();
  const telemetry = createTelemetry('test');
  const series = new SeriesTable(
    new LabelMapper({ pathLabel: 'full', pathDepth: 3, nameLabel: true }),
    { limit: SERIES },
  );
  telemetry.meter
    .createCounter('filewatcher_test_total', { description: 'A test counter.' })
    .add(7);
  let server: http.Server;
  let port: number;

  before(async () => {
    for (let i = 0; i < SERIES; i++) series.record(Buffer.from(`/srv/d${i % 100}/file-${i}`), 0);
    server = await startHttpServer(
      { host: '127.0.0.1', port: 0 },
      {
        metricsPath: '/metrics',
        metrics: new MetricsHandler(telemetry, series, log.logger).handle,
        notReadyReason: () => undefined,
      },
    );
    port = boundAddress(server).port;
  });
  after(async () => {
    await closeHttpServer(server);
    await telemetry.provider.shutdown();
  });

  it('serves the SDK metrics and every series, plain and gzip-compressed alike', async () => {
    const plain = await get(port);
    assert.equal(plain.status, 200);
    assert.equal(plain.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    assert.equal(plain.headers['content-encoding'], undefined);
    const text = plain.body.toString('utf8');
    assert.match(text, /^# HELP file_created_total Number of files created\n/);
    assert.match(text, /\n# HELP target_info Target metadata\n/);
    assert.match(text, /\nfilewatcher_test_total\{otel_scope_name="filewatcher"\} 7\n/);
    const lines = text.split('\n').filter((l) => l.startsWith('file_created_total{'));
    assert.equal(lines.length, SERIES);
    assert.equal(
      lines[SERIES - 1],
      `file_created_total{name="file-${SERIES - 1}",path="/srv/d99",otel_scope_name="filewatcher"} 1`,
    );
    const check = promtoolCheck(text);
    assert.ok(check.ok, check.output);

    const gz = await get(port, { 'accept-encoding': 'gzip' });
    assert.equal(gz.status, 200);
    assert.equal(gz.headers['content-encoding'], 'gzip');
    assert.ok(
      gz.body.length * 5 < plain.body.length,
      `gzip: ${gz.body.length} of ${plain.body.length}`,
    );
    assert.equal(zlib.gunzipSync(gz.body).toString('utf8'), text);
  });

  it('answers HEAD with the headers only', async () => {
    const head = await get(port, {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
  });

  it('lets the event loop run between chunks of a large scrape', async () => {
    let turns = 0;
    let done = false;
    const spin = (): void => {
      turns++;
      if (!done) setImmediate(spin);
    };
    setImmediate(spin);
    const res = await get(port);
    done = true;
    assert.equal(res.status, 200);
    // ~5 MB in 64 KiB chunks, each written in its own turn.
    assert.ok(turns >= 50, `${turns} event-loop turns during the scrape`);
  });

  it('survives a client that goes away mid-scrape', async () => {
    for (const encoding of ['identity', 'gzip']) {
      await new Promise<void>((resolve, reject) => {
        const req = http.get(
          { host: '127.0.0.1', port, path: '/metrics', headers: { 'accept-encoding': encoding } },
          (res) => {
            res.once('data', () => {
              req.destroy();
              resolve();
            });
          },
        );
        req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
      });
    }
    const again = await get(port);
    assert.equal(again.status, 200);
    assert.equal(
      again.body
        .toString('utf8')
        .split('\n')
        .filter((l) => l.startsWith('file_created_total{')).length,
      SERIES,
    );
  });
});
