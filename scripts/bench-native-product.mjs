#!/usr/bin/env node
// One weight product through the native backend, timed with ggml's prebuilt libraries from npm and with the same
// ggml built for this CPU (npm run build-ggml), alternating, each in a process of its own (ggml loads once per
// process): the measurement behind loading the local build first (src/kernels/native/ggml.ts, ggmlLibraries).
// The default shape is a brown-moe expert's in a 256-token prefill: 512×256 weights, 64 rows.
// Usage: node scripts/bench-native-product.mjs [--dtype f32|bf16|q8|q4_k] [--out-rows 512] [--cols 256] [--rows 64]
//        [--threads 2] [--rounds 3]   (after npm run build and npm run build-ggml)
import { parseScriptArgs } from "./lib/script-args.mjs";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const backendJs = path.join(root, "dist/kernels/native/native-backend.js");
const { values: a } = parseScriptArgs(import.meta.url, {
  options: {
    dtype: { type: "string", default: "f32" }, "out-rows": { type: "string", default: "512" }, cols: { type: "string", default: "256" },
    rows: { type: "string", default: "64" }, threads: { type: "string", default: "2" }, rounds: { type: "string", default: "3" }, child: { type: "boolean" },
  },
});
const M = Number(a["out-rows"]), K = Number(a.cols), R = Number(a.rows), threads = Number(a.threads), rounds = Number(a.rounds);
for (const [name, v] of [["out-rows", M], ["cols", K], ["rows", R], ["threads", threads], ["rounds", rounds]]) {
  if (!Number.isSafeInteger(v) || v < 1) {
    process.stderr.write(`error: --${name}: expected a positive integer\n`);
    process.exit(2);
  }
}
if (!existsSync(backendJs)) {
  process.stderr.write("error: distmoe is not built here: run npm run build first\n");
  process.exit(1);
}

if (a.child) {
  // one product recorded 16 times per graph (one launch of the pool for them, as a layer's experts are), timed over 2000 graphs
  const { NativeBackend } = await import(backendJs);
  const be = new NativeBackend({ threads });
  const values = Float32Array.from({ length: Math.max(M * K, R * K) }, (_, i) => Math.sin(i) * 0.5);
  const [w] = be.allocWeights(a.dtype, 1, M, K);
  be.setWeight(w, values.subarray(0, M * K));
  const x = be.alloc(R * K * 4), y = be.alloc(R * M * 4);
  be.f32(x, 0, R * K).set(values.subarray(0, R * K));
  const graph = () => {
    for (let i = 0; i < 16; i++) be.matmul(y, x, w, R);
    be.f32(y, 0, 1); // runs what is recorded
  };
  for (let i = 0; i < 100; i++) graph();
  const n = 2000, t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) graph();
  const us = Number(process.hrtime.bigint() - t0) / 1e3 / n / 16;
  process.stdout.write(JSON.stringify({ kernels: be.name, us }) + "\n");
  be.close();
  process.exit(0);
}

const run = (dir) => {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), "--child", ...process.argv.slice(2)], { encoding: "utf8", env: { ...process.env, DISTMOE_GGML_DIR: dir } });
  if (r.status !== 0) throw new Error(`${dir === "prebuilt" ? "the prebuilt ggml" : "the ggml built here"}: ${(r.stderr || r.stdout).trim().split("\n").pop()}`);
  return JSON.parse(r.stdout.trim().split("\n").pop());
};
const { localGgmlDir } = await import(path.join(root, "dist/kernels/native/ggml.js"));
const sides = { prebuilt: "prebuilt", "built here": localGgmlDir() };
const times = { prebuilt: [], "built here": [] };
let kernels = {};
try {
  for (let round = 0; round < rounds; round++) {
    for (const [name, dir] of round % 2 === 0 ? Object.entries(sides) : Object.entries(sides).reverse()) {
      const r = run(dir);
      times[name].push(r.us);
      kernels[name] = r.kernels;
    }
  }
} catch (e) {
  process.stderr.write(`error: ${e.message} (npm run build-ggml builds ggml here)\n`);
  process.exit(1);
}
const median = (xs) => [...xs].sort((p, q) => p - q)[xs.length >> 1];
const flops = 2 * M * K * R;
process.stdout.write(`${a.dtype} product, ${M}×${K} weights, ${R} rows, ${threads} threads; µs per product, each round's figure\n`);
for (const [name, us] of Object.entries(times)) {
  process.stdout.write(`${name.padEnd(10)} ${kernels[name].padEnd(18)} ${us.map((x) => x.toFixed(1)).join(" ")}  median ${median(us).toFixed(1)} µs, ${(flops / median(us) / 1e3).toFixed(1)} GFLOP/s\n`);
}
process.stdout.write(`prebuilt ÷ built here: ${(median(times.prebuilt) / median(times["built here"])).toFixed(2)}\n`);
