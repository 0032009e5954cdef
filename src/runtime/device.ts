// An expert device: connects to a base station, reports what it can do, loads the experts it is
// assigned (from its own copy of the model directory) and computes expert calls. Stateless per token.
import os from "node:os";
import WebSocket from "ws";
import { WasmBackend } from "../kernels/wasm/wasm-backend.js";
import { WEIGHT_DTYPES, type WeightDType } from "../kernels/backend.js";
import { Checkpoint } from "../model/checkpoint.js";
import { readModelConfig } from "../model/config.js";
import { loadExperts } from "../model/weights.js";
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
          const held = new Set(m.experts.map(([l, e]) => `${l}:${e}`));
          const ck = Checkpoint.open(m.model);
          try {
            executor = new LocalExpertExecutor(backend, loadExperts(backend, ck, cfg, { dtype: m.weightDType as WeightDType, holdsExpert: (l, e) => held.has(`${l}:${e}`) }), cfg.hidden);
          } finally {
            ck.close();
          }
          log(`holds ${m.experts.length} experts of ${m.model}`);
          send({ type: "ready", experts: m.experts });
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
