// An expert device: connects to a base station, reports what it can do, loads the experts it is
// assigned (from its own copy of the model, a directory or GGUF file, or streamed from the base station into a local
// cache) and computes expert calls. Stateless per token. When the connection fails or closes it
// connects again, with backoff, keeping the experts it holds: a base station that restarts finds them
// in the device's hello and resends nothing. It proves its identity (runtime/device-identity.ts) and,
// with a join token, that it holds it (and has the base station prove the same) before taking anything
// from it; a refusal either way ends it. Over wss:// the base station's certificate is pinned by its
// fingerprint (or verified against the system's CAs), and one refused ends it too, before anything is sent.
import os from "node:os";
import path from "node:path";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import WebSocket, { type ClientOptions } from "ws";
import { openBackend, POLL_WHEN_WAITING_ON_PEERS, type BackendChoice } from "../kernels/select-backend.js";
import { WEIGHT_DTYPES, type Backend, type WeightDType } from "../kernels/backend.js";
import type { TensorStore } from "../model/checkpoint.js";
import { GgufModel, isGgufPath } from "../model/gguf-model.js";
import { openModel } from "../model/open-model.js";
import { parseModelConfig, type ModelConfig } from "../model/config.js";
import { expertWork } from "../model/work-shape.js";
import { WeightCache } from "./weight-cache.js";
import { Backoff, type BackoffOptions } from "./backoff.js";
import { assignmentKeepsFileTypes, ffnDTypeName, loadExperts, planTensors, storageDType, type FfnWeights, type TensorSpec } from "../model/weights.js";
import { LocalExpertExecutor } from "../moe/local-executor.js";
import { concatRows, decodeActivations, encodeActivations, splitRows, WIRE_DTYPES } from "../protocol/activations.js";
import { LIMITS, type Capabilities, type Message } from "../protocol/frames.js";
import { channelBinding } from "../protocol/channel-binding.js";
import { bsProof, deviceProof, newNonce, sameProof, signTranscript, type Transcript } from "../protocol/handshake.js";
import { safeName } from "../protocol/names.js";
import { CLOSE, closeWith, receiveFrames, sendFrame } from "../protocol/socket.js";
import { identityFile, loadIdentity, type DeviceIdentity } from "./device-identity.js";
import { bsTlsConnection, CertificateRefused, parseFingerprint } from "../protocol/tls-pin.js";
import { isLoopback } from "../util/loopback.js";

/** How long a stopping device waits for the base station to close the connection before dropping it. */
const LEAVE_GRACE_MS = 1000;

export interface DeviceOptions {
  /** The base station: ws://host:port, or wss://host:port over TLS. */
  bs: string;
  /**
   * With wss://: the SHA-256 fingerprint of the base station's certificate (any form parseFingerprint
   * takes), pinned instead of verifying the certificate against the system's CAs.
   */
  fingerprint?: string;
  name: string;
  /**
   * The cluster's join token, proven to the base station without sending it; the base station must
   * prove it too. Unset: for a base station that admits any device (no proof asked, none checked).
   */
  token?: string;
  /** This device's own copy of the model directory (or GGUF file); default: the base station's path, if it holds the same model here (read only at a plain absolute path). */
  model?: string;
  /** Always stream the weights from the base station, even where the files are at hand. */
  fetchWeights?: boolean;
  /** Where streamed weights are kept between runs (default ~/.cache/distmoe). */
  cacheDir?: string;
  /** This device's identity key (default: .identity/NAME.key in the cache directory; made when missing). */
  identityFile?: string;
  /** Which kernels (see openBackend); default $DISTMOE_BACKEND, else native where it loads, wasm otherwise. */
  backend?: BackendChoice;
  threads?: number;
  /** native: how long idle pool workers poll before sleeping (0–100; default POLL_WHEN_WAITING_ON_PEERS). */
  poll?: number;
  spinMs?: number;
  /** Memory offered for expert weights (default: the memory free at start). */
  memoryBytes?: number;
  /**
   * How long the base station may stay unreachable, ms, before the device gives up (default: forever).
   * 0: never reconnect; a base station that leaves then ends the device normally.
   */
  retryForMs?: number;
  /** Delays between reconnection attempts (default: 0.25 s doubling up to 15 s, jittered). */
  backoff?: BackoffOptions;
  /** Stops the device when aborted: it tells the base station it leaves, and runDevice resolves. */
  signal?: AbortSignal;
  log?: (line: string) => void;
}

/**
 * Serves the base station until `signal` stops it, reconnecting whenever the connection fails or
 * closes. Resolves when stopped, or when the base station leaves and retryForMs is 0; rejects when
 * the base station has been unreachable for longer than retryForMs, or when either side refuses the
 * other's join token or the device refuses the base station's certificate (trying again would not help).
 */
export async function runDevice(opts: DeviceOptions): Promise<void> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`[device ${opts.name}] ${l}\n`));
  const url = parseBsUrl(opts.bs);
  const pin = opts.fingerprint === undefined ? null : parseFingerprint(opts.fingerprint);
  if (pin !== null && url.protocol !== "wss:") throw new Error(`--fingerprint pins the base station's TLS certificate: it needs a wss:// URL, not ${opts.bs}`);
  if (url.protocol === "ws:" && !isLoopback(url.hostname)) {
    log(`warning: ${opts.bs} is not on this machine and ws:// is not encrypted: the join handshake's metadata, the expert weights streamed here, and the hidden states this device computes on and its results cross the network in clear (use wss:// with --fingerprint: serve --tls self-signed)`);
  }
  // over TLS, the socket reaches ws only once the certificate is accepted (@types/ws knows only the synchronous form of createConnection)
  const link: ClientOptions = url.protocol === "wss:" ? { createConnection: bsTlsConnection(pin) as unknown as ClientOptions["createConnection"] } : {};
  const keyFile = opts.identityFile ?? identityFile(cacheDirOf(opts), safeName(opts.name));
  const identity = loadIdentity(keyFile);
  log(`identity ${identity.fingerprint}${identity.created ? ` (new, kept in ${keyFile})` : ""}`);
  const host = new ExpertHost(opts, log);
  const backoff = new Backoff(opts.backoff);
  const limit = opts.retryForMs ?? Infinity;
  // since when the base station has been out of reach: from the start, then from each lost connection
  let lostSince = performance.now();
  try {
    while (!opts.signal?.aborted) {
      const end = await connect(host, identity, opts, link, log);
      if (end.how === "stopped") return;
      if (end.how === "refused") throw new Error(end.reason);
      if (end.opened) lostSince = performance.now();
      if (end.readied) backoff.reset();
      const down = performance.now() - lostSince;
      if (down >= limit) {
        if (limit === 0 && end.how === "left") return log(`${end.reason}; not reconnecting`);
        throw new Error(limit === 0 ? `${end.reason}; not reconnecting` : `gave up on the base station after ${seconds(down)} out of reach (limit ${seconds(limit)}); last: ${end.reason}`);
      }
      const wait = Math.min(backoff.next(), limit - down);
      log(`${end.reason}; ${end.opened ? "reconnecting" : "retrying"} in ${seconds(wait)}`);
      if (!(await sleep(wait, true, { signal: opts.signal }).catch(() => false))) return;
    }
  } finally {
    host.close();
  }
}

const cacheDirOf = (opts: DeviceOptions): string => opts.cacheDir ?? path.join(os.homedir(), ".cache", "distmoe");

/** A base station URL: ws:// or wss://, host and port. */
export function parseBsUrl(v: string): URL {
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    throw new Error(`expected a base station URL such as ws://127.0.0.1:8080 or wss://bs.example:8080, got "${v}"`);
  }
  if (url.protocol !== "ws:" && url.protocol !== "wss:") throw new Error(`expected a ws:// or wss:// URL, got "${v}"`);
  return url;
}

/**
 * A hint for a plain ws:// connection that a TLS port answered 426 (a base station serving TLS) or cut
 * off without answering (another TLS server).
 */
const plainToTls = (bs: string, failure: string | null): string =>
  bs.startsWith("ws://") && (failure === "ECONNRESET" || failure === "socket hang up" || failure === "Unexpected server response: 426") ? " (the base station serves TLS: use wss:// and --fingerprint, as serve printed them)" : "";

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
/** The largest config.json read from the base station's model path: a bigger file is not one. */
const CONFIG_BYTES = 1 << 20;

/** Text from the base station, made safe for one log line. */
const printable = (s: string): string => s.replace(/[\u0000-\u001f\u007f-\u009f]/g, "?").slice(0, 200);

/** How one connection ended. */
type Ending = { how: "stopped" } | { how: "refused"; reason: string } | { how: "left" | "lost"; reason: string; opened: boolean; readied: boolean };

/** A tensor a device asks for, with the shape its config implies: weights of any other name or shape are refused. */
type Wanted = Pick<TensorSpec, "name" | "shape">;

/** One connection to the base station: where its frames go, and how weights are fetched over it. */
interface Session {
  send(m: Message): void;
  /** Asks for `tensors` (those of `experts`) that `cache` lacks; resolves when the base station says they are all sent. */
  fetch(cache: WeightCache, experts: ReadonlyArray<[number, number]>, tensors: readonly Wanted[]): Promise<void>;
}

/** Serves the base station over one connection (opened with `link`'s options), until it closes. */
function connect(host: ExpertHost, identity: DeviceIdentity, opts: DeviceOptions, link: ClientOptions, log: (line: string) => void): Promise<Ending> {
  const ws = new WebSocket(opts.bs, { ...link, maxPayload: LIMITS.frameBytes });
  const send = (m: Message) => sendFrame(ws, m);
  let opened = false, readied = false, stopped = false, closed = false;
  let failure: string | null = null, left: string | null = null, refused: string | null = null;
  /** the handshake: its transcript once challenged, and whether the base station has admitted (and proven itself to) this device */
  let transcript: Transcript | null = null, welcomed = false;
  /** what the base station said before admitting this device: the full reason of a refusal */
  let handshakeError: string | null = null;
  const deviceNonce = newNonce();
  /** the TLS session's channel binding, known once the WebSocket upgrade is answered */
  let binding = "";
  ws.on("upgrade", (res) => (binding = channelBinding(res.socket)));
  const refuse = (why: string) => {
    refused = why;
    closeWith(ws, CLOSE.notAdmitted, why);
  };
  /** calls and pulls are served once an assignment has loaded on this connection (the experts held may be another model's until then) */
  let assigned = false;
  // assignments load one after another, in the order they came (each may wait for weights)
  let queue = Promise.resolve();
  const inOrder = (task: () => Promise<void>) => {
    queue = queue.then(() => (closed ? undefined : task())).catch((e: Error) => {
      log(printable(e.message));
      send({ type: "error", message: e.message });
    });
  };
  let fetching: { cache: WeightCache; shapes: Map<string, readonly number[]>; resolve: () => void; reject: (e: Error) => void } | null = null;
  const session: Session = {
    send,
    fetch: (cache, experts, tensors) =>
      new Promise<void>((resolve, reject) => {
        if (closed) return reject(new Error("the base station went away"));
        fetching = { cache, shapes: new Map(tensors.map((t) => [t.name, t.shape])), resolve, reject };
        send({ type: "fetch", experts: [...experts], have: cache.checksums(tensors.map((t) => t.name)) });
      }).finally(() => (fetching = null)),
  };

  const stop = () => {
    stopped = true;
    if (ws.readyState !== ws.OPEN) return ws.terminate();
    send({ type: "leave", reason: "device stopping" });
    ws.close(1000, "device stopping");
    setTimeout(() => ws.terminate(), LEAVE_GRACE_MS).unref();
  };
  opts.signal?.addEventListener("abort", stop, { once: true });

  ws.on("open", () => {
    opened = true;
    const holds = host.holds();
    log(`connected to ${opts.bs}${holds.length > 0 ? `; holds ${holds.length} experts` : ""}`);
  });
  ws.on("error", (e: NodeJS.ErrnoException) => {
    if (e instanceof CertificateRefused) refused = e.message;
    else failure = e.code ?? e.message;
  });

  receiveFrames(ws, (m) => {
    if (!welcomed) {
      if (m.type === "challenge" && transcript === null) {
        const t: Transcript = { bsNonce: m.nonce, deviceNonce, name: opts.name, key: identity.key, binding };
        transcript = t;
        const holds = host.holds();
        const proof = opts.token === undefined ? {} : { proof: deviceProof(opts.token, t) };
        send({ type: "hello", name: opts.name, capabilities: host.capabilities(), ...(holds.length > 0 ? { holds } : {}), nonce: deviceNonce, ...proof, key: identity.key, signature: signTranscript(identity.privateKey, t) });
      } else if (m.type === "welcome" && transcript !== null) {
        if (opts.token !== undefined && (m.proof === undefined || !sameProof(bsProof(opts.token, transcript), m.proof))) {
          return refuse(`${opts.bs} did not prove it holds the join token: it is not this cluster's base station (or its token differs); refusing it`);
        }
        welcomed = true;
      } else if (m.type === "error") {
        handshakeError = m.message;
        log(`base station: ${printable(m.message)}`);
      } else refuse(`${opts.bs} sent ${m.type} out of turn in the join handshake; refusing it`);
      return;
    }
    switch (m.type) {
      case "assign":
        inOrder(() =>
          host.assign(m, session).then(
            () => void (assigned = readied = true),
            (e: Error) => Promise.reject(new Error(`cannot load the assigned experts: ${e.message}`)),
          ),
        );
        return;
      case "release":
        host.release(m.experts);
        return;
      case "weights": {
        const shape = fetching?.shapes.get(m.name);
        if (!fetching || !shape) {
          send({ type: "error", message: `unexpected weights ${printable(m.name)}` });
          return;
        }
        if (m.shape.length !== shape.length || m.shape.some((d, i) => d !== shape[i])) {
          fetching.reject(new Error(`weights ${m.name} have shape [${m.shape.join(", ")}] but the config implies [${shape.join(", ")}]`));
          return;
        }
        const sum = createHash("sha256").update(m.payload).digest("hex");
        if (sum !== m.sha256) fetching.reject(new Error(`weights ${m.name} arrived damaged (checksum ${sum}, expected ${m.sha256})`));
        else {
          try {
            fetching.cache.put(m.name, m.dtype, m.shape, m.payload);
          } catch (e) {
            fetching.reject(new Error(`cannot cache ${m.name}: ${(e as Error).message}`));
          }
        }
        return;
      }
      case "fetched":
        if (fetching) log(`received ${m.sent} tensors (${mib(m.bytes)})`);
        fetching?.resolve();
        return;
      case "call":
      case "pull":
        if (!assigned) send({ type: "error", id: m.id, message: "no experts assigned yet" });
        else if (m.type === "pull") send(host.pull(m));
        else host.call(m).then(send, (e: Error) => send({ type: "error", id: m.id, message: e.message }));
        return;
      case "leave":
        left = m.reason;
        ws.close();
        return;
      case "error":
        log(`base station: ${printable(m.message)}`);
        return;
      default:
        send({ type: "error", message: `a device does not accept ${m.type} messages` });
    }
  }, (reason) => log(printable(reason)));

  return new Promise((resolve) => {
    ws.on("close", (code: number, reason: Buffer) => {
      closed = true;
      opts.signal?.removeEventListener("abort", stop);
      fetching?.reject(new Error("the base station went away"));
      if (stopped) return resolve({ how: "stopped" });
      if (refused !== null) return resolve({ how: "refused", reason: refused });
      // a TLS port answered this plain connection 426: trying again would not help
      if (plainToTls(opts.bs, failure) && failure?.endsWith("426")) return resolve({ how: "refused", reason: `cannot reach ${opts.bs}: ${failure}${plainToTls(opts.bs, failure)}` });
      if (code === CLOSE.replaced) return resolve({ how: "refused", reason: `another connection with this device's identity (${identity.fingerprint}) took this one's place: two device processes share one identity; give each its own --name or --identity` });
      if (code === CLOSE.notAdmitted) {
        const why = !welcomed && handshakeError !== null ? handshakeError : reason.toString();
        return resolve({ how: "refused", reason: `the base station refused this device${why.length > 0 ? `: ${printable(why)}` : ""}` });
      }
      const why = [`code ${code}`, ...(reason.length > 0 ? [printable(reason.toString())] : []), ...(failure ? [failure] : [])].join(", ");
      if (left !== null) resolve({ how: "left", reason: `base station left (${printable(left) || "no reason given"})`, opened, readied });
      else resolve({ how: "lost", reason: opened ? `base station went away (${why})` : `cannot reach ${opts.bs}: ${failure ?? why}${plainToTls(opts.bs, failure)}`, opened, readied });
    });
  });
}

/**
 * What a device holds and computes with, across connections: its backend, its experts, its capabilities.
 * An assignment is taken on trust in nothing: its config within sane sizes, its experts within that
 * config and within the memory offered, weights only the tensors it asked for in the shapes the config
 * implies, files only inside the cache, the base station's model directory only where it is plainly the same model.
 */
class ExpertHost {
  private readonly backend: Backend;
  private executor: LocalExpertExecutor | null = null;
  private config: ModelConfig | null = null;
  // experts loaded so far, kept across assignments (and connections) until the base station releases
  // them: routes it still uses stay valid while it moves to a new placement
  private readonly held = new Map<string, { layer: number; expert: number; w: FfnWeights }>();
  /** which model and dtype the held experts are of: an assignment of another drops them all */
  private heldModel: string | null = null;
  /** measured once: the probe takes a while, and the memory free now counts the experts held */
  private probed: Capabilities | null = null;

  constructor(private readonly opts: DeviceOptions, private readonly log: (line: string) => void) {
    const kernels = openBackend({ backend: opts.backend, threads: opts.threads, poll: opts.poll ?? POLL_WHEN_WAITING_ON_PEERS, spinMs: opts.spinMs });
    this.backend = kernels.backend;
    log(kernels.why);
  }

  capabilities(): Capabilities {
    this.probed ??= {
      memoryBytes: this.opts.memoryBytes ?? os.freemem(),
      gflops: this.backend.measureComputeRate(),
      readGbps: this.backend.measureReadBandwidth(64 << 20),
      // the dtypes these kernels compute (wasm converts the K-quants it is assigned to q8 at load)
      weightDTypes: WEIGHT_DTYPES.filter((d) => this.backend.supportsWeight(d, 256)),
      wireDTypes: [...WIRE_DTYPES],
    };
    return this.probed;
  }

  holds(): Array<[number, number]> {
    return [...this.held.values()].map(({ layer, expert }): [number, number] => [layer, expert]);
  }

  async assign(m: Extract<Message, { type: "assign" }>, session: Session): Promise<void> {
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
    if (wanted.length > 0) {
      const want = new Set(wanted.map(([l, e]) => `${l}:${e}`));
      const holdsExpert = (l: number, e: number) => want.has(`${l}:${e}`);
      const ck = await this.source(m, cfg, wanted, holdsExpert, session);
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
    session.send({ type: "ready", experts: this.holds() });
  }

  /**
   * Where to read the wanted experts (those `holdsExpert` names): this device's model directory (or GGUF
   * file), the base station's if it holds the same model here, or the cache after fetching what it lacks.
   */
  private async source(m: Extract<Message, { type: "assign" }>, cfg: ModelConfig, wanted: ReadonlyArray<[number, number]>, holdsExpert: (layer: number, expert: number) => boolean, session: Session): Promise<TensorStore> {
    if (!this.opts.fetchWeights) {
      const own = this.opts.model;
      if (own !== undefined && (isGgufPath(own) || existsSync(path.join(own, "config.json")))) return openModel(own).store;
      if (own === undefined && this.sameModelAt(m.model, m.config)) return openModel(m.model).store;
    }
    const cache = new WeightCache(cacheDirOf(this.opts), m.modelId);
    const tensors = planTensors(cfg, true, holdsExpert).specs.filter((s) => s.expert);
    await session.fetch(cache, wanted, tensors);
    const missing = tensors.filter((t) => !existsSync(cache.file(t.name)));
    if (missing.length > 0) throw new Error(`the base station said the weights were sent, but ${missing.length} tensors never came (${missing[0]!.name}, …)`);
    return cache.open(tensors.map((t) => t.name));
  }

  /**
   * Whether the base station's model directory (or GGUF file) `dir` may be read here: only a plain absolute
   * path (not relative to wherever the device runs, no `.` or `..` steps, no control characters, no network
   * share) holding the very config assigned. Anything else, and the weights are streamed instead.
   */
  private sameModelAt(dir: string, config: Record<string, unknown>): boolean {
    if (!path.isAbsolute(dir) || path.normalize(dir) !== dir || /[\u0000-\u001f\u007f]/.test(dir) || /^[\\/]{2}/.test(dir)) {
      this.log(`not reading the base station's model path ${printable(dir)}: only a plain absolute path is read; streaming the weights`);
      return false;
    }
    if (isGgufPath(dir)) {
      if (!existsSync(dir)) return false;
      try {
        const g = GgufModel.open(dir);
        try {
          if (JSON.stringify(g.hfConfig) === JSON.stringify(config)) return true;
        } finally {
          g.close();
        }
      } catch {
        // not a GGUF model file: not the same model
      }
      this.log(`the base station's model path ${printable(dir)} holds another model here; streaming the weights`);
      return false;
    }
    const file = path.join(dir, "config.json");
    if (!existsSync(file)) return false;
    try {
      const stat = statSync(file);
      if (stat.isFile() && stat.size <= CONFIG_BYTES && JSON.stringify(JSON.parse(readFileSync(file, "utf8"))) === JSON.stringify(config)) return true;
    } catch {
      // unreadable or not JSON: not the same model
    }
    this.log(`the base station's model path ${printable(dir)} holds another config.json here; streaming the weights`);
    return false;
  }

  /** Serves calls from the experts held now. */
  private serveHeld(): void {
    const table = Array.from({ length: this.config!.layers }, () => new Array<FfnWeights | null>(this.config!.experts).fill(null));
    for (const { layer, expert, w } of this.held.values()) table[layer]![expert] = w;
    this.executor?.close();
    this.executor = new LocalExpertExecutor(this.backend, table, this.config!.hidden);
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
    const parts = [h.w.gate, h.w.up, h.w.down];
    return {
      type: "expert", id: m.id, layer: m.layer, expert: m.expert, dtype: ffnDTypeName(h.w),
      shapes: parts.map((w): [number, number] => [w.rows, w.cols]), payload: Buffer.concat(parts.map((w) => this.backend.weightData(w))),
    };
  }

  close(): void {
    this.executor?.close();
    this.backend.close();
  }
}
