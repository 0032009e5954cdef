// distmoe's tokenizer built from a GGUF file's own metadata against llama.cpp's tokenization of the same
// file (llama-tokenize, recorded by scripts/llama-tokenize-fixture.mjs): a SentencePiece vocabulary
// (brown-moe, as llama.cpp's converter wrote it) and a byte-level BPE one with merges (converted here).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { REPO_ROOT, sharedPath } from "../testing/shared.js";
import { writeByteBpeModel } from "../testing/byte-bpe-model.js";
import { convertToGguf } from "./gguf-convert.js";
import { GgufModel } from "./gguf-model.js";
import { FIXTURE } from "./llama-tokenize-fixture.js";
import { TextTokenizer } from "./tokenizer.js";

const fixture = JSON.parse(readFileSync(path.join(REPO_ROOT, FIXTURE), "utf8")) as { texts: string[]; ids: Record<string, number[][]> };
const Q8 = sharedPath("models/brown-moe-gguf/brown-moe-q8_0.gguf");
const BROWN_TOKENIZER = sharedPath("models/brown-moe/tokenizer.json");

function ggufTokenizer(file: string): TextTokenizer {
  const g = GgufModel.open(file);
  try {
    return g.tokenizer();
  } finally {
    g.close();
  }
}

function sameAsLlamaCpp(tok: TextTokenizer, name: string): void {
  const want = fixture.ids[name]!;
  assert.equal(want.length, fixture.texts.length);
  fixture.texts.forEach((text, i) => assert.deepEqual(tok.encode(text), want[i], `${name}: ${JSON.stringify(text)}`));
}

test("SentencePiece vocabulary (brown-moe-q8_0.gguf): ids identical to llama.cpp's llama-tokenize", { skip: Q8.skip }, () => {
  sameAsLlamaCpp(ggufTokenizer(Q8.path), "brown-moe-q8_0.gguf");
});

test("byte-level BPE vocabulary with merges, converted to GGUF: ids identical to llama.cpp's, and to the tokenizer.json it came from", { skip: BROWN_TOKENIZER.skip }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), "distmoe-bpe-"));
  try {
    writeByteBpeModel(path.join(dir, "m"), BROWN_TOKENIZER.path);
    convertToGguf(path.join(dir, "m"), path.join(dir, "m.gguf"), { outtype: "bf16" });
    const tok = ggufTokenizer(path.join(dir, "m.gguf"));
    sameAsLlamaCpp(tok, "byte-bpe.gguf");
    const hf = TextTokenizer.load(path.join(dir, "m"));
    for (const text of fixture.texts) assert.deepEqual(tok.encode(text), hf.encode(text), JSON.stringify(text));
    assert.equal(tok.decode(tok.encode("The jury said ünïcödé")), "The jury said ünïcödé");
    assert.ok(tok.chatTemplate, "the chat template comes from tokenizer.chat_template");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
