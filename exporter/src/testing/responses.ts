import type { EventKind } from '../generated/filewatcher/v1/EventKind';
import type { GapReason } from '../generated/filewatcher/v1/GapReason';
import type { SubscribeResponse } from '../generated/filewatcher/v1/SubscribeResponse';

// Random SubscribeResponses for the decoder's tests (decode.test.ts) and its
// fuzzing (fuzz.test.ts): every field, values at the edges of their types.

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

export function randomResponse(r: () => number): SubscribeResponse {
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
      // Known kinds, unknown ones, and negative numbers (an int32 on the wire).
      kind: (r() < 0.5 ? Math.floor(r() * 4) : u32(r) | 0) as EventKind,
      fsuid: u32(r),
      fsgid: u32(r),
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
            unexplained: u64(r),
            loader_restart: u64(r),
          },
  };
}
