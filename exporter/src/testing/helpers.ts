import { spawnSync } from 'node:child_process';
import { parseConfig } from '../config';
import type { Config } from '../config';
import { Exporter } from '../exporter';
import { Logger } from '../log';

/** testConfig parses flags the way main does, with test-friendly defaults first. */
export function testConfig(loader: string, ...flags: string[]): Config {
  const parsed = parseConfig(
    ['--loader', loader, '--listen', '127.0.0.1:0', '--reconnect-initial-delay', '50ms', ...flags],
    {},
  );
  if ('exit' in parsed) throw new Error(parsed.exit.text);
  return parsed.config;
}

/** LogCapture is a Logger whose lines the test can read (JSON, one object per line). */
export class LogCapture {
  readonly lines: Array<Record<string, unknown>> = [];
  readonly logger = new Logger('debug', 'json', (line) => {
    this.lines.push(JSON.parse(line) as Record<string, unknown>);
  });

  /** messages are the msg fields at level and above. */
  messages(level: 'info' | 'warn' | 'debug' = 'info'): string[] {
    const order = ['debug', 'info', 'warn', 'error'];
    return this.lines
      .filter((l) => order.indexOf(l.level as string) >= order.indexOf(level))
      .map((l) => l.msg as string);
  }
}

/** startExporter runs an Exporter with a captured log. */
export async function startExporter(
  loader: string,
  ...flags: string[]
): Promise<{ exporter: Exporter; log: LogCapture; url: string }> {
  const log = new LogCapture();
  const exporter = await Exporter.start(testConfig(loader, ...flags), log.logger, 'test');
  return { exporter, log, url: `http://127.0.0.1:${exporter.address.port}` };
}

/** scrape GETs /metrics. */
export async function scrape(url: string): Promise<string> {
  const response = await fetch(`${url}/metrics`);
  if (response.status !== 200) throw new Error(`GET /metrics: ${response.status}`);
  return response.text();
}

/** sample is the value of the exposition line that starts with prefix ("name{labels}"), or undefined. */
export function sample(exposition: string, prefix: string): number | undefined {
  const line = exposition.split('\n').find((l) => l.startsWith(prefix + ' '));
  return line === undefined ? undefined : Number(line.slice(prefix.length + 1));
}

/** waitFor polls check until it returns a value other than undefined/false, or fails after timeoutMs. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** promtoolCheck runs `promtool check metrics` on an exposition; it returns promtool's complaint or "". */
export function promtoolCheck(exposition: string): { ok: boolean; output: string } {
  const result = spawnSync('promtool', ['check', 'metrics'], {
    input: exposition,
    encoding: 'utf8',
  });
  if (result.error)
    throw new Error(`promtool: ${result.error.message} (install Prometheus' promtool)`);
  return { ok: result.status === 0, output: `${result.stdout}${result.stderr}` };
}

/** seededRandom is a small deterministic generator (mulberry32), so that a randomized test's failure can be replayed. */
export function seededRandom(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
