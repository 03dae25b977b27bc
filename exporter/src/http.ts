import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { ListenAddress } from './address';
import { Gate } from './webconfig';
import type { WebConfig } from './webconfig';

/** HttpRoutes are what the HTTP server serves. */
export interface HttpRoutes {
  metricsPath: string;
  /** Serves the Prometheus exposition. */
  metrics: (req: http.IncomingMessage, res: http.ServerResponse) => void;
  /** Returns undefined when ready, or why not. */
  notReadyReason: () => string | undefined;
}

/**
 * startHttpServer serves /metrics (path configurable), /healthz (the process
 * is alive and serving) and /readyz (subscribed to the loader and receiving)
 * on one port, and resolves once it listens. With a web configuration it
 * serves HTTPS and/or asks for basic auth as that says, for /metrics only:
 * /healthz and /readyz tell nothing about files and stay open for probes.
 */
export async function startHttpServer(
  listen: ListenAddress,
  routes: HttpRoutes,
  web?: WebConfig,
): Promise<http.Server> {
  const gate = new Gate(web);
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    for (const [k, v] of Object.entries(web?.headers ?? {})) res.setHeader(k, v);
    const path = (req.url ?? '/').split('?', 1)[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res
        .writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' })
        .end('method not allowed\n');
      return;
    }
    if (path === routes.metricsPath) {
      gate.check(req).then(
        (refused) => {
          if (refused === undefined) {
            routes.metrics(req, res);
            return;
          }
          const headers: http.OutgoingHttpHeaders = { 'content-type': 'text/plain' };
          if (refused.status === 401)
            headers['www-authenticate'] = 'Basic realm="filewatcher-exporter"';
          res.writeHead(refused.status, headers).end(`${refused.reason}\n`);
        },
        (err: unknown) => {
          res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(err)}\n`);
        },
      );
    } else if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const reason = routes.notReadyReason();
      if (reason === undefined) res.writeHead(200, { 'content-type': 'text/plain' }).end('ready\n');
      else res.writeHead(503, { 'content-type': 'text/plain' }).end(`not ready: ${reason}\n`);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  };
  const tls = web?.tls;
  const server =
    tls === undefined
      ? http.createServer(handler)
      : https.createServer(
          {
            cert: tls.cert,
            key: tls.key,
            ...(tls.clientCa !== undefined && { ca: tls.clientCa }),
            requestCert: tls.clientAuth !== 'NoClientCert',
            rejectUnauthorized: tls.clientAuth === 'RequireAndVerifyClientCert',
            minVersion: tls.minVersion,
            ...(tls.maxVersion !== undefined && { maxVersion: tls.maxVersion }),
          },
          handler,
        );
  // Scrapes are short; an idle keep-alive connection must not delay shutdown long.
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const onListening = (): void => {
      server.off('error', reject);
      resolve();
    };
    if (listen.host === '') server.listen(listen.port, onListening);
    else server.listen(listen.port, listen.host, onListening);
  });
  return server;
}

/** boundAddress is where server actually listens ("host:port"), after port 0 was resolved. */
export function boundAddress(server: http.Server): { host: string; port: number } {
  const address = server.address() as AddressInfo;
  return { host: address.address, port: address.port };
}

/** closeHttpServer stops accepting, lets in-flight requests finish for graceMs, then cuts the rest. */
export async function closeHttpServer(server: http.Server, graceMs = 2_000): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const timer = setTimeout(() => server.closeAllConnections(), graceMs);
  await closed;
  clearTimeout(timer);
}
