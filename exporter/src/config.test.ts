import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseListenAddress, parseLoaderAddress } from './address';
import { OPTIONS, parseConfig, parseDuration } from './config';
import type { Config } from './config';

function config(argv: string[], env: NodeJS.ProcessEnv = {}): Config {
  const result = parseConfig(argv, env);
  if ('exit' in result) throw new Error(result.exit.text);
  return result.config;
}

function failure(argv: string[], env: NodeJS.ProcessEnv = {}): string {
  const result = parseConfig(argv, env);
  assert.ok('exit' in result, 'expected an error');
  assert.equal(result.exit.code, 2);
  return result.exit.text;
}

describe('parseConfig', () => {
  it('has the documented defaults', () => {
    const c = config([]);
    assert.deepEqual(c.loader, { target: 'unix:///run/filewatcher/loader.sock', kind: 'unix' });
    assert.deepEqual(c.listen, { host: '127.0.0.1', port: 8080 });
    assert.equal(c.metricsPath, '/metrics');
    assert.equal(c.pathLabel, 'full');
    assert.equal(c.nameLabel, true);
    assert.equal(c.maxSeries, 10000);
    assert.equal(c.stallTimeoutMs, 30_000);
    assert.equal(c.reconnectInitialDelayMs, 500);
  });

  it('takes environment variables, and flags over them', () => {
    const env = {
      FILEWATCHER_EXPORTER_LOADER: '10.0.0.1:50051',
      FILEWATCHER_EXPORTER_LISTEN: ':9000',
    };
    assert.deepEqual(config([], env).loader, { target: '10.0.0.1:50051', kind: 'tcp' });
    assert.deepEqual(config([], env).listen, { host: '', port: 9000 });
    assert.deepEqual(config(['--listen', '[::1]:9100'], env).listen, { host: '::1', port: 9100 });
    assert.equal(config(['--loader=unix:///tmp/l.sock'], env).loader.target, 'unix:///tmp/l.sock');
  });

  it('names the setting at fault', () => {
    assert.match(
      failure(['--path-label', 'deep']),
      /--path-label="deep": must be one of full, depth, none/,
    );
    assert.match(
      failure([], { FILEWATCHER_EXPORTER_STALL_TIMEOUT: '5' }),
      /FILEWATCHER_EXPORTER_STALL_TIMEOUT="5": must be a duration/,
    );
    assert.match(failure(['--max-series', '0']), /must be an integer from 1/);
    assert.match(failure(['--bogus']), /Unknown option '--bogus'/);
    assert.match(failure(['--loader', 'unix://relative.sock']), /socket path must be absolute/);
  });

  it('prints help with every option', () => {
    const result = parseConfig(['--help'], {});
    assert.ok('exit' in result);
    assert.equal(result.exit.code, 0);
    for (const o of OPTIONS) assert.ok(result.exit.text.includes(o.env));
  });
});

describe('addresses', () => {
  const loaders: Array<[string, string]> = [
    ['unix:///run/filewatcher/loader.sock', 'unix:///run/filewatcher/loader.sock'],
    ['unix:/tmp/x.sock', 'unix:///tmp/x.sock'],
    ['/tmp/x.sock', 'unix:///tmp/x.sock'],
    ['localhost:50051', 'localhost:50051'],
    ['[::1]:50051', '[::1]:50051'],
  ];
  for (const [input, target] of loaders) {
    it(`loader ${input}`, () => assert.equal(parseLoaderAddress(input).target, target));
  }
  for (const bad of ['localhost', ':50051', 'unix://x.sock', 'host:99999', 'host:port']) {
    it(`rejects loader ${bad}`, () => assert.throws(() => parseLoaderAddress(bad)));
  }
  it('listen forms', () => {
    assert.deepEqual(parseListenAddress('0.0.0.0:8080'), { host: '0.0.0.0', port: 8080 });
    assert.deepEqual(parseListenAddress(':8080'), { host: '', port: 8080 });
    assert.deepEqual(parseListenAddress('[::]:0'), { host: '::', port: 0 });
    assert.throws(() => parseListenAddress('8080'));
  });
  it('durations', () => {
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('1.5s'), 1500);
    assert.equal(parseDuration('2m'), 120_000);
    assert.throws(() => parseDuration('10'));
  });
});
