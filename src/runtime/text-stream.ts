// Incremental detokenisation: text pieces that can be shown as tokens arrive. The generated text is
// what decoding prompt and completion together gives, less the prompt's own text: SentencePiece's
// leading space of the first generated token stays, and a character split over tokens is emitted
// once whole. Each step decodes only a short window (the last few tokens already shown, then the new
// ones), as Hugging Face's text-generation-inference does, so a token costs the same at any length.
import type { TextTokenizer } from "../model/tokenizer.js";

/** Prompt tokens decoded before the first generated one: enough for the decoder's context (spaces, byte runs). */
const CONTEXT_TOKENS = 6;

export class TextStream {
  private readonly ids: number[];
  /** ids[prefix, read) decode to the text already shown at the end of the window */
  private prefix: number;
  private read: number;

  constructor(private readonly tokenizer: TextTokenizer, prompt: readonly number[] = []) {
    this.ids = prompt.slice(-CONTEXT_TOKENS);
    this.prefix = 0;
    this.read = this.ids.length;
  }

  /** The new text that token `id` completes (possibly empty). */
  push(id: number): string {
    this.ids.push(id);
    return this.take(false);
  }

  /** Whatever is left once the sequence is complete (an unfinished character as U+FFFD). */
  flush(): string {
    return this.take(true);
  }

  private take(final: boolean): string {
    if (this.read === this.ids.length) return "";
    const shown = this.prefix === this.read ? "" : this.tokenizer.decode(this.ids.slice(this.prefix, this.read));
    const text = this.tokenizer.decode(this.ids.slice(this.prefix));
    // an incomplete UTF-8 sequence at the end waits for its remaining bytes
    if (!final && (text.length <= shown.length || text.endsWith("\uFFFD"))) return "";
    this.prefix = this.read;
    this.read = this.ids.length;
    return text.slice(shown.length);
  }
}
