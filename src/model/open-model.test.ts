// The in-memory dtype a model opens with unless one is asked for: a GGUF file's own type where the
// kernels have it, f32 for a directory; device paths refuse a GGUF file.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ggufFile, type TestTensor } from "../testing/gguf-writer.js";
import { sharedPath } from "../testing/shared.js";
import { openModel } from "./open-model.js";
import { loadWeights } from "./weights.js";
import { WasmBackend } from "../kernels/wasm/wasm-backend.js";

// ggml type ids, and values and bytes per block
const TYPES: Record<string, [id: number, values: number, bytes: number]> = {
  F32: [0, 1, 4], F16: [1, 1, 2], Q4_0: [2, 32, 18], Q8_0: [8, 32, 34], Q4_K: [12, 256, 144], Q5_K: [13, 256, 176], Q6_K: [14, 256, 210], BF16: [30, 1, 2],
};

/** A one-layer Mixtral-shaped GGUF whose matrices are stored as `type` (norms and router F32), rows whole blocks. */
function tinyGguf(type: string): Uint8Array {
  const block = TYPES[type]![1];
  const H = Math.max(64, block), F = Math.max(32, block), E = 2, V = 8;
  const t = (name: string, dims: number[], ty: string): TestTensor => {
    const [id, values, bytes] = TYPES[ty]!;
    return { name, dims, type: id, bytes: (dims.reduce((a, b) => a * b, 1) / values) * bytes };
  };
  const u32 = (v: number): [number, unknown] => [4, v];
  return ggufFile(
    [
      ["general.architecture", [8, "llama"]],
      ["llama.embedding_length", u32(H)], ["llama.feed_forward_length", u32(F)], ["llama.block_count", u32(1)],
      ["llama.attention.head_count", u32(2)], ["llama.attention.head_count_kv", u32(2)], ["llama.context_length", u32(64)],
      ["llama.attention.layer_norm_rms_epsilon", [6, 1e-5]], ["llama.rope.freq_base", [6, 10000]],
      ["llama.expert_count", u32(E)], ["llama.expert_used_count", u32(1)],
      ["tokenizer.ggml.tokens", [9, [8, Array.from({ length: V }, (_, i) => `t${i}`)]]],
    ],
    [
      t("token_embd.weight", [H, V], type), t("output_norm.weight", [H], "F32"), t("output.weight", [H, V], type),
      t("blk.0.attn_norm.weight", [H], "F32"), t("blk.0.ffn_norm.weight", [H], "F32"), t("blk.0.ffn_gate_inp.weight", [H, E], "F32"),
      ...["q", "k", "v", "output"].map((n) => t(`blk.0.attn_${n}.weight`, [H, H], type)),
      t("blk.0.ffn_gate_exps.weight", [H, F, E], type), t("blk.0.ffn_up_exps.weight", [H, F, E], type), t("blk.0.ffn_down_exps.weight", [F, H, E], type),
    ],
  );
}

test("a GGUF file opens as its own type (Q8_0 → q8, Q4_0 → q4, Q4_K → q4_k …, BF16 → bf16, F16 → f16, F32 → f32), each tensor kept in its type", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-open-"));
  try {
    for (const [type, dtype] of [["Q8_0", "q8"], ["Q4_0", "q4"], ["BF16", "bf16"], ["F32", "f32"], ["F16", "f16"], ["Q4_K", "q4_k"], ["Q5_K", "q5_k"], ["Q6_K", "q6_k"]] as const) {
      const file = path.join(dir, `${type}.gguf`);
      writeFileSync(file, tinyGguf(type));
      const m = openModel(file);
      try {
        assert.equal(m.fileType, type);
        assert.equal(m.dtype, dtype, type);
        assert.equal(m.keepFileTypes, true);
        assert.equal(m.dtypeReason, `the file's own type, ${type}`);
        assert.deepEqual(m.store.tensorTypes(), type === "F32" ? { F32: 13 } : { [type]: 9, F32: 4 });
      } finally {
        m.store.close();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the load log on wasm says how each stored type was kept (experts counted one by one): Q4_0 blocks as q4, K-quants dequantized and requantized to q8", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-open-"));
  const be = new WasmBackend({ threads: 1 });
  try {
    for (const [type, dtype, said] of [
      ["Q4_0", undefined, "Q4_0 blocks kept as q4 (12 tensors), F32 kept as f32 (4 tensors)"],
      ["Q4_0", "f32", "Q4_0 dequantized to f32 (12 tensors), F32 kept as f32 (4 tensors)"],
      ["Q4_0", "q8", "Q4_0 dequantized and requantized to q8 (12 tensors), F32 kept as f32 (4 tensors)"],
      ["Q4_K", undefined, "Q4_K dequantized and requantized to q8 (12 tensors), F32 kept as f32 (4 tensors)"],
      ["Q6_K", "bf16", "Q6_K dequantized to bf16 (12 tensors), F32 kept as f32 (4 tensors)"],
      ["Q5_K", "q5_k", "Q5_K dequantized and requantized to q8 (12 tensors), F32 kept as f32 (4 tensors)"],
    ] as const) {
      const file = path.join(dir, `${type}.gguf`);
      writeFileSync(file, tinyGguf(type));
      const m = openModel(file);
      try {
        let kept = "";
        loadWeights(be, m.store, m.config, { dtype: dtype ?? m.dtype, keepFileTypes: dtype === undefined && m.keepFileTypes, onKept: (s) => (kept = s) });
        assert.equal(kept, said);
      } finally {
        m.store.close();
      }
    }
  } finally {
    be.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

const HF = sharedPath("models/brown-moe");
test("a directory opens as f32, whatever its files store", { skip: HF.skip }, () => {
  const m = openModel(HF.path);
  try {
    assert.equal(m.fileType, "BF16");
    assert.equal(m.dtype, "f32");
  } finally {
    m.store.close();
  }
});
