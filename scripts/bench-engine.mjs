#!/usr/bin/env node
// End-to-end engine figures, the ones the README reports: `distmoe bench` for f32, bf16, q8 and q4 weights
// on brown-moe (when ../shared is present) and on a generated Mixtral-shaped model large enough that
// decode is memory bound (~1.7 GB of f32 weights; written once to --cache, default /tmp/distmoe-bench).
// Usage: node scripts/bench-engine.mjs [--threads N] [--cache DIR] [--dtypes f32,bf16,q8,q4]
import { parseScriptArgs } from "./lib/script-args.mjs";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const bin = path.join(root, "bin/distmoe.js");
const { values: a } = parseScriptArgs(import.meta.url, {
  options: { threads: { type: "string" }, cache: { type: "string", default: "/tmp/distmoe-bench" }, dtypes: { type: "string", default: "f32,bf16,q8,q4" } },
});
const big = path.join(a.cache, "mixtral-h1024-e8-l4");
const shape = ["--arch", "MixtralForCausalLM", "--layers", "4", "--hidden", "1024", "--heads", "16", "--kv-heads", "4", "--experts", "8", "--top-k", "2", "--ffn", "3584", "--vocab", "32000", "--max-positions", "4096"];
if (!existsSync(path.join(big, "config.json"))) {
  console.error(`writing the benchmark model to ${big} (once)`);
  execFileSync(process.execPath, [bin, "init-model", ...shape, "--out", big], { stdio: "inherit" });
}
const models = [["generated Mixtral 1024×3584×8, 4 layers", big]];
const brown = path.resolve(root, "../shared/models/brown-moe");
if (existsSync(brown)) models.unshift(["brown-moe", brown]);

const threads = a.threads ? ["--threads", a.threads] : [];
console.log("| model | weights | prefill tok/s (256) | prefill GFLOP/s (of peak) | decode tok/s | decode GFLOP/s | weight MiB/token | decode GB/s | read GB/s | ratio |");
console.log("|---|---|---|---|---|---|---|---|---|---|");
let kernels = "";
for (const [label, dir] of models) {
  for (const dtype of a.dtypes.split(",")) {
    const out = execFileSync(process.execPath, [bin, "bench", "--model", dir, "--dtype", dtype, "--json", ...threads], { encoding: "utf8" });
    const r = JSON.parse(out);
    kernels = `${r.kernels}, ${r.threads} threads`;
    console.log(
      `| ${label} | ${dtype} | ${r.prefill_tokens_per_s.toFixed(0)} | ${r.prefill_gflops.toFixed(1)} (${((100 * r.prefill_gflops) / r.compute_gflops).toFixed(0)}%) | ${r.decode_tokens_per_s.toFixed(1)} | ${r.decode_gflops.toFixed(1)} | ${(r.decode_weight_bytes_per_token / 2 ** 20).toFixed(1)} | ${r.decode_weight_gbps.toFixed(1)} | ${r.memory_read_gbps.toFixed(1)} | ${r.bandwidth_ratio.toFixed(2)} |`,
    );
  }
}
console.log(`\nkernels: ${kernels}${models.length > 1 ? "" : "; ../shared absent, brown-moe skipped"}`);
