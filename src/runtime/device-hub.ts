// The base station's side of the device protocol: accepts device connections (hub/admission.ts, every
// one guarded by hub/connection.ts), places the experts on them (hub/placer.ts) and serves the MoE
// block as an ExpertExecutor that sends each call to a device holding that expert (hub/failover.ts,
// hub/calls.ts). Whatever a peer sends costs it its connection at worst, never the base station.
import { WebSocketServer } from "ws";
import type { AddressInfo } from "node:net";
import type { Server as HttpServer } from "node:http";
import type { WeightDType } from "../kernels/backend.js";
import { afterPrecisely, ShapedLink, type LinkModel } from "../channel/link.js";
import type { ExpertExecutor } from "../moe/executor.js";
import type { WireDType } from "../protocol/activations.js";
import type { Capabilities, Message } from "../protocol/frames.js";
import { CLOSE, closeWith } from "../protocol/socket.js";
import { DEFAULT_RESULT_BOUNDS, ResultBounds, type ResultBoundsOptions } from "../policies/result-bounds.js";
import { Admission, type Hello } from "./hub/admission.js";
import { Calls, type HeldExpert } from "./hub/calls.js";
import { Complaints, printable } from "./hub/complaints.js";
import type { Connection } from "./hub/connection.js";
import { pairKey, type Device } from "./hub/device.js";
import { Failover } from "./hub/failover.js";
import { DEFAULT_LIMITS, type HubLimits } from "./hub/limits.js";
import { DEFAULT_LOAD_DEADLINE, Placer, type LoadDeadline } from "./hub/placer.js";
import { ServedModel } from "./hub/served-model.js";
import { deviceStatus, hubStatus, type DeviceStatus, type HubStatus } from "./hub/status.js";

export type { HeldExpert } from "./hub/calls.js";
export type { HubLimits } from "./hub/limits.js";
export type { LoadDeadline } from "./hub/placer.js";
export type { HubStatus, DeviceStatus } from "./hub/status.js";

/** Joins and leaves logged per address and period: a peer reconnecting in a loop is then only counted. */
const JOINS_LOGGED = 32;

/** Bytes a frame carries besides its payload (prefix and JSON header), for link timing. */
const FRAME_OVERHEAD = 96;

export interface HubOptions {
  /** The model directory, as devices will open it (their own copy at the same path). */
  model: string;
  weightDType: WeightDType;
  wireDType: WireDType;
  /** Devices holding each expert (default 1); calls fail over to the next one. */
  replicas?: number;
  /**
   * How long a device may take for one call before it counts as failed and the call goes to a replica
   * (or is dropped). Default: 20 × what the latency model expects of that device and call, at least
   * 1 s; a number here fixes it instead.
   */
  deadlineMs?: number;
  /** How results are judged plausible (defaults: DEFAULT_RESULT_BOUNDS). */
  resultBounds?: Partial<ResultBoundsOptions>;
  /** Emulated links to the devices (rate, delay, jitter, loss), applied to every frame both ways. */
  link?: LinkModel;
  /** Told of every answered call: device, round trip, bytes sent and received. */
  onCall?: (device: string, ms: number, bytesOut: number, bytesIn: number) => void;
  /** Told when a device leaves (by its name as onCall gave it), e.g. to remove its metric series. */
  onDeviceGone?: (name: string) => void;
  /**
   * Join tokens: a device must prove it holds one (a challenge–response, protocol/handshake.ts) before
   * it is placed or sent anything. Unset, any device that says hello is admitted.
   */
  joinTokens?: readonly string[];
  /** Limits on the device port (defaults: DEFAULT_LIMITS). */
  limits?: Partial<HubLimits>;
  /** How long devices get to load their share of a re-plan before placement goes on without them (defaults: DEFAULT_LOAD_DEADLINE). */
  loadDeadline?: Partial<LoadDeadline>;
  /** How often start() says what it is waiting for (default 10 s). */
  waitLogMs?: number;
  host?: string;
  port?: number;
  log?: (line: string) => void;
}

export class DeviceHub {
  private readonly complaints: Complaints;
  private readonly admission: Admission;
  private readonly placer: Placer;
  private readonly calls: Calls;
  private readonly failover: Failover;
  private readonly log: (line: string) => void;

  /**
   * Sends each expert call to a device holding it, one frame per device and layer, failing over to
   * replicas; usable as the engine's executor. A call whose expert has no ready device at all rejects
   * with ExpertsUnavailable.
   */
  readonly executor: ExpertExecutor;

  private constructor(private readonly server: WebSocketServer, private readonly model: ServedModel, private readonly opts: HubOptions, private readonly limits: HubLimits) {
    this.log = opts.log ?? ((l) => process.stderr.write(`[bs] ${l}\n`));
    this.complaints = new Complaints(this.log, limits.complaintsLogged, limits.summaryMs);
    this.calls = new Calls(
      { hidden: model.cfg.hidden, expertShape: model.expertShape, wireDType: opts.wireDType, deadlineMs: opts.deadlineMs, link: opts.link, onCall: opts.onCall },
      (d, m) => this.sendShaped(d, m),
    );
    this.placer = new Placer(
      model.cfg,
      {
        replicas: opts.replicas ?? 1,
        expertBytes: model.expertShape.weightBytes,
        loadDeadline: { ...DEFAULT_LOAD_DEADLINE, ...opts.loadDeadline },
        waitLogMs: opts.waitLogMs ?? 10_000,
      },
      {
        devices: () => this.admission.devices,
        assign: (d) =>
          d.conn.send({
            type: "assign",
            model: model.dir,
            modelId: model.id,
            config: model.configJson,
            weightDType: opts.weightDType,
            wireDType: opts.wireDType,
            experts: d.assigned,
          }),
        // the release goes the way the calls go, so calls sent before it are answered first
        release: (d, experts) => this.sendShaped(d, { type: "release", experts }),
        leaveOut: (d, why) => d.conn.send({ type: "error", message: why }),
        log: this.log,
      },
    );
    const bounds = new ResultBounds({ ...DEFAULT_RESULT_BOUNDS, ...opts.resultBounds });
    this.failover = new Failover((l, e) => this.placer.hostsOf(l, e), this.calls, (d, why) => this.quarantine(d, why), bounds, model.cfg.hidden);
    const failover = this.failover;
    this.executor = {
      dispatch: (calls) => failover.dispatch(calls),
      get retries() {
        return failover.retries;
      },
      get rejectedResults() {
        return failover.rejectedResults;
      },
    };
    this.admission = new Admission(server, limits, this.complaints, opts.joinTokens ?? null, {
      hello: (conn, name, m) => this.hello(conn, name, m),
      joined: () => this.placer.joined(),
      message: (d, m) => this.received(d, m),
      left: (d) => this.left(d),
    });
  }

  /** A hub that shares an HTTP server's port: devices connect with a WebSocket upgrade. */
  static attach(server: HttpServer, opts: HubOptions): DeviceHub {
    const { model, limits } = DeviceHub.prepare(opts);
    return new DeviceHub(new WebSocketServer({ server, maxPayload: limits.maxPayload }), model, opts, limits);
  }

  static listen(opts: HubOptions): Promise<DeviceHub> {
    return new Promise((resolve, reject) => {
      const { model, limits } = DeviceHub.prepare(opts);
      const server = new WebSocketServer({ host: opts.host ?? "127.0.0.1", port: opts.port ?? 0, maxPayload: limits.maxPayload });
      const failed = (e: Error) => {
        model.close();
        reject(e);
      };
      server.once("error", failed);
      server.once("listening", () => {
        server.off("error", failed);
        resolve(new DeviceHub(server, model, opts, limits));
      });
    });
  }

  /** The model and the limits with their defaults (maxPayload: the largest frame the model needs). */
  private static prepare(opts: HubOptions): { model: ServedModel; limits: HubLimits & { maxPayload: number } } {
    const model = new ServedModel(opts.model, opts.weightDType, opts.log ?? ((l) => process.stderr.write(`[bs] ${l}\n`)));
    return { model, limits: { ...DEFAULT_LIMITS, maxPayload: model.maxFrameBytes(opts.wireDType), ...opts.limits } as HubLimits & { maxPayload: number } };
  }

  get url(): string {
    const a = this.server.address() as AddressInfo;
    return `ws://${a.address}:${a.port}`;
  }

  /**
   * Waits, without a time limit, for `count` devices (saying every waitLogMs how many have come), places
   * every expert on them and resolves once that placement is in use. From then on devices that join are
   * placed too, and the hub re-places when one leaves or is taken out of service.
   */
  start(count: number): Promise<void> {
    return this.placer.start(count);
  }

  /** Whether the hub can serve every expert, and with what redundancy; for /health. */
  status(): HubStatus {
    return hubStatus({
      devices: this.admission.devices,
      members: this.placer.members,
      placement: this.placer.placement,
      replicas: this.opts.replicas ?? 1,
      waiting: this.placer.waiting(),
    });
  }

  /** The device that serves (layer, expert) now: its first ready host. */
  hostOf(layer: number, expert: number): string | undefined {
    return this.placer.hostsOf(layer, expert)?.find((d) => d.ready)?.name;
  }

  /** Names of the devices the placement in use refers to. */
  get placed(): string[] {
    return this.placer.members.map((d) => d.name);
  }

  /** What a connected device said it can do (its capability probe), by name. */
  capabilitiesOf(name: string): Capabilities | undefined {
    return this.admission.devices.find((d) => d.name === name)?.capabilities;
  }

  /** Calls answered per device, for reports and tests. */
  deviceCalls(): DeviceStatus[] {
    return this.admission.devices.map(deviceStatus);
  }

  /**
   * Copies an expert's weights from the device serving it, as that device holds them: a fast tier
   * taking an expert in (MoNDE's hot experts, or parameter offloading). They come over the device's
   * link, shaped like its calls.
   */
  pullExpert(layer: number, expert: number): Promise<HeldExpert> {
    const device = this.placer.hostsOf(layer, expert)?.find((d) => d.ready);
    if (!device) return Promise.reject(new Error(`no live device holds expert ${expert} of layer ${layer}`));
    return this.calls.pull(device, layer, expert);
  }

  /** Tells every device to leave and stops listening. */
  close(): Promise<void> {
    for (const d of this.admission.devices) d.conn.send({ type: "leave", reason: "base station shutting down" });
    this.calls.close("base station shutting down");
    this.placer.close();
    this.complaints.close();
    this.model.close();
    return new Promise((resolve) => {
      for (const c of this.server.clients) closeWith(c, CLOSE.goingAway, "base station shutting down");
      this.server.close(() => resolve());
    });
  }

  private hello(conn: Connection, name: string, m: Hello): Device {
    const link = this.opts.link ? new ShapedLink(name, this.opts.link, this.admission.devices.length + 1) : null;
    const holds = this.model.experts(m.holds ?? []);
    const c = m.capabilities;
    this.complaints.report(`peer ${conn.address}`, "joins and leaves", `${name} joined (${c.readGbps.toFixed(1)} GB/s, ${c.gflops.toFixed(1)} GFLOP/s${holds.length > 0 ? `, holding ${holds.length} experts` : ""})`, JOINS_LOGGED);
    return {
      name, conn, capabilities: c, ready: false, connected: true, holds, assigned: [], assignedGen: 0, loadedGen: 0, laggard: false,
      calls: 0, weightBytes: 0, failures: 0, quarantined: false, link,
    };
  }

  private left(d: Device): void {
    d.ready = d.connected = false;
    this.calls.drop(d, `device ${d.name} disconnected`);
    this.complaints.report(`peer ${d.conn.address}`, "joins and leaves", `${d.name} left`, JOINS_LOGGED);
    this.opts.onDeviceGone?.(d.name);
    this.placer.left(d);
  }

  /** The uplink holds each frame back as long as the emulated link would. */
  private received(d: Device, m: Message): void {
    const wait = d.link?.delay("up", FRAME_OVERHEAD + ("payload" in m ? m.payload.length : 0)) ?? 0;
    if (wait > 0) afterPrecisely(wait, () => this.onMessage(d, m));
    else this.onMessage(d, m);
  }

  private onMessage(d: Device, m: Message): void {
    if (!d.connected) return;
    switch (m.type) {
      case "ready": {
        const have = this.model.experts(m.experts);
        const held = new Set(have.map(pairKey));
        const missing = d.assigned.filter((p) => !held.has(pairKey(p)));
        if (missing.length > 0) {
          return d.conn.refuse("readies without the assigned experts", `ready without assigned experts ${missing.slice(0, 8).map(pairKey).join(", ")}${missing.length > 8 ? ` and ${missing.length - 8} more` : ""}`);
        }
        d.holds = have;
        d.loadedGen = d.assignedGen;
        d.ready = !d.quarantined;
        return this.placer.loaded(d);
      }
      case "result":
        return this.calls.result(d, m);
      case "expert":
        return this.calls.expert(d, m);
      case "error":
        return this.calls.error(d, m);
      case "fetch":
        return this.model.fetch(d, m.experts, m.have, this.limits.fetchesQueued);
      case "leave":
        return closeWith(d.conn.ws, CLOSE.normal, "goodbye");
      default:
        d.conn.refuse("messages the base station does not take", `the base station does not accept ${m.type} messages`);
    }
  }

  /** Stops routing to a device that keeps failing, and places its experts on the others. */
  private quarantine(d: Device, why: Error): void {
    if (d.quarantined) return;
    d.quarantined = true;
    d.ready = false;
    this.log(`${d.name} is out of service after ${d.failures} failed calls in a row (last: ${printable(why.message)})`);
    d.conn.send({ type: "error", message: `out of service after ${d.failures} failed calls in a row` });
    this.placer.quarantined();
  }

  /** Sends after the downlink's emulated delay (immediately when links are not shaped). */
  private sendShaped(d: Device, m: Message): void {
    const wait = d.link?.delay("down", FRAME_OVERHEAD + ("payload" in m ? m.payload.length : 0)) ?? 0;
    if (wait > 0) afterPrecisely(wait, () => d.conn.send(m));
    else d.conn.send(m);
  }
}
