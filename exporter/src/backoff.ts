/** BackoffOptions shape the delays between reconnection attempts. */
export interface BackoffOptions {
  /** First delay, in milliseconds. @default 500 */
  initialMs: number;
  /** Largest delay, in milliseconds. @default 30000 */
  maxMs: number;
  /** Growth per attempt. @default 2 */
  multiplier?: number;
  /** Each delay is spread uniformly over ±jitter of itself. @default 0.2 */
  jitter?: number;
  /** Source of randomness in [0, 1), replaceable to make tests exact. @default Math.random */
  random?: () => number;
}

/**
 * Backoff yields exponentially growing, jittered delays (the gRPC connection
 * backoff scheme), so that many exporters do not reconnect in lockstep after
 * a loader restarts. reset() starts over once a connection proved healthy.
 */
export class Backoff {
  private nextBaseMs: number;
  private readonly multiplier: number;
  private readonly jitter: number;
  private readonly random: () => number;

  constructor(private readonly options: BackoffOptions) {
    this.nextBaseMs = options.initialMs;
    this.multiplier = options.multiplier ?? 2;
    this.jitter = options.jitter ?? 0.2;
    this.random = options.random ?? Math.random;
  }

  /** next returns the delay before the next attempt and grows the following one. */
  next(): number {
    const base = this.nextBaseMs;
    this.nextBaseMs = Math.min(this.options.maxMs, base * this.multiplier);
    const spread = base * this.jitter * (2 * this.random() - 1);
    return Math.max(0, Math.round(Math.min(this.options.maxMs, base + spread)));
  }

  /** reset makes the next delay the initial one again. */
  reset(): void {
    this.nextBaseMs = this.options.initialMs;
  }
}
