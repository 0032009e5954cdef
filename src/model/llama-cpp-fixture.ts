// What scripts/llama-cpp-fixture.mjs asks llama.cpp, and where it keeps the answers: the tokenization
// of every 25th line of the shipped validation corpus and of texts that probe spaces, special tokens and
// characters beyond ASCII; greedy tokens after one prompt.
export const FIXTURE = "src/model/fixtures/llama-cpp.json";

export const EDGE_TEXTS: readonly string[] = [
  " leading space", "trailing space ", "  two  spaces  ", "\ttab\tand\nnew\nlines\n", "\n\nblank lines first",
  "<s> starts with BOS text", "mid </s> text <unk> here", "a<s>b", "ünïcödé ✓ 🙂 日本語", "don't 'RE you'll", "3.14159 and 1,000,000",
];

export function tokenizeSamples(corpus: string): string[] {
  const lines = corpus.split("\n").filter((l) => l.length > 0);
  return [...lines.filter((_, i) => i % 25 === 0), ...EDGE_TEXTS];
}

export const GREEDY_PROMPT = "The jury said";
export const GREEDY_TOKENS = 16;

export interface LlamaCppFixture {
  llamaCpp: string;
  texts: string[];
  /** GGUF file → llama-tokenize's ids for each text. */
  ids: Record<string, number[][]>;
  /** GGUF file → the prompt's ids then GREEDY_TOKENS greedy ids (EOS does not stop llama.cpp here). */
  greedy: Record<string, number[]>;
}
