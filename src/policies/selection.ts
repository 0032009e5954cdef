// Expert selection policies: pure functions from router output (and, for later policies, cost state)
// to a routing decision. The engine, the evaluation and the simulator all call these same functions.
import type { RadioLink } from "../channel/radio.js";

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
  /** joint policies: each device's share of the cell's bandwidth for this layer */
  readonly bandwidthShares?: Float64Array;
}

/** The cost model's state for one layer and step, as latency-aware policies read it. */
export interface LayerCosts {
  /** per expert: the expected time of a one-token call to the device serving it (downlink + compute + uplink), ms */
  readonly expertLatencyMs: Float64Array;
  /** the radio side, for policies that allocate bandwidth */
  readonly radio?: RadioCosts;
}

export interface RadioCosts {
  cellHz: number;
  /** bits of one row of activations on the wire */
  rowBits: number;
  /** per expert of the layer: the index of the device serving it */
  expertDevice: Int32Array;
  /** per device: its radio link now, its expert calls' roofline (see channel/latency.ts) and its fixed delay each way */
  devices: ReadonlyArray<{ link: RadioLink; weightMs: number; rowMs: number; delayMs: number }>;
}

export interface SelectionContext {
  /** The model's own number of experts per token. */
  readonly topK: number;
  /** Renormalise the kept weights to sum to 1 (the model's norm_topk_prob). */
  readonly normalize: boolean;
  /** Present when the runtime or the evaluation has a cost model. */
  readonly costs?: LayerCosts;
  /** The router output's top-k (selectTopK of it), when the caller has it already: the simulator keeps it per router row. */
  readonly top?: RoutingDecision;
}

/** Arrays a decision is written into (see selectTopKInto). */
export interface DecisionBuffers {
  offsets: Int32Array;
  experts: Int32Array;
  weights: Float32Array;
}

export type SelectionPolicy = (router: RouterOutput, ctx: SelectionContext) => RoutingDecision;

/** The model's own routing: the k most probable experts, optionally renormalised. */
export const selectTopK: SelectionPolicy = (router, ctx) => {
  if (ctx.top) return ctx.top;
  const k = Math.min(ctx.topK, router.experts);
  return selectTopKInto(router, ctx, { offsets: new Int32Array(router.rows + 1), experts: new Int32Array(router.rows * k), weights: new Float32Array(router.rows * k) });
};

/**
 * selectTopK written into `into`, whose arrays are replaced where their size is not the decision's: for
 * a caller that is done with each decision before the next (the engine's MoE layers when no trace keeps
 * decisions), so that a decode step allocates none. Not for policies that call it per row and keep the results.
 */
export function selectTopKInto(router: RouterOutput, ctx: SelectionContext, into: DecisionBuffers): RoutingDecision {
  const { rows, experts, probs } = router;
  const k = Math.min(ctx.topK, experts), normalize = ctx.normalize;
  if (into.offsets.length !== rows + 1) into.offsets = new Int32Array(rows + 1);
  if (into.experts.length !== rows * k) [into.experts, into.weights] = [new Int32Array(rows * k), new Float32Array(rows * k)];
  const { offsets, experts: chosen, weights } = into;
  offsets[0] = 0;
  if (topValues.length < k) topValues = new Float64Array(k);
  const v = topValues;
  for (let r = 0; r < rows; r++) {
    const p = r * experts, out = r * k;
    // insertion into the row's top k, highest first (k is small); on equal probability the lower expert index stays ahead
    let n = 0;
    for (let e = 0; e < experts; e++) {
      const x = probs[p + e]!;
      if (n === k && !(x > v[k - 1]!)) continue;
      let j = n < k ? n++ : k - 1;
      for (; j > 0 && v[j - 1]! < x; j--) {
        v[j] = v[j - 1]!;
        chosen[out + j] = chosen[out + j - 1]!;
      }
      v[j] = x;
      chosen[out + j] = e;
    }
    let sum = 0;
    for (let i = 0; i < k; i++) sum += v[i]!;
    for (let i = 0; i < k; i++) weights[out + i] = normalize ? v[i]! / sum : v[i]!;
    offsets[r + 1] = out + k;
  }
  return { rows, offsets, experts: chosen, weights };
}
/** selectTopK's scratch: the current row's best probabilities */
let topValues = new Float64Array(16);

/** The sum of the k largest of `p`: a token's top-k gate mass, against which dropped mass is measured. */
export function topKMass(p: ArrayLike<number>, k: number): number {
  const best = new Float64Array(k).fill(-Infinity);
  for (let i = 0; i < p.length; i++) {
    const v = p[i]!;
    if (v <= best[k - 1]!) continue;
    let j = k - 1;
    for (; j > 0 && best[j - 1]! < v; j--) best[j] = best[j - 1]!;
    best[j] = v;
  }
  return best.reduce((a, b) => a + b, 0);
}

/**
 * The shape every dropping policy shares: start from the top-k, keep the candidates marked in `kept`
 * (one flag per entry of top's arrays; every row keeps at least one), and scale the kept weights back
 * to the candidates' total when `renormalize`, so a token's output keeps its magnitude.
 */
export function keepCandidates(top: RoutingDecision, renormalize: boolean, kept: Uint8Array): RoutingDecision {
  let n = 0;
  for (let i = 0; i < kept.length; i++) if (kept[i]) n++;
  const offsets = new Int32Array(top.rows + 1), experts = new Int32Array(n), weights = new Float32Array(n);
  let at = 0;
  for (let r = 0; r < top.rows; r++) {
    const from = top.offsets[r]!, to = top.offsets[r + 1]!;
    let total = 0, keptSum = 0, keptCount = 0;
    for (let i = from; i < to; i++) {
      total += top.weights[i]!;
      if (kept[i]) {
        keptSum += top.weights[i]!;
        keptCount++;
      }
    }
    if (keptCount === 0) throw new Error(`a selection policy kept no expert for row ${r}`);
    const scale = renormalize && keptCount < to - from ? total / keptSum : 1;
    for (let i = from; i < to; i++) {
      if (!kept[i]) continue;
      experts[at] = top.experts[i]!;
      weights[at++] = top.weights[i]! * scale;
    }
    offsets[r + 1] = at;
  }
  return { rows: top.rows, offsets, experts, weights };
}

export function expertLatencies(ctx: SelectionContext, policy: string): Float64Array {
  const latency = ctx.costs?.expertLatencyMs;
  if (!latency) throw new Error(`the ${policy} policy needs the experts' latencies: run it with a cost model (a scenario or a cluster)`);
  return latency;
}

export interface WlrParams {
  /** keep a candidate when its weight-to-latency ratio is at least θ × the best one's; θ = 0 keeps all */
  theta: number;
  /** scale the kept weights up to the candidates' total (default); false keeps them as they were */
  renormalize?: boolean;
}

/**
 * WDMoE's weight-to-latency ratio rule. Among the model's top-k candidates of a token, WLR_e = w_e / t_e,
 * with t_e the latency of the device serving expert e. The candidate with the best ratio is always
 * kept; another only if WLR_e ≥ θ · WLR_best. So a token may use fewer experts when a slow link is not
 * worth its weight. θ = 0 is the model's own top-k routing, exactly.
 */
export function selectWlr(params: WlrParams): SelectionPolicy {
  const { theta } = params;
  if (!(theta >= 0 && theta <= 1)) throw new Error(`wlr: theta must be in [0, 1], got ${theta}`);
  return (router, ctx) => {
    const top = selectTopK(router, ctx);
    const latency = expertLatencies(ctx, "wlr");
    const ratio = (i: number) => top.weights[i]! / Math.max(latency[top.experts[i]!]!, 1e-9);
    const kept = new Uint8Array(top.experts.length);
    for (let r = 0; r < top.rows; r++) {
      const from = top.offsets[r]!, to = top.offsets[r + 1]!;
      let best = from;
      for (let i = from + 1; i < to; i++) if (ratio(i) > ratio(best)) best = i;
      const bar = theta * ratio(best);
      for (let i = from; i < to; i++) kept[i] = i === best || ratio(i) >= bar ? 1 : 0;
    }
    return keepCandidates(top, params.renormalize ?? true, kept);
  };
}
