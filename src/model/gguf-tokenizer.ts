// A tokenizer.json-shaped object (for @huggingface/tokenizers) from a GGUF's own vocabulary metadata.
// llama/SentencePiece vocabularies as Hugging Face transformers' GGUF integration builds them: BPE over
// the tokens with merges derived from the scores (a pair merges with the priority of the score of the
// piece it makes), byte fallback, "▁" for spaces with one prepended, control tokens as special tokens.
// gpt2 vocabularies as llama.cpp's llama-vocab.cpp reads them: byte-level BPE over tokenizer.ggml.merges
// after the pre-tokenizer that tokenizer.ggml.pre names (llama.cpp's regex for it), control and
// user-defined tokens matched in the raw text, BOS added where add_bos_token (or the pre-tokenizer) says.
import type { GgufValue } from "./gguf.js";

export interface GgufTokenizer {
  /** tokenizer.json */
  readonly json: Record<string, unknown>;
  /** tokenizer_config.json: special tokens and chat template */
  readonly config: Record<string, unknown>;
}

const TOKEN_TYPE = { unknown: 2, control: 3, userDefined: 4 } as const;

/**
 * llama.cpp's pre-tokenizer regexes (llama-vocab.cpp) by tokenizer.ggml.pre; null: GPT-2's, which is
 * the ByteLevel pre-tokenizer's own regex.
 */
const PRE_REGEX: Readonly<Record<string, string | null>> = {
  "gpt-2": null,
  olmo: null,
  mpt: null,
  qwen2: "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  "llama-bpe": "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
/** Pre-tokenizers for which llama.cpp adds BOS and matches whole words before merging (LLAMA_VOCAB_PRE_TYPE_LLAMA3). */
const LLAMA3_PRE = new Set(["llama-bpe"]);

export function ggufTokenizer(meta: ReadonlyMap<string, GgufValue>, file: string): GgufTokenizer {
  const fail = (msg: string): never => {
    throw new Error(`${file}: ${msg}`);
  };
  const model = meta.get("tokenizer.ggml.model");
  if (model === undefined) fail("no tokenizer.ggml.model: the file carries no tokenizer");
  if (model !== "llama" && model !== "gpt2") fail(`tokenizer.ggml.model ${JSON.stringify(model)} vocabularies are not supported (only "llama", SentencePiece, and "gpt2", byte-level BPE)`);
  const tokens = meta.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens) || tokens.length === 0 || typeof tokens[0] !== "string") return fail("tokenizer.ggml.tokens is not a list of strings");
  const n = tokens.length;
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
  const type = types as Int32Array;
  const bos = id("tokenizer.ggml.bos_token_id"), eos = id("tokenizer.ggml.eos_token_id"), unk = id("tokenizer.ggml.unknown_token_id");
  const pre = meta.get("tokenizer.ggml.pre");
  const addBos = flag("tokenizer.ggml.add_bos_token", model === "llama" || (typeof pre === "string" && LLAMA3_PRE.has(pre)));
  const addEos = flag("tokenizer.ggml.add_eos_token", false);
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
  const postProcessor = { type: "TemplateProcessing", single: wrap("A", 0), pair: [...wrap("A", 0), ...wrap("B", 1)], special_tokens: specialTokens };
  const template = meta.get("tokenizer.chat_template");
  const config: Record<string, unknown> = {
    bos_token: bos !== null ? pieces[bos] : undefined,
    eos_token: eos !== null ? pieces[eos] : undefined,
    unk_token: unk !== null ? pieces[unk] : undefined,
    add_bos_token: addBos,
    add_eos_token: addEos,
    ...(typeof template === "string" ? { chat_template: template } : {}),
  };
  const vocab: Record<string, number> = Object.create(null) as Record<string, number>; // a token may be "__proto__"
  pieces.forEach((t, i) => (vocab[t] ??= i));

  if (model === "gpt2") {
    if (typeof pre !== "string" || !Object.hasOwn(PRE_REGEX, pre)) fail(`tokenizer.ggml.pre ${JSON.stringify(pre)} is not a pre-tokenizer read here (${Object.keys(PRE_REGEX).join(", ")})`);
    const merges = meta.get("tokenizer.ggml.merges");
    if (!Array.isArray(merges) || (merges.length > 0 && typeof merges[0] !== "string")) fail("tokenizer.ggml.merges is not a list of strings");
    const pairs = (merges as string[]).map((m, i) => {
      // llama.cpp splits at the first space after the first character
      const at = m.indexOf(" ", 1);
      if (at < 0) fail(`tokenizer.ggml.merges[${i}] ${JSON.stringify(m.slice(0, 40))} is not two tokens separated by a space`);
      return [m.slice(0, at), m.slice(at + 1)];
    });
    const regex = PRE_REGEX[pre as string];
    const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: regex === null };
    const json = {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: null,
      pre_tokenizer: regex === null ? byteLevel : { type: "Sequence", pretokenizers: [{ type: "Split", pattern: { Regex: regex }, behavior: "Isolated", invert: false }, byteLevel] },
      post_processor: postProcessor,
      decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false },
      model: {
        type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
        fuse_unk: false, byte_fallback: false, ignore_merges: LLAMA3_PRE.has(pre as string), vocab, merges: pairs,
      },
    };
    return { json, config };
  }

  const scores = meta.get("tokenizer.ggml.scores");
  if (!(scores instanceof Float32Array) || scores.length !== n) fail(`tokenizer.ggml.scores must be ${n} float32 values, one per token`);
  const score = scores as Float32Array;
  const addPrefix = flag("tokenizer.ggml.add_space_prefix", true);

  const idOf = new Map<string, number>();
  pieces.forEach((t, i) => {
    if (!idOf.has(t)) idOf.set(t, i);
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

  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: "Sequence", normalizers: [...(addPrefix ? [{ type: "Prepend", prepend: "▁" }] : []), { type: "Replace", pattern: { String: " " }, content: "▁" }] },
    pre_tokenizer: null,
    post_processor: postProcessor,
    decoder: {
      type: "Sequence",
      decoders: [{ type: "Replace", pattern: { String: "▁" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }, ...(addPrefix ? [{ type: "Strip", content: " ", start: 1, stop: 0 }] : [])],
    },
    model: {
      type: "BPE", dropout: null, unk_token: unk !== null ? pieces[unk] : null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges: merges.map((m) => m.pair),
    },
  };
  return { json, config };
}
