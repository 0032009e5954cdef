// Gate logits → routing probabilities (softmax over every expert, as Mixtral, Qwen-MoE and OLMoE do).

/** Into `out` (at least rows × experts long) when given; the result is then out's first rows × experts values. */
export function routerProbabilities(logits: Float32Array, rows: number, experts: number, out?: Float32Array): Float32Array {
  const probs = out ? out.subarray(0, rows * experts) : new Float32Array(rows * experts);
  for (let r = 0; r < rows; r++) {
    const o = r * experts;
    let max = -Infinity;
    for (let e = 0; e < experts; e++) max = Math.max(max, logits[o + e]!);
    let sum = 0;
    for (let e = 0; e < experts; e++) sum += Math.exp(logits[o + e]! - max);
    for (let e = 0; e < experts; e++) probs[o + e] = Math.exp(logits[o + e]! - max) / sum;
  }
  return probs;
}
