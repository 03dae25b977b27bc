import type http from 'node:http';
import type { Writable } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import zlib from 'node:zlib';
import { PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import type { Logger } from './log';
import type { Telemetry } from './metrics';
import type { SeriesTable } from './series';

/**
 * MetricsHandler serves GET /metrics: file_created_total, which can be 100k
 * lines and is written in chunks, one per event-loop turn, so that a scrape
 * never holds up the event stream for long; then the OpenTelemetry
 * pipeline's metrics (the exporter's own health, a few dozen lines). The
 * response is gzip-compressed when the client accepts it (as Prometheus
 * does), in libuv's thread pool rather than on the event loop.
 */
export class MetricsHandler {
  // The serializer PrometheusExporter builds for itself with its defaults.
  private readonly serializer = new PrometheusSerializer();

  constructor(
    private readonly telemetry: Telemetry,
    private readonly series: SeriesTable,
    private readonly log: Logger,
    /** Called as each GET scrape starts, before anything is collected. */
    private readonly onScrape: () => void = () => undefined,
  ) {}

  handle = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    this.serve(req, res).catch((err: unknown) => {
      // The status line is gone already: cutting the response is how the
      // scraper learns that this scrape failed.
      this.log.warn('scrape failed', { error: String(err) });
      res.destroy();
    });
  };

  private async serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const gzip = acceptsGzip(req.headers['accept-encoding']);
    res.writeHead(200, {
      'content-type': 'text/plain; version=0.0.4; charset=utf-8',
      ...(gzip ? { 'content-encoding': 'gzip' } : {}),
      vary: 'Accept-Encoding',
    });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    this.onScrape();
    let out: Writable = res;
    if (gzip) {
      // Fast compression: the exposition is repetitive text, and level 1
      // already shrinks it 10x or more at a fraction of level 6's CPU.
      const z = zlib.createGzip({ level: 1 });
      z.pipe(res);
      z.on('error', (err) => this.log.warn('compressing a scrape failed', { error: String(err) }));
      res.once('close', () => z.destroy());
      out = z;
    }
    for (const chunk of this.series.chunks()) {
      if (out.destroyed) return; // the client went away
      await write(out, chunk);
    }
    // Collected after file_created_total, so that within one scrape
    // filewatcher_exporter_events_received_total is never below its sum.
    const { resourceMetrics, errors } = await this.telemetry.prometheus.collect();
    if (errors.length > 0) this.log.warn('metric collection errors', { errors: String(errors) });
    out.end(this.serializer.serialize(resourceMetrics));
  }
}

/**
 * write writes chunk, waits for drain when out's buffer is full, then for the
 * next event-loop turn. Both waits are needed: a socket that takes the bytes
 * at once emits drain from process.nextTick, without the loop turning.
 */
async function write(out: Writable, chunk: string): Promise<void> {
  if (!out.write(chunk)) {
    await new Promise<void>((resolve) => {
      const done = (): void => {
        out.off('drain', done);
        out.off('close', done);
        resolve();
      };
      out.on('drain', done);
      out.on('close', done);
    });
  }
  await nextTurn();
}

/** acceptsGzip is whether an Accept-Encoding header asks for gzip (without refusing it with q=0). */
export function acceptsGzip(header: string | undefined): boolean {
  for (const part of (header ?? '').split(',')) {
    const [coding, ...params] = part.split(';').map((p) => p.trim().toLowerCase());
    if (coding !== 'gzip') continue;
    const q = params.find((p) => p.startsWith('q='));
    return q === undefined || Number(q.slice(2)) > 0;
  }
  return false;
}
