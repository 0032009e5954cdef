// Requests the base station makes of devices and their answers: expert calls (with deadlines) and
// expert pulls, matched to the results, pulled experts and errors that come back.
import { deviceCost, deviceLayerTime } from "../../channel/latency.js";
import type { LinkModel } from "../../channel/link.js";
import type { ExpertCall, ExpertResult } from "../../moe/executor.js";
import type { WorkShape } from "../../model/work-shape.js";
import { concatRows, decodeActivations, encodeActivations, splitRows, wireBytes, type WireDType } from "../../protocol/activations.js";
import type { Message } from "../../protocol/frames.js";
import type { Device } from "./device.js";

/**
 * Deadlines: a multiple of a call's expected time, never below a floor that absorbs a busy machine, nor
 * above a cap: a step waits for its slowest call, so a device that says it is slow (or a timer asked for
 * more than it holds, which Node runs after 1 ms) must not set how long every request waits.
 */
const DEADLINE_FACTOR = 20;
const DEADLINE_FLOOR_MS = 1000;
const DEADLINE_CAP_MS = 60_000;
/** Requests given up on that are remembered, so that their late answers are dropped quietly. */
const EXPIRED_KEPT = 4096;

/** An expert's weights as a device holds them: its gate, up and down matrices in `dtype` (one, or the three joined by "/"), their bytes one after another. */
export interface HeldExpert {
  dtype: string;
  shapes: Array<[rows: number, cols: number]>;
  payload: Uint8Array;
}

interface Pending<T> {
  device: Device;
  resolve: (v: T) => void;
  reject: (e: Error) => void;
}

/** A call frame sent to a device and not answered yet, with the experts and rows its result must match. */
interface PendingCall extends Pending<{ output: Float32Array; computeMs: number }> {
  experts: ReadonlyArray<[number, number]>;
}

export interface CallOptions {
  hidden: number;
  expertShape: WorkShape;
  wireDType: WireDType;
  /** A fixed deadline per call; default DEADLINE_FACTOR × what the latency model expects, at least DEADLINE_FLOOR_MS. */
  deadlineMs?: number;
  link?: LinkModel;
  onCall?: (device: string, ms: number, bytesOut: number, bytesIn: number) => void;
}

export class Calls {
  private readonly calls = new Map<number, PendingCall>();
  private readonly pulls = new Map<number, Pending<HeldExpert>>();
  private readonly expired = new Set<number>();
  private nextId = 1;

  constructor(private readonly opts: CallOptions, private readonly sendShaped: (d: Device, m: Message) => void) {}

  /** One call frame carrying `calls` (all of one layer) to `device`; one result per call, in order. */
  call(device: Device, calls: readonly ExpertCall[]): Promise<ExpertResult[]> {
    const { hidden, wireDType } = this.opts;
    const id = this.nextId++;
    const deadlineMs = this.opts.deadlineMs ?? this.deadlineFor(device, calls);
    const t0 = performance.now();
    const experts = calls.map((c): [number, number] => [c.expert, c.rows]);
    const payload = encodeActivations(concatRows(calls.map((c) => c.input)), wireDType);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.calls.delete(id);
        this.expire(id);
        reject(new Error(`device ${device.name} missed the ${deadlineMs} ms deadline`));
      }, deadlineMs);
      const answered = ({ output, computeMs }: { output: Float32Array; computeMs: number }) => {
        clearTimeout(timer);
        const roundTripMs = performance.now() - t0;
        this.opts.onCall?.(device.name, roundTripMs, payload.length, output.length * wireBytes(wireDType));
        resolve(splitRows(output, hidden, calls.map((c) => c.rows)).map((out) => ({ output: out, computeMs, roundTripMs, device: device.name })));
      };
      const failed = (e: Error) => {
        clearTimeout(timer);
        reject(e);
      };
      this.calls.set(id, { device, experts, resolve: answered, reject: failed });
      this.sendShaped(device, { type: "call", id, layer: calls[0]!.layer, experts, hidden, dtype: wireDType, payload });
    });
  }

  /** Asks `device` for its copy of an expert's weights. */
  pull(device: Device, layer: number, expert: number): Promise<HeldExpert> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pulls.set(id, { device, resolve, reject });
      this.sendShaped(device, { type: "pull", id, layer, expert });
    });
  }

  /** A device's result: it must answer a call of its own, for the experts and rows asked. */
  result(d: Device, m: Extract<Message, { type: "result" }>): void {
    const p = this.claim(this.calls, d, m.id, "call");
    if (!p) return;
    d.calls++;
    const asked = p.experts;
    if (m.hidden !== this.opts.hidden) p.reject(new Error(`device ${d.name} returned rows of ${m.hidden}, not ${this.opts.hidden}`));
    else if (m.experts.length !== asked.length || m.experts.some(([e, r], i) => e !== asked[i]![0] || r !== asked[i]![1])) {
      p.reject(new Error(`device ${d.name} answered for [expert, rows] ${JSON.stringify(m.experts)}, not ${JSON.stringify(asked)}`));
    } else p.resolve({ output: decodeActivations(m.payload, m.dtype), computeMs: m.computeMs });
  }

  /** A device's copy of an expert it was asked to pull. */
  expert(d: Device, m: Extract<Message, { type: "expert" }>): void {
    this.claim(this.pulls, d, m.id, "pull")?.resolve({ dtype: m.dtype, shapes: m.shapes, payload: m.payload });
  }

  /** A device's error: the failure of a request of its, or (without an id) something it reports. */
  error(d: Device, m: Extract<Message, { type: "error" }>): void {
    if (m.id === undefined) return d.conn.note("errors reported", `reports: ${m.message}`);
    const waiting = this.calls.get(m.id)?.device === d ? this.calls : this.pulls;
    this.claim<Pending<never>>(waiting, d, m.id, "request")?.reject(new Error(`device ${d.name}: ${m.message}`));
  }

  /** Whether a call or pull is pending on `d`. */
  busy(d: Device): boolean {
    return [...this.calls.values(), ...this.pulls.values()].some((p) => p.device === d);
  }

  /** Fails every request pending on `d`. */
  drop(d: Device, why: string): void {
    for (const waiting of [this.calls, this.pulls] as Array<Map<number, Pending<never>>>) {
      for (const [id, p] of waiting) {
        if (p.device !== d) continue;
        waiting.delete(id);
        p.reject(new Error(why));
      }
    }
  }

  /** Fails every pending request. */
  close(why: string): void {
    for (const p of [...this.calls.values(), ...this.pulls.values()]) p.reject(new Error(why));
    this.calls.clear();
    this.pulls.clear();
  }

  /**
   * Request `id` of device `d`, taken off `waiting`. An answer to a request given up on is dropped; one
   * to a request never made of `d` is refused (and counts against the device).
   */
  private claim<T extends { device: Device }>(waiting: Map<number, T>, d: Device, id: number, what: string): T | null {
    const p = waiting.get(id);
    if (p?.device === d) {
      waiting.delete(id);
      return p;
    }
    if (!this.expired.has(id)) d.conn.refuse("answers to requests never made", `no ${what} ${id} is pending on this device`, id);
    return null;
  }

  private expire(id: number): void {
    this.expired.add(id);
    if (this.expired.size > EXPIRED_KEPT) this.expired.delete(this.expired.values().next().value!);
  }

  /** DEADLINE_FACTOR × the latency model's expectation for these calls on this device, between the floor and the cap. */
  private deadlineFor(device: Device, calls: readonly ExpertCall[]): number {
    return Math.min(DEADLINE_CAP_MS, Math.max(DEADLINE_FLOOR_MS, DEADLINE_FACTOR * this.expectedMs(device, calls)));
  }

  /** What the latency model expects of `calls` (their rows) on `device`: its probed speed and its link now, ms. */
  expectedMs(device: Device, calls: ReadonlyArray<{ rows: number }>): number {
    const cost = deviceCost(this.opts.expertShape, device.capabilities, this.opts.link?.(device.name, performance.now()) ?? null);
    return deviceLayerTime(cost, calls, this.opts.hidden * wireBytes(this.opts.wireDType)).ms;
  }
}
