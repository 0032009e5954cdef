// What an expert device is, whatever carries its frames and keeps its weights: shared by the Node device
// (runtime/device.ts: files, the ws client, the CLI) and the browser device (web/device/: a page).
// DeviceSession speaks the protocol over one connection: the join handshake (protocol/handshake.ts), then
// assignments, streamed weights (each tensor checked against its SHA-256), releases, expert calls and
// pulls. ExpertHost holds the experts across connections and computes calls with the kernels it is given.
// Nothing from the base station is taken on trust: an assignment's config within sane sizes, its experts
// within that config and the memory offered, weights only the tensors asked for in the shapes the config implies.
import { WEIGHT_DTYPES, type Backend, type SourceDType, type WeightDType } from "../kernels/backend.js";
import type { TensorStore } from "../model/checkpoint.js";
import { parseModelConfig, type ModelConfig } from "../model/config.js";
import { expertWork } from "../model/work-shape.js";
import { assignmentKeepsFileTypes, ffnDTypeName, loadExperts, planTensors, storageDType, type ExpertTable, type FfnWeights, type TensorSpec } from "../model/weights.js";
import type { ExpertExecutor } from "../moe/executor.js";
import { LocalExpertExecutor } from "../moe/local-executor.js";
import { concatRows, decodeActivations, encodeActivations, splitRows, WIRE_DTYPES } from "../protocol/activations.js";
import { ADAPTER_CHARS, USER_AGENT_CHARS, type Capabilities, type ComputeKind, type DeviceKind, type Message } from "../protocol/frames.js";
import { CLOSE } from "../protocol/socket.js";
import { bsProof, deviceProof, newNonce, sameProof, sha256Hex, signTranscript, type DeviceIdentity, type Transcript } from "../protocol/handshake.js";

type Assign = Extract<Message, { type: "assign" }>;

export const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** Text from the base station, made safe for one log line. */
export const printable = (s: string): string => s.replace(/[\u0000-\u001f\u007f-\u009f]/g, "?").slice(0, 200);

/**
 * Where a device keeps the weights streamed to it, per model: files (runtime/weight-cache.ts) or a page's
 * storage (web/device/browser-weights.ts). Asynchronous: a browser's storage is.
 */
export interface WeightStore {
  /** SHA-256 of each of these tensors that the store holds intact: what the base station need not resend. */
  checksums(names: readonly string[]): Promise<Record<string, string>>;
  /** Keeps a [rows, cols] tensor whose `data` the caller has checked against `dtype`, `shape` and `sha256`. */
  put(name: string, dtype: SourceDType, shape: readonly [number, number], data: Uint8Array, sha256: string): Promise<void>;
  has(name: string): Promise<boolean>;
  /** The tensors `names`, for the weight loader. */
  open(names: readonly string[]): Promise<TensorStore>;
}

/** Where a device's weights come from. */
export interface WeightSupply {
  /** The assigned model's tensors where the device has them at hand (its own copy of the model); null: stream them. */
  atHand(m: Assign): TensorStore | null;
  /** The store that streamed weights of model `modelId` are kept in. */
  store(modelId: string): WeightStore;
  /** Keeps the stores within their budget, never dropping `keep` (the tensors of the experts held now) of model `modelId`. */
  trim(modelId: string, keep: readonly string[]): Promise<void>;
}

/** A tensor a device asks for, with the shape its config implies: weights of any other name or shape are refused. */
type Wanted = Pick<TensorSpec, "name" | "shape">;

/**
 * What computes a device's experts beside its kernels (a page's WebGPU), as measured before the device
 * joins. It may leave experts it cannot compute, and calls it fails, to the kernels.
 */
export interface ExpertCompute {
  readonly kind: ComputeKind;
  /** the adapter it computes on, as the platform names it */
  readonly adapter?: string;
  /** its measured rate, GFLOP/s */
  readonly gflops: number;
  /** The executor for the experts held now (asked again after every assignment and release); `kernels` computes them on the device's kernels. */
  serve(experts: ExpertTable, kernels: LocalExpertExecutor): ExpertExecutor;
  close(): void;
}

/** Printable ASCII cut to `max` characters, as the base station takes a device's self-description. */
const asciiLine = (s: string, max: number): string => s.replace(/[^\x20-\x7e]/g, "?").slice(0, max);

/** One connection to the base station, as the expert host uses it. */
interface Session {
  send(m: Message): void;
  /** Asks for `tensors` (those of `experts`) that `store` lacks; resolves when the base station says they are all sent. */
  fetch(store: WeightStore, experts: ReadonlyArray<[number, number]>, tensors: readonly Wanted[]): Promise<void>;
}

/**
 * What a device holds and computes with, across connections: its kernels, its experts, its capabilities.
 */
export class ExpertHost {
  private executor: ExpertExecutor | null = null;
  private config: ModelConfig | null = null;
  // experts loaded so far, kept across assignments (and connections) until the base station releases
  // them: routes it still uses stay valid while it moves to a new placement
  private readonly held = new Map<string, { layer: number; expert: number; w: FfnWeights }>();
  /** which model and dtype the held experts are of: an assignment of another drops them all */
  private heldModel: string | null = null;
  /** measured once: the probe takes a while, and the memory free now counts the experts held */
  private probed: Capabilities | null = null;

  /**
   * `offered`: the memory given to expert weights (asked once, with the first capabilities; 0: no limit);
   * `kind`: what this device is, for the base station's /health and /metrics (a browser with its user agent);
   * `compute`: what computes its experts beside the kernels (absent: the kernels alone).
   */
  constructor(private readonly backend: Backend, private readonly supply: WeightSupply, private readonly offered: () => number, private readonly log: (line: string) => void, private readonly kind: { kind: DeviceKind; userAgent?: string }, private readonly compute?: ExpertCompute) {}

  capabilities(): Capabilities {
    const { compute } = this;
    this.probed ??= {
      memoryBytes: this.offered(),
      gflops: compute?.gflops ?? this.backend.measureComputeRate(),
      readGbps: this.backend.measureReadBandwidth(64 << 20),
      // the dtypes these kernels compute (wasm converts the K-quants it is assigned to q8 at load)
      weightDTypes: WEIGHT_DTYPES.filter((d) => this.backend.supportsWeight(d, 256)),
      wireDTypes: [...WIRE_DTYPES],
      kind: this.kind.kind,
      // as the base station takes it: printable ASCII, cut to length
      ...(this.kind.userAgent === undefined ? {} : { userAgent: asciiLine(this.kind.userAgent, USER_AGENT_CHARS) }),
      // the backends are named for their kernels: wasm-…, native-ggml-…
      compute: compute?.kind ?? (this.backend.name.startsWith("wasm") ? "wasm" : "native"),
      ...(compute?.adapter === undefined ? {} : { adapter: asciiLine(compute.adapter, ADAPTER_CHARS) }),
    };
    return this.probed;
  }

  holds(): Array<[number, number]> {
    return [...this.held.values()].map(({ layer, expert }): [number, number] => [layer, expert]);
  }

  async assign(m: Assign, session: Session): Promise<void> {
    if (!WEIGHT_DTYPES.includes(m.weightDType as WeightDType)) throw new Error(`weight dtype ${m.weightDType} is not supported`);
    const dtype = m.weightDType as WeightDType;
    const cfg = parseModelConfig(m.config, "assigned config");
    const assigned = new Set<string>();
    for (const [l, e] of m.experts) {
      if (!cfg.sparseLayers[l] || e >= cfg.experts) throw new Error(`[${l}, ${e}] is not an expert of this model (${cfg.layers} layers of ${cfg.experts} experts)`);
      if (assigned.has(`${l}:${e}`)) throw new Error(`expert ${e} of layer ${l} is assigned twice`);
      assigned.add(`${l}:${e}`);
    }
    // weighed before anything is allocated or fetched, as the base station's placement weighs it
    // in the dtype these kernels hold (a K-quant on wasm kernels: q8)
    const expertBytes = expertWork(cfg, storageDType(this.backend, dtype, cfg.hidden)).weightBytes;
    const offered = this.capabilities().memoryBytes;
    const over = (n: number) => offered > 0 && n * expertBytes > offered;
    if (over(assigned.size)) throw new Error(`${assigned.size} experts need ${mib(assigned.size * expertBytes)} (${mib(expertBytes)} each), more than the ${mib(offered)} this device offers`);
    const model = `${m.modelId} ${m.weightDType} ${JSON.stringify(m.config)}`;
    if (this.heldModel !== model && this.held.size > 0) {
      this.log(`the base station serves another model: dropping the ${this.held.size} experts held`);
      this.free(this.holds());
    }
    this.heldModel = model;
    const wanted = m.experts.filter(([l, e]) => !this.held.has(`${l}:${e}`));
    // experts held beyond this assignment stay until released (routes in use may still need them), unless they would not fit beside it
    const unassigned = this.holds().filter(([l, e]) => !assigned.has(`${l}:${e}`));
    if (unassigned.length > 0 && over(this.held.size + wanted.length)) {
      this.log(`dropping the ${unassigned.length} experts held beyond the new assignment: with it they would exceed the ${mib(offered)} offered`);
      this.free(unassigned);
    }
    // streamed weights are kept for a rejoin, within the cache's budget (what is held now stays): trimmed
    // after an assignment that fails too, else a base station that streams weights for made-up model ids
    // and never lets one complete would fill the disk
    const own = wanted.length > 0 ? this.supply.atHand(m) : null;
    const streaming = wanted.length > 0 && own === null;
    try {
      if (wanted.length > 0) {
        const want = new Set(wanted.map(([l, e]) => `${l}:${e}`));
        const holdsExpert = (l: number, e: number) => want.has(`${l}:${e}`);
        const ck = own ?? (await this.streamed(m, cfg, wanted, holdsExpert, session));
        try {
          // the load log says how each stored type is kept: a GGUF file's blocks as they are where the kernels hold them, else converted
          const loaded = loadExperts(this.backend, ck, cfg, { dtype, keepFileTypes: assignmentKeepsFileTypes(dtype), holdsExpert, onKept: (how) => this.log(`loaded ${wanted.length} experts: ${how}`) });
          loaded.forEach((row, layer) => row.forEach((w, expert) => w && this.held.set(`${layer}:${expert}`, { layer, expert, w })));
        } finally {
          ck.close();
        }
      }
      this.config = cfg;
      this.serveHeld();
      this.log(`holds ${this.held.size} experts (${wanted.length} newly loaded)`);
    } finally {
      if (streaming) {
        const keep = planTensors(cfg, true, (l, e) => this.held.has(`${l}:${e}`)).specs.filter((t) => t.expert).map((t) => t.name);
        await this.supply.trim(m.modelId, keep).catch((e: Error) => this.log(`could not trim the weight cache: ${e.message}`));
      }
    }
    session.send({ type: "ready", experts: this.holds() });
  }

  /** The store of model `m`'s streamed weights, once it holds the wanted experts (those `holdsExpert` names): what it lacks is fetched. */
  private async streamed(m: Assign, cfg: ModelConfig, wanted: ReadonlyArray<[number, number]>, holdsExpert: (layer: number, expert: number) => boolean, session: Session): Promise<TensorStore> {
    const store = this.supply.store(m.modelId);
    const tensors = planTensors(cfg, true, holdsExpert).specs.filter((s) => s.expert);
    await session.fetch(store, wanted, tensors);
    const held = await Promise.all(tensors.map((t) => store.has(t.name)));
    const missing = tensors.filter((_, i) => !held[i]);
    if (missing.length > 0) throw new Error(`the base station said the weights were sent, but ${missing.length} tensors never came (${missing[0]!.name}, …)`);
    return store.open(tensors.map((t) => t.name));
  }

  /** Serves calls from the experts held now. */
  private serveHeld(): void {
    const table = Array.from({ length: this.config!.layers }, () => new Array<FfnWeights | null>(this.config!.experts).fill(null));
    for (const { layer, expert, w } of this.held.values()) table[layer]![expert] = w;
    this.executor?.close?.();
    const kernels = new LocalExpertExecutor(this.backend, table, this.config!.hidden);
    this.executor = this.compute ? this.compute.serve(table, kernels) : kernels;
  }

  release(experts: ReadonlyArray<[number, number]>): void {
    this.free(experts);
    if (this.config) this.serveHeld();
    this.log(`released ${experts.length} experts; holds ${this.held.size}`);
  }

  private free(experts: ReadonlyArray<[number, number]>): void {
    for (const [layer, expert] of experts) {
      const h = this.held.get(`${layer}:${expert}`);
      if (!h) continue;
      for (const w of [h.w.gate, h.w.up, h.w.down]) this.backend.freeWeight(w);
      this.held.delete(`${layer}:${expert}`);
    }
  }

  /** The result frame for a call: every expert's rows, computed from the held weights. */
  async call(m: Extract<Message, { type: "call" }>): Promise<Message> {
    const { id, layer, experts, hidden, dtype } = m;
    const inputs = splitRows(decodeActivations(m.payload, dtype), hidden, experts.map(([, rows]) => rows));
    const calls = experts.map(([expert, rows], i) => ({ layer, expert, rows, input: inputs[i]! }));
    const rs = await Promise.all(this.executor!.dispatch(calls));
    const computeMs = rs.reduce((t, r) => t + r.computeMs, 0);
    return { type: "result", id, experts, hidden, dtype, computeMs, payload: encodeActivations(concatRows(rs.map((r) => r.output)), dtype) };
  }

  /** An expert's weights as held, for a base station taking it in; an error frame when it is not held. */
  pull(m: Extract<Message, { type: "pull" }>): Message {
    const h = this.held.get(`${m.layer}:${m.expert}`);
    if (!h) return { type: "error", id: m.id, message: `expert ${m.expert} of layer ${m.layer} is not held here` };
    const parts = [h.w.gate, h.w.up, h.w.down].map((w) => this.backend.weightData(w));
    const payload = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((at, p) => (payload.set(p, at), at + p.length), 0);
    return { type: "expert", id: m.id, layer: m.layer, expert: m.expert, dtype: ffnDTypeName(h.w), shapes: [h.w.gate, h.w.up, h.w.down].map((w): [number, number] => [w.rows, w.cols]), payload };
  }

  close(): void {
    this.executor?.close?.();
    this.compute?.close();
    this.backend.close();
  }
}

/** How a session reaches its connection: sends a frame, and closes it. */
export interface SessionLink {
  send(m: Message): void;
  close(code: number, reason: string): void;
}

export interface SessionOptions {
  /** The base station, as messages name it. */
  bs: string;
  name: string;
  /** The join token, proven without sending it (and asked of the base station); unset: a base station that admits anyone. */
  token?: string;
  identity: DeviceIdentity;
  /**
   * The TLS channel binding of the connection (protocol/channel-binding.ts), "" without TLS, read when
   * the challenge comes; null where it cannot be had (a browser): the hello then says it is unbound.
   */
  binding: () => string | null;
  log: (line: string) => void;
}

/**
 * The device's side of one connection: feed it every frame received (receive) and tell it when the
 * connection closed (closed). Frames are handled in the order they came, each after the one before has
 * been taken in (a streamed tensor is checked before the next frame is read).
 */
export class DeviceSession {
  /** Whether the base station has admitted this device and proven it holds the join token. */
  welcomed = false;
  /** Whether an assignment has loaded on this connection. */
  readied = false;
  /** Why this side refused the base station (null: it did not). */
  refused: string | null = null;
  /** The reason the base station gave for leaving (null: it did not leave). */
  left: string | null = null;
  /** What the base station said before admitting this device: the full reason of a refusal. */
  handshakeError: string | null = null;
  private transcript: Transcript | null = null;
  private readonly deviceNonce = newNonce();
  private isClosed = false;
  /** frames are taken in one after another */
  private inbox: Promise<void> = Promise.resolve();
  /** assignments load one after another, in the order they came (each may wait for weights) */
  private assignments: Promise<void> = Promise.resolve();
  private fetching: { store: WeightStore; shapes: Map<string, readonly number[]>; resolve: () => void; reject: (e: Error) => void } | null = null;

  constructor(private readonly host: ExpertHost, private readonly link: SessionLink, private readonly opts: SessionOptions) {}

  private send(m: Message): void {
    this.link.send(m);
  }

  private refuse(why: string): void {
    this.refused = why;
    this.link.close(CLOSE.notAdmitted, why);
  }

  receive(m: Message): void {
    // nothing is read after the connection closed, or after this side refused the base station
    this.inbox = this.inbox.then(() => (this.isClosed || this.refused !== null ? undefined : this.handle(m))).catch((e: Error) => this.opts.log(printable(`cannot take in ${m.type}: ${e.message}`)));
  }

  /** The connection closed: a fetch waiting on it fails, and nothing more is sent. */
  closed(): void {
    this.isClosed = true;
    this.fetching?.reject(new Error("the base station went away"));
  }

  private async handle(m: Message): Promise<void> {
    if (!this.welcomed) return this.handshake(m);
    const { log } = this.opts;
    switch (m.type) {
      case "assign":
        this.assignments = this.assignments.then(async () => {
          if (this.isClosed) return;
          try {
            await this.host.assign(m, { send: (f) => this.send(f), fetch: (store, experts, tensors) => this.fetch(store, experts, tensors) });
            this.readied = true;
          } catch (e) {
            const message = `cannot load the assigned experts: ${(e as Error).message}`;
            log(printable(message));
            this.send({ type: "error", message });
          }
        });
        return;
      case "release":
        this.host.release(m.experts);
        return;
      case "weights":
        return this.weights(m);
      case "fetched":
        if (this.fetching) log(`received ${m.sent} tensors (${mib(m.bytes)})`);
        this.fetching?.resolve();
        return;
      case "call":
      case "pull":
        if (!this.readied) this.send({ type: "error", id: m.id, message: "no experts assigned yet" });
        else if (m.type === "pull") this.send(this.host.pull(m));
        else this.host.call(m).then((r) => this.send(r), (e: Error) => this.send({ type: "error", id: m.id, message: e.message }));
        return;
      case "leave":
        this.left = m.reason;
        this.link.close(CLOSE.normal, "");
        return;
      case "error":
        log(`base station: ${printable(m.message)}`);
        return;
      default:
        this.send({ type: "error", message: `a device does not accept ${m.type} messages` });
    }
  }

  private async handshake(m: Message): Promise<void> {
    const { opts } = this;
    if (m.type === "challenge" && this.transcript === null) {
      const binding = opts.binding();
      const t: Transcript = { bsNonce: m.nonce, deviceNonce: this.deviceNonce, name: opts.name, key: opts.identity.key, binding: binding ?? "" };
      this.transcript = t;
      const holds = this.host.holds();
      const proof = opts.token === undefined ? {} : { proof: await deviceProof(opts.token, t) };
      const signature = await signTranscript(opts.identity.privateKey, t);
      this.send({ type: "hello", name: opts.name, capabilities: this.host.capabilities(), ...(holds.length > 0 ? { holds } : {}), nonce: this.deviceNonce, ...proof, key: opts.identity.key, signature, ...(binding === null ? { unbound: true as const } : {}) });
    } else if (m.type === "welcome" && this.transcript !== null) {
      if (opts.token !== undefined && (m.proof === undefined || !sameProof(await bsProof(opts.token, this.transcript), m.proof))) {
        return this.refuse(`${opts.bs} did not prove it holds the join token: it is not this cluster's base station (or its token differs); refusing it`);
      }
      this.welcomed = true;
    } else if (m.type === "error") {
      this.handshakeError = m.message;
      opts.log(`base station: ${printable(m.message)}`);
    } else this.refuse(`${opts.bs} sent ${m.type} out of turn in the join handshake; refusing it`);
  }

  /** Asks for the tensors `store` lacks; resolves when the base station says all are sent. */
  private fetch(store: WeightStore, experts: ReadonlyArray<[number, number]>, tensors: readonly Wanted[]): Promise<void> {
    return store.checksums(tensors.map((t) => t.name)).then((have) => new Promise<void>((resolve, reject) => {
      if (this.isClosed) return reject(new Error("the base station went away"));
      this.fetching = { store, shapes: new Map(tensors.map((t) => [t.name, t.shape])), resolve, reject };
      this.send({ type: "fetch", experts: [...experts], have });
    }).finally(() => (this.fetching = null)));
  }

  /** A streamed tensor: one asked for, in the shape asked, intact; kept in the store. */
  private async weights(m: Extract<Message, { type: "weights" }>): Promise<void> {
    const fetching = this.fetching;
    const shape = fetching?.shapes.get(m.name);
    if (!fetching || !shape) return this.send({ type: "error", message: `unexpected weights ${printable(m.name)}` });
    if (m.shape.length !== shape.length || m.shape.some((d, i) => d !== shape[i])) {
      return fetching.reject(new Error(`weights ${m.name} have shape [${m.shape.join(", ")}] but the config implies [${shape.join(", ")}]`));
    }
    const sum = await sha256Hex(m.payload);
    if (sum !== m.sha256) return fetching.reject(new Error(`weights ${m.name} arrived damaged (checksum ${sum}, expected ${m.sha256})`));
    try {
      await fetching.store.put(m.name, m.dtype, m.shape, m.payload, sum);
    } catch (e) {
      fetching.reject(new Error(`cannot cache ${m.name}: ${(e as Error).message}`));
    }
  }
}
