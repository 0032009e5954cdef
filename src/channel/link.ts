// Link emulation on the real socket path: frames are held back as a link of the given rate, delay,
// jitter and loss would hold them, so bytes really arrive late. Parameters come from a function of
// (device, time): fixed settings now, a channel model that changes every step later (issue 4).
import { Random } from "../util/random.js";

export interface LinkParams {
  /** bit/s towards the device and from it; 0 = unlimited */
  downBps: number;
  upBps: number;
  /** one-way propagation delay, ms */
  delayMs: number;
  /** uniform extra delay in [0, jitterMs), ms (frames are never reordered) */
  jitterMs: number;
  /**
   * Probability that a frame is lost once. The links carry TCP, so a loss costs a retransmission:
   * a lost frame arrives one round trip (2 × delay, at least 1 ms) later, and may be lost again.
   */
  loss: number;
}

export type LinkModel = (device: string, nowMs: number) => LinkParams;

/** "rate=20mbit,delay=5ms,jitter=1ms,loss=0.01" (also down=…, up=…; rates in bit/kbit/mbit/gbit). */
export function parseLink(spec: string): LinkParams {
  const p: LinkParams = { downBps: 0, upBps: 0, delayMs: 0, jitterMs: 0, loss: 0 };
  for (const part of spec.split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = /^(rate|down|up|delay|jitter|loss)=([0-9.]+)(bit|kbit|mbit|gbit|ms|s|%)?$/.exec(part);
    if (!m) throw new Error(`link setting "${part}" is not one of rate=, down=, up= (bit/kbit/mbit/gbit), delay=, jitter= (ms/s), loss= (fraction or %)`);
    const [, key, num, unit] = m;
    const v = Number(num);
    if (key === "rate" || key === "down" || key === "up") {
      const bps = v * (({ bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9 } as Record<string, number>)[unit ?? ""] ?? NaN);
      if (!Number.isFinite(bps)) throw new Error(`link rate "${part}" needs a unit: bit, kbit, mbit or gbit`);
      if (key !== "up") p.downBps = bps;
      if (key !== "down") p.upBps = bps;
    } else if (key === "loss") {
      p.loss = unit === "%" ? v / 100 : v;
      if (!(p.loss >= 0 && p.loss < 1)) throw new Error(`link loss must be in [0, 1), got ${part}`);
    } else {
      const ms = unit === "s" ? v * 1000 : v;
      if (key === "delay") p.delayMs = ms;
      else p.jitterMs = ms;
    }
  }
  return p;
}

/** One device's link: when each frame, in order, reaches the other end. */
export class ShapedLink {
  private readonly busyUntil = { down: 0, up: 0 };
  private readonly lastArrival = { down: 0, up: 0 };
  private readonly rng: Random;

  constructor(private readonly device: string, private readonly model: LinkModel, seed = 1) {
    this.rng = new Random(seed);
  }

  /** Milliseconds from now until a frame of `bytes` sent now arrives. */
  delay(direction: "down" | "up", bytes: number, now = performance.now()): number {
    const p = this.model(this.device, now);
    const bps = direction === "down" ? p.downBps : p.upBps;
    // serialisation: frames queue behind one another on the link
    const start = Math.max(now, this.busyUntil[direction]);
    const done = start + (bps > 0 ? (bytes * 8 * 1000) / bps : 0);
    this.busyUntil[direction] = done;
    let arrival = done + p.delayMs + this.rng.next() * p.jitterMs;
    while (this.rng.next() < p.loss) arrival += Math.max(1, 2 * p.delayMs);
    arrival = Math.max(arrival, this.lastArrival[direction]);
    this.lastArrival[direction] = arrival;
    return arrival - now;
  }
}

/** How early a timer is asked to fire; the rest of the wait is polled, as timers are only good to about a millisecond. */
const TIMER_SLACK_MS = 1.5;

/**
 * Runs `fn` `ms` from now to within tens of microseconds, where setTimeout alone would round an emulated
 * delay of 0.7 ms up to one or two: a timer for the bulk of the wait, then a poll with setImmediate,
 * which lets sockets and other timers run in between.
 */
export function afterPrecisely(ms: number, fn: () => void): void {
  const deadline = performance.now() + ms;
  const poll = () => (performance.now() >= deadline ? fn() : setImmediate(poll));
  if (ms > TIMER_SLACK_MS) setTimeout(poll, ms - TIMER_SLACK_MS);
  else poll();
}
