import { test } from "node:test";
import assert from "node:assert/strict";
import { WasmBackend } from "./wasm-backend.js";
import { relaxedSimdSupported } from "./module.js";
import { Random } from "../../util/random.js";
import type { WeightDType, WeightTensor } from "../backend.js";

const variants = relaxedSimdSupported() ? (["simd", "relaxed"] as const) : (["simd"] as const);

/** What the kernels should compute for a weight stored as dtype, in float64 from the stored values. */
function storedWeights(w: Float32Array, rows: number, cols: number, dtype: WeightDType): Float64Array {
  const out = new Float64Array(w.length);
  if (dtype === "f32") out.set(w);
  else if (dtype === "bf16") {
    const u = new Uint32Array(1), f = new Float32Array(u.buffer);
    for (let i = 0; i < w.length; i++) {
      f[0] = w[i]!;
      const x = u[0]!;
      u[0] = ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) << 16;
      out[i] = f[0]!;
    }
  } else {
    for (let b = 0; b < (rows * cols) / 32; b++) {
      const [q, d] = (dtype === "q8" ? quantizeBlock : quantizeBlockQ4)(w.subarray(b * 32, b * 32 + 32));
      for (let j = 0; j < 32; j++) out[b * 32 + j] = q[j]! * d;
    }
  }
  return out;
}

/** ggml's quantize_row_q4_0 for one block, as signed values q − 8 and the f16-rounded scale. */
function quantizeBlockQ4(x: Float32Array): [Int32Array, number] {
  let amax = 0, max = 0;
  for (const v of x) if (Math.abs(v) > amax) [amax, max] = [Math.abs(v), v];
  const d = Math.fround(max / -8);
  const id = d ? Math.fround(1 / d) : 0;
  const q = new Int32Array(32);
  for (let j = 0; j < 32; j++) q[j] = Math.min(15, Math.trunc(Math.fround(Math.fround(x[j]! * id) + 8.5))) - 8;
  const sign = d < 0 ? -1 : 1;
  return [q, sign * roundToF16(Math.abs(d))];
}

/** ggml's quantize_row_q8_0 for one block: q from the f32 scale, the stored scale rounded to f16. */
function quantizeBlock(x: Float32Array): [Int32Array, number] {
  let amax = 0;
  for (const v of x) amax = Math.max(amax, Math.abs(v));
  const d = Math.fround(amax / 127);
  const id = d ? Math.fround(1 / d) : 0;
  const q = new Int32Array(32);
  for (let j = 0; j < 32; j++) q[j] = Math.round(Math.abs(Math.fround(x[j]! * id))) * Math.sign(x[j]!);
  return [q, roundToF16(d)];
}

/** Nearest f16 value (ties to even) of a positive normal-range float. */
function roundToF16(v: number): number {
  if (v === 0) return 0;
  const quantum = Math.pow(2, Math.floor(Math.log2(v)) - 10);
  const r = v / quantum;
  const f = Math.floor(r);
  const rounded = r - f > 0.5 || (r - f === 0.5 && f % 2 === 1) ? f + 1 : f;
  return rounded * quantum;
}

function reference(x: Float32Array, w: Float64Array, M: number, N: number, K: number, quantizeX: boolean): Float64Array {
  const xs = new Float64Array(x.length);
  if (quantizeX) {
    for (let b = 0; b < x.length / 32; b++) {
      const [q, d] = quantizeBlock(x.subarray(b * 32, b * 32 + 32));
      for (let j = 0; j < 32; j++) xs[b * 32 + j] = q[j]! * d;
    }
  } else xs.set(x);
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += xs[m * K + k]! * w[n * K + k]!;
      y[m * N + n] = s;
    }
  return y;
}

for (const simd of variants) {
  for (const threads of [1, 2, 3]) {
    test(`matmul matches a float64 reference for every dtype and shape (${simd}, ${threads} threads)`, () => {
      const be = new WasmBackend({ threads, simd });
      const rng = new Random(7);
      try {
        for (const dtype of ["f32", "bf16", "q8", "q4"] as const) {
          for (const [M, N, K] of [[1, 37, 64], [1, 256, 512], [5, 19, 96], [13, 64, 256], [4, 8, 32]] as const) {
            const wv = rng.fillNormal(new Float32Array(N * K), 0.5);
            const xv = rng.fillNormal(new Float32Array(M * K), 1);
            const w = be.allocWeight(dtype, N, K);
            be.setWeight(w, wv);
            const x = be.alloc(M * K * 4), y = be.alloc(M * N * 4);
            be.f32(x).set(xv);
            be.matmul(y, x, w, M);
            const want = reference(xv, storedWeights(wv, N, K, dtype), M, N, K, dtype === "q8" || dtype === "q4");
            const got = be.f32(y);
            for (let i = 0; i < M * N; i++) {
              const tol = 1e-4 * Math.sqrt(K) * 2 + 1e-5 * Math.abs(want[i]!);
              assert.ok(Math.abs(got[i]! - want[i]!) <= tol, `${dtype} ${M}x${N}x${K} [${i}]: ${got[i]} vs ${want[i]}`);
            }
            be.free(x);
            be.free(y);
          }
        }
      } finally {
        be.close();
      }
    });
  }
}

test("weights beyond one arena go to further arenas and still multiply correctly", () => {
  // 64 pages = 4 MiB per arena: three 1 MiB-ish weights and the reserve force a spill.
  const be = new WasmBackend({ threads: 2, arenaPages: 64, activationReserve: 1 << 20 });
  const rng = new Random(3);
  try {
    const N = 256, K = 1024, M = 3;
    const ws = [0, 1, 2, 3].map(() => {
      const v = rng.fillNormal(new Float32Array(N * K), 0.1);
      const w = be.allocWeight("f32", N, K);
      be.setWeight(w, v);
      return { w, v };
    });
    assert.ok(be.memoryUsage().arenas >= 2, "expected a second arena");
    assert.ok(ws.some((e) => e.w.arena > 0));
    const xv = rng.fillNormal(new Float32Array(M * K), 1);
    const x = be.alloc(M * K * 4), y = be.alloc(M * N * 4);
    be.f32(x).set(xv);
    for (const { w, v } of ws) {
      be.matmul(y, x, w, M);
      const want = reference(xv, Float64Array.from(v), M, N, K, false);
      const got = be.f32(y);
      for (let i = 0; i < M * N; i++) assert.ok(Math.abs(got[i]! - want[i]!) < 1e-3, `arena ${w.arena} [${i}]`);
    }
  } finally {
    be.close();
  }
});

test("a weight whose shape a dtype cannot hold is refused with the reason", () => {
  const be = new WasmBackend({ threads: 1 });
  try {
    assert.throws(() => be.allocWeight("q8", 4, 40), /multiple of 32/);
    assert.throws(() => be.allocWeight("q4", 4, 48), /multiple of 32/);
    assert.throws(() => be.allocWeight("bf16", 4, 12), /multiple of 8/);
  } finally {
    be.close();
  }
});

test("matmulMany equals separate products, across chunk boundaries, dtypes and arenas", () => {
  const rng = new Random(5);
  for (const threads of [1, 2, 3]) {
    const be = new WasmBackend({ threads, arenaPages: 32, activationReserve: 1 << 20 });
    try {
      const K = 256;
      // heights that do not divide into chunks evenly; a q8 and an f32 weight force two groups, and the
      // 600-row weights spill into a second arena
      const specs: Array<[WeightDType, number]> = [["bf16", 37], ["bf16", 600], ["bf16", 5], ["q8", 64], ["q4", 40], ["f32", 600], ["f32", 600]];
      const ws = specs.map(([dtype, N]) => {
        const v = rng.fillNormal(new Float32Array(N * K), 0.2);
        const w = be.allocWeight(dtype, N, K);
        be.setWeight(w, v);
        return w;
      });
      assert.ok(new Set(ws.map((w) => w.arena)).size > 1, "weights in more than one arena");
      for (const M of [1, 3]) {
        const x = be.alloc(M * K * 4);
        be.f32(x).set(rng.fillNormal(new Float32Array(M * K), 1));
        const together = ws.map((w) => be.alloc(M * w.rows * 4));
        be.matmulMany(x, ws.map((w, i) => [together[i]!, w] as const), M);
        ws.forEach((w, i) => {
          const alone = be.alloc(M * w.rows * 4);
          be.matmul(alone, x, w, M);
          // a row may take the 4-row or the single-row path depending on where chunks fall: same sums, other order
          const t = be.f32(together[i]!), s = be.f32(alone);
          for (let j = 0; j < t.length; j++) assert.ok(Math.abs(t[j]! - s[j]!) <= 1e-5 * (1 + Math.abs(s[j]!)), `product ${i} (${w.dtype} ${w.rows} rows, M=${M}, ${threads} threads) [${j}]`);
          be.free(alone);
        });
      }
    } finally {
      be.close();
    }
  }
});

test("ffn equals matmulMany → siluMul → matmul for every dtype, thread count and row count", () => {
  const rng = new Random(11);
  for (const [simd, threads] of variants.flatMap((v) => [1, 2, 3].map((t) => [v, t] as const))) {
    const be = new WasmBackend({ threads, simd });
    try {
      for (const dtype of ["f32", "bf16", "q8", "q4"] as const) {
        // feature counts that split into uneven chunks; one block big enough to run on every thread
        for (const [K, F] of [[64, 96], [256, 512], [96, 1184]] as const) {
          const [gate, up, down] = ([[F, K], [F, K], [K, F]] as const).map(([r, c]) => {
            const w = be.allocWeight(dtype, r, c);
            be.setWeight(w, rng.fillNormal(new Float32Array(r * c), 0.3));
            return w;
          }) as [WeightTensor, WeightTensor, WeightTensor];
          for (const M of [1, 3, 6]) {
            const x = be.alloc(M * K * 4), fused = be.alloc(M * K * 4), parts = be.alloc(M * K * 4);
            const g = be.alloc(M * F * 4), u = be.alloc(M * F * 4);
            const xv = rng.fillNormal(new Float32Array(M * K), 1);
            be.f32(x).set(xv);
            be.f32(fused).fill(NaN);
            be.ffn(fused, x, { gate, up, down }, M);
            be.matmulMany(x, [[g, gate], [u, up]], M);
            be.siluMul(g, g, u, M * F);
            be.matmul(parts, g, down, M);
            assert.deepEqual(be.f32(x), xv, "x is not modified");
            const a = be.f32(fused), b = be.f32(parts);
            let scale = 0;
            for (const v of b) scale = Math.max(scale, Math.abs(v));
            for (let i = 0; i < M * K; i++) {
              // the same sums, sometimes in another order (chunk boundaries pick the 4-row or the 1-row path)
              assert.ok(Math.abs(a[i]! - b[i]!) <= 1e-5 * scale, `${dtype} K=${K} F=${F} M=${M} ${simd}, ${threads} threads [${i}]: ${a[i]} vs ${b[i]}`);
            }
            for (const t of [x, fused, parts, g, u]) be.free(t);
          }
          for (const w of [gate, up, down]) be.freeWeight(w);
        }
      }
    } finally {
      be.close();
    }
  }
});

test("ffn over weights in different arenas, with input and output elsewhere, still equals the parts", () => {
  // 3 MiB arenas: gate and up fit beside the reserve in the first, down spills into the second
  const be = new WasmBackend({ threads: 2, arenaPages: 48, activationReserve: 1 << 20 });
  const rng = new Random(12);
  try {
    const K = 256, F = 512, M = 2;
    const mk = (r: number, c: number) => {
      const w = be.allocWeight("f32", r, c);
      be.setWeight(w, rng.fillNormal(new Float32Array(r * c), 0.2));
      return w;
    };
    const gate = mk(F, K), up = mk(F, K), down = mk(K, F);
    assert.ok(new Set([gate.arena, up.arena, down.arena]).size > 1, "the weights spread over arenas");
    const x = be.alloc(M * K * 4), fused = be.alloc(M * K * 4), parts = be.alloc(M * K * 4), g = be.alloc(M * F * 4), u = be.alloc(M * F * 4);
    be.f32(x).set(rng.fillNormal(new Float32Array(M * K), 1));
    be.ffn(fused, x, { gate, up, down }, M);
    be.matmulMany(x, [[g, gate], [u, up]], M);
    be.siluMul(g, g, u, M * F);
    be.matmul(parts, g, down, M);
    const a = be.f32(fused), b = be.f32(parts);
    for (let i = 0; i < M * K; i++) assert.ok(Math.abs(a[i]! - b[i]!) <= 1e-5 * (1 + Math.abs(b[i]!)), `[${i}]`);
    // one arena, the output in arena 0 while the weights are elsewhere
    const far = [mk(F, K), mk(F, K), mk(K, F)];
    assert.deepEqual(far.map((w) => w.arena), [1, 1, 1]);
    be.ffn(fused, x, { gate: far[0]!, up: far[1]!, down: far[2]! }, M);
    be.matmulMany(x, [[g, far[0]!], [u, far[1]!]], M);
    be.siluMul(g, g, u, M * F);
    be.matmul(parts, g, far[2]!, M);
    for (let i = 0; i < M * K; i++) assert.ok(Math.abs(a[i]! - b[i]!) <= 1e-5 * (1 + Math.abs(b[i]!)), `far [${i}]`);
    assert.throws(() => be.ffn(fused, x, { gate, up: down, down: up }, M), /do not make one feed-forward block/);
  } finally {
    be.close();
  }
});

test("parallel jobs give the single-thread results when there are more threads than cores (workers that miss a job leave their share to the host)", () => {
  const rng = new Random(13);
  const one = new WasmBackend({ threads: 1 });
  // more workers than this machine has cores, spinning 0 ms: most jobs find some worker asleep or descheduled
  const many = new WasmBackend({ threads: 6, spinMs: 0 });
  try {
    const rows = 256, n = 4096;
    const xv = rng.fillNormal(new Float32Array(rows * n), 1);
    const wv = rng.fillNormal(new Float32Array(n), 1);
    const outs = [one, many].map((be) => {
      const x = be.alloc(rows * n * 4), y = be.alloc(rows * n * 4), w = be.allocWeight("f32", 1, n);
      be.f32(x).set(xv);
      be.setWeight(w, wv);
      // rmsnorm splits rows statically, one share per thread: every share must run exactly once
      for (let i = 0; i < 50; i++) {
        be.rmsnorm(y, x, w, rows, n, 1e-5);
        be.add(x, x, y, rows * n);
      }
      return be.f32(x).slice();
    });
    assert.deepEqual(outs[1], outs[0]);
  } finally {
    one.close();
    many.close();
  }
});

test("setRows on the wasm kernels: rows where the indices say; a bad count, a short index tensor or an index beyond the destination refused, the destination unchanged", () => {
  const be = new WasmBackend({ threads: 1 });
  try {
    const width = 3, capacity = 4;
    const dst = be.alloc(capacity * width * 4), src = be.alloc(2 * width * 4), at = be.alloc(8), short = be.alloc(4);
    be.f32(dst).fill(-1);
    be.f32(src).set([1, 2, 3, 4, 5, 6]);
    be.i32(at).set([2, 0]);
    be.setRows(dst, src, 2, width, at);
    const want = [4, 5, 6, -1, -1, -1, 1, 2, 3, -1, -1, -1];
    assert.deepEqual([...be.f32(dst)], want);
    assert.throws(() => be.setRows(dst, src, -1, width, at), /setRows rows: -1 is not a count/);
    assert.throws(() => be.setRows(dst, src, 2, 1.5, at), /setRows width: 1.5 is not a count/);
    assert.throws(() => be.setRows(dst, src, 2, width, short), /setRows indices: buffer of 4 bytes, 8 needed/);
    be.i32(at).set([1, 4]);
    assert.throws(() => be.setRows(dst, src, 2, width, at), /row 4 of a tensor of 4 rows/);
    assert.deepEqual([...be.f32(dst)], want);
  } finally {
    be.close();
  }
});
