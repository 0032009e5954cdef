// A GGUF file as llama.cpp's converter writes it, seen as a Hugging Face checkpoint: the ModelConfig from
// its metadata, its tensors under the names the architecture table (arch.ts) gives, with the q/k row
// permutation undone and the merged 3-D expert tensors split per expert, and its own tokenizer.
import { findGgufArchitecture, tensorName, ARCHITECTURES, type ArchSpec, type TensorNames } from "./arch.js";
import type { StoredTensor, TensorStore } from "./checkpoint.js";
import { parseModelConfig, type ModelConfig } from "./config.js";
import { GgufFile, type GgufTensorInfo, type GgufValue } from "./gguf.js";
import { ggufTokenizer } from "./gguf-tokenizer.js";
import { TextTokenizer } from "./tokenizer.js";

export function isGgufPath(p: string): boolean {
  return p.toLowerCase().endsWith(".gguf");
}

/** A float32 metadata value as the shortest decimal that is the same float32 (1e-5, not 9.99999974e-6). */
function shortestF32(x: number): number {
  for (let digits = 1; digits <= 17; digits++) {
    const y = Number(x.toPrecision(digits));
    if (Math.fround(y) === x) return y;
  }
  return x;
}

export class GgufModel implements TensorStore {
  readonly config: ModelConfig;
  readonly arch: ArchSpec;
  private readonly index = new Map<string, StoredTensor>();

  private constructor(private readonly file: GgufFile) {
    const meta = file.header.metadata;
    const fail = (msg: string): never => {
      throw new Error(`${file.path}: ${msg}`);
    };
    const archName = meta.get("general.architecture");
    const readable = ARCHITECTURES.flatMap((a) => (a.gguf ? [`${a.gguf.arch} (${a.name})`] : [])).join(", ");
    if (typeof archName !== "string") fail(`no general.architecture; GGUF architectures read: ${readable}`);
    const arch = findGgufArchitecture(archName as string);
    if (!arch?.gguf) fail(`GGUF architecture ${JSON.stringify(archName)} is not supported; GGUF architectures read: ${readable}`);
    if (meta.get(`${archName}.expert_count`) === undefined) fail(`no ${archName}.expert_count: a dense ${archName} model, not a mixture of experts`);
    this.arch = arch!;
    this.config = parseModelConfig(ggufHfConfig(meta, this.arch, file.tensors, fail), file.path);
    this.indexTensors();
  }

  static open(path: string): GgufModel {
    const file = GgufFile.open(path);
    try {
      return new GgufModel(file);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  get dir(): string {
    return this.file.path;
  }

  /** The file's own tensors (merged experts counted once), by GGUF type. */
  tensorTypes(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const t of this.file.tensors.values()) out[t.type] = (out[t.type] ?? 0) + 1;
    return out;
  }

  tokenizer(): TextTokenizer {
    const { json, config } = ggufTokenizer(this.file.header.metadata, this.file.path);
    return TextTokenizer.fromJson(json, config, this.file.path);
  }

  get(name: string): StoredTensor | undefined {
    return this.index.get(name);
  }

  names(): IterableIterator<string> {
    return this.index.keys();
  }

  close(): void {
    this.file.close();
  }

  private indexTensors(): void {
    const cfg = this.config, spec = this.arch.gguf!;
    const fd = { path: this.file.path, get fd() { return file.fd; } };
    const file = this.file;
    // the converter squeezes size-1 dimensions away: the shared-expert gate, [1, hidden], is written 1-D
    const hfShape = (t: GgufTensorInfo, key?: keyof TensorNames) => (key === "sharedExpertGate" && t.dims.length === 1 ? [1, t.dims[0]!] : [...t.dims].reverse());
    for (const [key, ggufTemplate] of Object.entries(spec.tensors) as Array<[keyof TensorNames, string]>) {
      const hfTemplate = this.arch.tensors[key]!;
      const perLayer = hfTemplate.includes("{l}"), perExpert = hfTemplate.includes("{e}");
      for (let l = 0; l < (perLayer ? cfg.layers : 1); l++) {
        const t = this.file.tensors.get(tensorName(ggufTemplate, l));
        if (!perExpert && BIASED.has(key)) {
          const bias = this.file.tensors.get(tensorName(ggufTemplate, l).replace(/\.weight$/, ".bias"));
          if (bias && spec.permutesQK && (key === "q" || key === "k")) throw new Error(`${this.file.path}: tensor ${bias.name}: biases of permuted q/k projections are not supported`);
          if (bias) this.index.set(tensorName(hfTemplate, l).replace(/\.weight$/, ".bias"), { name: bias.name, dtype: bias.type, shape: hfShape(bias), offset: bias.offset, bytes: bias.bytes, file: fd });
        }
        if (!t) continue; // reported, with the name the architecture needs, by the loader
        if (!perExpert) {
          const rowOrder = spec.permutesQK && (key === "q" || key === "k") ? unpermuteQK(key === "q" ? cfg.heads : cfg.kvHeads, cfg.headDim) : undefined;
          this.index.set(tensorName(hfTemplate, l), { name: t.name, dtype: t.type, shape: hfShape(t, key), offset: t.offset, bytes: t.bytes, file: fd, rowOrder });
          continue;
        }
        // merged experts [E][rows][cols] (ggml dims [cols, rows, E]): expert e is the e-th slice
        if (t.dims.length !== 3 || t.dims[2] !== cfg.experts) throw new Error(`${this.file.path}: tensor ${t.name} has dimensions [${t.dims.join(", ")}], not [cols, rows, ${cfg.experts}]`);
        const bytes = t.bytes / cfg.experts;
        for (let e = 0; e < cfg.experts; e++) {
          this.index.set(tensorName(hfTemplate, l, e), { name: `${t.name}[${e}]`, dtype: t.type, shape: hfShape(t).slice(1), offset: t.offset + e * bytes, bytes, file: fd });
        }
      }
    }
  }
}

/** The projections that may carry a bias (the weight's name with .bias, in either naming). */
const BIASED: ReadonlySet<keyof TensorNames> = new Set(["q", "k", "v", "o"]);

/**
 * Row r of the Hugging Face q (or k) projection is row rowOrder[r] of the GGUF one: the converter turns
 * each head's rotate-half layout (first half, second half) into interleaved pairs (0, half, 1, half+1 …).
 */
function unpermuteQK(heads: number, headDim: number): Int32Array {
  const half = headDim / 2;
  const order = new Int32Array(heads * headDim);
  for (let h = 0; h < heads; h++) for (let j = 0; j < 2; j++) for (let i = 0; i < half; i++) order[h * headDim + j * half + i] = h * headDim + 2 * i + j;
  return order;
}

const quotient = (a: unknown, b: unknown): number | undefined => (typeof a === "number" && typeof b === "number" && b > 0 ? Math.floor(a / b) : undefined);

/** The config.json that the GGUF metadata stands for, to be validated as any config.json is. */
function ggufHfConfig(meta: ReadonlyMap<string, GgufValue>, arch: ArchSpec, tensors: ReadonlyMap<string, GgufTensorInfo>, fail: (msg: string) => never): Record<string, unknown> {
  const hasLmHead = tensors.has(arch.gguf!.tensors.lmHead!);
  const a = arch.gguf!.arch;
  const get = (key: string): unknown => {
    const v = meta.get(`${a}.${key}`);
    return typeof v === "bigint" ? Number(v) : v;
  };
  const f32 = (key: string): unknown => {
    const v = get(key);
    return typeof v === "number" ? shortestF32(v) : v;
  };
  const tokenId = (key: string): unknown => meta.get(`tokenizer.ggml.${key}`);
  const tokens = meta.get("tokenizer.ggml.tokens");
  const scaling = get("rope.scaling.type");
  if (scaling !== undefined && scaling !== "none") fail(`${a}.rope.scaling.type ${JSON.stringify(scaling)} is not supported (only plain rotary embeddings)`);
  const headDim = get("attention.key_length") ?? (typeof get("embedding_length") === "number" && typeof get("attention.head_count") === "number" ? (get("embedding_length") as number) / (get("attention.head_count") as number) : undefined);
  const rotary = get("rope.dimension_count");
  if (rotary !== undefined && rotary !== headDim) fail(`${a}.rope.dimension_count ${String(rotary)} differs from the head size ${String(headDim)} (partial rotary embeddings are not supported)`);
  if (get("attention.value_length") !== undefined && get("attention.value_length") !== headDim) fail(`${a}.attention.value_length differs from attention.key_length`);
  const spec = arch.gguf!;
  const biased = (key: "q" | "o") => tensors.has(tensorName(spec.tensors[key]!, 0).replace(/\.weight$/, ".bias"));
  return {
    ...spec.fixedConfig,
    architectures: [arch.name],
    vocab_size: get("vocab_size") ?? (Array.isArray(tokens) ? tokens.length : undefined),
    hidden_size: get("embedding_length"),
    // llama.cpp's qwen2moe/qwen3moe read the experts' size from expert_feed_forward_length, llama and olmoe from feed_forward_length
    intermediate_size: get("feed_forward_length"),
    // without the expert sizes (files from before the converter wrote them) llama.cpp's qwen2moe/qwen3moe take
    // feed_forward_length / expert_used_count for an expert and feed_forward_length for the shared one
    [arch.keys.expertFfn]: get("expert_feed_forward_length") ?? (arch.keys.expertFfn === "intermediate_size" ? get("feed_forward_length") : quotient(get("feed_forward_length"), get("expert_used_count"))),
    shared_expert_intermediate_size: get("expert_shared_feed_forward_length") ?? get("feed_forward_length"),
    attention_bias: arch.qkvBias === "attention_bias" ? biased("q") || biased("o") : undefined,
    num_hidden_layers: get("block_count"),
    num_attention_heads: get("attention.head_count"),
    num_key_value_heads: get("attention.head_count_kv"),
    head_dim: headDim,
    max_position_embeddings: get("context_length"),
    rms_norm_eps: f32("attention.layer_norm_rms_epsilon"),
    rope_theta: f32("rope.freq_base"),
    [arch.keys.experts]: get("expert_count"),
    num_experts_per_tok: get("expert_used_count"),
    tie_word_embeddings: !hasLmHead,
    bos_token_id: tokenId("bos_token_id"),
    eos_token_id: tokenId("eos_token_id"),
  };
}
