// Delays between reconnection attempts: exponential, capped, with "equal jitter" (half the delay
// fixed, half random) so that devices which lost the same base station do not all return at once,
// yet none retries in a tight loop.

export interface BackoffOptions {
  /** The first delay's upper bound, ms (default 250). */
  firstMs?: number;
  /** The bound no delay exceeds, ms (default 15 000). */
  capMs?: number;
}

export class Backoff {
  private readonly firstMs: number;
  private readonly capMs: number;
  private attempt = 0;

  constructor(opts: BackoffOptions = {}, private readonly random: () => number = Math.random) {
    this.firstMs = opts.firstMs ?? 250;
    this.capMs = opts.capMs ?? 15_000;
  }

  /** The next delay, ms: in [bound / 2, bound], the bound doubling from firstMs up to capMs. */
  next(): number {
    const bound = Math.min(this.capMs, this.firstMs * 2 ** this.attempt);
    if (bound < this.capMs) this.attempt++;
    return bound / 2 + (this.random() * bound) / 2;
  }

  /** Starts again from the first delay (after a connection that held). */
  reset(): void {
    this.attempt = 0;
  }
}
