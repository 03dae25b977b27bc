import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as protoLoader from '@grpc/proto-loader';
import { decodeSubscribeResponse } from './decode';
import { PROTO_FILE, PROTO_LOADER_OPTIONS } from './proto';
import { seededRandom as rng } from './testing/helpers';
import { randomResponse } from './testing/responses';

const definition = protoLoader.loadSync(PROTO_FILE, PROTO_LOADER_OPTIONS);
const subscribe = (definition['filewatcher.v1.EventService'] as protoLoader.ServiceDefinition)
  .Subscribe;

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
