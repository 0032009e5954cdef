// What one device connection may cost the base station, and the token bucket that meters it.

/** Limits on the device port; every field has a default (DEFAULT_LIMITS). */
export interface HubLimits {
  /** A connection that has not sent a valid hello this long after connecting is closed. */
  helloTimeoutMs: number;
  /** Connections at once, with or without a hello; one beyond is closed at once (1013). */
  maxConnections: number;
  /** Frames a connection may send per second, and at once; beyond, the hub stops reading it until it is back within the rate. */
  framesPerSecond: number;
  frameBurst: number;
  /** Bytes a connection may send per second, and at once; beyond, as for frames. */
  bytesPerSecond: number;
  byteBurst: number;
  /** The largest frame a device may send; default: the largest one the model needs (a result of the most rows the protocol allows, or a pulled expert). */
  maxPayload?: number;
  /** Weight fetches a device may have streaming or queued at once; one beyond is refused. */
  fetchesQueued: number;
  /**
   * Refused frames (results never asked for, fetches of experts not assigned, messages the base station
   * does not take…) a connection may send at once, and per second after that; beyond, it is closed (1008).
   */
  strikeBurst: number;
  strikesPerSecond: number;
  /** Log lines (and error replies) per device and reason in each summary period; the rest are counted. */
  complaintsLogged: number;
  /** How often counted complaints are summarised in the log ("N more …"). */
  summaryMs: number;
}

export const DEFAULT_LIMITS: Readonly<HubLimits> = {
  helloTimeoutMs: 10_000,
  maxConnections: 256,
  framesPerSecond: 5000,
  frameBurst: 10_000,
  bytesPerSecond: 1 << 30,
  byteBurst: 1 << 30,
  fetchesQueued: 2,
  strikeBurst: 50,
  strikesPerSecond: 5,
  complaintsLogged: 3,
  summaryMs: 10_000,
};

/**
 * Tokens that refill at `rate` per second up to `burst`. Taking more than there are goes into debt, so
 * one large take (a frame bigger than the burst) still passes, and the debt says how long to wait.
 */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(private readonly rate: number, private readonly burst: number, private readonly now: () => number = () => performance.now()) {
    this.tokens = burst;
    this.at = now();
  }

  /** Takes `n` tokens; returns the milliseconds until the bucket is out of debt (0: it is not in debt). */
  take(n: number): number {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.at) / 1000) * this.rate);
    this.at = t;
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.rate) * 1000;
  }
}
