// GGUF block tensors into the wasm backend: Q4_0 kept as q4 (its layout is ours), everything else through
// the f32 values ggml gives them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { WasmBackend } from "./wasm-backend.js";
import { dequantizeBlocks, GGML_BLOCK_TYPES, type GgmlBlockType } from "../ggml-blocks.js";
import { GgufFile } from "../../model/gguf.js";
import { ggufFile } from "../../testing/gguf-writer.js";
import { Random } from "../../util/random.js";
import type { WeightDType, WeightTensor } from "../backend.js";

const TYPE_IDS: Record<GgmlBlockType, number> = { Q4_0: 2, Q8_0: 8, Q4_K: 12, Q5_K: 13, Q6_K: 14 };

/** Loads `blocks` (rows × cols values of `type`) as a one-tensor GGUF file into a weight of `dtype`. */
function loadFromFile(be: WasmBackend, type: GgmlBlockType, blocks: Uint8Array, rows: number, cols: number, dtype: WeightDType): WeightTensor {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-blocks-"));
  try {
    const file = path.join(dir, "w.gguf");
    writeFileSync(file, ggufFile([], [{ name: "w", dims: [cols, rows], type: TYPE_IDS[type], bytes: blocks.length, data: blocks }]));
    const g = GgufFile.open(file);
    try {
      const w = be.allocWeight(dtype, rows, cols);
      be.loadWeight(w, { fd: g.fd, offset: g.tensors.get("w")!.offset, dtype: type, file });
      return w;
    } finally {
      g.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function matmul(be: WasmBackend, w: WeightTensor, x: Float32Array, M: number): Float32Array {
  const xt = be.alloc(x.length * 4), yt = be.alloc(M * w.rows * 4);
  be.f32(xt).set(x);
  be.matmul(yt, xt, w, M);
  const y = be.f32(yt).slice();
  be.free(xt);
  be.free(yt);
  return y;
}

/**
 * Q4_0 blocks that our q4 quantizer gives back unchanged from their own values: scale d an f16 value
 * ±(1 + m/1024)/8, and quant 0 (value −8d, the block's only one of largest magnitude) somewhere in each.
 */
function q4_0Blocks(rng: Random, n: number): { blocks: Uint8Array; values: Float32Array } {
  const blocks = new Uint8Array(n * 18), values = new Float32Array(n * 32);
  for (let b = 0; b < n; b++) {
    const m = Math.floor(rng.next() * 1024), negative = rng.next() < 0.5;
    const d = (negative ? -1 : 1) * (1 + m / 1024) / 8;
    blocks[b * 18] = m & 255;
    blocks[b * 18 + 1] = (negative ? 0x80 : 0) | (12 << 2) | (m >> 8); // exponent 12 − 15 = −3
    const zero = Math.floor(rng.next() * 32);
    const q = Array.from({ length: 32 }, (_, j) => (j === zero ? 0 : 1 + Math.floor(rng.next() * 15)));
    for (let j = 0; j < 16; j++) blocks[b * 18 + 2 + j] = q[j]! | (q[16 + j]! << 4);
    for (let j = 0; j < 32; j++) values[b * 32 + j] = d * (q[j]! - 8);
  }
  return { blocks, values };
}

test("Q4_0 blocks kept as q4 multiply as our own q4 quantization of the same values (the layouts agree)", () => {
  const be = new WasmBackend({ threads: 2 });
  const rng = new Random(11);
  try {
    const N = 24, K = 128, M = 3;
    const { blocks, values } = q4_0Blocks(rng, (N * K) / 32);
    const fromFile = loadFromFile(be, "Q4_0", blocks, N, K, "q4");
    const ours = be.allocWeight("q4", N, K);
    be.setWeight(ours, values);
    const x = rng.fillNormal(new Float32Array(M * K), 1);
    assert.deepEqual(matmul(be, fromFile, x, M), matmul(be, ours, x, M));
  } finally {
    be.close();
  }
});

test("Q4_0 into f32 holds d·(q − 8); K-quants into f32 hold ggml's values, into q8 as our q8 of them", () => {
  const be = new WasmBackend({ threads: 1 });
  const rng = new Random(5);
  try {
    const { blocks, values } = q4_0Blocks(rng, 8);
    assert.deepEqual(be.f32(loadFromFile(be, "Q4_0", blocks, 2, 128, "f32")), values);
    for (const type of ["Q4_K", "Q5_K", "Q6_K"] as const) {
      const rows = 3, cols = 512, { bytes } = GGML_BLOCK_TYPES[type];
      const raw = new Uint8Array((rows * cols * bytes) / 256).map(() => Math.floor(rng.next() * 256));
      // f16 scales kept small and finite: the high byte of d (and dmin) below 0x3c
      for (let b = 0; b < raw.length / bytes; b++) for (const at of type === "Q6_K" ? [209] : [1, 3]) raw[b * bytes + at]! &= 0x3b;
      const want = new Float32Array(rows * cols);
      dequantizeBlocks(type, raw, want);
      assert.deepEqual(be.f32(loadFromFile(be, type, raw, rows, cols, "f32")), want, type);
      const ours = be.allocWeight("q8", rows, cols);
      be.setWeight(ours, want);
      const x = rng.fillNormal(new Float32Array(2 * cols), 1);
      assert.deepEqual(matmul(be, loadFromFile(be, type, raw, rows, cols, "q8"), x, 2), matmul(be, ours, x, 2), type);
    }
  } finally {
    be.close();
  }
});

test("a block tensor whose rows are not whole blocks is refused", () => {
  const be = new WasmBackend({ threads: 1 });
  try {
    // rows of 32 values: whole Q4_0 blocks but not a K-quant's 256
    const w = be.allocWeight("f32", 8, 32);
    assert.throws(() => be.loadWeight(w, { fd: -1, offset: 0, dtype: "Q4_K", file: "x.gguf" }), { message: "x.gguf: a Q4_K tensor's rows hold 32 values, not a multiple of 256" });
  } finally {
    be.close();
  }
});
