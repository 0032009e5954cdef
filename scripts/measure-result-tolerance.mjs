#!/usr/bin/env node
// The honest differences the spot checks' tolerance (src/policies/result-match.ts) must allow: brown-moe
// generates greedily while every expert call is also computed by two other kernel setups from the input
// as the wire carries it: the wasm kernels' plain SIMD on 1 thread (a device: its output rounded as the wire
// carries it back) and the base station's kernels on 2 threads, unrounded: --base auto (default: native where
// it loads, as a base station runs), native, or wasm (relaxed SIMD where the machine has it). Per wire dtype
// the largest row difference ‖a − b‖ / max(‖a‖, ‖b‖) is printed beside the tolerance in use.
// Usage: node scripts/measure-result-tolerance.mjs [--model DIR] [--dtype f32|bf16|q8|q4] [--base auto|native|wasm] [--prompts 30] [--tokens 100]
import { parseScriptArgs } from "./lib/script-args.mjs";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Engine } from "../dist/runtime/engine.js";
import { WasmBackend } from "../dist/kernels/wasm/wasm-backend.js";
import { openBackend } from "../dist/kernels/select-backend.js";
import { Checkpoint } from "../dist/model/checkpoint.js";
import { readModelConfig } from "../dist/model/config.js";
import { loadExperts } from "../dist/model/weights.js";
import { LocalExpertExecutor } from "../dist/moe/local-executor.js";
import { decodeActivations, encodeActivations, WIRE_DTYPES } from "../dist/protocol/activations.js";
import { resultTolerance } from "../dist/policies/result-match.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values: a } = parseScriptArgs(import.meta.url, {
  paths: ["model"],
  options: {
    model: { type: "string", default: path.resolve(root, "../shared/models/brown-moe") },
    dtype: { type: "string", default: "f32" },
    base: { type: "string", default: "auto" },
    prompts: { type: "string", default: "30" },
    tokens: { type: "string", default: "100" },
  },
});
const cfg = readModelConfig(a.model);
const ck = Checkpoint.open(a.model);
const on = (backend) => new LocalExpertExecutor(backend, loadExperts(backend, ck, cfg, { dtype: a.dtype }), cfg.hidden);
const wasm = (opts) => new WasmBackend({ spinMs: 0, ...opts });
const one = on(wasm({ threads: 1, simd: "simd" }));
let baseBackend;
if (a.base === "wasm") {
  try {
    baseBackend = wasm({ threads: 2, simd: "relaxed" });
  } catch {
    baseBackend = wasm({ threads: 2, simd: "simd" });
  }
} else baseBackend = openBackend({ backend: a.base, threads: 2 }).backend;
const two = on(baseBackend);
const wire = (x, d) => decodeActivations(encodeActivations(x, d), d);
const worst = Object.fromEntries(WIRE_DTYPES.map((d) => [d, 0]));
let calls = 0, rows = 0;
const executor = {
  retries: 0,
  dispatch: (cs) =>
    cs.map((c) => {
      calls++;
      rows += c.rows;
      for (const d of WIRE_DTYPES) {
        const input = wire(c.input, d);
        // a device's result as the wire carries it back, against the base station's own (unrounded)
        const x = wire(one.compute({ ...c, input }).output, d), y = two.compute({ ...c, input }).output;
        for (let r = 0; r < c.rows; r++) {
          let diff = 0, nx = 0, ny = 0;
          for (let i = r * cfg.hidden; i < (r + 1) * cfg.hidden; i++) {
            diff += (x[i] - y[i]) ** 2;
            nx += x[i] ** 2;
            ny += y[i] ** 2;
          }
          const larger = Math.sqrt(Math.max(nx, ny));
          if (larger > 0) worst[d] = Math.max(worst[d], Math.sqrt(diff) / larger);
        }
      }
      return Promise.resolve(one.compute(c));
    }),
};
const engine = Engine.load(a.model, { dtype: a.dtype, threads: 1, executor });
const lines = readFileSync(path.resolve(root, "../shared/corpus/brown/valid.txt"), "utf8").split("\n").filter((l) => l.trim().length > 20).slice(0, Number(a.prompts));
for (const line of lines) await engine.generate(engine.tokenizer.encode(line.split(" ").slice(0, 8).join(" ")), { temperature: 0, maxTokens: Number(a.tokens) });
engine.close();
console.log(`${path.basename(a.model)}, weights ${a.dtype}: ${calls} expert calls, ${rows} rows; device wasm plain SIMD 1 thread, base station ${baseBackend.name}`);
console.log("| wire | largest honest row difference | tolerance | tolerance ÷ largest |\n|---|---|---|---|");
for (const d of WIRE_DTYPES) {
  const tol = resultTolerance(d, a.dtype).relative;
  console.log(`| ${d} | ${worst[d].toExponential(2)} | ${tol.toExponential(2)} | ${(tol / worst[d]).toFixed(1)} |`);
}
