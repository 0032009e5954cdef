#!/usr/bin/env node
// Kernel figures against the machine's floors: memory read bandwidth, GEMV (decode) per weight dtype
// in GB/s of weights and GFLOP/s, GEMM (prefill) per weight dtype in GFLOP/s.
// Usage: node scripts/bench-kernels.mjs [--threads N] [--simd auto|simd|relaxed] [--n 4096] [--k 4096] [--m 256] [--json]
//        (--simd auto: relaxed SIMD where the runtime has it; --json: the figures also as one JSON line at the end)
import { parseScriptArgs } from "./lib/script-args.mjs";
import { WasmBackend } from "../dist/kernels/wasm/wasm-backend.js";
import { Random } from "../dist/util/random.js";

process.stdout.on("error", (e) => { if (e.code !== "EPIPE") throw e; });

const { values: a } = parseScriptArgs(import.meta.url, {
  options: { threads: { type: "string" }, simd: { type: "string", default: "auto" }, n: { type: "string", default: "4096" }, k: { type: "string", default: "4096" }, m: { type: "string", default: "256" }, json: { type: "boolean" } },
});
const N = Number(a.n), K = Number(a.k), M = Number(a.m);
const be = new WasmBackend({ threads: a.threads ? Number(a.threads) : undefined, simd: a.simd });
const rng = new Random(1);

function time(fn, reps) {
  fn();
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return best;
}

const out = { kernels: be.name, threads: be.threads, shape: { M, N, K } };
out.memory_read_gbps = be.measureReadBandwidth(512 << 20);
out.compute_gflops = be.measureComputeRate();
const values = rng.fillNormal(new Float32Array(N * K), 0.05);
for (const dtype of ["f32", "bf16", "q8", "q4"]) {
  // enough copies that one pass over them exceeds the last-level cache (32 MiB here)
  const bytesPer = WasmBackend.weightBytes(dtype, N, K);
  const copies = Math.max(2, Math.ceil((256 << 20) / bytesPer));
  const ws = Array.from({ length: copies }, () => { const w = be.allocWeight(dtype, N, K); be.setWeight(w, values); return w; });
  const x = be.alloc(M * K * 4), y = be.alloc(M * N * 4);
  be.f32(x).set(rng.fillNormal(new Float32Array(M * K), 1));
  let i = 0;
  const gemv = time(() => { for (let c = 0; c < copies; c++) be.matmul(y, x, ws[i++ % copies], 1); }, 5) / copies;
  const gemm = time(() => be.matmul(y, x, ws[0], M), 3);
  out[dtype] = {
    gemv_weight_gbps: bytesPer / gemv / 1e9,
    gemv_gflops: (2 * N * K) / gemv / 1e9,
    gemv_fraction_of_bandwidth: bytesPer / gemv / 1e9 / out.memory_read_gbps,
    gemm_gflops: (2 * M * N * K) / gemm / 1e9,
    gemm_fraction_of_compute: (2 * M * N * K) / gemm / 1e9 / out.compute_gflops,
  };
  for (const w of ws) be.free(w);
  be.free(x);
  be.free(y);
}
be.close();
if (a.json) console.log(JSON.stringify(out));
else {
  console.log(`${out.kernels}, ${out.threads} threads; memory read ${out.memory_read_gbps.toFixed(1)} GB/s, compute ${out.compute_gflops.toFixed(1)} GFLOP/s; GEMV ${N}×${K}, GEMM ${M}×${N}×${K}`);
  for (const d of ["f32", "bf16", "q8", "q4"]) {
    const r = out[d];
    console.log(`${d.padEnd(5)} GEMV ${r.gemv_weight_gbps.toFixed(1).padStart(5)} GB/s of weights (${(r.gemv_fraction_of_bandwidth * 100).toFixed(0)}% of read bandwidth), ${r.gemv_gflops.toFixed(1).padStart(5)} GFLOP/s; GEMM ${r.gemm_gflops.toFixed(1).padStart(5)} GFLOP/s (${(r.gemm_fraction_of_compute * 100).toFixed(0)}% of compute)`);
  }
}
