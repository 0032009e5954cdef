// An expert device: connects to a base station, reports what it can do, loads the experts it is
// assigned (from its own copy of the model directory, or streamed from the base station into a local
// cache) and computes expert calls. Stateless per token.
import os from "node:os";
import path from "node:path";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import WebSocket from "ws";
import { WasmBackend } from "../kernels/wasm/wasm-backend.js";
import { WEIGHT_DTYPES, type WeightDType } from "../kernels/backend.js";
import { Checkpoint } from "../model/checkpoint.js";
import { parseModelConfig, type ModelConfig } from "../model/config.js";
import { tensorName } from "../model/arch.js";
import { WeightCache } from "./weight-cache.js";
import { loadExperts, type FfnWeights } from "../model/weights.js";
import { LocalExpertExecutor } from "../moe/local-executor.js";
import { concatRows, decodeActivations, encodeActivations, splitRows, WIRE_DTYPES } from "../protocol/activations.js";
import type { Message } from "../protocol/frames.js";
import { receiveFrames, sendFrame } from "../protocol/socket.js";

export interface DeviceOptions {
  /** ws://host:port of the base station */
  bs: string;
  name: string;
  /** This device's own copy of the model directory; default: the base station's path, if it exists here. */
  model?: string;
  /** Always stream the weights from the base station, even where the files are at hand. */
  fetchWeights?: boolean;
  /** Where streamed weights are kept between runs (default ~/.cache/distmoe). */
  cacheDir?: string;
  threads?: number;
  spinMs?: number;
  /** Memory offered for expert weights (default: the memory free at start). */
  memoryBytes?: number;
  log?: (line: string) => void;
}

/** Runs until the base station closes the connection or says leave. */
export function runDevice(opts: DeviceOptions): Promise<void> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`[device ${opts.name}] ${l}\n`));
  const backend = new WasmBackend({ threads: opts.threads, spinMs: opts.spinMs });
  let executor: LocalExpertExecutor | null = null;
  let config: ModelConfig | null = null;
  // experts loaded so far, kept across assignments until the base station releases them: routes it
  // still uses stay valid while it moves to a new placement
  const held = new Map<string, { layer: number; expert: number; w: FfnWeights }>();
  let fetching: { cache: WeightCache; resolve: () => void; reject: (e: Error) => void } | null = null;

  /** Where to read the wanted experts: the model directory, or the cache after fetching what it lacks. */
  async function source(m: Extract<Message, { type: "assign" }>, cfg: ModelConfig, wanted: ReadonlyArray<[number, number]>): Promise<Checkpoint> {
    const local = opts.model ?? m.model;
    if (!opts.fetchWeights && existsSync(path.join(local, "config.json"))) return Checkpoint.open(local);
    const cache = new WeightCache(path.join(opts.cacheDir ?? path.join(os.homedir(), ".cache", "distmoe"), m.modelId));
    const t = cfg.arch.tensors;
    const names = wanted.flatMap(([l, e]) => [t.expertGate, t.expertUp, t.expertDown].map((tmpl) => tensorName(tmpl, l, e)));
    await new Promise<void>((resolve, reject) => {
      fetching = { cache, resolve, reject };
      send({ type: "fetch", experts: [...wanted], have: cache.checksums(names) });
    }).finally(() => (fetching = null));
    return Checkpoint.fromFiles(cache.dir, names.map((n) => cache.file(n)));
  }

  async function assign(m: Extract<Message, { type: "assign" }>): Promise<void> {
    if (!WEIGHT_DTYPES.includes(m.weightDType as WeightDType)) throw new Error(`weight dtype ${m.weightDType} is not supported`);
    const cfg = parseModelConfig(m.config, "assigned config");
    const wanted = m.experts.filter(([l, e]) => !held.has(`${l}:${e}`));
    if (wanted.length > 0) {
      const want = new Set(wanted.map(([l, e]) => `${l}:${e}`));
      const ck = await source(m, cfg, wanted);
      try {
        const loaded = loadExperts(backend, ck, cfg, { dtype: m.weightDType as WeightDType, holdsExpert: (l, e) => want.has(`${l}:${e}`) });
        loaded.forEach((row, layer) => row.forEach((w, expert) => w && held.set(`${layer}:${expert}`, { layer, expert, w })));
      } finally {
        ck.close();
      }
    }
    config = cfg;
    serveHeld();
    log(`holds ${held.size} experts (${wanted.length} newly loaded)`);
    send({ type: "ready", experts: [...held.values()].map(({ layer, expert }) => [layer, expert] as [number, number]) });
  }

  /** Serves calls from the experts held now. */
  function serveHeld(): void {
    const table = Array.from({ length: config!.layers }, () => new Array<FfnWeights | null>(config!.experts).fill(null));
    for (const { layer, expert, w } of held.values()) table[layer]![expert] = w;
    executor?.close();
    executor = new LocalExpertExecutor(backend, table, config!.hidden);
  }

  function release(experts: ReadonlyArray<[number, number]>): void {
    for (const [layer, expert] of experts) {
      const h = held.get(`${layer}:${expert}`);
      if (!h) continue;
      for (const w of [h.w.gate, h.w.up, h.w.down]) backend.freeWeight(w);
      held.delete(`${layer}:${expert}`);
    }
    if (config) serveHeld();
    log(`released ${experts.length} experts; holds ${held.size}`);
  }
  const ws = new WebSocket(opts.bs);
  const send = (m: Message) => sendFrame(ws, m);

  ws.on("open", () => {
    send({
      type: "hello",
      name: opts.name,
      capabilities: {
        memoryBytes: opts.memoryBytes ?? os.freemem(),
        gflops: backend.measureComputeRate(),
        readGbps: backend.measureReadBandwidth(64 << 20),
        weightDTypes: [...WEIGHT_DTYPES],
        wireDTypes: [...WIRE_DTYPES],
      },
    });
  });

  receiveFrames(ws, (m) => {
    switch (m.type) {
      case "assign":
        assign(m).catch((e: Error) => send({ type: "error", message: `cannot load the assigned experts: ${e.message}` }));
        return;
      case "weights": {
        const sum = createHash("sha256").update(m.payload).digest("hex");
        if (!fetching) send({ type: "error", message: `unexpected weights ${m.name}` });
        else if (sum !== m.sha256) fetching.reject(new Error(`weights ${m.name} arrived damaged (checksum ${sum}, expected ${m.sha256})`));
        else fetching.cache.put(m.name, m.dtype, m.shape, m.payload);
        return;
      }
      case "fetched":
        if (fetching) log(`received ${m.sent} tensors (${(m.bytes / 2 ** 20).toFixed(1)} MiB)`);
        fetching?.resolve();
        return;
      case "call": {
        const { id, layer, experts, hidden, dtype } = m;
        if (!executor) {
          send({ type: "error", id, message: "no experts assigned yet" });
          return;
        }
        const inputs = splitRows(decodeActivations(m.payload, dtype), hidden, experts.map(([, rows]) => rows));
        const calls = experts.map(([expert, rows], i) => ({ layer, expert, rows, input: inputs[i]! }));
        Promise.all(executor.dispatch(calls))
          .then((rs) => {
            const computeMs = rs.reduce((t, r) => t + r.computeMs, 0);
            send({ type: "result", id, experts, hidden, dtype, computeMs, payload: encodeActivations(concatRows(rs.map((r) => r.output)), dtype) });
          })
          .catch((e: Error) => send({ type: "error", id, message: e.message }));
        return;
      }
      case "release":
        release(m.experts);
        return;
      case "pull": {
        const h = held.get(`${m.layer}:${m.expert}`);
        if (!h) {
          send({ type: "error", id: m.id, message: `expert ${m.expert} of layer ${m.layer} is not held here` });
          return;
        }
        const parts = [h.w.gate, h.w.up, h.w.down];
        send({
          type: "expert", id: m.id, layer: m.layer, expert: m.expert, dtype: h.w.gate.dtype,
          shapes: parts.map((w): [number, number] => [w.rows, w.cols]), payload: Buffer.concat(parts.map((w) => backend.weightData(w))),
        });
        return;
      }
      case "leave":
        ws.close();
        return;
      case "error":
        log(`base station: ${m.message}`);
        return;
      default:
        send({ type: "error", message: `a device does not accept ${m.type} messages` });
    }
  }, log);

  return new Promise((resolve, reject) => {
    ws.on("close", () => {
      executor?.close();
      backend.close();
      resolve();
    });
    ws.on("error", (e) => reject(new Error(`cannot reach the base station at ${opts.bs}: ${e.message}`)));
  });
}
