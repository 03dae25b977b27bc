import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { waitFor } from './helpers';

/** Target is one scrape target as Prometheus' /api/v1/targets reports it. */
export interface Target {
  labels: { job: string };
  health: string;
  lastError: string;
}

/** Sample is one series of an instant query's result. */
export interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

/**
 * Prometheus is Debian's real Prometheus server (make setup installs it),
 * run by a test with its own configuration and storage on a loopback port.
 */
export class Prometheus {
  private constructor(
    private readonly child: ChildProcess,
    /** host:port of its HTTP API. */
    readonly listen: string,
    private readonly output: () => string,
  ) {}

  /** start runs Prometheus with scrapeConfigs (the YAML list under scrape_configs:) in dir. */
  static async start(dir: string, scrapeConfigs: string): Promise<Prometheus> {
    const config = path.join(dir, 'prometheus.yml');
    fs.writeFileSync(config, `global: {scrape_interval: 1s}\nscrape_configs:\n${scrapeConfigs}`);
    const listen = `127.0.0.1:${await freePort()}`;
    const child = spawn(
      'prometheus',
      [
        `--config.file=${config}`,
        `--storage.tsdb.path=${path.join(dir, 'data')}`,
        `--web.listen-address=${listen}`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let log = '';
    child.stderr?.on('data', (c: Buffer) => (log += c.toString()));
    const failed = new Promise<never>((_, reject) => {
      child.once('error', (err) =>
        reject(new Error(`prometheus: ${err.message} (make setup installs it)`)),
      );
      child.once('exit', (code) => reject(new Error(`prometheus exited with ${code}:\n${log}`)));
    });
    failed.catch(() => undefined); // observed through the race below, or later by the test
    const prom = new Prometheus(child, listen, () => log);
    await Promise.race([
      failed,
      waitFor(
        'prometheus ready',
        async () => (await fetch(`http://${listen}/-/ready`).catch(() => undefined))?.ok,
        30_000,
      ),
    ]);
    return prom;
  }

  /** log is what Prometheus wrote so far, for failure messages. */
  get log(): string {
    return this.output();
  }

  /** targets are the active scrape targets. */
  async targets(): Promise<Target[]> {
    const body = (await this.api('targets')) as { data: { activeTargets: Target[] } };
    return body.data.activeTargets;
  }

  /** query runs an instant query (at now) and returns its vector. */
  async query(expr: string): Promise<Sample[]> {
    const body = (await this.api(`query?query=${encodeURIComponent(expr)}`)) as {
      data: { result: Sample[] };
    };
    return body.data.result;
  }

  /** stop ends the server and waits for it. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    await exited;
  }

  private async api(what: string): Promise<unknown> {
    const r = await fetch(`http://${this.listen}/api/v1/${what}`);
    if (!r.ok) throw new Error(`prometheus /api/v1/${what}: ${r.status} ${await r.text()}`);
    return r.json();
  }
}

/** freePort is a loopback TCP port that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}
