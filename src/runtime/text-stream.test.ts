// The generated text is what decoding prompt and completion together gives, less the prompt's own
// text, piece by piece as tokens arrive: checked on brown-moe's SentencePiece tokenizer and on
// init-model's byte-level one, with characters split over tokens.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Engine } from "./engine.js";
import { TextStream } from "./text-stream.js";
import { initModel } from "../model/init-model.js";
import { TextTokenizer } from "../model/tokenizer.js";
import { sharedPath } from "../testing/shared.js";

/** Generations of `engine` for these prompts and seeds: text and streamed pieces equal the whole decode less the prompt's. */
async function honest(engine: Engine, prompts: readonly string[], stop: string[] = []): Promise<number> {
  const tk = engine.tokenizer;
  let checked = 0;
  for (const text of prompts) {
    for (const seed of [0, 1, 2, 3]) {
      const prompt = tk.encode(text);
      const pieces: string[] = [];
      const r = await engine.generate(prompt, { temperature: seed === 0 ? 0 : 1.2, seed, maxTokens: 24, stop }, (p) => pieces.push(p));
      const whole = tk.decode([...prompt, ...r.tokens]);
      const own = tk.decode(prompt);
      assert.ok(whole.startsWith(own), "decoding the prompt gives a prefix of decoding it with the completion");
      const want = whole.slice(own.length);
      if (r.stopReason === "stop") assert.ok(want.startsWith(r.text) && stop.some((s) => want.slice(r.text.length).startsWith(s)), `${JSON.stringify(r.text)} ends where a stop string begins`);
      else assert.equal(r.text, want, `prompt ${JSON.stringify(text)}, seed ${seed}`);
      assert.equal(pieces.join(""), r.text, "the streamed pieces are the text");
      assert.ok(pieces.every((p) => !p.includes("\uFFFD") || r.text.includes("\uFFFD")), "no piece shows half a character");
      checked++;
    }
  }
  return checked;
}

test("byte-level tokenizer: a character split over tokens is emitted once, whole", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-text-"));
  try {
    initModel({ arch: "MixtralForCausalLM", out: dir, layers: 1, hidden: 32, experts: 2, topK: 1, seed: 1 });
    const tk = TextTokenizer.load(dir);
    const ids = tk.encode("a😀é b", false);
    assert.equal(ids.length, 1 + 4 + 2 + 2, "one token per byte");
    const stream = new TextStream(tk, tk.encode("x"));
    const pieces = ids.map((id) => stream.push(id));
    assert.deepEqual(pieces, ["a", "", "", "", "😀", "", "é", " ", "b"]);
    assert.equal(stream.flush(), "");
    // a sequence cut inside a character ends with the replacement character, as decoding it whole does
    const cut = new TextStream(tk);
    assert.equal([...tk.encode("😀", false).slice(0, 2)].map((id) => cut.push(id)).join("") + cut.flush(), tk.decode(tk.encode("😀", false).slice(0, 2)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("byte-level tokenizer: generated text equals decoding prompt and completion less the prompt, streamed or not", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-text-"));
  try {
    initModel({ arch: "Qwen3MoeForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed: 4 });
    const engine = Engine.load(dir, { dtype: "f32", threads: 1 });
    try {
      assert.equal(await honest(engine, ["hello", "héllo wörld ", "日本語😀"]), 12);
      await honest(engine, ["hello"], ["e", "ll"]);
    } finally {
      engine.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const brown = sharedPath("models/brown-moe");

test("brown-moe's SentencePiece tokenizer: the first token keeps its leading space; text equals the whole decode less the prompt's", { skip: brown.skip }, async () => {
  const engine = Engine.load(brown.path, { dtype: "f32", threads: 1 });
  try {
    const r = await engine.generate(engine.tokenizer.encode("The jury said"), { temperature: 0, maxTokens: 8 });
    assert.match(r.text, /^ \S/, `${JSON.stringify(r.text)} starts with the space its first token carries`);
    assert.equal(await honest(engine, ["The jury said", "It was a long day in Atlanta,", "\"Yes,\" he said."]), 12);
    await honest(engine, ["The jury said"], [" the", "."]);
  } finally {
    engine.close();
  }
});
