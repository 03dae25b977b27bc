import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** REPO is the repository root (exporter/dist/testing → ../../..). */
export const REPO = path.resolve(__dirname, '..', '..', '..');

/**
 * loaderBinary returns the Go loader, building it first if it is missing
 * (FILEWATCHER_LOADER_BIN overrides the path). Integration tests need it.
 */
export function loaderBinary(): string {
  const fromEnv = process.env.FILEWATCHER_LOADER_BIN;
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  const bin = path.join(REPO, 'bin', 'filewatcher-loader');
  if (!fs.existsSync(bin)) {
    execFileSync('go', ['build', '-o', bin, './loader-go/cmd/filewatcher-loader'], {
      cwd: REPO,
      env: { ...process.env, CGO_ENABLED: '0' },
      stdio: 'inherit',
    });
  }
  return bin;
}

/** RealLoader is a filewatcher-loader process in synthetic mode. */
export class RealLoader {
  private constructor(
    readonly process: ChildProcess,
    /** The address it serves, as logged in its ready line. */
    readonly listen: string,
    readonly runId: string,
    readonly output: () => string,
  ) {}

  /** start runs the loader with args and waits for its msg=ready line. */
  static async start(args: string[]): Promise<RealLoader> {
    const child = spawn(loaderBinary(), ['--source', 'synthetic', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const collect = (chunk: Buffer): void => {
      output += chunk.toString();
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const ready = await new Promise<RegExpExecArray>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`loader not ready in 10 s:\n${output}`)),
        10_000,
      );
      const check = (): void => {
        const m = /msg=ready listen=(\S+) .*run_id=(\S+)/.exec(output);
        if (m !== null) {
          clearTimeout(timer);
          resolve(m);
        }
      };
      child.stdout.on('data', check);
      child.stderr.on('data', check);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`loader exited with ${code}:\n${output}`));
      });
    });
    return new RealLoader(child, ready[1], ready[2], () => output);
  }

  /** stop sends signal and waits for the process to exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    const exited = new Promise((resolve) => this.process.once('exit', resolve));
    this.process.kill(signal);
    await exited;
  }
}
