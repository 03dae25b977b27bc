import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as protoLoader from '@grpc/proto-loader';
import { decodeSubscribeResponse } from './decode';
import type { GapReason } from './generated/filewatcher/v1/GapReason';
import type { SubscribeResponse } from './generated/filewatcher/v1/SubscribeResponse';
import { PROTO_FILE, PROTO_LOADER_OPTIONS } from './proto';
import { seededRandom as rng } from './testing/helpers';

const definition = protoLoader.loadSync(PROTO_FILE, PROTO_LOADER_OPTIONS);
const subscribe = (definition['filewatcher.v1.EventService'] as protoLoader.ServiceDefinition)
  .Subscribe;

/** u64 is zero, small, near 2^32, or a decimal string up to 2^64-1 (beyond 2^53). */
function u64(r: () => number): number | string {
  switch (Math.floor(r() * 5)) {
    case 0:
      return 0;
    case 1:
      return Math.floor(r() * 300);
    case 2:
      return 4294967296 + Math.floor(r() * 10) - 5;
    case 3:
      return '18446744073709551615';
    default:
      return (
        BigInt(Math.floor(r() * 2 ** 32)) * 2n ** 32n +
        BigInt(Math.floor(r() * 2 ** 32))
      ).toString();
  }
}

function i64(r: () => number): number | string {
  const v = u64(r);
  return r() < 0.5 ? v : typeof v === 'number' ? -v : (-BigInt(v) / 2n).toString();
}

function u32(r: () => number): number {
  return r() < 0.3 ? 0 : r() < 0.5 ? Math.floor(r() * 200) : Math.floor(r() * 2 ** 32);
}

function bytes(r: () => number, max: number): Buffer {
  return Buffer.from(Array.from({ length: Math.floor(r() * max) }, () => Math.floor(r() * 256)));
}

function randomResponse(r: () => number): SubscribeResponse {
  return {
    run_id: r() < 0.2 ? '' : r() < 0.5 ? 'ünïcödé-名前' : '0123456789abcdef0123456789abcdef',
    events: Array.from({ length: Math.floor(r() * 5) }, () => ({
      sequence: u64(r),
      ktime_ns: u64(r),
      time_unix_nano: i64(r),
      pid: u32(r),
      tgid: u32(r),
      uid: u32(r),
      gid: u32(r),
      comm: bytes(r, 16),
      cgroup_id: u64(r),
      path: bytes(r, r() < 0.1 ? 5000 : 60),
      flags: u32(r),
    })),
    gaps: Array.from({ length: Math.floor(r() * 3) }, () => ({
      first_sequence: u64(r),
      last_sequence: u64(r),
      reason: Math.floor(r() * 8) as GapReason, // 7 is not (yet) a GapReason
    })),
    filtered_count: u64(r),
    loss:
      r() < 0.3
        ? null
        : {
            ringbuf_full: u64(r),
            kprobe_missed: u64(r),
            read_errors: u64(r),
            subscriber_dropped: u64(r),
            path_unresolved: u64(r),
            program_skipped: u64(r),
          },
  };
}

function check(bytes: Buffer): void {
  assert.deepStrictEqual(decodeSubscribeResponse(bytes), subscribe.responseDeserialize(bytes));
}

describe('decodeSubscribeResponse', () => {
  it('decodes exactly as proto-loader does', () => {
    const r = rng(1);
    check(Buffer.alloc(0));
    for (let i = 0; i < 3000; i++) check(subscribe.responseSerialize(randomResponse(r)));
  });

  it('skips unknown fields and keeps invalid UTF-8 as U+FFFD', () => {
    const known = subscribe.responseSerialize({
      run_id: 'run',
      events: [{ sequence: 7, path: Buffer.from('/a') }],
    });
    // prettier-ignore
    const extra = Buffer.from([
      0x0a, 0x03, 0x72, 0xff, 0x6e, // run_id "r\xffn"
      0xf8, 0x01, 0x07, // field 31, varint
      0xfd, 0x01, 1, 2, 3, 4, // field 31, fixed32
      0xf9, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, // field 31, fixed64
      0xfa, 0x01, 0x02, 0x01, 0x02, // field 31, bytes
      0x20, 0x05, // filtered_count 5
      0x12, 0x08, // an event with an unknown field
      0x08, 0x09, // sequence 9
      0x52, 0x01, 0x2f, // path "/"
      0xf8, 0x01, 0x07, // field 31
      0x1a, 0x02, 0x18, 0x02, // a gap: reason KPROBE_MISSED
    ]);
    check(Buffer.concat([known, extra]));
  });

  it('skips known fields of an unexpected wire type', () => {
    // prettier-ignore
    const bytes = Buffer.from([
      0x22, 0x01, 0x00, // filtered_count as bytes
      0x12, 0x05, 0x0a, 0x01, 0x00, 0x20, 0x03, // an event: sequence as bytes, pid 3
    ]);
    const decoded = decodeSubscribeResponse(bytes);
    assert.equal(decoded.filtered_count, 0);
    assert.equal(decoded.events[0].sequence, 0);
    assert.equal(decoded.events[0].pid, 3);
  });

  it('returns bytes fields as views of the message', () => {
    const bytes = subscribe.responseSerialize({ events: [{ path: Buffer.from('/p') }] });
    const decoded = decodeSubscribeResponse(bytes);
    assert.equal(decoded.events[0].path.buffer, bytes.buffer);
  });

  it('rejects truncated messages', () => {
    const bytes = subscribe.responseSerialize({
      run_id: 'run',
      events: [{ sequence: 300, path: Buffer.from('/abc') }],
    });
    // 5 bytes of run_id, then the event: every cut but 5 is inside a field.
    for (let cut = 1; cut < bytes.length; cut++) {
      if (cut !== 5) {
        assert.throws(
          () => decodeSubscribeResponse(bytes.subarray(0, cut)),
          RangeError,
          `cut ${cut}`,
        );
      }
    }
  });
});
