import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { decodeSubscribeResponse } from './decode';
import type { ProtoGrpcType } from './generated/filewatcher';

/** PROTO_DIR is the repository's proto/ folder, found relative to this file (src/ or dist/). */
export const PROTO_DIR = path.resolve(__dirname, '..', '..', 'proto');

/** PROTO_FILE is the API file, relative to PROTO_DIR. */
export const PROTO_FILE = 'filewatcher/v1/filewatcher.proto';

/**
 * PROTO_LOADER_OPTIONS are the options of loadSync. The `gen:types` script in
 * package.json passes the same ones to proto-loader-gen-types, so the generated
 * types describe exactly the objects we receive (proto.test.ts checks they agree).
 *
 * longs: Number — the only 64-bit field we compute with is the sequence number,
 * which stays far below 2^53; a Number is much cheaper to make than a String or
 * a Long for every event. ktime_ns, time_unix_nano and cgroup_id lose precision
 * above 2^53 but are not used for labels.
 */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

/**
 * loadApi loads filewatcher.v1 at run time from the .proto file. Subscribe's
 * messages are decoded by decodeSubscribeResponse, to the same objects as
 * proto-loader's deserializer but several times faster (that deserializer was
 * about half of the exporter's CPU time per event).
 */
export function loadApi(): ProtoGrpcType {
  const definition = protoLoader.loadSync(PROTO_FILE, PROTO_LOADER_OPTIONS);
  const service = definition['filewatcher.v1.EventService'] as protoLoader.ServiceDefinition;
  service.Subscribe = { ...service.Subscribe, responseDeserialize: decodeSubscribeResponse };
  return grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
}

/** EVENT_FLAG_PATH_UNRESOLVED mirrors EventFlag.EVENT_FLAG_PATH_UNRESOLVED. */
export const EVENT_FLAG_PATH_UNRESOLVED = 1;

/** GAP_REASONS maps GapReason numbers to the `reason` label of the loss metrics. */
export const GAP_REASONS: ReadonlyMap<number, string> = new Map([
  [0, 'unspecified'],
  [1, 'ringbuf_full'],
  [2, 'kprobe_missed'],
  [3, 'subscriber_overflow'],
  [4, 'replay_expired'],
  [5, 'read_error'],
  [6, 'program_skipped'],
  [7, 'unexplained'],
  [8, 'loader_restart'],
]);

/** gapReasonLabel names a GapReason; numbers from a newer API become "unknown". */
export function gapReasonLabel(reason: number): string {
  return GAP_REASONS.get(reason) ?? 'unknown';
}
