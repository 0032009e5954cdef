// Incremental detokenisation: text pieces that can be shown as tokens arrive. Decoding the whole
// sequence and emitting the new suffix keeps SentencePiece spaces and multi-byte characters right;
// an incomplete UTF-8 sequence (U+FFFD at the end) is held back until its remaining bytes arrive.
import type { TextTokenizer } from "../model/tokenizer.js";

export class TextStream {
  private readonly ids: number[] = [];
  private emitted = 0;

  constructor(private readonly tokenizer: TextTokenizer) {}

  /** The new text that token `id` completes (possibly empty). */
  push(id: number): string {
    this.ids.push(id);
    const text = this.tokenizer.decode(this.ids);
    if (text.endsWith("\uFFFD") || text.length <= this.emitted) return "";
    const piece = text.slice(this.emitted);
    this.emitted = text.length;
    return piece;
  }

  /** Whatever is left once the sequence is complete. */
  flush(): string {
    const text = this.tokenizer.decode(this.ids);
    const piece = text.slice(this.emitted);
    this.emitted = text.length;
    return piece;
  }

}
