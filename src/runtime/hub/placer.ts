// Where experts live: places them over the eligible devices (policies/placement.ts), sends each its
// share, and moves routing to the new placement once every device has loaded its share. A device that
// does not load within the deadline is left out and placement proceeds with the rest.
import type { ModelConfig } from "../../model/config.js";
import { placeExperts, type Placement } from "../../policies/placement.js";
import { pairKey, type Device } from "./device.js";

export interface LoadDeadline {
  /** Time any device gets to load its share… */
  baseMs: number;
  /** …plus the time to receive the weights it does not hold yet at this rate. */
  bytesPerSecond: number;
}

/** How long a re-plan waits for more joins and leaves of the same moment. */
const REPLAN_COALESCE_MS = 100;

const sameExperts = (a: ReadonlyArray<[number, number]>, b: ReadonlyArray<[number, number]>): boolean => {
  if (a.length !== b.length) return false;
  const set = new Set(a.map(pairKey));
  return b.every((p) => set.has(pairKey(p)));
};

export const DEFAULT_LOAD_DEADLINE: Readonly<LoadDeadline> = { baseMs: 30_000, bytesPerSecond: 20e6 };

export interface PlacerOptions {
  /** Devices holding each expert. */
  replicas: number;
  /** Bytes of one expert as devices hold them. */
  expertBytes: number;
  loadDeadline: LoadDeadline;
  /** How often start() logs that it is still waiting. */
  waitLogMs: number;
}

export interface PlacerLinks {
  /** The connected devices. */
  devices: () => readonly Device[];
  /** Sends a device its assignment (d.assigned). */
  assign: (d: Device) => void;
  /** Tells a device to free experts that are no longer routed to it. */
  release: (d: Device, experts: Array<[number, number]>) => void;
  /** Tells a device why it is left out of placement. */
  leaveOut: (d: Device, why: string) => void;
  log: (line: string) => void;
}

export class Placer {
  /** The devices the placement in use refers to (its indices), fixed when it is made. */
  members: Device[] = [];
  placement: Placement | null = null;
  /** Devices start() waits for before the first placement (0: start() not called). */
  wanted = 0;
  /** Why the latest placement could not be made, if it could not. */
  planError: string | null = null;
  /** Placement generations: one per re-plan; a newer one supersedes a pending older one. */
  private gen = 0;
  private started = false;
  private closed = false;
  private readonly waiters = new Set<{ check: () => void; fail: (e: Error) => void }>();
  private replanTimer: NodeJS.Timeout | null = null;
  /** the shares the last placement line logged */
  private loggedShares = "";

  constructor(private readonly cfg: ModelConfig, private readonly opts: PlacerOptions, private readonly links: PlacerLinks) {}

  /** Devices that may be placed on: connected, in service, not leaving, and not left out for missing a deadline. */
  eligible(): Device[] {
    return this.links.devices().filter((d) => d.connected && !d.quarantined && !d.leaving && !d.laggard);
  }

  /**
   * Waits, as long as it takes, for `count` devices, places every expert on them and resolves once that
   * placement is in use; says what it waits for every waitLogMs. From then on the hub re-places when a
   * device joins, leaves, is taken out of service, or (left out before) has loaded its share.
   */
  async start(count: number): Promise<void> {
    this.wanted = count;
    const timer = setInterval(() => this.links.log(this.waiting()!), this.opts.waitLogMs).unref();
    try {
      await this.until(() => this.eligible().length >= count);
      this.started = true;
      this.replanInBackground();
      await this.until(() => this.placement !== null);
    } finally {
      clearInterval(timer);
    }
  }

  /** What serving waits for before the first placement, in words; null once one is in use. */
  waiting(): string | null {
    if (this.placement) return null;
    const connected = this.eligible().length;
    if (!this.started) return `waiting for devices: ${connected}${this.wanted > 0 ? ` of ${this.wanted}` : ""} connected`;
    if (this.planError) return `waiting for devices: cannot place the experts on the ${connected} connected (${this.planError})`;
    const loaded = this.eligible().filter((d) => d.assignedGen === this.gen && d.loadedGen === this.gen).length;
    return `waiting for devices: ${loaded} of ${connected} have loaded their experts`;
  }

  /** An expert's hosts in the placement in use, in preference order; null when none is in use. */
  hostsOf(layer: number, expert: number): Device[] | null {
    if (!this.placement) return null;
    return (this.placement.hosts[layer]?.[expert] ?? []).map((i) => this.members[i]!);
  }

  joined(): void {
    if (this.started) this.replanSoon();
    this.changed();
  }

  left(d: Device): void {
    this.changed();
    if (this.started && this.members.includes(d)) this.replanSoon();
  }

  quarantined(): void {
    this.changed();
    if (this.started) this.replanSoon();
  }

  /** A device has loaded its assignment; one left out for being late is placed again. */
  loaded(d: Device): void {
    this.changed();
    if (!d.laggard) return;
    d.laggard = false;
    if (this.started) this.replanSoon();
  }

  close(): void {
    this.closed = true;
    if (this.replanTimer) clearTimeout(this.replanTimer);
    for (const w of [...this.waiters]) w.fail(new Error("base station shutting down"));
  }

  /**
   * Places every expert over the eligible devices and moves routing to the new placement once each
   * has loaded its share. Devices keep what they already hold, so the old routes stay valid meanwhile.
   */
  private async replan(): Promise<void> {
    const gen = ++this.gen;
    const live = this.eligible();
    if (live.length === 0) return;
    let next: Placement;
    try {
      next = placeExperts(
        this.cfg.sparseLayers,
        this.cfg.experts,
        live.map((d) => ({ readGbps: d.capabilities.readGbps, memoryBytes: d.capabilities.memoryBytes, holds: [...d.holds, ...d.heldBefore] })),
        { replicas: this.opts.replicas, expertBytes: this.opts.expertBytes },
      );
      this.planError = null;
    } catch (e) {
      this.planError = (e as Error).message;
      this.links.log(`cannot place the experts: ${this.planError}`);
      return;
    }
    let moved = false;
    live.forEach((d, i) => {
      // a device that has loaded the same share already is not sent it again
      const same = d.loadedGen === d.assignedGen && sameExperts(d.assigned, next.experts[i]!);
      d.assigned = next.experts[i]!;
      d.assignedGen = gen;
      if (same) d.loadedGen = gen;
      else {
        moved = true;
        this.links.assign(d);
      }
    });
    const deadlineMs = this.loadDeadline(live);
    const loaded = await this.until(() => this.gen !== gen || live.every((d) => !d.connected || d.loadedGen === gen), deadlineMs);
    if (this.gen !== gen) return;
    if (!loaded) {
      const late = live.filter((d) => d.connected && d.loadedGen !== gen);
      const why = `left out of placement ${gen}: did not load its experts within ${Math.round(deadlineMs)} ms (it is placed again once it has)`;
      for (const d of late) {
        d.laggard = true;
        this.links.leaveOut(d, why);
      }
      this.links.log(`placement ${gen}: left out ${late.map((d) => d.name).join(", ")}, which did not load their experts within ${Math.round(deadlineMs)} ms`);
      return this.replan();
    }
    if (live.some((d) => !d.connected)) return this.replan(); // someone left while the others loaded
    this.members = live;
    this.placement = next;
    this.changed();
    // one that moved nothing and reads as the last (a peer came and went before it) is not worth a line: a peer in a loop would write one per re-plan
    const shares = `${live.map((d) => `${d.name} ${d.assigned.length}`).join(", ")} experts`;
    if (moved || shares !== this.loggedShares) this.links.log(`placement ${gen}: ${shares}`);
    this.loggedShares = shares;
    // what the devices hold beyond their new share is no longer routed to: they free it
    for (const d of live) {
      const keep = new Set(d.assigned.map(pairKey));
      const drop = d.holds.filter((p) => !keep.has(pairKey(p)));
      if (drop.length === 0) continue;
      d.holds = d.holds.filter((p) => keep.has(pairKey(p)));
      this.links.release(d, drop);
    }
  }

  /**
   * A re-plan shortly, for all the joins, leaves and loads of that moment at once: a burst of them (a
   * peer reconnecting in a loop) costs one placement, not one each.
   */
  private replanSoon(): void {
    if (this.replanTimer || this.closed) return;
    this.replanTimer = setTimeout(() => {
      this.replanTimer = null;
      this.replanInBackground();
    }, REPLAN_COALESCE_MS);
  }

  private replanInBackground(): void {
    if (this.closed) return;
    this.replan().catch((e: Error) => this.closed || this.links.log(`re-placing experts failed: ${e.message}`));
  }

  /** The deadline's base plus the time the device with the most to receive needs for it. */
  private loadDeadline(devices: readonly Device[]): number {
    const { baseMs, bytesPerSecond } = this.opts.loadDeadline;
    const toLoad = (d: Device) => {
      const held = new Set(d.holds.map(pairKey));
      return d.assigned.filter((p) => !held.has(pairKey(p))).length * this.opts.expertBytes;
    };
    return baseMs + (Math.max(0, ...devices.map(toLoad)) / bytesPerSecond) * 1000;
  }

  /** Resolves true once `cond` holds, false after `timeoutMs`; rejects when the hub closes. */
  private until(cond: () => boolean, timeoutMs = Infinity): Promise<boolean> {
    if (cond()) return Promise.resolve(true);
    if (this.closed) return Promise.reject(new Error("base station shutting down"));
    return new Promise((resolve, reject) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        resolve(ok);
      };
      const waiter = {
        check: () => cond() && done(true),
        fail: (e: Error) => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          reject(e);
        },
      };
      const timer = Number.isFinite(timeoutMs) ? setTimeout(() => done(false), timeoutMs) : undefined;
      this.waiters.add(waiter);
    });
  }

  private changed(): void {
    for (const w of [...this.waiters]) w.check();
  }
}
