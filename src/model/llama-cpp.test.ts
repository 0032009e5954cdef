// distmoe against llama.cpp itself on the same GGUF files, as scripts/llama-cpp-fixture.mjs recorded it
// (CI has no llama.cpp build): the tokenizer built from a file's own metadata gives llama-tokenize's ids
// for a SentencePiece vocabulary (brown-moe, written by llama.cpp's converter) and a byte-level BPE one
// with merges (converted here); greedy decoding gives llama.cpp's tokens for the shipped brown-moe and
// for models of all four architectures converted here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { REPO_ROOT, sharedPath } from "../testing/shared.js";
import { writeByteBpeModel } from "../testing/byte-bpe-model.js";
import { writeConvertedModels } from "../testing/converted-models.js";
import { convertToGguf } from "./gguf-convert.js";
import { GgufModel } from "./gguf-model.js";
import { FIXTURE, GREEDY_PROMPT, GREEDY_TOKENS, type LlamaCppFixture } from "./llama-cpp-fixture.js";
import { TextTokenizer } from "./tokenizer.js";
import { Engine } from "../runtime/engine.js";
import { nativeSkip } from "../testing/backends.js";
import { selectTopK, type SelectionPolicy } from "../policies/selection.js";
import type { ExpertCallStats } from "../moe/moe-layer.js";

const NATIVE_SKIP = nativeSkip();
const fixture = JSON.parse(readFileSync(path.join(REPO_ROOT, FIXTURE), "utf8")) as LlamaCppFixture;
const Q8 = sharedPath("models/brown-moe-gguf/brown-moe-q8_0.gguf");
const BF16 = sharedPath("models/brown-moe-gguf/brown-moe-bf16.gguf");
const BROWN_TOKENIZER = sharedPath("models/brown-moe/tokenizer.json");
const tmp = mkdtempSync(path.join(tmpdir(), "distmoe-llama-cpp-"));
test.after(() => rmSync(tmp, { recursive: true, force: true }));

function ggufTokenizer(file: string): TextTokenizer {
  const g = GgufModel.open(file);
  try {
    return g.tokenizer();
  } finally {
    g.close();
  }
}

function sameIdsAsLlamaCpp(tok: TextTokenizer, name: string): void {
  const want = fixture.ids[name]!;
  assert.equal(want.length, fixture.texts.length);
  fixture.texts.forEach((text, i) => assert.deepEqual(tok.encode(text), want[i], `${name}: ${JSON.stringify(text)}`));
}

test("SentencePiece vocabulary (brown-moe-q8_0.gguf): ids identical to llama.cpp's llama-tokenize", { skip: Q8.skip }, () => {
  sameIdsAsLlamaCpp(ggufTokenizer(Q8.path), "brown-moe-q8_0.gguf");
});

test("byte-level BPE vocabulary with merges, converted to GGUF: ids identical to llama.cpp's, and to the tokenizer.json it came from", { skip: BROWN_TOKENIZER.skip }, () => {
  const dir = path.join(tmp, "byte-bpe");
  writeByteBpeModel(dir, BROWN_TOKENIZER.path);
  convertToGguf(dir, `${dir}.gguf`, { outtype: "bf16" });
  const tok = ggufTokenizer(`${dir}.gguf`);
  sameIdsAsLlamaCpp(tok, "byte-bpe.gguf");
  const hf = TextTokenizer.load(dir);
  for (const text of fixture.texts) assert.deepEqual(tok.encode(text), hf.encode(text), JSON.stringify(text));
  assert.equal(tok.decode(tok.encode("The jury said ünïcödé")), "The jury said ünïcödé");
  assert.ok(tok.chatTemplate, "the chat template comes from tokenizer.chat_template");
});

/** distmoe's prompt ids and greedy tokens equal llama.cpp's (which runs past EOS: distmoe stops there, and llama.cpp's next token is that EOS). */
async function sameGreedyAsLlamaCpp(file: string, name: string, opts: { dtype?: "f32"; backend?: "native"; policy?: SelectionPolicy } = {}): Promise<ExpertCallStats> {
  const want = fixture.greedy[name]!;
  const e = Engine.load(file, { ...opts, threads: 1 });
  try {
    const prompt = e.tokenizer.encode(GREEDY_PROMPT);
    const got = [...prompt, ...(await e.generate(prompt, { maxTokens: GREEDY_TOKENS, temperature: 0 })).tokens];
    assert.deepEqual(got, want.slice(0, got.length), name);
    if (got.length < want.length) assert.ok(e.eosTokenIds.includes(want[got.length]!), `${name}: distmoe stopped early without llama.cpp reaching EOS`);
    return { ...e.model.expertStats };
  } finally {
    e.close();
  }
}

test("greedy tokens: the shipped brown-moe-bf16.gguf gives llama.cpp's", { skip: BF16.skip }, async () => {
  await sameGreedyAsLlamaCpp(BF16.path, "brown-moe-bf16.gguf", { dtype: "f32" });
});

// Q8_0 weights kept as they are: ggml's kernels quantize the activations to Q8_0 as llama.cpp does, so the
// native backend follows llama.cpp token for token; the wasm kernels keep activations f32 against q8
// weights, and their greedy text parts from llama.cpp's at a near-tie within a few tokens (perplexity equal).
test("greedy tokens: the shipped brown-moe-q8_0.gguf in its own type gives llama.cpp's on the native kernels", { skip: Q8.skip || NATIVE_SKIP }, async () => {
  await sameGreedyAsLlamaCpp(Q8.path, "brown-moe-q8_0.gguf", { backend: "native" });
});

test("greedy tokens: Mixtral, Qwen2-MoE, OLMoE and Qwen3-MoE converted here give llama.cpp's on the same files", async () => {
  const files = writeConvertedModels(tmp);
  assert.deepEqual(Object.keys(files).sort(), Object.keys(fixture.greedy).filter((n) => !n.startsWith("brown-moe-")).sort());
  for (const [name, file] of Object.entries(files)) await sameGreedyAsLlamaCpp(file, name, { dtype: "f32" });
});

// The native backend runs a decode step's MoE layer as one job (ggml_mul_mat_id over the file's merged expert
// tensors, mapped); the same top-k behind another function runs the seam's steps (router read, policy, then the
// experts and combine as one job of the backend's, moeExperts): both give llama.cpp's tokens, shared expert (Qwen2-MoE) and unnormalised weights (OLMoE) included.
test("greedy tokens on the native kernels: a MoE layer as one job and as the seam's steps both give llama.cpp's", { skip: NATIVE_SKIP }, async () => {
  const files = writeConvertedModels(path.join(tmp, "one-job"));
  const sameTopK: SelectionPolicy = (router, ctx) => selectTopK(router, ctx);
  for (const [name, file] of Object.entries(files)) {
    const oneJob = await sameGreedyAsLlamaCpp(file, name, { dtype: "f32", backend: "native" });
    const seam = await sameGreedyAsLlamaCpp(file, name, { dtype: "f32", backend: "native", policy: sameTopK });
    assert.ok(oneJob.oneJobLayers > 0, `${name}: no layer ran as one job`);
    assert.equal(seam.oneJobLayers, 0, `${name}: another policy must run the seam`);
    // every expert here: each of the seam's layer steps has the backend look its rows up and combine them (moeExperts),
    // as do the one-job run's steps of more rows than one job takes (the prefill)
    assert.ok(seam.expertJobLayers > 0 && seam.expertJobLayers === oneJob.oneJobLayers + oneJob.expertJobLayers, `${name}: ${seam.expertJobLayers} layer steps as expert jobs`);
    // one-job layers count the experts they ran as the calls the seam makes
    assert.equal(oneJob.calls, seam.calls, `${name}: expert calls`);
  }
});
