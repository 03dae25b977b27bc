import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { GetStatusResponse } from '../generated/filewatcher/v1/GetStatusResponse';
import type { SubscribeRequest__Output } from '../generated/filewatcher/v1/SubscribeRequest';
import type { SubscribeResponse } from '../generated/filewatcher/v1/SubscribeResponse';
import { PROTO_FILE, PROTO_LOADER_OPTIONS } from '../proto';

/** Subscriber is one open Subscribe call on the double. */
export interface Subscriber {
  request: SubscribeRequest__Output;
  /** send writes a message: an object to encode, or raw bytes sent as they are. */
  send(message: SubscribeResponse | Buffer): void;
  /** end finishes the call with a status (OK by default). */
  end(code?: grpc.status, details?: string): void;
  cancelled: boolean;
}

/**
 * LoaderDouble is a real gRPC server that speaks filewatcher.v1 like the Go
 * loader, driven by the test: it can send what a correct loader never would
 * (bytes that do not parse, unknown fields and enum values, silence), which
 * is what the exporter's robustness tests need. Integration tests use the
 * real loader.
 */
export class LoaderDouble {
  readonly subscribers: Subscriber[] = [];
  status: GetStatusResponse = { run_id: 'run-1', source: 'double' };
  /** When set, GetStatus never answers (a hung loader). */
  statusHangs = false;
  /** Whether Subscribe sends the filewatcher-run-id and -start-sequence headers. */
  sendRunHeaders = true;
  /** The start sequence announced to a live (not resuming) subscriber. */
  nextSequence = 1;
  private readonly waiters: Array<() => void> = [];
  private server: grpc.Server | undefined;
  private readonly encode: (message: SubscribeResponse) => Buffer;

  constructor() {
    const definition = protoLoader.loadSync(PROTO_FILE, PROTO_LOADER_OPTIONS);
    const service = definition['filewatcher.v1.EventService'] as grpc.ServiceDefinition;
    this.encode = service.Subscribe.responseSerialize as (m: SubscribeResponse) => Buffer;
    this.definition = {
      ...service,
      Subscribe: {
        ...service.Subscribe,
        responseSerialize: (m: SubscribeResponse | Buffer) =>
          Buffer.isBuffer(m) ? m : this.encode(m),
      },
    };
  }

  private readonly definition: grpc.ServiceDefinition;

  /** encodeResponse is the wire form of a message, for tests that append bytes to it. */
  encodeResponse(message: SubscribeResponse): Buffer {
    return this.encode(message);
  }

  /** listen starts serving on address ("127.0.0.1:0" or "unix:///path") and returns the grpc target. */
  async listen(address = '127.0.0.1:0'): Promise<string> {
    const server = new grpc.Server();
    server.addService(this.definition, {
      Subscribe: (
        call: grpc.ServerWritableStream<SubscribeRequest__Output, SubscribeResponse | Buffer>,
      ) => {
        const subscriber: Subscriber = {
          request: call.request,
          cancelled: false,
          send: (message) => call.write(message),
          end: (code = grpc.status.OK, details = '') => {
            if (code === grpc.status.OK) call.end();
            else call.emit('error', { code, details }); // grpc-js ends the call with this status
          },
        };
        call.on('cancelled', () => (subscriber.cancelled = true));
        // Like the loader: headers right away, with the run and where the stream starts.
        const headers = new grpc.Metadata();
        if (this.sendRunHeaders) {
          const resume = call.request.resume_run_id === this.status.run_id;
          const start = resume ? Number(call.request.resume_after_sequence) + 1 : this.nextSequence;
          headers.set('filewatcher-run-id', String(this.status.run_id));
          headers.set('filewatcher-start-sequence', String(start));
        }
        call.sendMetadata(headers);
        this.subscribers.push(subscriber);
        this.waiters.splice(0).forEach((wake) => wake());
      },
      GetStatus: (_call: unknown, callback: grpc.sendUnaryData<GetStatusResponse>) => {
        if (!this.statusHangs) callback(null, this.status);
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    this.server = server;
    return address.startsWith('unix:') ? address : `127.0.0.1:${port}`;
  }

  /** nextSubscriber waits for the n-th (1-based) Subscribe call. */
  async subscriber(n: number): Promise<Subscriber> {
    while (this.subscribers.length < n) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    return this.subscribers[n - 1];
  }

  /** close stops the server at once, ending every call. */
  close(): void {
    this.server?.forceShutdown();
    this.server = undefined;
  }
}
