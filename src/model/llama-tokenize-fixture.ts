// What scripts/llama-tokenize-fixture.mjs asks llama.cpp to tokenize, and where it keeps the answers:
// every 25th line of the shipped validation corpus, then texts that probe spaces, special tokens and
// characters beyond ASCII.
export const FIXTURE = "src/model/fixtures/llama-tokenize.json";

export const EDGE_TEXTS: readonly string[] = [
  " leading space", "trailing space ", "  two  spaces  ", "\ttab\tand\nnew\nlines\n", "\n\nblank lines first",
  "<s> starts with BOS text", "mid </s> text <unk> here", "a<s>b", "ünïcödé ✓ 🙂 日本語", "don't 'RE you'll", "3.14159 and 1,000,000",
];

export function tokenizeSamples(corpus: string): string[] {
  const lines = corpus.split("\n").filter((l) => l.length > 0);
  return [...lines.filter((_, i) => i % 25 === 0), ...EDGE_TEXTS];
}
