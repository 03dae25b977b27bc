#!/usr/bin/env node
import { parseConfig } from './config';
import { Exporter } from './exporter';
import { Logger } from './log';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { version } = require('../../package.json') as { version: string };

/** main runs the exporter until SIGINT or SIGTERM, then shuts down cleanly. */
async function main(): Promise<number> {
  const parsed = parseConfig(process.argv.slice(2), process.env, version);
  if ('exit' in parsed) {
    (parsed.exit.code === 0 ? process.stdout : process.stderr).write(parsed.exit.text);
    return parsed.exit.code;
  }
  const { config } = parsed;
  const log = new Logger(config.logLevel, config.logFormat);
  let exporter: Exporter;
  try {
    exporter = await Exporter.start(config, log, version);
  } catch (err) {
    log.error('cannot start', { error: (err as Error).message });
    return 1;
  }
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  log.info('shutting down', { signal });
  // A second signal means "now": do not wait for the graceful path.
  const hurry = (): void => process.exit(1);
  process.once('SIGINT', hurry);
  process.once('SIGTERM', hurry);
  await exporter.stop();
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`filewatcher-exporter: ${String(err)}\n`);
    process.exitCode = 1;
  },
);
