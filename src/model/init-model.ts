// Writes a small random model in Hugging Face layout for any architecture in arch.ts: config.json,
// safetensors (one file or shards with an index), tokenizer.json and tokenizer_config.json. Used by
// tests (checked against a float64 reference), by benchmarks (large memory-bound models) and as the
// README's model when ../shared is absent. The config and tensor list come from the same table and
// plan that the loader reads, so what is written is what the engine expects.
import { mkdirSync, writeFileSync, openSync, writeSync, closeSync } from "node:fs";
import path from "node:path";
import { findArchitecture, supportedArchitectures } from "./arch.js";
import { parseModelConfig } from "./config.js";
import { planTensors, type TensorSpec } from "./weights.js";
import { safetensorsHeader } from "./safetensors.js";
import { byteLevelTokenizerJson, BYTE_TOKENIZER_VOCAB, SIMPLE_CHAT_TEMPLATE } from "./byte-tokenizer.js";
import { Random } from "../util/random.js";
import { bf16Bits, f16Bits } from "./ggml-encode.js";

export type FileDType = "f32" | "bf16" | "f16";

export interface InitModelOptions {
  arch: string;
  out: string;
  layers?: number;
  hidden?: number;
  heads?: number;
  kvHeads?: number;
  headDim?: number;
  experts?: number;
  topK?: number;
  ffn?: number;
  sharedFfn?: number;
  denseFfn?: number;
  /** Layers with a dense MLP instead of experts (architectures that allow it). */
  denseLayers?: number[];
  vocab?: number;
  normTopK?: boolean;
  attentionBias?: boolean;
  clipQkv?: number;
  tieEmbeddings?: boolean;
  maxPositions?: number;
  ropeTheta?: number;
  fileDType?: FileDType;
  shards?: number;
  seed?: number;
  onProgress?: (done: number, total: number) => void;
}

export function modelConfigJson(o: InitModelOptions): Record<string, unknown> {
  const arch = findArchitecture(o.arch);
  if (!arch) throw new Error(`architecture ${o.arch} is not supported; supported: ${supportedArchitectures()}`);
  const hidden = o.hidden ?? 64, heads = o.heads ?? 4;
  const ffn = o.ffn ?? 2 * hidden;
  const c: Record<string, unknown> = {
    architectures: [arch.name],
    model_type: arch.modelType,
    vocab_size: Math.max(o.vocab ?? BYTE_TOKENIZER_VOCAB, BYTE_TOKENIZER_VOCAB),
    hidden_size: hidden,
    num_hidden_layers: o.layers ?? 2,
    num_attention_heads: heads,
    num_key_value_heads: o.kvHeads ?? Math.max(1, heads / 2),
    head_dim: o.headDim ?? hidden / heads,
    max_position_embeddings: o.maxPositions ?? 512,
    rms_norm_eps: 1e-6,
    rope_theta: o.ropeTheta ?? 10000,
    num_experts_per_tok: o.topK ?? 2,
    tie_word_embeddings: o.tieEmbeddings ?? false,
    hidden_act: "silu",
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: o.fileDType === "f32" ? "float32" : o.fileDType === "f16" ? "float16" : "bfloat16",
    [arch.keys.experts]: o.experts ?? 4,
    [arch.keys.expertFfn]: ffn,
  };
  if (typeof arch.normTopK === "object") c[arch.normTopK.key] = o.normTopK ?? arch.normTopK.default;
  if (arch.sharedExpert) c.shared_expert_intermediate_size = o.sharedFfn ?? 2 * ffn;
  if (arch.denseLayers) {
    c.decoder_sparse_step = 1;
    c.mlp_only_layers = o.denseLayers ?? [];
    if (arch.keys.expertFfn !== "intermediate_size") c.intermediate_size = o.denseFfn ?? 2 * ffn;
  } else if (o.denseLayers?.length) throw new Error(`${arch.name} has no dense layers`);
  if (arch.qkvBias === "attention_bias") c.attention_bias = o.attentionBias ?? false;
  if (o.clipQkv !== undefined) c.clip_qkv = o.clipQkv;
  return c;
}

function encode(values: Float32Array, dtype: FileDType): Uint8Array {
  if (dtype === "f32") return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const out = new Uint16Array(values.length);
  const u = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) out[i] = dtype === "bf16" ? bf16Bits(u[i]!) : f16Bits(values[i]!);
  return new Uint8Array(out.buffer);
}

/** Random values for a tensor: norms near 1, biases small, matrices scaled by 1/sqrt(fan-in). */
function initValues(spec: TensorSpec, rng: Random): Float32Array {
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  if (spec.role === "vector") {
    const isNorm = /norm/.test(spec.name);
    for (let i = 0; i < n; i++) v[i] = isNorm ? 1 + 0.1 * rng.normal() : 0.1 * rng.normal();
    return v;
  }
  const fanIn = spec.shape[spec.shape.length - 1]!;
  // routers get a larger scale so that routing is decisive and varies between tokens
  return rng.fillNormal(v, (spec.role === "router" ? 2 : 1) / Math.sqrt(fanIn));
}

export function initModel(o: InitModelOptions): void {
  const configJson = modelConfigJson(o);
  const cfg = parseModelConfig(configJson, "generated config");
  const fileDType = o.fileDType ?? "bf16";
  const specs = planTensors(cfg, cfg.tieEmbeddings).specs;
  const rng = new Random(o.seed ?? 0);
  mkdirSync(o.out, { recursive: true });
  writeFileSync(path.join(o.out, "config.json"), JSON.stringify(configJson, null, 2) + "\n");
  writeFileSync(path.join(o.out, "generation_config.json"), JSON.stringify({ bos_token_id: 1, eos_token_id: 2 }, null, 2) + "\n");
  writeFileSync(path.join(o.out, "tokenizer.json"), JSON.stringify(byteLevelTokenizerJson()));
  writeFileSync(
    path.join(o.out, "tokenizer_config.json"),
    JSON.stringify({ bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>", add_bos_token: true, model_max_length: cfg.maxPositions, chat_template: SIMPLE_CHAT_TEMPLATE }, null, 2) + "\n",
  );

  const shards = Math.max(1, Math.min(o.shards ?? 1, specs.length));
  const per = Math.ceil(specs.length / shards);
  const weightMap: Record<string, string> = {};
  const bytesPer = fileDType === "f32" ? 4 : 2;
  const total = specs.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1) * bytesPer, 0);
  let done = 0;
  for (let s = 0; s < shards; s++) {
    const file = shards === 1 ? "model.safetensors" : `model-${String(s + 1).padStart(5, "0")}-of-${String(shards).padStart(5, "0")}.safetensors`;
    const group = specs.slice(s * per, (s + 1) * per);
    const dtype = fileDType === "f32" ? "F32" : fileDType === "bf16" ? "BF16" : "F16";
    const fd = openSync(path.join(o.out, file), "w");
    try {
      writeSync(fd, safetensorsHeader(group.map((spec) => ({ name: spec.name, dtype, shape: spec.shape })), { format: "pt" }));
      for (const spec of group) {
        weightMap[spec.name] = file;
        const data = encode(initValues(spec, rng), fileDType);
        writeSync(fd, data);
        done += data.length;
        o.onProgress?.(done, total);
      }
    } finally {
      closeSync(fd);
    }
  }
  if (shards > 1) {
    writeFileSync(path.join(o.out, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + "\n");
  }
}
