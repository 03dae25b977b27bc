// A hand-written decoder of SubscribeResponse, the one message the exporter
// receives at the event rate. It returns exactly the object proto-loader's
// deserializer would (protobufjs decode + toObject with PROTO_LOADER_OPTIONS:
// every field present with its default, 64-bit integers as Numbers, bytes as
// Buffers sharing the message's memory, enums as numbers, an absent message
// as null), in a fraction of the time: decode.test.ts checks the two agree.
// A field added to these messages must be added here (the test fails until it is).
import type { EventKind__Output } from './generated/filewatcher/v1/EventKind';
import type { FileCreatedEvent__Output } from './generated/filewatcher/v1/FileCreatedEvent';
import type { Gap__Output } from './generated/filewatcher/v1/Gap';
import type { LossCounters__Output } from './generated/filewatcher/v1/LossCounters';
import type { SubscribeResponse__Output } from './generated/filewatcher/v1/SubscribeResponse';

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

/** Reader walks a protobuf encoding; lo and hi hold the last varint's 32-bit halves. */
class Reader {
  pos = 0;
  lo = 0;
  hi = 0;

  /** end bounds the message being read: the whole buffer, or an embedded message. */
  constructor(
    readonly buf: Buffer,
    public end: number,
  ) {}

  /** varint reads a varint into lo and hi (as protobufjs does: bits past 64 are ignored). */
  varint(): void {
    let lo = 0;
    let hi = 0;
    let i = 0;
    for (; i < 4; i++) {
      const b = this.byte();
      lo = (lo | ((b & 127) << (i * 7))) >>> 0;
      if (b < 128) {
        this.lo = lo;
        this.hi = 0;
        return;
      }
    }
    // Byte 4 straddles the halves: 4 bits to lo, 3 to hi.
    let b = this.byte();
    lo = (lo | ((b & 127) << 28)) >>> 0;
    hi = (b & 127) >> 4;
    for (i = 0; b >= 128 && i < 5; i++) {
      b = this.byte();
      hi = (hi | ((b & 127) << (i * 7 + 3))) >>> 0;
    }
    while (b >= 128) b = this.byte(); // a malformed 11th byte and on
    this.lo = lo;
    this.hi = hi;
  }

  byte(): number {
    if (this.pos >= this.end) throw new RangeError('truncated protobuf message');
    return this.buf[this.pos++];
  }

  /** uint32 is the last varint as protobufjs's uint32() reads it. */
  uint32(): number {
    this.varint();
    return this.lo;
  }

  /** int32 is the last varint as protobufjs's int32() (and an enum) reads it. */
  int32(): number {
    this.varint();
    return this.lo | 0;
  }

  /** uint64 is an unsigned 64-bit varint as a Number (LongBits.toNumber(true)). */
  uint64(): number {
    this.varint();
    return this.lo + this.hi * 4294967296;
  }

  /** int64 is a signed 64-bit varint as a Number (LongBits.toNumber(false)). */
  int64(): number {
    this.varint();
    let lo = this.lo;
    let hi = this.hi;
    if (hi >>> 31) {
      lo = (~lo + 1) >>> 0;
      hi = ~hi >>> 0;
      if (!lo) hi = (hi + 1) >>> 0;
      return -(lo + hi * 4294967296);
    }
    return lo + hi * 4294967296;
  }

  /** len reads a length prefix and returns the end of the field it delimits. */
  len(): number {
    this.varint();
    const end = this.pos + this.lo;
    if (this.hi !== 0 || end > this.end) throw new RangeError('truncated protobuf message');
    return end;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case VARINT:
        this.varint();
        return;
      case I64:
        this.pos += 8;
        break;
      case LEN:
        this.pos = this.len();
        return;
      case I32:
        this.pos += 4;
        break;
      default:
        throw new Error(`unsupported protobuf wire type ${wireType}`);
    }
    if (this.pos > this.end) throw new RangeError('truncated protobuf message');
  }
}

function decodeEvent(r: Reader, end: number): FileCreatedEvent__Output {
  const outer = r.end;
  const ev: FileCreatedEvent__Output = {
    sequence: 0,
    ktime_ns: 0,
    time_unix_nano: 0,
    pid: 0,
    tgid: 0,
    uid: 0,
    gid: 0,
    comm: EMPTY,
    cgroup_id: 0,
    path: EMPTY,
    flags: 0,
    kind: 0,
    fsuid: 0,
    fsgid: 0,
  };
  r.end = end;
  while (r.pos < end) {
    const tag = r.uint32();
    const wt = tag & 7;
    switch (tag >>> 3) {
      case 1:
        if (wt !== VARINT) break;
        ev.sequence = r.uint64();
        continue;
      case 2:
        if (wt !== VARINT) break;
        ev.ktime_ns = r.uint64();
        continue;
      case 3:
        if (wt !== VARINT) break;
        ev.time_unix_nano = r.int64();
        continue;
      case 4:
        if (wt !== VARINT) break;
        ev.pid = r.uint32();
        continue;
      case 5:
        if (wt !== VARINT) break;
        ev.tgid = r.uint32();
        continue;
      case 6:
        if (wt !== VARINT) break;
        ev.uid = r.uint32();
        continue;
      case 7:
        if (wt !== VARINT) break;
        ev.gid = r.uint32();
        continue;
      case 8: {
        if (wt !== LEN) break;
        const e = r.len();
        ev.comm = r.buf.subarray(r.pos, e);
        r.pos = e;
        continue;
      }
      case 9:
        if (wt !== VARINT) break;
        ev.cgroup_id = r.uint64();
        continue;
      case 10: {
        if (wt !== LEN) break;
        const e = r.len();
        ev.path = r.buf.subarray(r.pos, e);
        r.pos = e;
        continue;
      }
      case 11:
        if (wt !== VARINT) break;
        ev.flags = r.uint32();
        continue;
      case 12:
        if (wt !== VARINT) break;
        ev.kind = r.int32() as EventKind__Output; // unknown numbers too, as protobufjs keeps them
        continue;
      case 13:
        if (wt !== VARINT) break;
        ev.fsuid = r.uint32();
        continue;
      case 14:
        if (wt !== VARINT) break;
        ev.fsgid = r.uint32();
        continue;
    }
    r.skip(wt);
  }
  r.end = outer;
  return ev;
}

function decodeGap(r: Reader, end: number): Gap__Output {
  const outer = r.end;
  const gap: Gap__Output = { first_sequence: 0, last_sequence: 0, reason: 0 };
  r.end = end;
  while (r.pos < end) {
    const tag = r.uint32();
    const wt = tag & 7;
    if (wt === VARINT) {
      switch (tag >>> 3) {
        case 1:
          gap.first_sequence = r.uint64();
          continue;
        case 2:
          gap.last_sequence = r.uint64();
          continue;
        case 3:
          // An enum is an int32; a number from a newer API is kept, as protobufjs does.
          gap.reason = (r.uint32() | 0) as Gap__Output['reason'];
          continue;
      }
    }
    r.skip(wt);
  }
  r.end = outer;
  return gap;
}

function decodeLoss(r: Reader, end: number): LossCounters__Output {
  const outer = r.end;
  const loss: LossCounters__Output = {
    ringbuf_full: 0,
    kprobe_missed: 0,
    read_errors: 0,
    subscriber_dropped: 0,
    path_unresolved: 0,
    program_skipped: 0,
    unexplained: 0,
    loader_restart: 0,
  };
  r.end = end;
  while (r.pos < end) {
    const tag = r.uint32();
    const wt = tag & 7;
    if (wt === VARINT) {
      switch (tag >>> 3) {
        case 1:
          loss.ringbuf_full = r.uint64();
          continue;
        case 2:
          loss.kprobe_missed = r.uint64();
          continue;
        case 3:
          loss.read_errors = r.uint64();
          continue;
        case 4:
          loss.subscriber_dropped = r.uint64();
          continue;
        case 5:
          loss.path_unresolved = r.uint64();
          continue;
        case 6:
          loss.program_skipped = r.uint64();
          continue;
        case 7:
          loss.unexplained = r.uint64();
          continue;
        case 8:
          loss.loader_restart = r.uint64();
          continue;
      }
    }
    r.skip(wt);
  }
  r.end = outer;
  return loss;
}

// Defaults of bytes fields: empty, and never written to.
const EMPTY = Buffer.alloc(0);

/** decodeSubscribeResponse decodes a SubscribeResponse as proto-loader's deserializer does. */
export function decodeSubscribeResponse(buf: Buffer): SubscribeResponse__Output {
  const r = new Reader(buf, buf.length);
  const resp: SubscribeResponse__Output = {
    run_id: '',
    events: [],
    gaps: [],
    filtered_count: 0,
    loss: null,
  };
  while (r.pos < r.end) {
    const tag = r.uint32();
    const wt = tag & 7;
    switch (tag >>> 3) {
      case 1: {
        if (wt !== LEN) break;
        const e = r.len();
        resp.run_id = buf.toString('utf8', r.pos, e);
        r.pos = e;
        continue;
      }
      case 2: {
        if (wt !== LEN) break;
        const e = r.len();
        resp.events.push(decodeEvent(r, e));
        continue;
      }
      case 3: {
        if (wt !== LEN) break;
        const e = r.len();
        resp.gaps.push(decodeGap(r, e));
        continue;
      }
      case 4:
        if (wt !== VARINT) break;
        resp.filtered_count = r.uint64();
        continue;
      case 5: {
        if (wt !== LEN) break;
        const e = r.len();
        resp.loss = decodeLoss(r, e);
        continue;
      }
    }
    r.skip(wt);
  }
  return resp;
}
