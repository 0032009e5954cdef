// The base station's side of the device protocol: accepts device connections (hub/admission.ts, every
// one guarded by hub/connection.ts), places the experts on them (hub/placer.ts) and serves the MoE
// block as an ExpertExecutor that sends each call to a device holding that expert (hub/failover.ts,
// hub/calls.ts). Whatever a peer sends costs it its connection at worst, never the base station.
import { WebSocketServer } from "ws";
import type { AddressInfo } from "node:net";
import type { Server as HttpServer } from "node:http";
import type { Server as HttpsServer } from "node:https";
import type { WeightDType } from "../kernels/backend.js";
import { afterPrecisely, ShapedLink, type LinkModel, type LinkParams } from "../channel/link.js";
import type { ExpertExecutor } from "../moe/executor.js";
import type { WireDType } from "../protocol/activations.js";
import type { Capabilities, Message } from "../protocol/frames.js";
import { CLOSE, closeWith } from "../protocol/socket.js";
import { DEFAULT_RESULT_BOUNDS, ResultBounds, type ResultBoundsOptions } from "../policies/result-bounds.js";
import { resultTolerance } from "../policies/result-match.js";
import { sparingLowBattery } from "../policies/replica.js";
import { Admission, type Admitted, type Hello } from "./hub/admission.js";
import { Calls, type HeldExpert } from "./hub/calls.js";
import { Complaints, printable } from "./hub/complaints.js";
import type { Connection } from "./hub/connection.js";
import { pairKey, type Device } from "./hub/device.js";
import { Failover } from "./hub/failover.js";
import { Identities, type KnownIdentity } from "./hub/identities.js";
import { JoinTokens, type JoinTokenInfo } from "./hub/join-tokens.js";
import { DEFAULT_LIMITS, type HubLimits } from "./hub/limits.js";
import { DEFAULT_LOAD_DEADLINE, Placer, type LoadDeadline } from "./hub/placer.js";
import { Referee } from "./hub/referee.js";
import { ServedModel } from "./hub/served-model.js";
import { SpotChecks } from "./hub/spot-checks.js";
import { deviceStatus, hubStatus, type DeviceStatus, type HubStatus } from "./hub/status.js";

export type { HeldExpert } from "./hub/calls.js";
export type { HubLimits } from "./hub/limits.js";
export type { LoadDeadline } from "./hub/placer.js";
export type { HubStatus, DeviceStatus } from "./hub/status.js";

const ONE_ROW = [{ rows: 1 }];

/** Joins and leaves logged per address and period: a peer reconnecting in a loop is then only counted. */
const JOINS_LOGGED = 32;

/** Bytes a frame carries besides its payload (prefix and JSON header), for link timing. */
const FRAME_OVERHEAD = 96;
/** How often a leaving device is looked at, to stop routing to it and close its connection once its calls in flight are answered. */
const DRAIN_POLL_MS = 20;
/** How long a leaving device is routed to at most, while its experts are placed on the others. */
const DRAIN_ROUTED_MS = 30_000;

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
  /**
   * Whether expert results are checked at all (default true). Off, every well-formed result is used as
   * it comes: only for measuring what the checks cost.
   */
  resultChecks?: boolean;
  /**
   * The share of expert calls (0 to 1, chosen at random; default 0) also computed by a second holder —
   * another ready replica, else the base station from its own copy of the weights — and compared
   * within the dtypes' tolerance (policies/result-match.ts); the step waits for both. A device whose
   * result disagrees with the base station's is taken out of service at once.
   */
  verifyRate?: number;
  /** Emulated links to the devices (rate, delay, jitter, loss), applied to every frame both ways. */
  link?: LinkModel;
  /** Told of every answered call: device, round trip, bytes sent and received. */
  onCall?: (device: string, ms: number, bytesOut: number, bytesIn: number) => void;
  /** Told when a device leaves (by its name as onCall gave it), e.g. to remove its metric series. */
  onDeviceGone?: (name: string) => void;
  /**
   * Join tokens: a device must prove it holds one (a challenge–response, protocol/handshake.ts), and
   * prove its identity, before it is placed or sent anything; tokens can be added and revoked while the
   * hub runs (addJoinToken, revokeJoinToken). Unset, any device that says hello is admitted.
   */
  joinTokens?: readonly string[] | JoinTokens;
  /**
   * Whether browser devices (the page at /device) are admitted: their handshake cannot be bound to the
   * TLS session, so it is accepted only where this is on, and over TLS or loopback (hub/admission.ts).
   */
  browserDevices?: boolean;
  /** The device identities known, and which experts each held (default: a fresh set, in memory). */
  identities?: Identities;
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
  /** the base station's own answers, for spot checks (null: none are made) */
  private readonly referee: Referee | null;
  private readonly log: (line: string) => void;
  private readonly joinTokens: JoinTokens | null;
  private readonly identities: Identities;

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
    const checked = opts.resultChecks ?? true;
    const bounds = checked ? new ResultBounds({ ...DEFAULT_RESULT_BOUNDS, ...opts.resultBounds }) : null;
    this.referee = opts.verifyRate ? new Referee(model.checkpoint, model.cfg, opts.weightDType) : null;
    const checks = this.referee
      ? new SpotChecks({ rate: opts.verifyRate!, tolerance: resultTolerance(opts.wireDType, opts.weightDType), wireDType: opts.wireDType, hidden: model.cfg.hidden }, this.referee, (d, why, wrong) => this.quarantine(d, why, wrong))
      : null;
    this.failover = new Failover((l, e) => this.hostsOf(l, e), this.calls, (d, why, wrong) => this.quarantine(d, why, wrong), bounds, checks, model.cfg.hidden);
    const failover = this.failover;
    this.executor = {
      dispatch: (calls) => failover.dispatch(calls),
      get retries() {
        return failover.retries;
      },
      get rejectedResults() {
        return failover.rejectedResults;
      },
      get verifiedCalls() {
        return checks?.verified ?? 0;
      },
      get mismatchedResults() {
        return checks?.mismatched ?? 0;
      },
    };
    this.joinTokens = opts.joinTokens === undefined ? null : opts.joinTokens instanceof JoinTokens ? opts.joinTokens : new JoinTokens(opts.joinTokens);
    this.identities = opts.identities ?? new Identities();
    this.admission = new Admission(server, limits, this.complaints, this.joinTokens, this.identities, {
      hello: (conn, who, m) => this.hello(conn, who, m),
      joined: () => this.placer.joined(),
      message: (d, m) => this.received(d, m),
      left: (d) => this.left(d),
    }, opts.browserDevices ?? false);
  }

  /** A hub that shares an HTTP(S) server's port: devices connect with a WebSocket upgrade (wss:// on HTTPS). */
  static attach(server: HttpServer | HttpsServer, opts: HubOptions): DeviceHub {
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
    const rate = opts.verifyRate ?? 0;
    if (!(rate >= 0 && rate <= 1)) throw new RangeError(`verifyRate: a share of the expert calls from 0 to 1, not ${rate}`);
    if (rate > 0 && opts.resultChecks === false) throw new RangeError("verifyRate: spot checks are result checks, and resultChecks is false");
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

  /** An expert's hosts in the order calls try them: the placement's, those on low battery last (policies/replica.ts); null: no placement yet. */
  private hostsOf(layer: number, expert: number): readonly Device[] | null {
    const hosts = this.placer.hostsOf(layer, expert);
    return hosts && sparingLowBattery(hosts, (d) => d.battery);
  }

  /** The device that serves (layer, expert) now: its first ready host. */
  hostOf(layer: number, expert: number): string | undefined {
    return this.hostsOf(layer, expert)?.find((d) => d.ready)?.name;
  }

  /** The placement in use: its devices' names and, per [layer][expert], their indices among them (preference order); null before the first. */
  placement(): { devices: string[]; hosts: number[][][] } | null {
    const p = this.placer.placement;
    return p && { devices: this.placer.members.map((d) => d.name), hosts: p.hosts };
  }

  /**
   * Per expert of `layer`, what the latency model expects of a one-token call to the device serving it
   * now (its probed speed and its link), ms; Infinity where no ready device serves it. The latency-aware
   * selection policies read these.
   */
  expertLatencyMs(layer: number): Float64Array {
    const out = new Float64Array(this.model.cfg.experts).fill(Infinity);
    for (let e = 0; e < out.length; e++) {
      const d = this.hostsOf(layer, e)?.find((h) => h.ready);
      if (d) out[e] = this.calls.expectedMs(d, ONE_ROW);
    }
    return out;
  }

  /** A device's emulated link now; null where links are not shaped. */
  linkOf(name: string): LinkParams | null {
    return this.opts.link?.(name, performance.now()) ?? null;
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
    const device = this.hostsOf(layer, expert)?.find((d) => d.ready);
    if (!device) return Promise.reject(new Error(`no live device holds expert ${expert} of layer ${layer}`));
    return this.calls.pull(device, layer, expert);
  }

  /** Tells every device to leave and stops listening. */
  close(): Promise<void> {
    for (const d of this.admission.devices) d.conn.send({ type: "leave", reason: "base station shutting down" });
    this.calls.close("base station shutting down");
    this.placer.close();
    this.complaints.close();
    this.referee?.close();
    this.model.close();
    return new Promise((resolve) => {
      for (const c of this.server.clients) closeWith(c, CLOSE.goingAway, "base station shutting down");
      this.server.close(() => resolve());
    });
  }

  /** The join tokens admitted now, each with the devices connected by it; null when the hub admits any device. */
  joinTokenList(): Array<JoinTokenInfo & { devices: string[] }> | null {
    return this.joinTokens?.list().map((t) => ({ ...t, devices: this.admission.devices.filter((d) => d.tokenId === t.id).map((d) => d.name) })) ?? null;
  }

  /** Admits devices with `token` too (default: a new one); its id and the token. Throws on a hub without tokens or a token not of the form. */
  addJoinToken(token?: string): { id: string; token: string } {
    if (!this.joinTokens) throw new Error("this base station admits any device: it has no join tokens to add to");
    return this.joinTokens.add(token);
  }

  /** Revokes a join token by id and disconnects the devices that joined with it; their names, or null when no such token. */
  revokeJoinToken(id: string): string[] | null {
    if (!this.joinTokens?.revoke(id)) return null;
    const users = this.admission.devices.filter((d) => d.tokenId === id);
    for (const d of users) d.conn.close(CLOSE.notAdmitted, "revoked tokens", "not admitted: its join token was revoked");
    if (users.length > 0) this.log(`join token ${id} revoked: disconnected ${users.map((d) => d.name).join(", ")}`);
    return users.map((d) => d.name);
  }

  /** The device identities known: fingerprint, name, experts held when last ready, and whether connected now. */
  knownDevices(): Array<KnownIdentity & { connected: boolean }> {
    return this.identities.list().map((k) => ({ ...k, connected: this.admission.devices.some((d) => d.fingerprint === k.fingerprint) }));
  }

  /**
   * Forgets a device identity, disconnecting it if connected: its name is free for another identity
   * (a device that lost its key, say). False when it was not known.
   */
  forgetDevice(fingerprint: string): boolean {
    if (!this.identities.forget(fingerprint)) return false;
    for (const d of this.admission.devices) if (d.fingerprint === fingerprint) d.conn.close(CLOSE.notAdmitted, "forgotten identities", "not admitted: the base station's operator removed this device's identity");
    return true;
  }

  private hello(conn: Connection, who: Admitted, m: Hello): Device {
    const { name, fingerprint, tokenId, known } = who;
    const link = this.opts.link ? new ShapedLink(name, this.opts.link, this.admission.devices.length + 1) : null;
    // a known identity keeps what it held here, as far as it still holds it; what a new one says it holds
    // (from its own copy of the model) is taken at its word
    const claimed = this.model.experts(m.holds ?? []);
    const remembered = known && new Set(known.experts.map(pairKey));
    const holds = remembered ? claimed.filter((p) => remembered.has(pairKey(p))) : claimed;
    const c = m.capabilities;
    const whom = fingerprint === null ? "" : known ? `, known as ${fingerprint}` : `, new identity ${fingerprint}`;
    this.complaints.report(`peer ${conn.address}`, "joins and leaves", `${name} joined (${c.readGbps.toFixed(1)} GB/s, ${c.gflops.toFixed(1)} GFLOP/s${holds.length > 0 ? `, holding ${holds.length} experts` : ""}${whom})`, JOINS_LOGGED);
    return {
      name, fingerprint, tokenId, conn, capabilities: c, ready: false, connected: true, holds, heldBefore: known ? this.model.experts(known.experts) : [], assigned: [], assignedGen: 0, loadedGen: 0, laggard: false,
      calls: 0, weightBytes: 0, failures: 0, wrongInStreak: false, quarantined: false, outOfService: null, leaving: false, battery: null, link,
    };
  }

  private left(d: Device): void {
    d.ready = d.connected = false;
    this.calls.drop(d, `device ${d.name} disconnected`);
    this.complaints.report(`peer ${d.conn.address}`, "joins and leaves", `${d.name} left`, JOINS_LOGGED);
    // a device replaced by a new connection of its identity goes by the same name: its series stay
    if (!this.admission.devices.some((o) => o.name === d.name)) this.opts.onDeviceGone?.(d.name);
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
        d.heldBefore = [];
        if (d.fingerprint) this.identities.holds(d.fingerprint, have);
        d.loadedGen = d.assignedGen;
        d.ready = !d.quarantined && !d.leaving;
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
        return this.drain(d);
      case "heartbeat":
        d.battery = m.battery ?? null;
        return;
      default:
        d.conn.refuse("messages the base station does not take", `the base station does not accept ${m.type} messages`);
    }
  }

  /**
   * A device that said it is leaving (a page being hidden, a device stopping) is placed on no more: the
   * hub re-places its experts on the others while it still serves them, stops routing to it once that
   * placement is in use (or after DRAIN_ROUTED_MS, or at once when no other device could take them),
   * and closes its connection once the calls in flight on it are answered (or have missed their
   * deadlines). So leaving costs no call, even of an expert it alone held.
   */
  private drain(d: Device): void {
    if (d.leaving) return;
    d.leaving = true;
    this.placer.left(d);
    const since = performance.now();
    const step = () => {
      if (d.ready && (!this.placer.members.includes(d) || this.placer.eligible().length === 0 || performance.now() - since > DRAIN_ROUTED_MS)) d.ready = false;
      if (d.connected && (d.ready || this.calls.busy(d))) return;
      clearInterval(poll);
      closeWith(d.conn.ws, CLOSE.normal, "goodbye");
    };
    const poll = setInterval(step, DRAIN_POLL_MS);
    step();
  }

  /**
   * Stops routing to a device that keeps failing or returned a wrong result, and places its experts on
   * the others; `why` follows "out of service" in the log line (one per device) and the device's error.
   * An identity found returning wrong results (`wrongResults`, not only failing) is remembered as such
   * and refused when it comes back, until the operator forgets it.
   */
  private quarantine(d: Device, why: string, wrongResults: boolean): void {
    if (d.quarantined) return;
    d.quarantined = true;
    d.outOfService = printable(why);
    d.ready = false;
    if (wrongResults && d.fingerprint) this.identities.outOfService(d.fingerprint, why);
    const token = d.tokenId ? ` (it joined with join token ${d.tokenId})` : "";
    this.log(`${d.name} is out of service ${printable(why)}${wrongResults ? token : ""}`);
    d.conn.send({ type: "error", message: `out of service ${why}` });
    this.placer.quarantined();
  }

  /** Sends after the downlink's emulated delay (immediately when links are not shaped). */
  private sendShaped(d: Device, m: Message): void {
    const wait = d.link?.delay("down", FRAME_OVERHEAD + ("payload" in m ? m.payload.length : 0)) ?? 0;
    if (wait > 0) afterPrecisely(wait, () => d.conn.send(m));
    else d.conn.send(m);
  }
}
