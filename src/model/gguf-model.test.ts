// The shipped GGUF files (written by llama.cpp's converter) against the safetensors model they came
// from: the same ModelConfig, the same token ids on the corpus, the same greedy tokens.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { SHARED_DIR } from "../testing/shared.js";
import { readModelConfig } from "./config.js";
import { GgufModel } from "./gguf-model.js";
import { TextTokenizer } from "./tokenizer.js";
import { Engine } from "../runtime/engine.js";

const HF = path.join(SHARED_DIR, "models/brown-moe");
const GGUF = path.join(SHARED_DIR, "models/brown-moe-gguf");

test("the ModelConfig from GGUF metadata equals the one from config.json", () => {
  const g = GgufModel.open(`${GGUF}/brown-moe-bf16.gguf`);
  try {
    assert.deepEqual(g.config, readModelConfig(HF));
  } finally {
    g.close();
  }
});

test("the tokenizer from GGUF metadata gives the shipped tokenizer.json's ids on the corpus, and decodes back", () => {
  const g = GgufModel.open(`${GGUF}/brown-moe-q8_0.gguf`);
  const ours = g.tokenizer();
  g.close();
  const theirs = TextTokenizer.load(HF);
  const lines = readFileSync(path.join(SHARED_DIR, "corpus/brown/valid.txt"), "utf8").split("\n").slice(0, 3000);
  lines.push("  two  spaces, tabs\tand ünïcödé ✓ 🙂 <s> </s>", "");
  for (const line of lines) {
    const ids = ours.encode(line);
    assert.deepEqual(ids, theirs.encode(line), JSON.stringify(line));
    assert.equal(ours.decode(ids), theirs.decode(ids));
  }
  assert.equal(ours.decode(ours.encode("The jury said", false)), "The jury said");
  assert.equal(ours.bosToken, "<s>");
  assert.equal(ours.eosToken, "</s>");
});

test("greedy tokens: bf16 GGUF as the safetensors model (f32, and bf16 by default), q8_0 GGUF (q8 by default) as the safetensors model with --dtype q8", async () => {
  const greedy = async (model: string, dtype?: "f32" | "bf16" | "q8") => {
    const e = Engine.load(model, { dtype, threads: 1 });
    try {
      return (await e.generate(e.tokenizer.encode("The jury said"), { maxTokens: 24, temperature: 0 })).tokens;
    } finally {
      e.close();
    }
  };
  assert.deepEqual(await greedy(`${GGUF}/brown-moe-bf16.gguf`, "f32"), await greedy(HF, "f32"));
  assert.deepEqual(await greedy(`${GGUF}/brown-moe-bf16.gguf`), await greedy(HF, "bf16"));
  assert.deepEqual(await greedy(`${GGUF}/brown-moe-q8_0.gguf`), await greedy(HF, "q8"));
});
