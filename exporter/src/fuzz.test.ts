import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as protoLoader from '@grpc/proto-loader';
import bcrypt from 'bcryptjs';
import { decodeSubscribeResponse } from './decode';
import type { SubscribeResponse__Output } from './generated/filewatcher/v1/SubscribeResponse';
import { closeHttpServer, startHttpServer } from './http';
import type http from 'node:http';
import { PROTO_FILE, PROTO_LOADER_OPTIONS } from './proto';
import { seededRandom } from './testing/helpers';
import { randomResponse } from './testing/responses';
import { loadWebConfig } from './webconfig';

// Bounded fuzzing of what the exporter reads from others: the loader's
// protobuf messages, and HTTP requests from anyone who reaches --listen.
// Each run is seeded (FUZZ_SEED, default: the time), so a failure prints
// the seed that replays it; FUZZ_EXECS sets how many inputs (make test's
// default below). Like the loader's fuzz targets, a count, not a duration.
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);
const EXECS = Number(process.env.FUZZ_EXECS ?? 20_000);

const definition = protoLoader.loadSync(PROTO_FILE, PROTO_LOADER_OPTIONS);
const subscribe = (definition['filewatcher.v1.EventService'] as protoLoader.ServiceDefinition)
  .Subscribe;

/** mutate changes buf the way coverage-less fuzzers do: flips, inserts, deletes, splices, cuts. */
function mutate(r: () => number, buf: Buffer, other: Buffer): Buffer {
  let b = Buffer.from(buf);
  const n = 1 + Math.floor(r() * 4);
  for (let k = 0; k < n; k++) {
    const at = Math.floor(r() * (b.length + 1));
    switch (Math.floor(r() * 6)) {
      case 0:
        if (b.length > 0) b[at % b.length] ^= 1 << Math.floor(r() * 8);
        break;
      case 1:
        if (b.length > 0) b[at % b.length] = [0, 0x7f, 0x80, 0xff][Math.floor(r() * 4)];
        break;
      case 2:
        b = Buffer.concat([
          b.subarray(0, at),
          Buffer.from([Math.floor(r() * 256)]),
          b.subarray(at),
        ]);
        break;
      case 3:
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + Math.floor(r() * 8))]);
        break;
      case 4:
        b = Buffer.concat([b.subarray(0, at), other.subarray(Math.floor(r() * other.length))]);
        break;
      default:
        b = b.subarray(0, at);
    }
  }
  return b;
}

/** attempt is what a decoder made of the input: its value, or the Error it threw. */
function attempt(decode: (b: Buffer) => unknown, b: Buffer): { value?: unknown; error?: Error } {
  try {
    return { value: decode(b) };
  } catch (err) {
    assert.ok(err instanceof Error, `threw a non-Error: ${String(err)}`);
    return { error: err };
  }
}

describe(`fuzz (seed ${SEED}, ${EXECS} inputs)`, () => {
  it('the protobuf decoder refuses cleanly, round-trips what it decodes, and agrees with proto-loader on well-formed messages', () => {
    const r = seededRandom(SEED);
    const corpus = Array.from({ length: 64 }, () => subscribe.responseSerialize(randomResponse(r)));
    // The corpus is well-formed by construction: the exporter decodes every
    // message of it as proto-loader does.
    for (const [i, input] of corpus.entries()) {
      assert.deepStrictEqual(
        decodeSubscribeResponse(input),
        subscribe.responseDeserialize(input),
        `seed ${SEED} corpus ${i}`,
      );
    }
    let refused = 0;
    let canonical = 0;
    for (let i = 0; i < EXECS; i++) {
      const input = mutate(r, corpus[i % corpus.length], corpus[Math.floor(r() * corpus.length)]);
      const ours = attempt(decodeSubscribeResponse, input);
      const theirs = attempt(subscribe.responseDeserialize, input);
      const where = `seed ${SEED} input ${i} (${input.toString('hex')})`;
      if (ours.error !== undefined) {
        // Refusing is allowed, with one of the decoder's own errors, never a
        // TypeError or the like from reading past the input.
        assert.match(
          ours.error.message,
          /^(truncated protobuf message|unsupported protobuf wire type \d)$/,
          where,
        );
      } else {
        // What the exporter decodes is a well-formed message: it survives a
        // round trip through proto-loader's encoder.
        const again = decodeSubscribeResponse(
          subscribe.responseSerialize(ours.value as SubscribeResponse__Output),
        );
        assert.deepStrictEqual(again, ours.value, `${where}: does not round-trip`);
      }
      // Where the mutated input is a message exactly as an encoder writes
      // it, the exporter decodes it as proto-loader does. (On malformed
      // input proto-loader is no oracle: its Node reader cuts an overlong
      // string at the end of the message and reads a known field of the
      // wrong wire type as if it were right; the exporter refuses the one
      // and skips the other, as Go's protobuf does.)
      if (
        theirs.error === undefined &&
        subscribe.responseSerialize(theirs.value as object).equals(input)
      ) {
        assert.equal(ours.error, undefined, `${where}: refused a well-formed message`);
        assert.deepStrictEqual(ours.value, theirs.value, where);
        canonical++;
      }
      if (ours.error !== undefined) refused++;
    }
    // The mutations must reach both sides of the decoder, refusing and
    // accepting (then round-tripping), or the test checks little. How many
    // mutants happen to be exactly canonical depends on the seed's corpus
    // (none to 180 of 20,000 were seen), so none are required: the corpus,
    // well-formed, was compared with proto-loader above.
    assert.ok(refused > EXECS / 20, `refused only ${refused} of ${EXECS}`);
    assert.ok(EXECS - refused > EXECS / 20, `accepted only ${EXECS - refused} of ${EXECS}`);
    if (canonical === 0) console.log(`seed ${SEED}: no mutant was exactly canonical`);
  });

  describe('HTTP requests to a protected /metrics', () => {
    let dir: string;
    let server: http.Server;
    let port: number;
    let served = 0;
    before(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fw-fuzz-http-'));
      const file = path.join(dir, 'web.yml');
      fs.writeFileSync(file, `basic_auth_users:\n  prom: '${bcrypt.hashSync('pw', 4)}'\n`);
      server = await startHttpServer(
        { host: '127.0.0.1', port: 0 },
        {
          metricsPath: '/metrics',
          metrics: (_req, res) => {
            served++;
            res.writeHead(200, { 'content-type': 'text/plain' }).end('secret_metric 1\n');
          },
          notReadyReason: () => undefined,
        },
        loadWebConfig(file),
      );
      port = (server.address() as net.AddressInfo).port;
    });
    after(async () => {
      await closeHttpServer(server, 100);
      fs.rmSync(dir, { recursive: true, force: true });
    });

    /** send writes raw bytes on a new connection and resolves to everything the server answered. */
    const send = (raw: Buffer): Promise<string> =>
      new Promise((resolve) => {
        const socket = net.connect(port, '127.0.0.1');
        let answer = '';
        socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
        socket.on('error', () => resolve(answer));
        socket.on('close', () => resolve(answer));
        socket.setTimeout(2_000, () => socket.destroy());
        socket.end(raw);
      });

    it('never serves the metrics without the password, and keeps serving', async () => {
      const r = seededRandom(SEED + 1);
      const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
      const good = Buffer.from('prom:pw').toString('base64');
      const auths = [
        '',
        'Authorization: Basic\r\n',
        `Authorization: Basic ${Buffer.from('prom:wrong').toString('base64')}\r\n`,
        `Authorization: Basic ${Buffer.from('prom').toString('base64')}\r\n`,
        `Authorization: Basic ${Buffer.from(':pw').toString('base64')}\r\n`,
        `Authorization: Basic ${Buffer.from('prom:pw\0').toString('base64')}\r\n`,
        `Authorization: Basic ${good.slice(0, -1)}\r\n`,
        `Authorization: Bearer ${good}\r\n`,
        `Authorization: Basic ${good}x\r\n`,
        `Authorization: Basic ${Buffer.from('x'.repeat(5000) + ':pw').toString('base64')}\r\n`,
      ];
      const paths = [
        '/metrics',
        '/metrics?x=1',
        '/metrics/',
        '//metrics',
        '/METRICS',
        '/%6detrics',
        '/healthz',
        '/readyz',
        '/',
        '*',
        'http://127.0.0.1/metrics',
        '/metrics#a',
      ];
      const methods = ['GET', 'HEAD', 'POST', 'OPTIONS', 'get', 'CONNECT', 'GET /metrics'];
      const n = Math.max(200, Math.floor(EXECS / 50));
      for (let i = 0; i < n; i++) {
        let raw: Buffer = Buffer.from(
          `${pick(methods)} ${pick(paths)} ${pick(['HTTP/1.1', 'HTTP/1.0', 'HTTP/9', ''])}\r\nHost: x\r\n${pick(auths)}${pick(['', 'Content-Length: 5\r\n', 'Transfer-Encoding: chunked\r\n', 'Connection: keep-alive\r\n'])}\r\n`,
          'latin1',
        );
        if (r() < 0.3) raw = mutate(r, raw, raw);
        const answer = await send(raw);
        assert.doesNotMatch(
          answer,
          /secret_metric/,
          `seed ${SEED} request ${i}: ${JSON.stringify(raw.toString('latin1'))}`,
        );
        if (answer !== '')
          assert.match(answer, /^HTTP\/1\.[01] \d{3} /, `seed ${SEED} request ${i}`);
      }
      assert.equal(served, 0);
      const ok = await send(
        Buffer.from(
          `GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic ${good}\r\nConnection: close\r\n\r\n`,
        ),
      );
      assert.match(ok, /^HTTP\/1\.1 200 [\s\S]*secret_metric 1/);
    });
  });
});
