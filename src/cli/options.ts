// Option parsers and the options every model command shares.
import { InvalidArgumentError, Option, type Command } from "commander";
import { WEIGHT_DTYPES, type WeightDType } from "../kernels/backend.js";
import type { EngineOptions } from "../runtime/engine.js";
import { ProgressBar } from "./progress.js";

export function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`expected a positive integer, got "${v}"`);
  return n;
}

export function nonNegativeInt(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`expected a non-negative integer, got "${v}"`);
  return n;
}

export function nonNegativeNumber(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`expected a non-negative number, got "${v}"`);
  return n;
}

export function unitInterval(v: string): number {
  const n = Number(v);
  if (!(n > 0 && n <= 1)) throw new InvalidArgumentError(`expected a number in (0, 1], got "${v}"`);
  return n;
}

export interface ModelCliOptions {
  model: string;
  dtype: WeightDType;
  threads?: number;
  simd: "auto" | "simd" | "relaxed";
  ctx?: number;
}

/** --model, --dtype, --threads, --simd, --ctx */
export function addModelOptions(cmd: Command): Command {
  return cmd
    .requiredOption("-m, --model <dir>", "Hugging Face model directory (config.json, *.safetensors, tokenizer.json)")
    .addOption(new Option("--dtype <dtype>", "weights in memory").choices(WEIGHT_DTYPES as string[]).default("f32"))
    .option("-t, --threads <n>", "compute threads (default: the cores available)", positiveInt)
    .addOption(new Option("--simd <variant>", "kernel build: relaxed SIMD where supported, or plain SIMD128").choices(["auto", "simd", "relaxed"]).default("auto"))
    .option("--ctx <n>", "context length (prompt + generated tokens)", positiveInt);
}

export function engineOptions(o: ModelCliOptions): EngineOptions {
  const bar = new ProgressBar("loading");
  return {
    dtype: o.dtype,
    threads: o.threads,
    simd: o.simd,
    contextLength: o.ctx,
    onLoadProgress: (done, total) => bar.update(done, total),
  };
}
