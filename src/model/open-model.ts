// A model by path: a Hugging Face checkpoint directory, or a GGUF file (llama.cpp's format).
import { Checkpoint, type TensorStore } from "./checkpoint.js";
import { readModelConfig, type ModelConfig } from "./config.js";
import { GgufModel, isGgufPath } from "./gguf-model.js";
import { TextTokenizer } from "./tokenizer.js";

export interface OpenedModel {
  readonly config: ModelConfig;
  readonly tokenizer: TextTokenizer;
  /** Open until closed. */
  readonly store: TensorStore;
}

export function openModel(model: string): OpenedModel {
  if (isGgufPath(model)) {
    const g = GgufModel.open(model);
    try {
      return { config: g.config, tokenizer: g.tokenizer(), store: g };
    } catch (e) {
      g.close();
      throw e;
    }
  }
  const config = readModelConfig(model);
  const tokenizer = TextTokenizer.load(model);
  return { config, tokenizer, store: Checkpoint.open(model) };
}
