// Architectures as data, after llama.cpp's llama-arch.cpp: one table entry per Hugging Face
// architecture naming its tensors and its variant switches. The forward pass (forward.ts) is shared;
// adding an architecture means adding an entry here and, if it brings a new variant, one switch there.

/** Tensor names; {l} is the layer index, {e} the expert index. */
export interface TensorNames {
  embed: string;
  outputNorm: string;
  lmHead: string;
  attnNorm: string;
  q: string;
  k: string;
  v: string;
  o: string;
  /** Bias names are the weight names with .bias: q/k/v/o biases are switched per architecture. */
  qNorm?: string;
  kNorm?: string;
  ffnNorm: string;
  router: string;
  expertGate: string;
  expertUp: string;
  expertDown: string;
  sharedGate?: string;
  sharedUp?: string;
  sharedDown?: string;
  sharedExpertGate?: string;
  denseGate?: string;
  denseUp?: string;
  denseDown?: string;
}

export type QKNorm = "none" | "full" | "per-head";

/**
 * How llama.cpp's converter (convert_hf_to_gguf.py) writes an architecture: its GGUF name (the prefix of
 * its metadata keys), its tensor names (the experts of a layer merged into one 3-D tensor, so {e} is
 * absent there) and whether q/k rows are permuted for llama.cpp's interleaved rotary pairs.
 */
export interface GgufSpec {
  readonly arch: string;
  /** GGUF names; a q/k/v/o bias is the weight's name with .bias, as in Hugging Face. */
  readonly tensors: Partial<Record<keyof TensorNames, string>>;
  readonly permutesQK: boolean;
  /** The order in which the converter writes a layer's merged expert tensors. */
  readonly expertOrder: readonly ExpertTensor[];
  /** config.json values that llama.cpp fixes for the architecture rather than reading from metadata. */
  readonly fixedConfig?: Readonly<Record<string, unknown>>;
  /** The RMSNorm epsilon the converter writes whatever config.json says (OlmoeModel: 1e-5). */
  readonly writesRmsEps?: number;
  /** llama.cpp sizes k's norm by the hidden size (olmoe): key/value heads must be as many as query heads. */
  readonly kvHeadsAreHeads?: boolean;
}

export type ExpertTensor = "expertGate" | "expertUp" | "expertDown";

export interface ArchSpec {
  /** config.json `architectures[0]` */
  readonly name: string;
  readonly modelType: string;
  readonly tensors: TensorNames;
  /** Where each quantity is in config.json (names differ between families). */
  readonly keys: { experts: string; expertFfn: string };
  /** q/k RMSNorm: over the whole projection (OLMoE) or per head (Qwen3-MoE). */
  readonly qkNorm: QKNorm;
  /** q, k, v biases: fixed for the architecture, or from config `attention_bias`. */
  readonly qkvBias: boolean | "attention_bias";
  readonly oBias: boolean | "attention_bias";
  /** Renormalise the top-k weights: always (Mixtral) or from config `norm_topk_prob`. */
  readonly normTopK: boolean | { key: string; default: boolean };
  /** Shared expert with a sigmoid gate beside the routed ones (Qwen2-MoE). */
  readonly sharedExpert: boolean;
  /** Layers may be dense MLPs (mlp_only_layers, decoder_sparse_step). */
  readonly denseLayers: boolean;
  /** As GGUF (absent: GGUF files of this architecture are not read yet). */
  readonly gguf?: GgufSpec;
}

const QWEN_MLP = {
  router: "model.layers.{l}.mlp.gate.weight",
  expertGate: "model.layers.{l}.mlp.experts.{e}.gate_proj.weight",
  expertUp: "model.layers.{l}.mlp.experts.{e}.up_proj.weight",
  expertDown: "model.layers.{l}.mlp.experts.{e}.down_proj.weight",
  denseGate: "model.layers.{l}.mlp.gate_proj.weight",
  denseUp: "model.layers.{l}.mlp.up_proj.weight",
  denseDown: "model.layers.{l}.mlp.down_proj.weight",
};

const QK_NORM = {
  qNorm: "model.layers.{l}.self_attn.q_norm.weight",
  kNorm: "model.layers.{l}.self_attn.k_norm.weight",
};

// llama.cpp's tensor names (gguf-py constants.py TENSOR_NAMES, llama-arch.cpp)
const GGUF_BODY = {
  embed: "token_embd.weight",
  outputNorm: "output_norm.weight",
  lmHead: "output.weight",
  attnNorm: "blk.{l}.attn_norm.weight",
  q: "blk.{l}.attn_q.weight",
  k: "blk.{l}.attn_k.weight",
  v: "blk.{l}.attn_v.weight",
  o: "blk.{l}.attn_output.weight",
  ffnNorm: "blk.{l}.ffn_norm.weight",
  router: "blk.{l}.ffn_gate_inp.weight",
  expertGate: "blk.{l}.ffn_gate_exps.weight",
  expertUp: "blk.{l}.ffn_up_exps.weight",
  expertDown: "blk.{l}.ffn_down_exps.weight",
};

const GGUF_QK_NORM = { qNorm: "blk.{l}.attn_q_norm.weight", kNorm: "blk.{l}.attn_k_norm.weight" };

// Qwen2MoeModel / OlmoeModel in convert_hf_to_gguf.py merge down_proj, gate_proj, up_proj in that order
const QWEN_EXPERT_ORDER: readonly ExpertTensor[] = ["expertDown", "expertGate", "expertUp"];

const LLAMA_BODY = {
  embed: "model.embed_tokens.weight",
  outputNorm: "model.norm.weight",
  lmHead: "lm_head.weight",
  attnNorm: "model.layers.{l}.input_layernorm.weight",
  q: "model.layers.{l}.self_attn.q_proj.weight",
  k: "model.layers.{l}.self_attn.k_proj.weight",
  v: "model.layers.{l}.self_attn.v_proj.weight",
  o: "model.layers.{l}.self_attn.o_proj.weight",
  ffnNorm: "model.layers.{l}.post_attention_layernorm.weight",
};

export const ARCHITECTURES: readonly ArchSpec[] = [
  {
    name: "MixtralForCausalLM",
    modelType: "mixtral",
    tensors: {
      ...LLAMA_BODY,
      router: "model.layers.{l}.block_sparse_moe.gate.weight",
      expertGate: "model.layers.{l}.block_sparse_moe.experts.{e}.w1.weight",
      expertUp: "model.layers.{l}.block_sparse_moe.experts.{e}.w3.weight",
      expertDown: "model.layers.{l}.block_sparse_moe.experts.{e}.w2.weight",
    },
    keys: { experts: "num_local_experts", expertFfn: "intermediate_size" },
    qkNorm: "none",
    qkvBias: false,
    oBias: false,
    normTopK: true,
    sharedExpert: false,
    denseLayers: false,
    // Mixtral is written as "llama" with experts (LlamaModel: w1, w2, w3 merged in that order)
    gguf: { arch: "llama", tensors: GGUF_BODY, permutesQK: true, expertOrder: ["expertGate", "expertDown", "expertUp"] },
  },
  {
    name: "Qwen2MoeForCausalLM",
    modelType: "qwen2_moe",
    tensors: {
      ...LLAMA_BODY,
      ...QWEN_MLP,
      sharedGate: "model.layers.{l}.mlp.shared_expert.gate_proj.weight",
      sharedUp: "model.layers.{l}.mlp.shared_expert.up_proj.weight",
      sharedDown: "model.layers.{l}.mlp.shared_expert.down_proj.weight",
      sharedExpertGate: "model.layers.{l}.mlp.shared_expert_gate.weight",
    },
    keys: { experts: "num_experts", expertFfn: "moe_intermediate_size" },
    qkNorm: "none",
    qkvBias: true,
    oBias: false,
    normTopK: { key: "norm_topk_prob", default: false },
    sharedExpert: true,
    denseLayers: true,
    // llama.cpp's qwen2moe: no top-k renormalisation, a sigmoid-gated shared expert, no dense layers
    gguf: {
      arch: "qwen2moe",
      tensors: {
        ...GGUF_BODY,
        sharedGate: "blk.{l}.ffn_gate_shexp.weight",
        sharedUp: "blk.{l}.ffn_up_shexp.weight",
        sharedDown: "blk.{l}.ffn_down_shexp.weight",
        sharedExpertGate: "blk.{l}.ffn_gate_inp_shexp.weight",
      },
      permutesQK: false,
      expertOrder: QWEN_EXPERT_ORDER,
      fixedConfig: { norm_topk_prob: false },
    },
  },
  {
    name: "OlmoeForCausalLM",
    modelType: "olmoe",
    tensors: { ...LLAMA_BODY, ...QWEN_MLP, ...QK_NORM },
    keys: { experts: "num_experts", expertFfn: "intermediate_size" },
    qkNorm: "full",
    qkvBias: "attention_bias",
    oBias: "attention_bias",
    normTopK: { key: "norm_topk_prob", default: false },
    sharedExpert: false,
    denseLayers: false,
    gguf: { arch: "olmoe", tensors: { ...GGUF_BODY, ...GGUF_QK_NORM }, permutesQK: false, expertOrder: QWEN_EXPERT_ORDER, fixedConfig: { norm_topk_prob: false }, writesRmsEps: 1e-5, kvHeadsAreHeads: true },
  },
  {
    name: "Qwen3MoeForCausalLM",
    modelType: "qwen3_moe",
    tensors: { ...LLAMA_BODY, ...QWEN_MLP, ...QK_NORM },
    keys: { experts: "num_experts", expertFfn: "moe_intermediate_size" },
    qkNorm: "per-head",
    qkvBias: "attention_bias",
    oBias: "attention_bias",
    normTopK: { key: "norm_topk_prob", default: false },
    sharedExpert: false,
    denseLayers: true,
    // llama.cpp's qwen3moe renormalises the top-k weights and has no dense layers
    gguf: { arch: "qwen3moe", tensors: { ...GGUF_BODY, ...GGUF_QK_NORM }, permutesQK: false, expertOrder: QWEN_EXPERT_ORDER, fixedConfig: { norm_topk_prob: true } },
  },
];

export function supportedArchitectures(): string {
  return ARCHITECTURES.map((a) => a.name).join(", ");
}

export function findArchitecture(name: string): ArchSpec | undefined {
  return ARCHITECTURES.find((a) => a.name === name);
}

export function tensorName(template: string, layer: number, expert = 0): string {
  return template.replace("{l}", String(layer)).replace("{e}", String(expert));
}

/** The architecture llama.cpp's converter writes under GGUF name `ggufArch` (with experts: an MoE model). */
export function findGgufArchitecture(ggufArch: string): ArchSpec | undefined {
  return ARCHITECTURES.find((a) => a.gguf?.arch === ggufArch);
}
