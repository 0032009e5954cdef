// A Q4_K_M-like GGUF file (Q4_K, Q5_K, Q6_K and Q8_0 matrices, as llama-quantize mixes them; quantized by
// ggml itself) loads with each tensor kept in its own type on the native kernels and converted to q8 on the
// wasm ones, both saying so, and the two compute the same logits within q4 tolerance. Expert bytes pulled
// from a native holder reach wasm kernels converted, never mis-read.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Backend, WeightDType } from "../kernels/backend.js";
import { GgmlType, loadGgml } from "../kernels/native/ggml.js";
import { NativeBackend } from "../kernels/native/native-backend.js";
import { WasmBackend } from "../kernels/wasm/wasm-backend.js";
import { GGML_BLOCK_TYPES, type GgmlBlockType } from "../kernels/ggml-blocks.js";
import { layoutBytes } from "../kernels/weight-layout.js";
import { LocalExpertExecutor } from "../moe/local-executor.js";
import { selectTopK } from "../policies/selection.js";
import { nativeSkip } from "../testing/backends.js";
import { ggufFile, type TestTensor } from "../testing/gguf-writer.js";
import { Random } from "../util/random.js";
import { Transformer } from "./forward.js";
import { openModel } from "./open-model.js";
import { ffnDTypeName, ffnDTypes, loadWeights, weightFromData, type ModelWeights } from "./weights.js";
import { expertWork } from "./work-shape.js";
import { relErr } from "../testing/rel-err.js";

const skip = nativeSkip();
const H = 256, F = 512, E = 2, V = 64;

type StoredType = GgmlBlockType | "F32";

/** rows × cols normal values as `type`, quantized by ggml (ggml_quantize_chunk, no importance matrix). */
function stored(rng: Random, type: StoredType, rows: number, cols: number, std: number): Uint8Array {
  const values = rng.fillNormal(new Float32Array(rows * cols), std);
  if (type === "F32") return new Uint8Array(values.buffer);
  const { values: per, bytes } = GGML_BLOCK_TYPES[type];
  const out = new Uint8Array((rows * cols / per) * bytes);
  loadGgml().f.quantizeChunk(GgmlType[type], values, out, 0, rows, cols, null);
  return out;
}

/** A one-layer Mixtral-shaped GGUF typed as llama-quantize's Q4_K_M types brown-moe (one expert's down Q6_K: a mixed FFN). */
function q4kmLike(): Uint8Array {
  const rng = new Random(14);
  const t = (name: string, dims: number[], type: StoredType, std = 0.06, data?: Uint8Array): TestTensor => {
    const cols = dims[0]!, rows = dims.slice(1).reduce((a, b) => a * b, 1);
    const bytes = data ?? stored(rng, type, rows, cols, std);
    return { name, dims, type: type === "F32" ? 0 : GgmlType[type], bytes: bytes.length, data: bytes };
  };
  const ones = (n: number) => new Uint8Array(new Float32Array(n).fill(1).buffer);
  const u32 = (v: number): [number, unknown] => [4, v];
  return ggufFile(
    [
      ["general.architecture", [8, "llama"]],
      ["llama.embedding_length", u32(H)], ["llama.feed_forward_length", u32(F)], ["llama.block_count", u32(1)],
      ["llama.attention.head_count", u32(2)], ["llama.attention.head_count_kv", u32(1)], ["llama.context_length", u32(64)],
      ["llama.attention.layer_norm_rms_epsilon", [6, 1e-5]], ["llama.rope.freq_base", [6, 10000]],
      ["llama.expert_count", u32(E)], ["llama.expert_used_count", u32(2)],
      ["tokenizer.ggml.tokens", [9, [8, Array.from({ length: V }, (_, i) => `t${i}`)]]],
    ],
    [
      t("token_embd.weight", [H, V], "Q4_K", 1), t("output_norm.weight", [H], "F32", 0, ones(H)), t("output.weight", [H, V], "Q6_K"),
      t("blk.0.attn_norm.weight", [H], "F32", 0, ones(H)), t("blk.0.ffn_norm.weight", [H], "F32", 0, ones(H)), t("blk.0.ffn_gate_inp.weight", [H, E], "F32"),
      t("blk.0.attn_q.weight", [H, H], "Q4_K"), t("blk.0.attn_k.weight", [H, H / 2], "Q8_0"), t("blk.0.attn_v.weight", [H, H / 2], "Q8_0"),
      t("blk.0.attn_output.weight", [H, H], "Q5_K"),
      t("blk.0.ffn_gate_exps.weight", [H, F, E], "Q4_K"), t("blk.0.ffn_up_exps.weight", [H, F, E], "Q4_K"), t("blk.0.ffn_down_exps.weight", [F, H, E], "Q6_K"),
    ],
  );
}

/** The file loaded into `be` at its default dtype, the load log's summary, and the logits of `tokens`. */
async function run(file: string, be: Backend, tokens: number[]): Promise<{ kept: string; weights: ModelWeights; logits: Float32Array }> {
  const m = openModel(file);
  try {
    let kept = "";
    const weights = loadWeights(be, m.store, m.config, { dtype: m.dtype, keepFileTypes: m.keepFileTypes, onKept: (s) => (kept = s) });
    const executor = new LocalExpertExecutor(be, weights.layers.map((l) => l.experts), m.config.hidden);
    const model = new Transformer(be, m.config, weights, { policy: selectTopK, executor }, 64);
    const cache = model.newSequence(64);
    const [logits] = await model.forward([{ cache, tokens, logits: "all" }]);
    cache.free();
    return { kept, weights, logits: logits!.slice() };
  } finally {
    m.store.close();
  }
}

test("a Q4_K_M-like GGUF: each type kept on native (Q4_K, Q5_K, Q6_K, Q8_0 as they are), q8 on wasm, the same logits within q4 tolerance", { skip }, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-kquants-"));
  const native = new NativeBackend({ threads: 2 }), wasm = new WasmBackend({ threads: 2 });
  try {
    const file = path.join(dir, "q4km.gguf");
    writeFileSync(file, q4kmLike());
    const m = openModel(file);
    m.store.close();
    assert.equal(m.dtype, "q4_k", "a file mostly Q4_K opens as q4_k");
    const tokens = [1, 5, 9, 33, 2, 60, 17, 4];
    const n = await run(file, native, tokens), w = await run(file, wasm, tokens);
    assert.equal(n.kept, "Q4_K blocks kept as q4_k (6 tensors), F32 kept as f32 (4 tensors), Q6_K blocks kept as q6_k (3 tensors), Q8_0 blocks kept as q8 (2 tensors), Q5_K blocks kept as q5_k (1 tensor)");
    assert.equal(w.kept, "Q4_K dequantized and requantized to q8 (6 tensors), F32 kept as f32 (4 tensors), Q6_K dequantized and requantized to q8 (3 tensors), Q8_0 blocks kept as q8 (2 tensors), Q5_K dequantized and requantized to q8 (1 tensor)");
    const expert = n.weights.layers[0]!.experts[0]!;
    assert.deepEqual([expert.gate.dtype, expert.up.dtype, expert.down.dtype], ["q4_k", "q4_k", "q6_k"], "a mixed FFN stays mixed");
    assert.equal(ffnDTypeName(expert), "q4_k/q4_k/q6_k");
    // the untied embedding table, only looked up by rows, stays in the file's layout (ggml_get_rows reads it)
    assert.equal(n.weights.embed.dtype, "q4_k");
    assert.equal(native.isRepacked(n.weights.embed), false);
    assert.equal(native.isRepacked(expert.gate), true, "the products' Q4_K is repacked");
    const err = relErr(n.logits, w.logits);
    t.diagnostic(`native vs wasm logits: relative error ${err.toExponential(2)}`);
    // measured 1.7e-2 (activations quantized to Q8_K against q8 ones, over random weights); a mis-read block gives ~1
    assert.ok(err < 0.03, `native (K-quants as they are) vs wasm (q8): relative logit error ${err}`);

    // an explicit dtype still wins over the file's types
    const asked = openModel(file);
    try {
      let kept = "";
      loadWeights(native, asked.store, asked.config, { dtype: "q8", onKept: (s) => (kept = s) });
      assert.match(kept, /^Q4_K dequantized and requantized to q8 \(6 tensors\)/);
    } finally {
      asked.store.close();
    }
  } finally {
    native.close();
    wasm.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("K-quant and f16 expert bytes from a native holder: kept as they are by native kernels, converted (q8, f32) by wasm ones, the same products", { skip }, () => {
  const native = new NativeBackend({ threads: 1 }), wasm = new WasmBackend({ threads: 1 });
  const rng = new Random(5);
  try {
    const values = rng.fillNormal(new Float32Array(16 * 512), 0.1), x = rng.fillNormal(new Float32Array(3 * 512), 1);
    for (const [dtype, nearest] of [["q4_k", "q8"], ["q5_k", "q8"], ["q6_k", "q8"], ["f16", "f32"]] as Array<[WeightDType, WeightDType]>) {
      assert.equal(wasm.supportsWeight(dtype, 512), false, `wasm does not hold ${dtype}`);
      assert.throws(() => wasm.allocWeight(dtype, 16, 512), /cannot hold/);
      const src = native.allocWeight(dtype, 16, 512);
      native.setWeight(src, values);
      const data = native.weightData(src);
      assert.equal(data.length, layoutBytes(dtype, 16, 512));
      const onNative = weightFromData(native, dtype, 16, 512, data), onWasm = weightFromData(wasm, dtype, 16, 512, data);
      assert.equal(onNative.dtype, dtype);
      assert.deepEqual(native.weightData(onNative), data, "native takes the bytes as they are");
      assert.equal(onWasm.dtype, nearest, "wasm converts to its nearest dtype");
      const y = [native, wasm].map((be, i) => {
        const xt = be.alloc(x.length * 4), yt = be.alloc(3 * 16 * 4);
        be.f32(xt).set(x);
        be.matmul(yt, xt, i === 0 ? onNative : onWasm, 3);
        return be.f32(yt).slice();
      });
      // q8 requantization (K-quants), activations rounded to f16 by ggml (f16)
      assert.ok(relErr(y[1]!, y[0]!) < (nearest === "q8" ? 0.02 : 2e-3), `${dtype}: ${relErr(y[1]!, y[0]!)}`);
      assert.throws(() => weightFromData(wasm, dtype, 16, 512, data.subarray(1)), /bytes for a 16×512/);
    }
    assert.deepEqual(ffnDTypes("q4_k/q4_k/q6_k"), ["q4_k", "q4_k", "q6_k"]);
    assert.deepEqual(ffnDTypes("q8"), ["q8", "q8", "q8"]);
    assert.throws(() => ffnDTypes("q4_k/q9"), /is not one of/);
  } finally {
    native.close();
    wasm.close();
  }
});

test("cost models size the K-quants at their bits per weight (Q4_K 4.5, Q5_K 5.5, Q6_K 6.5625)", () => {
  const dims = { hidden: 4096, heads: 32, kvHeads: 8, headDim: 128, experts: 8, expertFfn: 14336, sharedExpertFfn: 0, denseFfn: 0, vocabSize: 32000, sparseLayers: [true] };
  const weights = 3 * 4096 * 14336;
  for (const [dtype, bits] of [["q4_k", 4.5], ["q5_k", 5.5], ["q6_k", 6.5625]] as const) assert.equal(expertWork(dims, dtype).weightBytes, (weights * bits) / 8, dtype);
});
