// What a model holds, from its headers alone: architecture, parameters (total and active per token),
// experts, the types its tensors are stored in, and the bytes its weights take in each in-memory dtype.
import { WEIGHT_DTYPES, type WeightDType } from "../kernels/backend.js";
import { layoutBytes } from "../kernels/weight-layout.js";
import { openModel, valuesByType } from "./open-model.js";
import { tensorName } from "./arch.js";

export interface ModelSummary {
  architecture: string;
  layers: number;
  sparse_layers: number;
  hidden_size: number;
  attention_heads: number;
  kv_heads: number;
  head_dim: number;
  vocab_size: number;
  experts: number;
  experts_per_token: number;
  expert_ffn: number;
  shared_expert_ffn: number;
  parameters: number;
  expert_parameters: number;
  active_parameters_per_token: number;
  /** values per stored type */
  file_dtypes: Record<string, number>;
  /** the file's tensors per stored type (a GGUF's merged experts once) */
  tensor_types: Record<string, number>;
  /** the type most values are stored in */
  file_dtype: string;
  /** the in-memory dtype without --dtype */
  default_dtype: WeightDType;
  bytes: Record<WeightDType, number>;
}

const EXPERT = /\.experts\.\d+\./;

export function inspectModel(model: string): ModelSummary {
  const { config: cfg, store: ck, fileType, dtype } = openModel(model);
  try {
    let params = 0, expertParams = 0;
    const bytes = Object.fromEntries(WEIGHT_DTYPES.map((d) => [d, 0])) as Record<WeightDType, number>;
    const t = cfg.arch.tensors;
    const keptF32 = new Set<string>();
    for (let l = 0; l < cfg.layers; l++) {
      keptF32.add(tensorName(t.router, l));
      if (t.sharedExpertGate) keptF32.add(tensorName(t.sharedExpertGate, l));
    }
    for (const name of ck.names()) {
      const info = ck.get(name)!;
      const n = info.shape.reduce((a, b) => a * b, 1);
      params += n;
      if (EXPERT.test(name)) expertParams += n;
      const rows = info.shape.length === 2 ? info.shape[0]! : 1, cols = info.shape[info.shape.length - 1] ?? 1;
      for (const d of WEIGHT_DTYPES) {
        // as the loader keeps them: vectors and routers in f32, matrices in d (or f32 where d cannot hold them)
        const isMatrix = rows > 1 && !keptF32.has(name);
        bytes[d] += (isMatrix ? layoutBytes(d, rows, cols) : null) ?? n * 4;
      }
    }
    const sparse = cfg.sparseLayers.filter(Boolean).length;
    const active = params - expertParams + (expertParams * cfg.topK) / cfg.experts;
    return {
      architecture: cfg.arch.name,
      layers: cfg.layers,
      sparse_layers: sparse,
      hidden_size: cfg.hidden,
      attention_heads: cfg.heads,
      kv_heads: cfg.kvHeads,
      head_dim: cfg.headDim,
      vocab_size: cfg.vocabSize,
      experts: cfg.experts,
      experts_per_token: cfg.topK,
      expert_ffn: cfg.expertFfn,
      shared_expert_ffn: cfg.sharedExpertFfn,
      parameters: params,
      expert_parameters: expertParams,
      active_parameters_per_token: Math.round(active),
      file_dtypes: valuesByType(ck),
      tensor_types: ck.tensorTypes(),
      file_dtype: fileType,
      default_dtype: dtype,
      bytes,
    };
  } finally {
    ck.close();
  }
}
