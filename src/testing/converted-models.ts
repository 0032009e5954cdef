// Small random models of the four architectures, converted to GGUF: what scripts/llama-tokenize-fixture.mjs
// has llama.cpp generate from and the tests compare distmoe's greedy tokens to. Seeded, so both build
// the same files.
import path from "node:path";
import { initModel, type InitModelOptions } from "../model/init-model.js";
import { convertToGguf } from "../model/gguf-convert.js";

const SHAPE = { layers: 3, hidden: 128, heads: 4, experts: 8, topK: 2, fileDType: "bf16", seed: 11 } as const;

/** Per architecture, the settings llama.cpp's file can hold (OLMoE without GQA, norm_topk_prob as llama.cpp fixes it). */
export const CONVERTED: ReadonlyArray<{ file: string; options: Omit<InitModelOptions, "out"> }> = [
  { file: "mixtral-f32.gguf", options: { ...SHAPE, arch: "MixtralForCausalLM" } },
  { file: "qwen2moe-f32.gguf", options: { ...SHAPE, arch: "Qwen2MoeForCausalLM", sharedFfn: 96 } },
  { file: "olmoe-f32.gguf", options: { ...SHAPE, arch: "OlmoeForCausalLM", kvHeads: 4 } },
  { file: "qwen3moe-f32.gguf", options: { ...SHAPE, arch: "Qwen3MoeForCausalLM", normTopK: true } },
];

/** Writes each model's directory and its f32 GGUF under `dir`; returns the GGUF paths by file name. */
export function writeConvertedModels(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const { file, options } of CONVERTED) {
    const hf = path.join(dir, file.replace(/\.gguf$/, ""));
    initModel({ ...options, out: hf });
    convertToGguf(hf, path.join(dir, file), { outtype: "f32" });
    out[file] = path.join(dir, file);
  }
  return out;
}
