// A model by path: a Hugging Face checkpoint directory, or a GGUF file (llama.cpp's format).
import { readFileSync } from "node:fs";
import path from "node:path";
import type { WeightDType } from "../kernels/backend.js";
import { Checkpoint, type TensorStore } from "./checkpoint.js";
import { readModelConfig, type ModelConfig } from "./config.js";
import { GgufModel, isGgufPath } from "./gguf-model.js";
import { TextTokenizer } from "./tokenizer.js";

export interface OpenedModel {
  readonly config: ModelConfig;
  /** The config.json that `config` was read from (for a GGUF file, what its metadata stands for): for devices without the files. */
  readonly configJson: Record<string, unknown>;
  /** Read when asked for (inspect needs none). */
  tokenizer(): TextTokenizer;
  /** Open until closed. */
  readonly store: TensorStore;
  /** The type most of the weights' values are stored in (BF16, Q8_0 …). */
  readonly fileType: string;
  /**
   * The weights' dtype in memory unless one is asked for: a GGUF file's main type (Q8_0 → q8, Q4_0 → q4,
   * Q4_K → q4_k, Q5_K → q5_k, Q6_K → q6_k, BF16 → bf16, F16 → f16, F32 → f32), f32 for a directory. Kernels
   * that lack f16 or a K-quant (wasm) hold f32 or q8 instead (see storageDType in weights.ts).
   */
  readonly dtype: WeightDType;
  /** At the default dtype, each tensor stays in its own stored type where the kernels hold it (LoadOptions.keepFileTypes): true for GGUF. */
  readonly keepFileTypes: boolean;
  /** Why `dtype`, for the load log: "the file's own type, Q4_K" (its main one), "the default". */
  readonly dtypeReason: string;
}

/** The in-memory dtype a GGUF type opens as: the one that holds it as it is. */
const OPENS_AS: Readonly<Record<string, WeightDType>> = { F32: "f32", F16: "f16", BF16: "bf16", Q8_0: "q8", Q4_0: "q4", Q4_K: "q4_k", Q5_K: "q5_k", Q6_K: "q6_k" };

export function openModel(model: string): OpenedModel {
  if (isGgufPath(model)) {
    const g = GgufModel.open(model);
    try {
      const fileType = mainType(g);
      // the load log goes on to say how each stored type was kept
      const dtypeReason = `the file's own type, ${fileType}`;
      return { config: g.config, configJson: g.hfConfig, tokenizer: () => g.tokenizer(), store: g, fileType, dtype: OPENS_AS[fileType] ?? "f32", keepFileTypes: true, dtypeReason };
    } catch (e) {
      g.close();
      throw e;
    }
  }
  const config = readModelConfig(model);
  // read again as it is, once readModelConfig has found it a valid config
  const configJson = JSON.parse(readFileSync(path.join(model, "config.json"), "utf8")) as Record<string, unknown>;
  const store = Checkpoint.open(model);
  return { config, configJson, tokenizer: () => TextTokenizer.load(model), store, fileType: mainType(store), dtype: "f32", keepFileTypes: false, dtypeReason: "the default" };
}

/** Values per stored type, over every tensor the store names. */
export function valuesByType(store: TensorStore): Record<string, number> {
  const out: Record<string, number> = {};
  for (const name of store.names()) {
    const t = store.get(name)!;
    out[t.dtype] = (out[t.dtype] ?? 0) + t.shape.reduce((a, b) => a * b, 1);
  }
  return out;
}

function mainType(store: TensorStore): string {
  const byType = Object.entries(valuesByType(store));
  return byType.reduce((best, t) => (t[1] > best[1] ? t : best), byType[0] ?? ["F32", 0])[0];
}

