// An expert device as a Node process: connects to a base station, reports what it can do, loads the experts it is
// assigned (from its own copy of the model, a directory or GGUF file, or streamed from the base station into a local
// cache) and computes expert calls. The protocol and the experts are runtime/device-core.ts's, which the browser
// device shares; this is the shell around them: the ws client, files, reconnection. Stateless per token. When the
// connection fails or closes it connects again, with backoff, keeping the experts it holds: a base station that restarts finds them
// in the device's hello and resends nothing. It proves its identity (runtime/device-identity.ts) and,
// with a join token, that it holds it (and has the base station prove the same) before taking anything
// from it; a refusal either way ends it. Over wss:// the base station's certificate is pinned by its
// fingerprint (or verified against the system's CAs), and one refused ends it too, before anything is sent.
import os from "node:os";
import path from "node:path";
import { existsSync, readFileSync, statSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import WebSocket, { type ClientOptions } from "ws";
import { openBackend, POLL_WHEN_WAITING_ON_PEERS, type BackendChoice } from "../kernels/select-backend.js";
import { GgufModel, isGgufPath } from "../model/gguf-model.js";
import { openModel } from "../model/open-model.js";
import { trimWeightCache, WeightCache } from "./weight-cache.js";
import { Backoff, type BackoffOptions } from "./backoff.js";
import { DeviceSession, ExpertHost, mib, printable, type WeightSupply } from "./device-core.js";
import { LIMITS, type Message } from "../protocol/frames.js";
import { channelBinding } from "../protocol/channel-binding.js";
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
  /** Bytes the cache of streamed weights may keep, across models (default: defaultCacheBytes). */
  cacheBytes?: number;
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
  const identity = await loadIdentity(keyFile);
  log(`identity ${identity.fingerprint}${identity.created ? ` (new, kept in ${keyFile})` : ""}`);
  const kernels = openBackend({ backend: opts.backend, threads: opts.threads, poll: opts.poll ?? POLL_WHEN_WAITING_ON_PEERS, spinMs: opts.spinMs });
  log(kernels.why);
  const host = new ExpertHost(kernels.backend, fileSupply(opts, log), () => opts.memoryBytes ?? os.freemem(), log, { kind: "node" });
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
/** The largest config.json read from the base station's model path: a bigger file is not one. */
const CONFIG_BYTES = 1 << 20;

/** How one connection ended. */
type Ending = { how: "stopped" } | { how: "refused"; reason: string } | { how: "left" | "lost"; reason: string; opened: boolean; readied: boolean };

/** Serves the base station over one connection (opened with `link`'s options), until it closes. */
function connect(host: ExpertHost, identity: DeviceIdentity, opts: DeviceOptions, link: ClientOptions, log: (line: string) => void): Promise<Ending> {
  const ws = new WebSocket(opts.bs, { ...link, maxPayload: LIMITS.frameBytes });
  let opened = false, stopped = false;
  let failure: string | null = null;
  /** the TLS session's channel binding, known once the WebSocket upgrade is answered */
  let binding = "";
  ws.on("upgrade", (res) => (binding = channelBinding(res.socket)));
  const session = new DeviceSession(host, { send: (m: Message) => sendFrame(ws, m), close: (code, reason) => closeWith(ws, code, reason) }, { bs: opts.bs, name: opts.name, token: opts.token, identity, binding: () => binding, log });

  const stop = () => {
    stopped = true;
    if (ws.readyState !== ws.OPEN) return ws.terminate();
    sendFrame(ws, { type: "leave", reason: "device stopping" });
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
    if (e instanceof CertificateRefused) session.refused = e.message;
    else failure = e.code ?? e.message;
  });
  receiveFrames(ws, (m) => session.receive(m), (reason) => log(printable(reason)));

  return new Promise((resolve) => {
    ws.on("close", (code: number, reason: Buffer) => {
      session.closed();
      opts.signal?.removeEventListener("abort", stop);
      const { refused, left, welcomed, handshakeError, readied } = session;
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
 * The cache budget where none is given: twice the memory offered, or twice the memory free where the
 * offer is unlimited (`--memory 0`, or none given), never 0, which would keep nothing but what is held.
 */
export function defaultCacheBytes(memoryBytes: number | undefined, freeBytes: number): number {
  return 2 * (memoryBytes || freeBytes);
}

/**
 * Where a Node device's weights come from: its own copy of the model (a directory or GGUF file), the base
 * station's if it holds the same model here, else streamed into the cache directory.
 */
function fileSupply(opts: DeviceOptions, log: (line: string) => void): WeightSupply {
  let budget: number | undefined;
  return {
    atHand: (m) => {
      if (opts.fetchWeights) return null;
      const own = opts.model;
      if (own !== undefined && (isGgufPath(own) || existsSync(path.join(own, "config.json")))) return openModel(own).store;
      if (own === undefined && sameModelAt(m.model, m.config, log)) return openModel(m.model).store;
      return null;
    },
    store: (modelId) => new WeightCache(cacheDirOf(opts), modelId),
    trim: async (modelId, keep) => {
      budget ??= opts.cacheBytes ?? defaultCacheBytes(opts.memoryBytes, os.freemem());
      const gone = trimWeightCache(cacheDirOf(opts), modelId, keep, budget);
      if (gone.length > 0) log(`removed ${gone.length} cached tensors (${mib(gone.reduce((n, e) => n + e.bytes, 0))}, the oldest not held) to keep the cache within ${mib(budget)}`);
    },
  };
}

/**
 * Whether the base station's model directory (or GGUF file) `dir` may be read here: only a plain absolute
 * path (not relative to wherever the device runs, no `.` or `..` steps, no control characters, no network
 * share) holding the very config assigned. Anything else, and the weights are streamed instead.
 */
function sameModelAt(dir: string, config: Record<string, unknown>, log: (line: string) => void): boolean {
  if (!path.isAbsolute(dir) || path.normalize(dir) !== dir || /[\u0000-\u001f\u007f]/.test(dir) || /^[\\/]{2}/.test(dir)) {
    log(`not reading the base station's model path ${printable(dir)}: only a plain absolute path is read; streaming the weights`);
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
    log(`the base station's model path ${printable(dir)} holds another model here; streaming the weights`);
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
  log(`the base station's model path ${printable(dir)} holds another config.json here; streaming the weights`);
  return false;
}
