// The tokenizer metadata llama.cpp's convert_hf_to_gguf.py writes for a Hugging Face model directory:
// a SentencePiece vocabulary from tokenizer.model ("llama": tokens, scores, token types) or a byte-level
// BPE one from tokenizer.json ("gpt2": tokens, token types, merges, the pre-tokenizer named by the hash
// of a fixed text's ids), then gguf-py's SpecialVocab: special token ids, add_bos/add_eos, the chat
// template. Written as the February 2025 converter that wrote ../shared/models/brown-moe-gguf does
// (its SpecialVocab reads the single-sequence template only; later versions also write add_sep_token).
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readRegularFile } from "../util/read-file.js";
import path from "node:path";
import { GGUF_TYPE, type GgufEntry } from "./gguf-writer.js";
import { parseSentencePieceModel, PIECE_TYPE } from "./sentencepiece-model.js";
import { readJson, TextTokenizer } from "./tokenizer.js";

/** gguf-py TokenType */
export const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

type Json = Record<string, unknown>;
export type Metadata = Map<string, GgufEntry>;

// convert_hf_to_gguf.py get_vocab_base_pre: the text whose ids identify a BPE pre-tokenizer
const CHKTXT = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL";

/** The hashes of the pre-tokenizers of the families read here (convert_hf_to_gguf.py's table, by reference model). */
const KNOWN_PRE: Readonly<Record<string, string>> = {
  "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2", // openai-community/gpt2
  "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe", // meta-llama/Meta-Llama-3-8B
  "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2", // Qwen/Qwen1.5-7B (Qwen1.5-MoE, Qwen2-MoE)
  "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2", // Qwen/Qwen3-Embedding-0.6B (Qwen3)
  "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166": "olmo", // allenai/OLMo-1.7-7B-hf (OLMoE)
};

const SPECIAL_TYPES = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"] as const;
const ID_KEYS: Record<(typeof SPECIAL_TYPES)[number], string> = { bos: "bos", eos: "eos", unk: "unknown", sep: "seperator", pad: "padding", cls: "cls", mask: "mask" };

function readOptionalJson(file: string): Json | undefined {
  return existsSync(file) ? readJson(file) : undefined;
}

/** convert_hf_to_gguf.py does_token_look_special */
function looksSpecial(t: string): boolean {
  return ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].includes(t) || (t.startsWith("<|") && t.endsWith("|>")) || (t.startsWith("<｜") && t.endsWith("｜>")) || (t.startsWith("<unused") && t.endsWith(">"));
}

/**
 * The tokenizer metadata for `dir`, in the converter's order, added to `meta`. `llamaVocab`: the model
 * is written as llama (SentencePiece from tokenizer.model when there is one); otherwise byte-level BPE.
 */
export function addVocabMetadata(meta: Metadata, dir: string, vocabSize: number | undefined, llamaVocab: boolean, log: (msg: string) => void): void {
  const tokConfig = readOptionalJson(path.join(dir, "tokenizer_config.json"));
  if (llamaVocab && typeof tokConfig?.add_prefix_space === "boolean") meta.set("tokenizer.ggml.add_space_prefix", [GGUF_TYPE.bool, tokConfig.add_prefix_space]);
  const spm = path.join(dir, "tokenizer.model");
  if (llamaVocab && existsSync(spm)) {
    const { tokens, scores, types } = sentencePieceVocab(dir, spm, vocabSize, tokConfig);
    meta.set("tokenizer.ggml.model", [GGUF_TYPE.string, "llama"]);
    meta.set("tokenizer.ggml.pre", [GGUF_TYPE.string, "default"]);
    meta.set("tokenizer.ggml.tokens", [GGUF_TYPE.array, [GGUF_TYPE.string, tokens]]);
    meta.set("tokenizer.ggml.scores", [GGUF_TYPE.array, [GGUF_TYPE.f32, scores]]);
    meta.set("tokenizer.ggml.token_type", [GGUF_TYPE.array, [GGUF_TYPE.i32, types]]);
    addSpecialVocab(meta, dir, tokens.length, false, log);
  } else {
    const { tokens, types, pre } = bpeVocab(dir, vocabSize, log);
    meta.set("tokenizer.ggml.model", [GGUF_TYPE.string, "gpt2"]);
    meta.set("tokenizer.ggml.pre", [GGUF_TYPE.string, pre]);
    meta.set("tokenizer.ggml.tokens", [GGUF_TYPE.array, [GGUF_TYPE.string, tokens]]);
    meta.set("tokenizer.ggml.token_type", [GGUF_TYPE.array, [GGUF_TYPE.i32, types]]);
    addSpecialVocab(meta, dir, undefined, true, log);
  }
  // LlamaModel.set_vocab: granite's small models add no BOS
  if (llamaVocab && vocabSize === 49152) meta.set("tokenizer.ggml.add_bos_token", [GGUF_TYPE.bool, false]);
}

/** _create_vocab_sentencepiece: the pieces, then added_tokens.json and tokenizer_config.json's added tokens, padded to the model's vocabulary. */
function sentencePieceVocab(dir: string, file: string, vocabSize: number | undefined, tokConfig: Json | undefined): { tokens: string[]; scores: Float32Array; types: Int32Array } {
  const pieces = parseSentencePieceModel(readRegularFile(file), file);
  const n = vocabSize ?? pieces.length;
  const tokens = Array.from({ length: n }, (_, i) => `[PAD${i}]`);
  const scores = new Float32Array(n).fill(-10000);
  const types = new Int32Array(n).fill(TOKEN_TYPE.unused);
  pieces.slice(0, n).forEach((p, i) => {
    tokens[i] = p.piece;
    scores[i] = p.score;
    // sentencepiece's IsUnknown / IsControl / IsUnused / IsByte; user-defined pieces count as normal
    types[i] = p.type === PIECE_TYPE.unknown ? TOKEN_TYPE.unknown : p.type === PIECE_TYPE.control ? TOKEN_TYPE.control : p.type === PIECE_TYPE.unused ? TOKEN_TYPE.unused : p.type === PIECE_TYPE.byte ? TOKEN_TYPE.byte : TOKEN_TYPE.normal;
  });
  const added = readOptionalJson(path.join(dir, "added_tokens.json")) ?? {};
  for (const [text, id] of Object.entries(added)) {
    if (!Number.isSafeInteger(id) || (id as number) < 0) throw new Error(`${path.join(dir, "added_tokens.json")}: token ${JSON.stringify(text)} has id ${JSON.stringify(id)}, not a token id`);
    if ((id as number) >= n) continue;
    tokens[id as number] = text;
    scores[id as number] = -1000;
    types[id as number] = TOKEN_TYPE.userDefined;
  }
  const decoder = tokConfig?.added_tokens_decoder;
  if (decoder && typeof decoder === "object") {
    for (const [key, data] of Object.entries(decoder as Json)) {
      const id = Number(key), content = (data as Json | null)?.content;
      if (!Number.isSafeInteger(id) || id < 0 || typeof content !== "string") throw new Error(`${path.join(dir, "tokenizer_config.json")}: added_tokens_decoder entry ${JSON.stringify(key)} is not an id with a content string`);
      if (id >= n) continue;
      const special = (data as Json).special === true || looksSpecial(content);
      types[id] = special ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined;
      tokens[id] = special ? content : content.replaceAll("▁", " ");
      scores[id] = -1000;
    }
  }
  return { tokens, scores, types };
}

/** get_vocab_base and get_vocab_base_pre: tokenizer.json's vocabulary and added tokens by id, and the pre-tokenizer's name. */
function bpeVocab(dir: string, vocabSize: number | undefined, log: (msg: string) => void): { tokens: string[]; types: Int32Array; pre: string } {
  const file = path.join(dir, "tokenizer.json");
  if (!existsSync(file)) throw new Error(`${dir}: no tokenizer.model and no tokenizer.json: nothing to take the vocabulary from`);
  const json = readJson(file);
  const model = json.model as Json | undefined;
  if (model?.type !== "BPE" || !model.vocab || typeof model.vocab !== "object") throw new Error(`${file}: model type ${JSON.stringify(model?.type)} is not a BPE vocabulary (only SentencePiece tokenizer.model and byte-level BPE tokenizer.json convert)`);
  if (model.byte_fallback === true) throw new Error(`${file}: a BPE vocabulary with byte fallback and no tokenizer.model (llama.cpp's LlamaHfVocab) is not converted yet`);
  const tokenizer = TextTokenizer.load(dir);
  const byId = new Map<number, string>();
  for (const [t, id] of Object.entries(model.vocab as Json)) {
    if (!Number.isSafeInteger(id) || (id as number) < 0) throw new Error(`${file}: token ${JSON.stringify(t)} has id ${JSON.stringify(id)}`);
    byId.set(id as number, t);
  }
  const addedList = Array.isArray(json.added_tokens) ? (json.added_tokens as Json[]) : [];
  const added = new Map<number, { content: string; normalized: boolean; special: boolean }>();
  for (const a of addedList) {
    if (!Number.isSafeInteger(a?.id) || (a.id as number) < 0 || typeof a.content !== "string") throw new Error(`${file}: an added token lacks an id or content`);
    added.set(a.id as number, { content: a.content, normalized: a.normalized === true, special: a.special === true });
    byId.set(a.id as number, a.content);
  }
  let maxId = -1;
  for (const id of byId.keys()) maxId = Math.max(maxId, id); // no spread: vocabularies run to 150 000+ ids
  const n = vocabSize ?? byId.size;
  if (maxId >= n) throw new Error(`${file}: token id ${maxId} is beyond the model's vocabulary of ${n}`);

  const ids = tokenizer.encode(CHKTXT);
  const hash = createHash("sha256").update(`[${ids.join(", ")}]`).digest("hex");
  let pre = KNOWN_PRE[hash];
  if (!pre) {
    // llama.cpp's converter refuses a pre-tokenizer it has no hash for; GPT-2's own (a ByteLevel pre-tokenizer with its regex, nothing else) is the one llama.cpp calls gpt-2
    const p = json.pre_tokenizer as Json | null;
    if (p?.type === "ByteLevel" && p.use_regex !== false && !json.normalizer) {
      pre = "gpt-2";
      log(`tokenizer.json: pre-tokenizer hash ${hash} is not in llama.cpp's table; its pre-tokenizer is GPT-2's ByteLevel regex, written as "gpt-2"`);
    } else throw new Error(`${file}: the BPE pre-tokenizer (hash ${hash}) is not one llama.cpp knows (convert_hf_to_gguf.py get_vocab_base_pre)`);
  }

  const tokens: string[] = [];
  const types = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let t = byId.get(i);
    if (t === undefined) {
      tokens.push(`[PAD${i}]`);
      types[i] = TOKEN_TYPE.unused;
      continue;
    }
    const a = added.get(i);
    if (a) {
      if (!a.normalized) t = tokenizer.decode(tokenizer.encode(t, false), false);
      if (a.special || looksSpecial(t)) types[i] = TOKEN_TYPE.control;
      else {
        t = t.replaceAll("▁", " ");
        types[i] = TOKEN_TYPE.userDefined;
      }
    } else types[i] = TOKEN_TYPE.normal;
    tokens.push(t);
  }
  return { tokens, types, pre };
}

/** gguf-py SpecialVocab.add_to_gguf: merges, special token ids, add_*_token, chat template. */
function addSpecialVocab(meta: Metadata, dir: string, nVocab: number | undefined, loadMerges: boolean, log: (msg: string) => void): void {
  const tokJson = readOptionalJson(path.join(dir, "tokenizer.json"));
  const tokConfig = readOptionalJson(path.join(dir, "tokenizer_config.json"));
  const config = readOptionalJson(path.join(dir, "config.json")) ?? {};
  const ids = new Map<string, number>();
  const addSpecial = new Map<string, boolean>();
  let merges: string[] = [];
  let chatTemplate: unknown;
  const setId = (typ: string, id: unknown) => {
    if (!Number.isSafeInteger(id)) return;
    if ((id as number) < 0) throw new Error(`${dir}: invalid id ${id as number} for the ${typ} token`);
    if ((nVocab === undefined || (id as number) < nVocab) && !ids.has(typ)) ids.set(typ, id as number);
  };
  const content = (v: unknown): string | undefined => (typeof v === "string" ? v : typeof (v as Json | null)?.content === "string" ? ((v as Json).content as string) : undefined);

  if (tokJson) {
    const m = (tokJson.model as Json | undefined)?.merges;
    if (loadMerges && Array.isArray(m) && m.length > 0) {
      if (typeof m[0] === "string") merges = m as string[];
      else if (Array.isArray(m[0]) && m[0].length === 2) merges = (m as string[][]).map((pair) => pair.map((part) => part.replaceAll(" ", "\u0120")).join(" "));
      else throw new Error(`${dir}/tokenizer.json: unknown merges format`);
    }
    let bos = tokConfig ? content(tokConfig.bos_token) : undefined;
    let eos = tokConfig ? content(tokConfig.eos_token) : undefined;
    const cls = tokConfig ? content(tokConfig.cls_token) : undefined;
    const post = tokJson.post_processor as Json | null | undefined;
    const processors = post ? ((post.processors as Json[] | undefined) ?? [post]) : [];
    for (const p of processors) {
      if (p?.type !== "TemplateProcessing" || !Array.isArray(p.single) || p.single.length <= 1) continue;
      const single = p.single as Json[];
      const first = content((single[0]?.SpecialToken as Json | undefined)?.id);
      if (first) {
        if (!tokConfig) bos = first;
        addSpecial.set("bos", first === bos || first === cls);
      }
      const last = content((single[single.length - 1]?.SpecialToken as Json | undefined)?.id);
      if (last) {
        if (!tokConfig) eos = last;
        addSpecial.set("eos", last === eos);
      }
    }
    if (tokConfig) {
      const tmpl = tokConfig.chat_template;
      const jinja = path.join(dir, "chat_template.jinja"), jsonTmpl = path.join(dir, "chat_template.json");
      const alt = existsSync(jinja) ? readRegularFile(jinja).toString("utf8") : existsSync(jsonTmpl) ? readJson(jsonTmpl).chat_template : undefined;
      chatTemplate = tmpl ?? alt;
      const addedTokens = Array.isArray(tokJson.added_tokens) ? (tokJson.added_tokens as Json[]) : [];
      for (const typ of SPECIAL_TYPES) {
        const add = tokConfig[`add_${typ}_token`];
        if (typeof add === "boolean") addSpecial.set(typ, add);
        const c = content(tokConfig[`${typ}_token`]);
        if (c !== undefined) setId(typ, addedTokens.find((a) => a?.content === c)?.id);
      }
    }
  }
  for (const typ of SPECIAL_TYPES) setId(typ, config[`${typ}_token_id`]);

  if (merges.length) meta.set("tokenizer.ggml.merges", [GGUF_TYPE.array, [GGUF_TYPE.string, merges]]);
  else if (loadMerges) {
    // gguf-py leaves an empty list out, and llama.cpp then refuses the file ("cannot find tokenizer merges"): an empty list loads
    meta.set("tokenizer.ggml.merges", [GGUF_TYPE.array, [GGUF_TYPE.string, []]]);
    log("tokenizer.json has no merges (one token per byte): tokenizer.ggml.merges written as an empty list, which llama.cpp loads (its converter would leave the key out and llama.cpp would refuse the file)");
  }
  for (const [typ, id] of ids) meta.set(`tokenizer.ggml.${ID_KEYS[typ as (typeof SPECIAL_TYPES)[number]]}_token_id`, [GGUF_TYPE.u32, id]);
  for (const [typ, add] of addSpecial) meta.set(`tokenizer.ggml.add_${typ}_token`, [GGUF_TYPE.bool, add]);
  if (typeof chatTemplate === "string") meta.set("tokenizer.chat_template", [GGUF_TYPE.string, chatTemplate]);
  else if (Array.isArray(chatTemplate)) {
    // GGUFWriter.add_chat_template: named templates under tokenizer.chat_template.<name> and listed, the default one last
    let def: string | undefined;
    const names: string[] = [];
    for (const t of chatTemplate as Json[]) {
      if (typeof t?.name !== "string" || typeof t.template !== "string" || !t.name) continue;
      const name = t.name.replace(/[^A-Za-z0-9]/g, "_");
      if (name === "default") def = t.template;
      else {
        names.push(name);
        meta.set(`tokenizer.chat_template.${name}`, [GGUF_TYPE.string, t.template]);
      }
    }
    if (names.length) meta.set("tokenizer.chat_templates", [GGUF_TYPE.array, [GGUF_TYPE.string, names]]);
    if (def !== undefined) meta.set("tokenizer.chat_template", [GGUF_TYPE.string, def]);
  }
}
