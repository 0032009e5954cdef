#!/usr/bin/env node
// A sparse MoE layer as one native job (Backend.moeTopK: router, top-k, experts through ggml_mul_mat_id, combine)
// against the seam's steps (router read by JavaScript, policy, per-expert products, combine), per step size
// (issue 14). Two engines over the same GGUF file in one process, timed in alternation: one with the model's
// own routing (one job where the backend takes it), one with the same top-k behind another function (the seam).
// Each step: R sequences of 64 cached tokens decode one token each (R rows). Prints ms per step, per round.
// Usage: node scripts/bench-moe-one-job.mjs --model FILE.gguf [--rows 1,2,4,8,16,32] [--threads 2] [--steps 20] [--rounds 3]
//   (after npm run build; the native kernels; MOE_ONE_JOB_MAX_ROWS in src/kernels/native/native-backend.ts is the
//   row count up to which moeTopK takes a step, so rows above it time the seam twice)
import { parseScriptArgs } from "./lib/script-args.mjs";
import { Engine } from "../dist/runtime/engine.js";
import { selectTopK } from "../dist/policies/selection.js";

const { values: a } = parseScriptArgs(import.meta.url, {
  paths: ["model"],
  options: { model: { type: "string" }, rows: { type: "string", default: "1,2,4,8,16,32" }, threads: { type: "string", default: "2" }, steps: { type: "string", default: "20" }, rounds: { type: "string", default: "3" } },
});
const threads = Number(a.threads), steps = Number(a.steps), rounds = Number(a.rounds);
const sameTopK = (router, ctx) => selectTopK(router, ctx);
const engines = {
  "one job": Engine.load(a.model, { backend: "native", threads, contextLength: 256 }),
  seam: Engine.load(a.model, { backend: "native", threads, contextLength: 256, policy: sameTopK }),
};
const context = Array.from({ length: 64 }, (_, i) => 3 + ((i * 7) % 300));
const times = new Map();
for (let round = 0; round < rounds; round++) {
  for (const rows of a.rows.split(",").map(Number)) {
    for (const [name, engine] of Object.entries(engines)) {
      const m = engine.model;
      const caches = Array.from({ length: rows }, () => m.newSequence(64 + steps + 1));
      for (const cache of caches) await m.forward([{ cache, tokens: context, logits: "none" }]);
      const t0 = performance.now();
      for (let i = 0; i < steps; i++) await m.forward(caches.map((cache) => ({ cache, tokens: [3 + i], logits: "last" })));
      const key = `| ${rows} | ${name} |`;
      times.set(key, [...(times.get(key) ?? []), (performance.now() - t0) / steps]);
      for (const cache of caches) cache.free();
    }
  }
}
console.log(`${a.model}, ${threads} threads, ms per step in each round\n| rows | path | ms |\n|---|---|---|`);
for (const [key, ms] of times) console.log(`${key} ${ms.map((x) => x.toFixed(2)).join(" ")} |`);
for (const engine of Object.values(engines)) engine.close();
