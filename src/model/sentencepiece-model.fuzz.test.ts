// The SentencePiece model reader takes tokenizer.model from a directory a user names: brown-moe's file
// reads as the pieces the tokenizer.json lists, and damaged bytes give pieces or an Error naming the file.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { sharedPath } from "../testing/shared.js";
import { byteDamage, cleanlyRefused, damage, fuzzParams } from "../testing/fuzz.js";
import { parseSentencePieceModel, PIECE_TYPE } from "./sentencepiece-model.js";

const SPM = sharedPath("models/brown-moe/tokenizer.model");

test("brown-moe's tokenizer.model: the pieces of its tokenizer.json, <unk> unknown, <s> </s> control, bytes as bytes", { skip: SPM.skip }, () => {
  const pieces = parseSentencePieceModel(readFileSync(SPM.path), SPM.path);
  const vocab = JSON.parse(readFileSync(SPM.path.replace(/tokenizer\.model$/, "tokenizer.json"), "utf8")).model.vocab as Record<string, number>;
  assert.equal(pieces.length, Object.keys(vocab).length);
  pieces.forEach((p, i) => assert.equal(vocab[p.piece], i, p.piece));
  assert.deepEqual(pieces.slice(0, 4).map((p) => p.type), [PIECE_TYPE.unknown, PIECE_TYPE.control, PIECE_TYPE.control, PIECE_TYPE.byte]);
});

test("fuzz: damaged tokenizer.model bytes give pieces or an Error naming the file", { skip: SPM.skip }, () => {
  const bytes = new Uint8Array(readFileSync(SPM.path)).subarray(0, 2048);
  fc.assert(
    fc.property(fc.array(byteDamage, { minLength: 1, maxLength: 3 }), (ms) => {
      const r = cleanlyRefused(() => parseSentencePieceModel(ms.reduce(damage, bytes), "t.model"), Error);
      if (r instanceof Error) assert.ok(r.constructor === Error && r.message.startsWith("t.model: "), r.message);
      else assert.ok(r.length > 0 && r.every((p) => typeof p.piece === "string" && typeof p.score === "number" && p.type >= 1 && p.type <= 6));
    }),
    fuzzParams(2000),
  );
});
