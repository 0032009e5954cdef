// The base station's side of the device protocol: accepts device connections, places the experts on
// them (policies/placement.ts) and serves the MoE block as an ExpertExecutor that sends each call to
// the device holding that expert. A malformed frame is answered with an error frame and logged; the
// hub keeps serving.
import { WebSocketServer, type WebSocket } from "ws";
import type { AddressInfo } from "node:net";
import type { Server as HttpServer } from "node:http";
import type { WeightDType } from "../kernels/backend.js";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { readModelConfig, type ModelConfig } from "../model/config.js";
import { Checkpoint } from "../model/checkpoint.js";
import { tensorName } from "../model/arch.js";
import { afterPrecisely, ShapedLink, type LinkModel } from "../channel/link.js";
import { deviceCost, deviceLayerTime } from "../channel/latency.js";
import { expertWork, type WorkShape } from "../model/work-shape.js";
import type { ExpertCall, ExpertExecutor, ExpertResult } from "../moe/executor.js";
import { placeExperts, type Placement } from "../policies/placement.js";
import { concatRows, decodeActivations, encodeActivations, splitRows, wireBytes, type WireDType } from "../protocol/activations.js";
import type { Capabilities, Message } from "../protocol/frames.js";
import { receiveFrames, sendFrame } from "../protocol/socket.js";

/** Bytes a frame carries besides its payload (prefix and JSON header), for link timing. */
const FRAME_OVERHEAD = 96;
/** Deadlines: a multiple of a call's expected time, never below a floor that absorbs a busy machine. */
const DEADLINE_FACTOR = 20;
const DEADLINE_FLOOR_MS = 1000;
/** Consecutive failed calls (errors, malformed results, missed deadlines) that put a device out of service. */
const QUARANTINE_AFTER = 3;

export interface HubOptions {
  /** The model directory, as devices will open it (their own copy at the same path). */
  model: string;
  weightDType: WeightDType;
  wireDType: WireDType;
  /** Devices holding each expert (default 1); calls fail over to the next one. */
  replicas?: number;
  /**
   * How long a device may take for one call before it counts as failed and the call goes to a replica
   * (or is dropped). Default: DEADLINE_FACTOR × what the latency model expects of that device and call,
   * at least DEADLINE_FLOOR_MS; a number here fixes it instead.
   */
  deadlineMs?: number;
  /** Emulated links to the devices (rate, delay, jitter, loss), applied to every frame both ways. */
  link?: LinkModel;
  /** Told of every answered call: device, round trip, bytes sent and received. */
  onCall?: (device: string, ms: number, bytesOut: number, bytesIn: number) => void;
  host?: string;
  port?: number;
  log?: (line: string) => void;
}

/** "layer:expert", to compare [layer, expert] pairs in sets. */
const pairKey = (p: readonly [number, number]): string => `${p[0]}:${p[1]}`;

interface Device {
  name: string;
  ws: WebSocket;
  capabilities: Capabilities;
  /** connected, and has loaded at least one assignment: may be routed to */
  ready: boolean;
  connected: boolean;
  /** the experts it holds, as its last ready said, less those released since */
  holds: Array<[number, number]>;
  /** the latest assignment sent to it, its generation, and the generation it has loaded */
  assigned: Array<[number, number]>;
  assignedGen: number;
  loadedGen: number;
  /** expert calls it has answered */
  calls: number;
  /** its emulated link, when the hub shapes links */
  link: ShapedLink | null;
  /** weight bytes streamed to it */
  weightBytes: number;
  /** calls failed in a row; at QUARANTINE_AFTER the device is taken out of service */
  failures: number;
  quarantined: boolean;
}

/** A call frame sent to a device and not answered yet. */
interface PendingCall {
  device: Device;
  /** the experts and rows it asked for, which the result must match */
  experts: ReadonlyArray<[number, number]>;
  resolve: (out: Float32Array, computeMs: number) => void;
  reject: (e: Error) => void;
}

/** An expert's weights as a device holds them: its gate, up and down matrices in `dtype`, their bytes one after another. */
export interface HeldExpert {
  dtype: string;
  shapes: Array<[rows: number, cols: number]>;
  payload: Uint8Array;
}

/** One expert call of a dispatch, on its way through the expert's hosts. */
interface Job {
  call: ExpertCall;
  /** index into the expert's hosts of the next one to try */
  next: number;
  /** why the last host failed */
  failure: Error | null;
  resolve: (r: ExpertResult) => void;
  reject: (e: Error) => void;
}

export class DeviceHub {
  /** Connected devices, in order of arrival. */
  private readonly devices: Device[] = [];
  /** The devices the placement refers to (its indices), fixed when it is made. */
  private members: Device[] = [];
  /** Placement generations: one per re-plan; a newer one supersedes a pending older one. */
  private gen = 0;
  private started = false;
  private readonly pending = new Map<number, PendingCall>();
  private readonly pulls = new Map<number, { device: Device; resolve: (e: HeldExpert) => void; reject: (e: Error) => void }>();
  private readonly waiters = new Set<() => void>();
  private readonly cfg: ModelConfig;
  private readonly configJson: Record<string, unknown>;
  /** The checkpoint, opened to stream weights to devices without the files, and its identity. */
  private readonly checkpoint: Checkpoint;
  private readonly modelId: string;
  /** An expert's weight bytes as devices hold them (an upper bound: f32 where the dtype cannot hold a shape) and multiply-adds per row. */
  private readonly expertShape: WorkShape;
  private placement: Placement | null = null;
  private nextId = 1;
  private readonly log: (line: string) => void;

  private retryCount = 0;

  /**
   * Sends each expert call to a device holding it, one frame per device and layer, failing over to
   * replicas; usable as the engine's executor.
   */
  readonly executor: ExpertExecutor;

  private constructor(private readonly server: WebSocketServer, private readonly opts: HubOptions) {
    const retries = () => this.retryCount;
    this.executor = {
      dispatch: (calls) => this.dispatch(calls),
      get retries() {
        return retries();
      },
    };
    this.cfg = readModelConfig(opts.model);
    this.configJson = JSON.parse(readFileSync(path.join(opts.model, "config.json"), "utf8")) as Record<string, unknown>;
    this.checkpoint = Checkpoint.open(opts.model);
    const id = createHash("sha256").update(JSON.stringify(this.configJson));
    for (const name of [...this.checkpoint.names()].sort()) {
      const t = this.checkpoint.get(name)!;
      id.update(`${name}:${t.dtype}:${t.shape.join("x")}:${path.basename(t.file.path)}:${t.offset};`);
    }
    this.modelId = id.digest("hex").slice(0, 32);
    this.expertShape = expertWork(this.cfg, opts.weightDType);
    this.log = opts.log ?? ((l) => process.stderr.write(`[bs] ${l}\n`));
    server.on("connection", (ws) => this.accept(ws));
  }

  /** A hub that shares an HTTP server's port: devices connect with a WebSocket upgrade. */
  static attach(server: HttpServer, opts: HubOptions): DeviceHub {
    return new DeviceHub(new WebSocketServer({ server, maxPayload: 256 << 20 }), opts);
  }

  static listen(opts: HubOptions): Promise<DeviceHub> {
    return new Promise((resolve, reject) => {
      const server = new WebSocketServer({ host: opts.host ?? "127.0.0.1", port: opts.port ?? 0, maxPayload: 256 << 20 });
      server.once("listening", () => {
        try {
          resolve(new DeviceHub(server, opts));
        } catch (e) {
          server.close();
          reject(e);
        }
      });
      server.once("error", reject);
    });
  }

  get url(): string {
    const a = this.server.address() as AddressInfo;
    return `ws://${a.address}:${a.port}`;
  }

  /**
   * Waits for `count` devices and places every expert on them. From then on the hub re-places when a
   * device joins, and when one leaves with the last live copy of some expert.
   */
  async start(count: number, timeoutMs = 120_000): Promise<void> {
    await this.until(() => this.devices.length >= count, timeoutMs, `${count} devices to connect`);
    this.started = true;
    await this.replan(timeoutMs);
  }

  /**
   * Places every expert over the connected devices and moves routing to the new placement once each
   * has loaded its share. Devices keep what they already hold, so the old routes stay valid meanwhile.
   */
  private async replan(timeoutMs = 120_000): Promise<void> {
    const gen = ++this.gen;
    const live = this.devices.filter((d) => d.connected && !d.quarantined);
    if (live.length === 0) return;
    const next = placeExperts(
      this.cfg.sparseLayers,
      this.cfg.experts,
      live.map((d) => ({ readGbps: d.capabilities.readGbps, memoryBytes: d.capabilities.memoryBytes, holds: d.holds })),
      { replicas: this.opts.replicas, expertBytes: this.expertShape.weightBytes },
    );
    live.forEach((d, i) => {
      d.assigned = next.experts[i]!;
      d.assignedGen = gen;
      this.send(d, {
        type: "assign",
        model: this.opts.model,
        modelId: this.modelId,
        config: this.configJson,
        weightDType: this.opts.weightDType,
        wireDType: this.opts.wireDType,
        experts: d.assigned,
      });
    });
    await this.until(() => this.gen !== gen || live.every((d) => !d.connected || d.loadedGen === gen), timeoutMs, "the devices to load their experts");
    if (this.gen !== gen) return;
    if (live.some((d) => !d.connected)) return this.replan(timeoutMs); // someone left while the others loaded
    this.members = live;
    this.placement = next;
    this.log(`placement ${gen}: ${live.map((d) => `${d.name} ${d.assigned.length}`).join(", ")} experts`);
    // what the devices hold beyond their new share is no longer routed to: they free it. The release
    // goes the way the calls go, so calls sent before it are answered first.
    for (const d of live) {
      const keep = new Set(d.assigned.map(pairKey));
      const drop = d.holds.filter((p) => !keep.has(pairKey(p)));
      if (drop.length === 0) continue;
      d.holds = d.holds.filter((p) => keep.has(pairKey(p)));
      this.sendShaped(d, { type: "release", experts: drop });
    }
  }

  private replanInBackground(): void {
    this.replan().catch((e: Error) => this.log(`re-placing experts failed: ${e.message}`));
  }

  /** The device that serves (layer, expert) now: its first live host. */
  hostOf(layer: number, expert: number): string | undefined {
    const hosts = this.placement?.hosts[layer]?.[expert] ?? [];
    return hosts.map((i) => this.members[i]).find((d) => d?.ready)?.name;
  }

  /** Names of the devices the placement in use refers to. */
  get placed(): string[] {
    return this.members.map((d) => d.name);
  }

  /** What a connected device said it can do (its capability probe), by name. */
  capabilitiesOf(name: string): Capabilities | undefined {
    return this.devices.find((d) => d.name === name)?.capabilities;
  }

  /** Calls answered per device, for reports and tests. */
  deviceCalls(): Array<{ name: string; calls: number; ready: boolean; quarantined: boolean; weightBytes: number; experts: number }> {
    return this.devices.map((d) => ({ name: d.name, calls: d.calls, ready: d.ready, quarantined: d.quarantined, weightBytes: d.weightBytes, experts: d.holds.length }));
  }

  /** Streams the requested experts' tensors, except those the device already holds with the same checksum. */
  private sendWeights(d: Device, experts: ReadonlyArray<[number, number]>, have: Record<string, string>): void {
    const t = this.cfg.arch.tensors;
    let sent = 0, bytes = 0;
    for (const [layer, expert] of experts) {
      if (!d.assigned.some(([l, e]) => l === layer && e === expert)) {
        this.send(d, { type: "error", message: `expert ${expert} of layer ${layer} is not assigned to this device` });
        continue;
      }
      for (const tmpl of [t.expertGate, t.expertUp, t.expertDown]) {
        const name = tensorName(tmpl, layer, expert);
        const info = this.checkpoint.get(name)!;
        const payload = info.file.read(name);
        const sha256 = createHash("sha256").update(payload).digest("hex");
        if (have[name] === sha256) continue;
        this.send(d, { type: "weights", name, dtype: info.dtype as "F32" | "BF16" | "F16", shape: [info.shape[0]!, info.shape[1]!], sha256, payload });
        sent++;
        bytes += payload.length;
      }
    }
    d.weightBytes += bytes;
    this.send(d, { type: "fetched", sent, bytes });
    if (bytes > 0) this.log(`streamed ${sent} tensors (${(bytes / 2 ** 20).toFixed(1)} MiB) to ${d.name}`);
  }

  private until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!cond()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  /** DEADLINE_FACTOR × the latency model's expectation for these calls on this device, at least the floor. */
  private deadlineFor(device: Device, calls: readonly ExpertCall[]): number {
    const cost = deviceCost(this.expertShape, device.capabilities, this.opts.link?.(device.name, performance.now()) ?? null);
    const expected = deviceLayerTime(cost, calls, this.cfg.hidden * wireBytes(this.opts.wireDType)).ms;
    return Math.max(DEADLINE_FLOOR_MS, DEADLINE_FACTOR * expected);
  }

  /** Stops routing to a device that keeps failing, and places its experts on the others. */
  private quarantine(d: Device, why: Error): void {
    if (d.quarantined) return;
    d.quarantined = true;
    d.ready = false;
    this.log(`${d.name} is out of service after ${d.failures} failed calls in a row (last: ${why.message})`);
    this.send(d, { type: "error", message: `out of service after ${d.failures} failed calls in a row` });
    this.replanInBackground();
  }

  /** Whether some expert has no connected host under the placement in use. */
  private lostExperts(): boolean {
    return (this.placement?.hosts ?? []).some((layer) => layer.some((hosts) => hosts.every((i) => !this.members[i]?.connected)));
  }

  private changed(): void {
    for (const w of [...this.waiters]) w();
  }

  private send(d: Device | WebSocket, m: Message): void {
    sendFrame("ws" in d ? d.ws : d, m);
  }

  /** Sends after the downlink's emulated delay (immediately when links are not shaped). */
  private sendShaped(d: Device, m: Message): void {
    const wait = d.link?.delay("down", FRAME_OVERHEAD + ("payload" in m ? m.payload.length : 0)) ?? 0;
    if (wait > 0) afterPrecisely(wait, () => this.send(d, m));
    else this.send(d, m);
  }

  private accept(ws: WebSocket): void {
    let device: Device | null = null;
    const onMessage = (m: Message) => {
      if (!device) {
        if (m.type !== "hello") {
          this.send(ws, { type: "error", message: "say hello first" });
          return;
        }
        const link = this.opts.link ? new ShapedLink(m.name, this.opts.link, this.devices.length + 1) : null;
        device = { name: m.name, ws, capabilities: m.capabilities, ready: false, connected: true, holds: [], assigned: [], assignedGen: 0, loadedGen: 0, calls: 0, weightBytes: 0, failures: 0, quarantined: false, link };
        this.devices.push(device);
        this.log(`${m.name} joined (${m.capabilities.readGbps.toFixed(1)} GB/s, ${m.capabilities.gflops.toFixed(1)} GFLOP/s)`);
        this.changed();
        if (this.started) this.replanInBackground();
        return;
      }
      // the uplink holds each frame back as long as the emulated link would
      const d = device;
      const wait = d.link?.delay("up", FRAME_OVERHEAD + ("payload" in m ? m.payload.length : 0)) ?? 0;
      if (wait > 0) afterPrecisely(wait, () => this.onMessage(d, m));
      else this.onMessage(d, m);
    };
    receiveFrames(ws, onMessage, (reason) => this.log(`${device?.name ?? "unknown peer"}: ${reason}`));
    ws.on("close", () => {
      if (!device) return;
      this.devices.splice(this.devices.indexOf(device), 1);
      device.ready = device.connected = false;
      for (const waiting of [this.pending, this.pulls]) {
        for (const [id, p] of waiting) {
          if (p.device !== device) continue;
          waiting.delete(id);
          p.reject(new Error(`device ${device.name} disconnected`));
        }
      }
      this.log(`${device.name} left`);
      this.changed();
      if (this.started && this.lostExperts()) this.replanInBackground();
    });
  }

  private onMessage(d: Device, m: Message): void {
    switch (m.type) {
      case "ready": {
        const have = new Set(m.experts.map(pairKey));
        const missing = d.assigned.filter((p) => !have.has(pairKey(p)));
        if (missing.length > 0) {
          this.send(d, { type: "error", message: `ready without assigned experts ${missing.map(pairKey).join(", ")}` });
          return;
        }
        d.holds = m.experts;
        d.loadedGen = d.assignedGen;
        d.ready = true;
        this.changed();
        return;
      }
      case "result": {
        const p = this.claim(this.pending, m.id, d, "call");
        if (!p) return;
        d.calls++;
        const asked = p.experts;
        if (m.hidden !== this.cfg.hidden) p.reject(new Error(`device ${d.name} returned rows of ${m.hidden}, not ${this.cfg.hidden}`));
        else if (m.experts.length !== asked.length || m.experts.some(([e, r], i) => e !== asked[i]![0] || r !== asked[i]![1])) {
          p.reject(new Error(`device ${d.name} answered for [expert, rows] ${JSON.stringify(m.experts)}, not ${JSON.stringify(asked)}`));
        }
        else p.resolve(decodeActivations(m.payload, m.dtype), m.computeMs);
        return;
      }
      case "error": {
        const waiting = m.id === undefined ? undefined : [this.pending, this.pulls].find((w) => w.get(m.id!)?.device === d);
        if (waiting) {
          waiting.get(m.id!)!.reject(new Error(`device ${d.name}: ${m.message}`));
          waiting.delete(m.id!);
        } else this.log(`${d.name}: ${m.message}`);
        return;
      }
      case "expert":
        this.claim(this.pulls, m.id, d, "pull")?.resolve({ dtype: m.dtype, shapes: m.shapes, payload: m.payload });
        return;
      case "fetch":
        this.sendWeights(d, m.experts, m.have);
        return;
      case "leave":
        d.ws.close();
        return;
      default:
        this.send(d, { type: "error", message: `the base station does not accept ${m.type} messages` });
    }
  }

  /** The request `id` that device `d` answers, taken off `waiting`; null (and an error frame to the device) when it is not pending there. */
  private claim<T extends { device: Device }>(waiting: Map<number, T>, id: number, d: Device, what: string): T | null {
    const p = waiting.get(id);
    if (!p || p.device !== d) {
      this.send(d, { type: "error", id, message: `no ${what} ${id} is pending on this device` });
      return null;
    }
    waiting.delete(id);
    return p;
  }

  private dispatch(calls: readonly ExpertCall[]): Array<Promise<ExpertResult>> {
    const jobs: Job[] = [];
    const results = calls.map((call) => new Promise<ExpertResult>((resolve, reject) => jobs.push({ call, next: 0, failure: null, resolve, reject })));
    this.route(jobs);
    return results;
  }

  /**
   * Sends each job to the next live host of its expert, one frame per device. When a frame fails, its
   * jobs go on to their experts' next hosts; a job served by any host but its expert's first counts
   * as a retry, and one with no host left fails with the last host's error.
   */
  private route(jobs: readonly Job[]): void {
    const groups = new Map<Device, Job[]>();
    for (const job of jobs) {
      const device = this.nextHost(job);
      if (!device) job.reject(job.failure ?? new Error(`no live device holds expert ${job.call.expert} of layer ${job.call.layer}`));
      else (groups.get(device) ?? groups.set(device, []).get(device)!).push(job);
    }
    for (const [device, group] of groups) {
      this.callOn(device, group.map((j) => j.call)).then(
        (results) => {
          device.failures = 0;
          group.forEach((j, i) => j.resolve(results[i]!));
        },
        (e: Error) => {
          if (device.connected && ++device.failures >= QUARANTINE_AFTER) this.quarantine(device, e);
          for (const j of group) j.failure = e;
          this.route(group);
        },
      );
    }
  }

  private nextHost(job: Job): Device | null {
    const hosts = this.placement?.hosts[job.call.layer]?.[job.call.expert] ?? [];
    while (job.next < hosts.length) {
      const n = job.next++;
      const device = this.members[hosts[n]!];
      if (!device?.ready) continue;
      if (n > 0) this.retryCount++;
      return device;
    }
    return null;
  }

  /** One call frame carrying `calls` (all of one layer) to `device`; one result per call, in order. */
  private callOn(device: Device, calls: readonly ExpertCall[]): Promise<ExpertResult[]> {
    const id = this.nextId++;
    const deadlineMs = this.opts.deadlineMs ?? this.deadlineFor(device, calls);
    const t0 = performance.now();
    const experts = calls.map((c): [number, number] => [c.expert, c.rows]);
    const payload = encodeActivations(concatRows(calls.map((c) => c.input)), this.opts.wireDType);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`device ${device.name} missed the ${deadlineMs} ms deadline`));
      }, deadlineMs);
      const answered = (output: Float32Array, computeMs: number) => {
        clearTimeout(timer);
        const roundTripMs = performance.now() - t0;
        this.opts.onCall?.(device.name, roundTripMs, payload.length, output.length * wireBytes(this.opts.wireDType));
        resolve(splitRows(output, this.cfg.hidden, calls.map((c) => c.rows)).map((out) => ({ output: out, computeMs, roundTripMs })));
      };
      const failed = (e: Error) => {
        clearTimeout(timer);
        reject(e);
      };
      this.pending.set(id, { device, experts, resolve: answered, reject: failed });
      this.sendShaped(device, { type: "call", id, layer: calls[0]!.layer, experts, hidden: this.cfg.hidden, dtype: this.opts.wireDType, payload });
    });
  }

  /**
   * Copies an expert's weights from the device serving it, as that device holds them: a fast tier
   * taking an expert in (MoNDE's hot experts, or parameter offloading). They come over the device's
   * link, shaped like its calls.
   */
  pullExpert(layer: number, expert: number): Promise<HeldExpert> {
    const name = this.hostOf(layer, expert);
    const device = this.members.find((d) => d.name === name);
    if (!device) return Promise.reject(new Error(`no live device holds expert ${expert} of layer ${layer}`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pulls.set(id, { device, resolve, reject });
      this.sendShaped(device, { type: "pull", id, layer, expert });
    });
  }

  /** Tells every device to leave and stops listening. */
  close(): Promise<void> {
    for (const d of this.devices) this.send(d, { type: "leave", reason: "base station shutting down" });
    for (const p of [...this.pending.values(), ...this.pulls.values()]) p.reject(new Error("base station shutting down"));
    this.pending.clear();
    this.pulls.clear();
    this.checkpoint.close();
    return new Promise((resolve) => {
      for (const c of this.server.clients) c.close();
      this.server.close(() => resolve());
    });
  }
}
