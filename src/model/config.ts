// config.json → a validated ModelConfig with every quantity the forward pass needs, whatever the family
// calls it. Impossible dimensions stop here with the key named, not deep in a kernel.
import { existsSync } from "node:fs";
import { readRegularFile } from "../util/read-file.js";
import path from "node:path";
import { findArchitecture, supportedArchitectures, type ArchSpec } from "./arch.js";

export interface ModelConfig {
  readonly arch: ArchSpec;
  readonly vocabSize: number;
  readonly hidden: number;
  readonly layers: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly experts: number;
  readonly topK: number;
  readonly expertFfn: number;
  readonly normTopK: boolean;
  /** Shared expert FFN size (0 when the architecture has none). */
  readonly sharedExpertFfn: number;
  /** Dense MLP size, for layers that are not sparse. */
  readonly denseFfn: number;
  /** Per layer: MoE (true) or dense MLP (false). */
  readonly sparseLayers: readonly boolean[];
  readonly qkvBias: boolean;
  readonly oBias: boolean;
  readonly clipQkv: number | null;
  readonly rmsEps: number;
  readonly ropeTheta: number;
  /** Longest context: max_position_embeddings, or a sliding window if smaller. */
  readonly maxPositions: number;
  readonly tieEmbeddings: boolean;
  readonly bosTokenId: number | null;
  readonly eosTokenIds: readonly number[];
}

type Json = Record<string, unknown>;

/**
 * The largest sizes a config may give: beyond any real model, yet small enough that nothing sized from
 * them (per-layer tables, one expert's bytes) overflows or exhausts memory before the weights' bytes are
 * weighed against what a machine has: a device takes its config from the base station.
 */
const MAX = { dim: 1 << 20, hidden: 1 << 16, heads: 1 << 12, layers: 1 << 10, experts: 1 << 12, vocab: 1 << 24 } as const;

export function readModelConfig(dir: string): ModelConfig {
  const file = path.join(dir, "config.json");
  let text: string;
  try {
    text = readRegularFile(file).toString("utf8");
  } catch (e) {
    throw new Error(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new Error(`${file}: not a JSON object`);
  // generation_config.json, when present, is where Hugging Face keeps the authoritative EOS ids
  const gen = path.join(dir, "generation_config.json");
  if (existsSync(gen)) {
    try {
      const g = JSON.parse(readRegularFile(gen).toString("utf8")) as Json;
      if (g.eos_token_id !== undefined) (raw as Json).eos_token_id = g.eos_token_id;
    } catch (e) {
      throw new Error(`${gen}: not valid JSON (${(e as Error).message})`);
    }
  }
  return parseModelConfig(raw as Json, file);
}

export function parseModelConfig(c: Json, file = "config.json"): ModelConfig {
  const fail = (msg: string): never => {
    throw new Error(`${file}: ${msg}`);
  };
  const archs = c.architectures;
  const archName = Array.isArray(archs) && typeof archs[0] === "string" ? archs[0] : undefined;
  if (!archName) fail(`no "architectures" entry; supported: ${supportedArchitectures()}`);
  const arch = findArchitecture(archName!);
  if (!arch) return fail(`architecture ${archName} is not supported; supported: ${supportedArchitectures()}`);

  const int = (key: string, opts: { min?: number; max?: number; def?: number } = {}): number => {
    const v = c[key] ?? opts.def;
    if (v === undefined || v === null) return fail(`missing ${key}`);
    if (typeof v !== "number" || !Number.isSafeInteger(v)) return fail(`${key} must be an integer, got ${JSON.stringify(v)}`);
    if (v < (opts.min ?? 1)) return fail(`${key} must be at least ${opts.min ?? 1}, got ${v}`);
    if (opts.max !== undefined && v > opts.max) return fail(`${key} must be at most ${opts.max}, got ${v}`);
    return v;
  };
  const num = (key: string, def: number): number => {
    const v = c[key] ?? def;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) return fail(`${key} must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  };
  const bool = (key: string, def: boolean): boolean => {
    const v = c[key] ?? def;
    if (typeof v !== "boolean") return fail(`${key} must be true or false, got ${JSON.stringify(v)}`);
    return v;
  };

  const hidden = int("hidden_size", { max: MAX.hidden });
  const heads = int("num_attention_heads", { max: MAX.heads });
  const kvHeads = int("num_key_value_heads", { def: heads });
  if (heads % kvHeads !== 0) fail(`num_key_value_heads (${kvHeads}) must divide num_attention_heads (${heads})`);
  let headDim: number;
  if (c.head_dim !== undefined && c.head_dim !== null) headDim = int("head_dim", { max: MAX.hidden });
  else {
    if (hidden % heads !== 0) fail(`hidden_size (${hidden}) is not a multiple of num_attention_heads (${heads}) and head_dim is not given`);
    headDim = hidden / heads;
  }
  if (headDim % 2 !== 0) fail(`head_dim (${headDim}) must be even for rotary embeddings`);
  const experts = int(arch.keys.experts, { max: MAX.experts });
  const topK = int("num_experts_per_tok");
  if (topK > experts) fail(`num_experts_per_tok (${topK}) exceeds ${arch.keys.experts} (${experts})`);
  const layers = int("num_hidden_layers", { max: MAX.layers });

  let sparseLayers = Array.from({ length: layers }, () => true);
  let denseFfn = 0;
  if (arch.denseLayers) {
    const step = int("decoder_sparse_step", { def: 1 });
    const only = c.mlp_only_layers ?? [];
    if (!Array.isArray(only) || !only.every((l) => Number.isInteger(l))) fail(`mlp_only_layers must be a list of layer indices`);
    sparseLayers = sparseLayers.map((_, l) => !(only as number[]).includes(l) && (l + 1) % step === 0);
    if (sparseLayers.includes(false)) denseFfn = int("intermediate_size", { max: MAX.dim });
  }

  const rope = c.rope_scaling;
  if (rope !== undefined && rope !== null) fail(`rope_scaling ${JSON.stringify(rope)} is not supported (only plain rotary embeddings)`);
  if (c.use_sliding_window === true) fail(`sliding-window attention (use_sliding_window) is not supported`);
  // Mixtral names a window without a switch; attention is exact as long as the context stays within it.
  const window = arch.name === "MixtralForCausalLM" && typeof c.sliding_window === "number" ? int("sliding_window") : null;
  if (c.hidden_act !== undefined && c.hidden_act !== "silu") fail(`hidden_act ${JSON.stringify(c.hidden_act)} is not supported (only silu)`);

  const flag = (f: boolean | "attention_bias"): boolean => (f === "attention_bias" ? bool("attention_bias", false) : f);
  const normTopK = typeof arch.normTopK === "boolean" ? arch.normTopK : bool(arch.normTopK.key, arch.normTopK.default);
  const clip = c.clip_qkv;
  if (clip !== undefined && clip !== null && (typeof clip !== "number" || !(clip > 0))) fail(`clip_qkv must be a positive number or null`);

  const eos = c.eos_token_id;
  const eosTokenIds = Array.isArray(eos) ? eos.filter((x): x is number => typeof x === "number") : typeof eos === "number" ? [eos] : [];

  return {
    arch,
    vocabSize: int("vocab_size", { max: MAX.vocab }),
    hidden,
    layers,
    heads,
    kvHeads,
    headDim,
    experts,
    topK,
    expertFfn: int(arch.keys.expertFfn, { max: MAX.dim }),
    normTopK,
    sharedExpertFfn: arch.sharedExpert ? int("shared_expert_intermediate_size", { max: MAX.dim }) : 0,
    denseFfn,
    sparseLayers,
    qkvBias: flag(arch.qkvBias),
    oBias: flag(arch.oBias),
    clipQkv: typeof clip === "number" ? clip : null,
    rmsEps: num("rms_norm_eps", 1e-6),
    ropeTheta: num("rope_theta", 10000),
    maxPositions: Math.min(int("max_position_embeddings", { def: 4096 }), window ?? Infinity),
    tieEmbeddings: bool("tie_word_embeddings", false),
    bosTokenId: typeof c.bos_token_id === "number" ? c.bos_token_id : null,
    eosTokenIds,
  };
}
