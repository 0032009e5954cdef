// A deadline-aware selection policy: each token has a latency budget, shared evenly by the MoE layers,
// and in each layer a top-k candidate is kept only if its device is expected to answer within the
// layer's share. So a token never waits on a slow link when a fast one carries most of the weight, and
// the budget, unlike WLR's θ, is stated in the unit a service level is written in.
import { expertLatencies, keepCandidates, selectTopK, type SelectionPolicy } from "./selection.js";

export interface DeadlineParams {
  /** each MoE layer's share of the token's budget, ms (Infinity: the model's own routing) */
  layerBudgetMs: number;
  /** scale the kept weights up to the candidates' total (default); false keeps them as they were */
  renormalize?: boolean;
}

/** Keeps the top-k candidates expected to answer within the layer budget; when none can, the one expected first. */
export function selectDeadline(params: DeadlineParams): SelectionPolicy {
  const { layerBudgetMs } = params;
  if (!(layerBudgetMs > 0)) throw new Error(`deadline: the layer budget must be positive, got ${layerBudgetMs} ms`);
  return (router, ctx) => {
    const top = selectTopK(router, ctx);
    const latency = expertLatencies(ctx, "deadline");
    const ms = (i: number) => latency[top.experts[i]!]!;
    const kept = new Uint8Array(top.experts.length);
    for (let r = 0; r < top.rows; r++) {
      const from = top.offsets[r]!, to = top.offsets[r + 1]!;
      let fastest = from, any = false;
      for (let i = from; i < to; i++) {
        if (ms(i) < ms(fastest)) fastest = i;
        if (ms(i) <= layerBudgetMs) {
          kept[i] = 1;
          any = true;
        }
      }
      if (!any) kept[fastest] = 1;
    }
    return keepCandidates(top, params.renormalize ?? true, kept);
  };
}
