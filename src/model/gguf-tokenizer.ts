// A tokenizer.json-shaped object (for @huggingface/tokenizers) from a GGUF's own vocabulary metadata, as
// Hugging Face transformers' GGUF integration builds it for llama/SentencePiece vocabularies: BPE over
// the tokens with merges derived from the scores (a pair merges with the priority of the score of the
// piece it makes), byte fallback, "▁" for spaces with one prepended, control tokens as special tokens.
import type { GgufValue } from "./gguf.js";

export interface GgufTokenizer {
  /** tokenizer.json */
  readonly json: Record<string, unknown>;
  /** tokenizer_config.json: special tokens and chat template */
  readonly config: Record<string, unknown>;
}

const TOKEN_TYPE = { unknown: 2, control: 3, userDefined: 4 } as const;

export function ggufTokenizer(meta: ReadonlyMap<string, GgufValue>, file: string): GgufTokenizer {
  const fail = (msg: string): never => {
    throw new Error(`${file}: ${msg}`);
  };
  const model = meta.get("tokenizer.ggml.model");
  if (model === undefined) fail("no tokenizer.ggml.model: the file carries no tokenizer");
  if (model !== "llama") fail(`tokenizer.ggml.model ${JSON.stringify(model)} vocabularies are not supported yet (only "llama", SentencePiece)`);
  const tokens = meta.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens) || tokens.length === 0 || typeof tokens[0] !== "string") return fail("tokenizer.ggml.tokens is not a list of strings");
  const n = tokens.length;
  const scores = meta.get("tokenizer.ggml.scores");
  if (!(scores instanceof Float32Array) || scores.length !== n) fail(`tokenizer.ggml.scores must be ${n} float32 values, one per token`);
  const types = meta.get("tokenizer.ggml.token_type") ?? new Int32Array(n).fill(1);
  if (!(types instanceof Int32Array) || types.length !== n) fail(`tokenizer.ggml.token_type must be ${n} int32 values, one per token`);
  const id = (key: string): number | null => {
    const v = meta.get(key);
    if (v === undefined) return null;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= n) return fail(`${key} ${String(v)} is not a token id (0 to ${n - 1})`);
    return v;
  };
  const flag = (key: string, def: boolean): boolean => {
    const v = meta.get(key) ?? def;
    if (typeof v !== "boolean") return fail(`${key} must be a bool`);
    return v;
  };
  const pieces = tokens as string[];
  const score = scores as Float32Array, type = types as Int32Array;
  const bos = id("tokenizer.ggml.bos_token_id"), eos = id("tokenizer.ggml.eos_token_id"), unk = id("tokenizer.ggml.unknown_token_id");
  const addBos = flag("tokenizer.ggml.add_bos_token", true), addEos = flag("tokenizer.ggml.add_eos_token", false);
  const addPrefix = flag("tokenizer.ggml.add_space_prefix", true);

  const vocab: Record<string, number> = Object.create(null) as Record<string, number>; // a token may be "__proto__"
  const idOf = new Map<string, number>();
  pieces.forEach((t, i) => {
    if (!idOf.has(t)) idOf.set(t, i);
    vocab[t] ??= i;
  });

  // every split of a token into two tokens is a merge, ranked by the token's score (then by the pieces')
  const merges: Array<{ pair: [string, string]; score: number }> = [];
  for (let i = 0; i < n; i++) {
    const chars = Array.from(pieces[i]!);
    const local: Array<{ pair: [string, string]; score: number; l: number; r: number }> = [];
    for (let k = 1; k < chars.length; k++) {
      const l = chars.slice(0, k).join(""), r = chars.slice(k).join("");
      const li = idOf.get(l), ri = idOf.get(r);
      if (li !== undefined && ri !== undefined) local.push({ pair: [l, r], score: score[i]!, l: score[li]!, r: score[ri]! });
    }
    local.sort((a, b) => b.l - a.l || b.r - a.r);
    merges.push(...local);
  }
  merges.sort((a, b) => b.score - a.score);

  const special = (i: number) => type[i] === TOKEN_TYPE.control || type[i] === TOKEN_TYPE.unknown;
  const added = pieces.flatMap((content, i) =>
    special(i) || type[i] === TOKEN_TYPE.userDefined ? [{ id: i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: special(i) }] : []);
  const wrap = (seq: string, typeId: number) => [
    ...(addBos && bos !== null ? [{ SpecialToken: { id: pieces[bos], type_id: typeId } }] : []),
    { Sequence: { id: seq, type_id: typeId } },
    ...(addEos && eos !== null ? [{ SpecialToken: { id: pieces[eos], type_id: typeId } }] : []),
  ];
  const specialTokens: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  for (const i of [addBos ? bos : null, addEos ? eos : null]) if (i !== null) specialTokens[pieces[i]!] = { id: pieces[i], ids: [i], tokens: [pieces[i]] };

  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: "Sequence", normalizers: [...(addPrefix ? [{ type: "Prepend", prepend: "▁" }] : []), { type: "Replace", pattern: { String: " " }, content: "▁" }] },
    pre_tokenizer: null,
    post_processor: { type: "TemplateProcessing", single: wrap("A", 0), pair: [...wrap("A", 0), ...wrap("B", 1)], special_tokens: specialTokens },
    decoder: {
      type: "Sequence",
      decoders: [{ type: "Replace", pattern: { String: "▁" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }, ...(addPrefix ? [{ type: "Strip", content: " ", start: 1, stop: 0 }] : [])],
    },
    model: {
      type: "BPE", dropout: null, unk_token: unk !== null ? pieces[unk] : null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges: merges.map((m) => m.pair),
    },
  };
  const template = meta.get("tokenizer.chat_template");
  const config: Record<string, unknown> = {
    bos_token: bos !== null ? pieces[bos] : undefined,
    eos_token: eos !== null ? pieces[eos] : undefined,
    unk_token: unk !== null ? pieces[unk] : undefined,
    add_bos_token: addBos,
    add_eos_token: addEos,
    ...(typeof template === "string" ? { chat_template: template } : {}),
  };
  return { json, config };
}
