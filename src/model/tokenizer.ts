// The model's tokenizer (tokenizer.json through @huggingface/tokenizers) and chat template
// (tokenizer_config.json `chat_template`, rendered with @huggingface/jinja).
import { existsSync } from "node:fs";
import { readRegularFile } from "../util/read-file.js";
import path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";

export interface ChatMessage {
  role: string;
  content: string;
}

export function readJson(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readRegularFile(file).toString("utf8");
  } catch (e) {
    throw new Error(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error("not a JSON object");
    return v as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${file}: does not parse (${(e as Error).message})`);
  }
}

/** A special token in tokenizer_config.json is a string or an AddedToken-like {content}. */
function tokenText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") return (v as { content: string }).content;
  return undefined;
}

/** Characters in the longest vocabulary entry or added token of a tokenizer.json (BPE and WordPiece map entries to ids; Unigram lists [entry, score]). */
function longestEntry(json: Record<string, unknown>): number {
  const vocab = (json.model as { vocab?: unknown } | undefined)?.vocab;
  const entries = Array.isArray(vocab) ? vocab.map((e: unknown) => (Array.isArray(e) ? e[0] : e)) : vocab && typeof vocab === "object" ? Object.keys(vocab) : [];
  const added = Array.isArray(json.added_tokens) ? json.added_tokens.map((t: { content?: unknown }) => t?.content) : [];
  return Math.max(1, ...[...entries, ...added].map((e) => (typeof e === "string" ? [...e].length : 1)));
}

export class TextTokenizer {
  readonly bosToken?: string;
  readonly eosToken?: string;
  readonly chatTemplate?: string;
  /**
   * The most characters one token stands for (the longest vocabulary entry): a text of n characters is
   * at least n / maxTokenChars tokens, known without encoding it.
   */
  readonly maxTokenChars: number;

  private constructor(private readonly tok: Tokenizer, json: Record<string, unknown>, config: Record<string, unknown>, readonly file: string) {
    this.maxTokenChars = longestEntry(json);
    this.bosToken = tokenText(config.bos_token);
    this.eosToken = tokenText(config.eos_token);
    const tmpl = config.chat_template;
    if (typeof tmpl === "string") this.chatTemplate = tmpl;
    else if (Array.isArray(tmpl)) {
      // a list of named templates: use "default"
      const d = tmpl.find((t: { name?: string }) => t?.name === "default") as { template?: string } | undefined;
      if (typeof d?.template === "string") this.chatTemplate = d.template;
    }
  }

  static load(dir: string): TextTokenizer {
    const file = path.join(dir, "tokenizer.json");
    if (!existsSync(file)) throw new Error(`${dir}: no tokenizer.json`);
    const json = readJson(file);
    const cfgFile = path.join(dir, "tokenizer_config.json");
    const config = existsSync(cfgFile) ? readJson(cfgFile) : {};
    return TextTokenizer.fromJson(json, config, file);
  }

  /** A tokenizer from a tokenizer.json-shaped object and tokenizer_config.json-shaped settings; `file` names their source in messages. */
  static fromJson(json: Record<string, unknown>, config: Record<string, unknown>, file: string): TextTokenizer {
    let tok: Tokenizer;
    try {
      tok = new Tokenizer(json, config);
      tok.encode("probe");
    } catch (e) {
      throw new Error(`${file}: not a usable tokenizer (${(e as Error).message})`);
    }
    return new TextTokenizer(tok, json, config, file);
  }

  /** Token ids as the tokenizer produces them by default (special tokens such as BOS included). */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: readonly number[], skipSpecialTokens = true): string {
    return this.tok.decode(ids as number[], { skip_special_tokens: skipSpecialTokens });
  }

  tokenId(token: string | undefined): number | undefined {
    return token === undefined ? undefined : this.tok.token_to_id(token);
  }

  /** The prompt text for a conversation, by the model's chat template. */
  applyChatTemplate(messages: ChatMessage[], addGenerationPrompt = true): string {
    if (!this.chatTemplate) throw new Error(`${this.file.replace(/tokenizer\.json$/, "tokenizer_config.json")}: this model has no chat_template`);
    return new Template(this.chatTemplate).render({
      messages,
      add_generation_prompt: addGenerationPrompt,
      bos_token: this.bosToken ?? "",
      eos_token: this.eosToken ?? "",
    });
  }
}
