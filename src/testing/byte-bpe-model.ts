// A model with a real byte-level BPE vocabulary (GPT-2's byte alphabet, thousands of merges), for the
// gpt2-vocabulary tokenizer tests: brown-moe's SentencePiece vocabulary and merges carried over to bytes
// ("▁the" → "Ġthe"), in a tiny Qwen3-MoE (the family that ships such vocabularies). Deterministic, so the
// test and scripts/llama-tokenize-fixture.mjs build the same file.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { byteAlphabet, byteLevelTokenizerJson } from "../model/byte-tokenizer.js";
import { initModel } from "../model/init-model.js";

/** `text` in GPT-2's byte alphabet, spaces from SentencePiece's "▁". */
function toBytes(alphabet: string[], piece: string): string {
  return [...Buffer.from(piece.replaceAll("▁", " "), "utf8")].map((b) => alphabet[b]).join("");
}

/** Writes the model to `dir` from brown-moe's tokenizer.json at `brownTokenizer`. */
export function writeByteBpeModel(dir: string, brownTokenizer: string): void {
  const brown = JSON.parse(readFileSync(brownTokenizer, "utf8")) as { model: { vocab: Record<string, number>; merges: Array<string | [string, string]> } };
  const alphabet = byteAlphabet();
  const json = byteLevelTokenizerJson() as { model: { vocab: Record<string, number>; merges: string[][] } };
  const vocab = json.model.vocab;
  let next = Object.keys(vocab).length;
  for (const [piece] of Object.entries(brown.model.vocab).sort((a, b) => a[1] - b[1])) {
    if (/^<.*>$/.test(piece)) continue; // specials and byte pieces: the byte alphabet has them
    const t = toBytes(alphabet, piece);
    if (!(t in vocab)) vocab[t] = next++;
  }
  json.model.merges = brown.model.merges
    .map((m) => (typeof m === "string" ? (m.split(" ") as [string, string]) : m).map((p) => toBytes(alphabet, p)))
    .filter(([a, b]) => a! in vocab && b! in vocab && a! + b! in vocab);
  initModel({ arch: "Qwen3MoeForCausalLM", out: dir, layers: 1, hidden: 32, heads: 2, experts: 2, topK: 1, normTopK: true, vocab: next, seed: 7 });
  writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(json));
}
