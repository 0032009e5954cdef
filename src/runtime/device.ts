// An expert device: connects to a base station, reports what it can do, loads the experts it is
// assigned (from its own copy of the model directory) and computes expert calls. Stateless per token.
import os from "node:os";
import WebSocket from "ws";
import { WasmBackend } from "../kernels/wasm/wasm-backend.js";
import { WEIGHT_DTYPES, type WeightDType } from "../kernels/backend.js";
import { Checkpoint } from "../model/checkpoint.js";
import { readModelConfig } from "../model/config.js";
import { loadExperts, type FfnWeights } from "../model/weights.js";
import { LocalExpertExecutor } from "../moe/local-executor.js";
import { decodeActivations, encodeActivations, WIRE_DTYPES } from "../protocol/activations.js";
import type { Message } from "../protocol/frames.js";
import { receiveFrames, sendFrame } from "../protocol/socket.js";

export interface DeviceOptions {
  /** ws://host:port of the base station */
  bs: string;
  name: string;
  threads?: number;
  spinMs?: number;
  log?: (line: string) => void;
}

/** Runs until the base station closes the connection or says leave. */
export function runDevice(opts: DeviceOptions): Promise<void> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`[device ${opts.name}] ${l}\n`));
  const backend = new WasmBackend({ threads: opts.threads, spinMs: opts.spinMs });
  let executor: LocalExpertExecutor | null = null;
  // experts loaded so far, kept across assignments: a new placement only adds, so routes the base
  // station still uses stay valid while it moves to the new one
  const held = new Map<string, { layer: number; expert: number; w: FfnWeights }>();
  const ws = new WebSocket(opts.bs);
  const send = (m: Message) => sendFrame(ws, m);

  ws.on("open", () => {
    send({
      type: "hello",
      name: opts.name,
      capabilities: {
        memoryBytes: os.totalmem(),
        gflops: backend.measureComputeRate(),
        readGbps: backend.measureReadBandwidth(64 << 20),
        weightDTypes: [...WEIGHT_DTYPES],
        wireDTypes: [...WIRE_DTYPES],
      },
    });
  });

  receiveFrames(ws, (m) => {
    switch (m.type) {
      case "assign": {
        try {
          if (!WEIGHT_DTYPES.includes(m.weightDType as WeightDType)) throw new Error(`weight dtype ${m.weightDType} is not supported`);
          const cfg = readModelConfig(m.model);
          const wanted = new Set(m.experts.map(([l, e]) => `${l}:${e}`).filter((k) => !held.has(k)));
          if (wanted.size > 0) {
            const ck = Checkpoint.open(m.model);
            try {
              const loaded = loadExperts(backend, ck, cfg, { dtype: m.weightDType as WeightDType, holdsExpert: (l, e) => wanted.has(`${l}:${e}`) });
              loaded.forEach((row, layer) => row.forEach((w, expert) => w && held.set(`${layer}:${expert}`, { layer, expert, w })));
            } finally {
              ck.close();
            }
          }
          const table = Array.from({ length: cfg.layers }, () => new Array<FfnWeights | null>(cfg.experts).fill(null));
          for (const { layer, expert, w } of held.values()) table[layer]![expert] = w;
          executor?.close();
          executor = new LocalExpertExecutor(backend, table, cfg.hidden);
          log(`holds ${held.size} experts of ${m.model} (${wanted.size} newly loaded)`);
          send({ type: "ready", experts: [...held.values()].map(({ layer, expert }) => [layer, expert] as [number, number]) });
        } catch (e) {
          send({ type: "error", message: `cannot load the assigned experts: ${(e as Error).message}` });
        }
        return;
      }
      case "call": {
        const { id, layer, expert, rows, hidden, dtype } = m;
        if (!executor) {
          send({ type: "error", id, message: "no experts assigned yet" });
          return;
        }
        executor
          .run({ layer, expert, rows, input: decodeActivations(m.payload, dtype) })
          .then((out) => send({ type: "result", id, rows, hidden, dtype, payload: encodeActivations(out, dtype) }))
          .catch((e: Error) => send({ type: "error", id, message: e.message }));
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
