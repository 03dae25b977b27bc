import * as grpc from '@grpc/grpc-js';
import { Backoff } from './backoff';
import type { BackoffOptions } from './backoff';
import type { OverflowPolicyName } from './config';
import type { EventServiceClient } from './generated/filewatcher/v1/EventService';
import type { FileCreatedEvent__Output } from './generated/filewatcher/v1/FileCreatedEvent';
import type { GetStatusResponse__Output } from './generated/filewatcher/v1/GetStatusResponse';
import type { OverflowPolicy } from './generated/filewatcher/v1/OverflowPolicy';
import type { SubscribeRequest } from './generated/filewatcher/v1/SubscribeRequest';
import type { SubscribeResponse__Output } from './generated/filewatcher/v1/SubscribeResponse';
import type { Logger } from './log';
import type { StreamMetrics } from './metrics';
import type { StreamPosition } from './position';
import { gapReasonLabel, loadApi } from './proto';
import { LOSS_FIELDS, LossDeltas, SequenceTracker } from './sequence';

/** StreamState is where the subscription is in its life. */
export type StreamState = 'idle' | 'connecting' | 'subscribed' | 'waiting' | 'stopped';

/** LoaderStreamOptions configure a LoaderStream. */
export interface LoaderStreamOptions {
  /** grpc-js target: "unix:///abs/path" or "host:port". */
  target: string;
  /** TLS to the loader (files already read); undefined: plaintext. */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer; serverName?: string };
  batchSize: number;
  batchDelayMs: number;
  overflowPolicy: OverflowPolicyName;
  stallTimeoutMs: number;
  statusIntervalMs: number;
  backoff: BackoffOptions;
  log: Logger;
  metrics: StreamMetrics;
  /** Receives each message's events, in sequence order. */
  onEvents: (events: FileCreatedEvent__Output[]) => void;
  /**
   * Where a previous exporter process stood (--state-file): the stream
   * resumes its run right after it, or reads a newer run from its start.
   */
  position?: StreamPosition;
}

const OVERFLOW_POLICIES: Record<OverflowPolicyName, OverflowPolicy> = {
  'drop-oldest': 'OVERFLOW_POLICY_DROP_OLDEST',
  'drop-newest': 'OVERFLOW_POLICY_DROP_NEWEST',
  close: 'OVERFLOW_POLICY_CLOSE',
};

// A stream that stayed up this long proved the loader healthy: the next
// failure starts the backoff from the beginning again.
const HEALTHY_AFTER_MS = 5_000;
// How long after opening the stream without a response the loader is asked
// for its status, to tell "subscribed, but nothing happens" from "hanging".
const CONNECTING_PROBE_AFTER_MS = 1_000;
const PARSE_ERROR_PREFIX = 'Response message parsing error';
// Response headers of Subscribe (see loader-go/README.md, "The stream").
const HEADER_RUN_ID = 'filewatcher-run-id';
const HEADER_START_SEQUENCE = 'filewatcher-start-sequence';

/**
 * LoaderStream keeps one subscription to the loader alive: it subscribes,
 * hands events to onEvents, accounts for every sequence number, and when the
 * stream ends or stalls it reconnects with exponential backoff and jitter,
 * resuming after the last sequence it processed. Each state change is logged
 * once; retries that fail the same way are logged only at debug level.
 *
 * Nothing the loader sends can crash it: parse failures end the stream
 * (grpc-js cancels it) and are counted, unknown fields are ignored by the
 * decoder, unknown enum values are labelled "unknown", and a stream that
 * stalls is detected with GetStatus and replaced.
 */
export class LoaderStream {
  private readonly client: EventServiceClient;
  private readonly backoff: Backoff;
  private readonly sequence = new SequenceTracker();
  private readonly loss = new LossDeltas();
  private readonly log: Logger;
  private readonly metrics: StreamMetrics;

  private currentState: StreamState = 'idle';
  private call: grpc.ClientReadableStream<SubscribeResponse__Output> | undefined;
  private runId: string | undefined;
  private resumeAllowed = true;
  private resumedFrom: number | undefined;
  private callStartedAt = 0;
  private subscribedAt = 0;
  private lastActivityAt = 0;
  private receivedOnCall = false;
  /** The run of this call is known (from its headers or a message). */
  private runConfirmed = false;
  /** The first sequence number this call accounts for, from its headers. */
  private startSequence: number | undefined;
  private stalledCall = false;
  private probing = false;
  private lastProbe: { runId: string; lastSequence: number } | undefined;
  private lastFailure: string | undefined;
  private failedAttempts = 0;
  private downSince: number | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private watchTimer: NodeJS.Timeout | undefined;
  private statusTimer: NodeJS.Timeout | undefined;
  private latestStatus: GetStatusResponse__Output | undefined;

  constructor(private readonly options: LoaderStreamOptions) {
    const api = loadApi();
    const { tls } = options;
    this.client = new api.filewatcher.v1.EventService(
      options.target,
      tls === undefined
        ? grpc.credentials.createInsecure()
        : grpc.credentials.createSsl(tls.ca, tls.key ?? null, tls.cert ?? null),
      {
        ...(tls?.serverName !== undefined && {
          'grpc.ssl_target_name_override': tls.serverName,
        }),
        // A full batch of PATH_MAX paths is ~17 MiB; the default limit is 4 MiB.
        'grpc.max_receive_message_length': 64 * 1024 * 1024,
        // HTTP/2 flow control: with the default 64 KiB window every ~100 KB
        // batch waits a round trip for a WINDOW_UPDATE, capping the stream
        // far below what the exporter can process.
        'grpc-node.flow_control_window': 16 * 1024 * 1024,
        // Let the channel retry connections on our schedule, not up to its 120 s default.
        'grpc.initial_reconnect_backoff_ms': options.backoff.initialMs,
        'grpc.max_reconnect_backoff_ms': options.backoff.maxMs,
      },
    );
    this.backoff = new Backoff(options.backoff);
    this.log = options.log.with({ component: 'stream' });
    this.metrics = options.metrics;
    const from = options.position;
    if (from !== undefined) {
      this.runId = from.runId;
      this.sequence.expectFrom(from.lastSequence + 1);
      this.loss.restore(from.loss);
    }
  }

  /**
   * position is where the stream stands now: the run, the last sequence
   * accounted for and the loader's loss counters as last seen; undefined
   * before anything of a run was accounted for.
   */
  /** run is the loader run the stream follows (undefined until it knows one). */
  get run(): string | undefined {
    return this.runId;
  }

  position(): StreamPosition | undefined {
    if (this.runId === undefined || !this.sequence.known) return undefined;
    return { runId: this.runId, lastSequence: this.sequence.last, loss: this.loss.snapshot() };
  }

  /** state is the current state of the subscription. */
  get state(): StreamState {
    return this.currentState;
  }

  /** ready is true while subscribed and not stalled: what /readyz reports. */
  get ready(): boolean {
    return this.currentState === 'subscribed';
  }

  /** status is the loader's latest GetStatus answer, if any. */
  get status(): GetStatusResponse__Output | undefined {
    return this.latestStatus;
  }

  /** start opens the first subscription; it never throws for an unreachable loader. */
  start(): void {
    if (this.currentState !== 'idle') return;
    this.log.info('connecting to loader', { target: this.options.target });
    this.watchTimer = setInterval(
      () => this.watch(),
      Math.min(1_000, this.options.stallTimeoutMs / 4),
    );
    this.watchTimer.unref();
    this.statusTimer = setInterval(() => this.refreshStatus(), this.options.statusIntervalMs);
    this.statusTimer.unref();
    this.subscribe();
  }

  /** stop ends the subscription and closes the channel. */
  stop(): void {
    if (this.currentState === 'stopped') return;
    this.currentState = 'stopped';
    clearTimeout(this.retryTimer);
    clearInterval(this.watchTimer);
    clearInterval(this.statusTimer);
    this.call?.cancel();
    this.call = undefined;
    this.client.close();
  }

  /**
   * subscribe opens a stream. Following a run, it resumes it after the last
   * number accounted for; if the loader has restarted since (GetStatus names
   * another run) it reads the new run from its first event, which the
   * loader's replay buffer still holds (or reports as REPLAY_EXPIRED), rather
   * than live from whatever the new run has reached.
   */
  private subscribe(): void {
    if (!(this.resumeAllowed && this.runId !== undefined && this.sequence.known)) {
      this.open(undefined);
      return;
    }
    this.currentState = 'connecting';
    this.getStatus((err, status) => {
      if (this.currentState === 'stopped') return;
      this.open(err === null ? status?.run_id : undefined);
    });
  }

  /** open subscribes; currentRun is the loader's run as GetStatus just said, if known. */
  private open(currentRun: string | undefined): void {
    const request: SubscribeRequest = {
      max_batch_size: this.options.batchSize,
      max_batch_delay_ms: this.options.batchDelayMs,
      overflow_policy: OVERFLOW_POLICIES[this.options.overflowPolicy],
    };
    this.resumedFrom = undefined;
    if (this.resumeAllowed && this.runId !== undefined && this.sequence.known) {
      if (currentRun === undefined || currentRun === '' || currentRun === this.runId) {
        request.resume_run_id = this.runId;
        request.resume_after_sequence = this.sequence.last;
        this.resumedFrom = this.sequence.last;
      } else {
        request.resume_run_id = currentRun;
        request.resume_after_sequence = 0;
        this.resumedFrom = 0;
      }
    }
    this.resumeAllowed = true;
    const call = this.client.Subscribe(request);
    this.call = call;
    this.currentState = 'connecting';
    this.callStartedAt = this.lastActivityAt = Date.now();
    this.receivedOnCall = false;
    this.runConfirmed = false;
    this.startSequence = undefined;
    this.stalledCall = false;
    this.lastProbe = undefined;
    call.on('metadata', (headers: grpc.Metadata) => {
      if (this.call !== call) return;
      this.onHeaders(headers);
      this.markSubscribed();
    });
    call.on('data', (response: SubscribeResponse__Output) => {
      if (this.call !== call) return;
      this.lastActivityAt = Date.now();
      this.receivedOnCall = true;
      this.runConfirmed = true;
      this.markSubscribed();
      try {
        this.handle(response);
      } catch (err) {
        // A message we cannot make sense of must not take the process down.
        this.metrics.malformed.add(1, { reason: 'exception' });
        this.log.error('could not process a message from the loader', { error: String(err) });
      }
    });
    // Every end of the call, OK or not, is handled once, on 'status'; this
    // handler only keeps an 'error' event from being thrown.
    call.on('error', () => undefined);
    call.on('status', (status: grpc.StatusObject) => {
      if (this.call === call) this.ended(status);
    });
  }

  /**
   * onHeaders reads the loader's response headers, sent as soon as the
   * subscription is registered: the run id and the first sequence number the
   * stream accounts for. They anchor sequence accounting before any event
   * arrives (an idle host sends none), and anything between what we
   * processed and that start is loss this stream will not see.
   */
  private onHeaders(headers: grpc.Metadata): void {
    const run = headers.get(HEADER_RUN_ID)[0];
    if (typeof run !== 'string' || run === '') return;
    this.runConfirmed = true;
    if (run !== this.runId) this.newRun(run);
    const start = Number(headers.get(HEADER_START_SEQUENCE)[0]);
    if (!Number.isSafeInteger(start) || start < 1) return;
    this.startSequence = start;
    const skipped = this.sequence.startAt(start);
    if (skipped > 0) this.metrics.eventsLost.add(skipped, { reason: 'sequence_gap' });
  }

  private markSubscribed(): void {
    if (this.currentState !== 'connecting') return;
    this.currentState = 'subscribed';
    this.subscribedAt = Date.now();
    this.log.info('subscribed to loader', {
      target: this.options.target,
      resumed_after: this.resumedFrom,
      run_id: this.runId,
      start_sequence: this.startSequence,
      failed_attempts: this.failedAttempts || undefined,
      down_ms: this.downSince === undefined ? undefined : this.subscribedAt - this.downSince,
    });
    this.lastFailure = undefined;
    this.failedAttempts = 0;
    this.downSince = undefined;
    this.refreshStatus();
  }

  private ended(status: grpc.StatusObject): void {
    const wasSubscribed = this.currentState === 'subscribed';
    const now = Date.now();
    this.call = undefined;
    if (this.currentState === 'stopped') return;
    const code = grpc.status[status.code] ?? String(status.code);
    this.metrics.streamEnds.add(1, { code });
    if (status.details.startsWith(PARSE_ERROR_PREFIX)) {
      // Resuming would replay the same message: start live, and let the
      // sequence tracker count what was skipped as sequence_gap.
      this.metrics.malformed.add(1, { reason: 'decode' });
      this.resumeAllowed = false;
    }
    if (this.receivedOnCall || (wasSubscribed && now - this.subscribedAt >= HEALTHY_AFTER_MS)) {
      this.backoff.reset();
    }
    const delay = this.backoff.next();
    const fields = { code, details: status.details, retry_in_ms: delay };
    const failure = `${code}: ${status.details}`;
    if (wasSubscribed) {
      this.downSince = now;
      if (!this.stalledCall) this.log.warn('stream from loader ended, reconnecting', fields);
    } else if (failure !== this.lastFailure && !this.stalledCall) {
      this.log.warn('cannot subscribe to loader, retrying with backoff', fields);
      this.downSince ??= now;
    } else {
      this.log.debug('subscribe attempt failed', fields);
    }
    this.lastFailure = failure;
    this.currentState = 'waiting';
    this.retryTimer = setTimeout(() => {
      this.failedAttempts++;
      this.metrics.reconnects.add(1);
      this.subscribe();
    }, delay);
  }

  private handle(response: SubscribeResponse__Output): void {
    const m = this.metrics;
    m.batchesReceived.add(1);
    if (response.run_id !== this.runId) this.newRun(response.run_id);

    // A gap that ends before it starts is rejected before it can move the
    // sequence tracker.
    const { events } = response;
    const gaps = response.gaps.filter((gap) => {
      if (gap.last_sequence - gap.first_sequence + 1 > 0) return true;
      m.malformed.add(1, { reason: 'invalid_gap' });
      return false;
    });
    this.accountSequences(events, gaps);
    for (const gap of gaps) {
      m.eventsLost.add(gap.last_sequence - gap.first_sequence + 1, {
        reason: gapReasonLabel(gap.reason),
      });
    }
    if (events.length > 0) {
      m.eventsReceived.add(events.length);
      this.options.onEvents(events);
    }
    if (response.filtered_count > 0) m.eventsFiltered.add(response.filtered_count);
    const loss = response.loss;
    if (loss !== null && loss !== undefined) {
      for (const [field, reason] of LOSS_FIELDS) {
        const d = this.loss.delta(field, loss[field]);
        if (d > 0) m.loaderEventsLost.add(d, { reason });
      }
      const missed = this.loss.delta('kprobe_missed', loss.kprobe_missed);
      if (missed > 0) m.loaderOpensMissed.add(missed);
      const unresolved = this.loss.delta('path_unresolved', loss.path_unresolved);
      if (unresolved > 0) m.loaderPathUnresolved.add(unresolved);
    }
  }

  private newRun(runId: string): void {
    if (this.runId !== undefined) {
      this.log.info('loader restarted with a new run; sequences start again', {
        previous_run_id: this.runId,
        run_id: runId,
      });
      this.metrics.loaderRestarts.add(1);
      // A run that began while we followed another is ours to account for
      // from its first number, and its loss counters from zero.
      this.sequence.expectFrom(1);
      this.loss.newRun();
    } else {
      // The first run this process sees is joined where it stands.
      this.sequence.reset();
    }
    this.runId = runId;
  }

  /** accountSequences walks events and gaps in sequence order through the tracker. */
  private accountSequences(
    events: FileCreatedEvent__Output[],
    gaps: SubscribeResponse__Output['gaps'],
  ): void {
    let missing = 0;
    let regressions = 0;
    const note = (first: number, last: number): void => {
      const skipped = this.sequence.observe(first, last);
      if (skipped > 0) missing += skipped;
      else if (skipped < 0) regressions++;
    };
    const n = events.length;
    if (gaps.length === 0 && n > 0 && events[n - 1].sequence - events[0].sequence === n - 1) {
      note(events[0].sequence, events[n - 1].sequence); // the common case: one dense run
    } else {
      let g = 0;
      for (const event of events) {
        while (g < gaps.length && gaps[g].first_sequence < event.sequence) {
          note(gaps[g].first_sequence, gaps[g].last_sequence);
          g++;
        }
        note(event.sequence, event.sequence);
      }
      for (; g < gaps.length; g++) note(gaps[g].first_sequence, gaps[g].last_sequence);
    }
    if (missing > 0) {
      this.metrics.eventsLost.add(missing, { reason: 'sequence_gap' });
      this.log.debug('sequence numbers missing without a gap report', { missing });
    }
    if (regressions > 0) this.metrics.malformed.add(regressions, { reason: 'sequence_regression' });
  }

  /** watch runs every second: it probes a silent or hanging stream and abandons a stalled one. */
  private watch(): void {
    const call = this.call;
    if (call === undefined || this.probing) return;
    const now = Date.now();
    const timeout = this.options.stallTimeoutMs;
    if (this.currentState === 'connecting') {
      if (now - this.callStartedAt >= timeout) {
        this.stall(call, 'no response to the subscription');
      } else if (now - this.callStartedAt >= CONNECTING_PROBE_AFTER_MS) {
        this.probe(call);
      }
    } else if (this.currentState === 'subscribed' && now - this.lastActivityAt >= timeout) {
      this.probe(call);
    }
  }

  /**
   * probe asks the loader for its status while the stream is silent. An
   * answer means the loader is alive: a stream still connecting is then
   * subscribed (the server sends headers lazily on an idle host), and a
   * subscribed stream is stalled only if the loader has moved on without it.
   * No answer within the stall timeout means the loader hangs.
   */
  private probe(call: grpc.ClientReadableStream<SubscribeResponse__Output>): void {
    this.probing = true;
    this.getStatus((err, status) => {
      this.probing = false;
      if (this.call !== call) return;
      if (err !== null || status === undefined) {
        if (this.currentState === 'subscribed') {
          this.stall(call, `status request failed: ${err?.details ?? 'no response'}`);
        }
        return;
      }
      const previous = this.lastProbe;
      this.lastProbe = { runId: status.run_id, lastSequence: status.last_sequence };
      if (this.currentState === 'connecting') {
        this.markSubscribed();
        return;
      }
      // Until this call's run is known (from headers or a message) we cannot
      // know where it stands: then the loader must have moved on between two
      // probes while the stream stayed silent.
      const behind =
        this.runConfirmed && this.sequence.known
          ? status.run_id !== this.runId || status.last_sequence > this.sequence.last
          : previous !== undefined &&
            previous.runId === status.run_id &&
            status.last_sequence > previous.lastSequence;
      if (behind) {
        this.stall(call, 'loader is ahead of the stream');
        return;
      }
      this.lastActivityAt = Date.now();
    });
  }

  private stall(call: grpc.ClientReadableStream<SubscribeResponse__Output>, reason: string): void {
    this.metrics.stalls.add(1);
    this.log.warn('stream from loader stalled, reconnecting', {
      reason,
      silent_ms: Date.now() - this.lastActivityAt,
    });
    this.stalledCall = true;
    call.cancel();
  }

  private refreshStatus(): void {
    if (this.currentState !== 'subscribed') return;
    this.getStatus(() => undefined);
  }

  private getStatus(
    done: (err: grpc.ServiceError | null, status?: GetStatusResponse__Output) => void,
  ): void {
    const deadline = Date.now() + Math.min(this.options.stallTimeoutMs, 10_000);
    this.client.GetStatus({}, { deadline }, (err, status) => {
      if (err === null && status !== undefined) this.latestStatus = status;
      else this.log.debug('status request failed', { error: err?.message });
      done(err, status);
    });
  }
}
