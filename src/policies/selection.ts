// Expert selection policies: pure functions from router output (and, for later policies, cost state)
// to a routing decision. The engine, the evaluation and the simulator all call these same functions.

/** The gating network's output for one layer and step. */
export interface RouterOutput {
  readonly layer: number;
  readonly rows: number;
  readonly experts: number;
  /** rows × experts gate logits */
  readonly logits: Float32Array;
  /** rows × experts softmax probabilities */
  readonly probs: Float32Array;
}

/**
 * For each row r, experts[offsets[r] .. offsets[r+1]) were chosen, highest weight first, with the
 * weights beside them. Rows may keep different numbers of experts.
 */
export interface RoutingDecision {
  readonly rows: number;
  readonly offsets: Int32Array;
  readonly experts: Int32Array;
  readonly weights: Float32Array;
}

export interface SelectionContext {
  /** The model's own number of experts per token. */
  readonly topK: number;
  /** Renormalise the kept weights to sum to 1 (the model's norm_topk_prob). */
  readonly normalize: boolean;
}

export type SelectionPolicy = (router: RouterOutput, ctx: SelectionContext) => RoutingDecision;

/** The model's own routing: the k most probable experts, optionally renormalised. */
export const selectTopK: SelectionPolicy = (router, ctx) => {
  const { rows, experts, probs } = router;
  const k = Math.min(ctx.topK, experts);
  const offsets = new Int32Array(rows + 1);
  const chosen = new Int32Array(rows * k);
  const weights = new Float32Array(rows * k);
  const order = new Int32Array(experts);
  for (let r = 0; r < rows; r++) {
    const p = probs.subarray(r * experts, (r + 1) * experts);
    for (let e = 0; e < experts; e++) order[e] = e;
    // partial selection sort (k is small); on equal probability the lower expert index wins
    const better = (a: number, b: number) => p[a]! > p[b]! || (p[a] === p[b] && a < b);
    for (let i = 0; i < k; i++) {
      let best = i;
      for (let j = i + 1; j < experts; j++) if (better(order[j]!, order[best]!)) best = j;
      const t = order[i]!;
      order[i] = order[best]!;
      order[best] = t;
    }
    let sum = 0;
    for (let i = 0; i < k; i++) sum += p[order[i]!]!;
    for (let i = 0; i < k; i++) {
      chosen[r * k + i] = order[i]!;
      weights[r * k + i] = ctx.normalize ? p[order[i]!]! / sum : p[order[i]!]!;
    }
    offsets[r + 1] = (r + 1) * k;
  }
  return { rows, offsets, experts: chosen, weights };
};
