// Perplexity under a fixed protocol, so figures compare across implementations (../shared/golden):
// BOS before every line, lines concatenated, the first N+1 tokens, non-overlapping windows of 256
// targets, each window evaluated from an empty cache.
import type { Transformer } from "../model/forward.js";
import type { TextTokenizer } from "../model/tokenizer.js";

export const PPL_WINDOW = 256;

export interface PerplexityResult {
  perplexity: number;
  tokens: number;
  nll_sum: number;
  /** Targets whose argmax prediction was right. */
  correct: number;
}

/** The first `count` tokens of a text under the protocol: each line encoded as the tokenizer does by default (BOS first). */
export function protocolTokens(tokenizer: TextTokenizer, text: string, count: number): number[] {
  const out: number[] = [];
  for (const line of text.split("\n")) {
    if (out.length >= count) break;
    if (line.length === 0) continue;
    out.push(...tokenizer.encode(line));
  }
  if (out.length < count) throw new Error(`the text holds only ${out.length} tokens; ${count} are needed`);
  return out.slice(0, count);
}

/** log p(target | logits), in float64. */
export function logProb(logits: Float32Array, target: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return logits[target]! - max - Math.log(sum);
}

export interface PerplexityHooks {
  onProgress?: (done: number, total: number) => void;
  /** before each window: it feeds tokens[start .. start + n) */
  onWindow?: (start: number, n: number) => void;
}

export async function perplexity(model: Transformer, tokens: readonly number[], hooks: PerplexityHooks = {}): Promise<PerplexityResult> {
  const targets = tokens.length - 1;
  const V = model.config.vocabSize;
  let nll = 0, correct = 0;
  const cache = model.newSequence(PPL_WINDOW);
  try {
    for (let start = 0; start < targets; start += PPL_WINDOW) {
      const n = Math.min(PPL_WINDOW, targets - start);
      cache.clear();
      hooks.onWindow?.(start, n);
      const [logits] = await model.forward([{ cache, tokens: tokens.slice(start, start + n), logits: "all" }]);
      for (let i = 0; i < n; i++) {
        const row = logits!.subarray(i * V, (i + 1) * V);
        const target = tokens[start + i + 1]!;
        nll -= logProb(row, target);
        let best = 0;
        for (let j = 1; j < V; j++) if (row[j]! > row[best]!) best = j;
        if (best === target) correct++;
      }
      hooks.onProgress?.(start + n, targets);
    }
  } finally {
    cache.free();
  }
  return { perplexity: Math.exp(nll / targets), tokens: targets, nll_sum: nll, correct };
}
