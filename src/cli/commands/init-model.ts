import { Command, Option } from "commander";
import { ARCHITECTURES } from "../../model/arch.js";
import { initModel, type FileDType } from "../../model/init-model.js";
import { ProgressBar } from "../progress.js";
import { nonNegativeInt, positiveInt } from "../options.js";

interface InitCliOptions {
  arch: string;
  out: string;
  layers: number;
  hidden: number;
  heads: number;
  kvHeads?: number;
  headDim?: number;
  experts: number;
  topK: number;
  ffn?: number;
  sharedFfn?: number;
  denseFfn?: number;
  denseLayers?: string;
  vocab?: number;
  normTopK?: boolean;
  attentionBias?: boolean;
  tieEmbeddings?: boolean;
  maxPositions: number;
  fileDtype: FileDType;
  shards: number;
  seed: number;
}

export function initModelCommand(): Command {
  return new Command("init-model")
    .description("write a random model in Hugging Face layout (config.json, safetensors, byte-level tokenizer)")
    .addOption(new Option("--arch <name>", "architecture").choices(ARCHITECTURES.map((a) => a.name)).makeOptionMandatory())
    .requiredOption("-o, --out <dir>", "directory to write")
    .option("--layers <n>", "layers", positiveInt, 2)
    .option("--hidden <n>", "hidden size", positiveInt, 64)
    .option("--heads <n>", "query heads", positiveInt, 4)
    .option("--kv-heads <n>", "key/value heads (default heads/2)", positiveInt)
    .option("--head-dim <n>", "head dimension (default hidden/heads)", positiveInt)
    .option("--experts <n>", "experts per layer", positiveInt, 4)
    .option("--top-k <n>", "experts per token", positiveInt, 2)
    .option("--ffn <n>", "expert FFN size (default 2·hidden)", positiveInt)
    .option("--shared-ffn <n>", "shared expert FFN size (Qwen2-MoE)", positiveInt)
    .option("--dense-ffn <n>", "dense MLP size for --dense-layers", positiveInt)
    .option("--dense-layers <list>", "comma-separated layers with a dense MLP (Qwen2-MoE, Qwen3-MoE)")
    .option("--vocab <n>", "vocabulary size (at least the tokenizer's 259)", positiveInt)
    .option("--norm-topk-prob", "renormalise top-k weights (where the architecture makes it a setting)")
    .option("--attention-bias", "q/k/v/o biases (OLMoE, Qwen3-MoE)")
    .option("--tie-embeddings", "LM head shares the embedding")
    .option("--max-positions <n>", "max_position_embeddings", positiveInt, 512)
    .addOption(new Option("--file-dtype <dtype>", "dtype of the tensors written").choices(["f32", "bf16", "f16"]).default("bf16"))
    .option("--shards <n>", "number of safetensors shards (an index is written when > 1)", positiveInt, 1)
    .option("--seed <n>", "random seed", nonNegativeInt, 0)
    .action((o: InitCliOptions) => {
      const bar = new ProgressBar("writing");
      initModel({
        ...o,
        normTopK: o.normTopK,
        denseLayers: o.denseLayers ? o.denseLayers.split(",").map((s) => positiveIntOrZero(s)) : undefined,
        fileDType: o.fileDtype,
        onProgress: (d, t) => bar.update(d, t),
      });
      process.stderr.write(`wrote ${o.arch} model to ${o.out}\n`);
    });
}

function positiveIntOrZero(s: string): number {
  return nonNegativeInt(s.trim());
}
