// Expert selection jointly with bandwidth allocation (the journal WDMoE's idea), for one layer:
//   minimise  J(S) = T(S, β*(S)) / T₀ + κ · Σ_r φ(d_r) / rows,   κ = (1 − θ) / θ,   φ(d) = d / (1 − d)
// T(S, β) = max_k t_k(S, β_k) is the layer's time with the devices' band shares β (Σ β_k ≤ 1), β*(S)
// the split that makes the called devices finish together (allocateBandwidth), T₀ the time of top-k.
// d_r is the share of token r's top-k gate mass that S drops; every token keeps ≥ 1 expert. The kept
// weights are scaled back to the top-k total, i.e. inflated by 1 / (1 − d), so φ(d) = d / (1 − d) is
// that inflation: about d for a light expert, and steep when a token loses its main expert. κ prices
// it in relative latency, the Lagrange multiplier of a budget on distortion per step: θ = 0 never
// drops (top-k with the optimal split), θ → 1 drops whatever saves any time. Pricing, unlike a floor
// per token, spends the quality budget where it buys the most latency.
// The alternative setting "token-mass" holds every token to ≥ (1 − θ) of its top-k mass and minimises
// T alone. The solver is greedy: from top-k, each trial relieves one device (of its lightest
// droppable pair, or of all of them), re-solves the split, and the trial that lowers J most is kept,
// until none does.
import { callMs } from "../channel/latency.js";
import { allocateBandwidth, type BandwidthAllocation, type BandwidthDemand } from "./bandwidth.js";
import { keepCandidates, selectTopK, type RadioCosts, type SelectionPolicy } from "./selection.js";

export type JointQuality = "price" | "token-mass";

export interface JointParams {
  /** the knob θ ∈ [0, 1): 0 is top-k with the optimal split; larger trades more gate mass for latency */
  theta: number;
  /** how quality is held (default "price"; see above) */
  quality?: JointQuality;
}

/** The best split of the band for a layer's (token, expert) pairs (those `kept`, default all), and the layer's time with it. */
export function allocateForPairs(radio: RadioCosts, experts: ArrayLike<number>, kept?: Uint8Array): BandwidthAllocation {
  const rowsPerExpert = new Map<number, number>();
  for (let i = 0; i < experts.length; i++) if (!kept || kept[i]) rowsPerExpert.set(experts[i]!, (rowsPerExpert.get(experts[i]!) ?? 0) + 1);
  const demands: Array<BandwidthDemand | null> = radio.devices.map(() => null);
  for (const [expert, rows] of rowsPerExpert) {
    const k = radio.expertDevice[expert]!, dev = radio.devices[k]!;
    const d = (demands[k] ??= { downBits: 0, upBits: 0, fixedMs: 2 * dev.delayMs, link: dev.link });
    d.downBits += rows * radio.rowBits;
    d.upBits += rows * radio.rowBits;
    d.fixedMs += callMs({ weightMs: dev.weightMs, rowMs: dev.rowMs, link: null }, rows);
  }
  return allocateBandwidth(demands, radio.cellHz);
}

interface JointState {
  kept: Uint8Array;
  /** per token: kept gate mass, kept experts */
  mass: Float64Array;
  count: Int32Array;
  /** Σ over tokens of φ(dropped share of the token's top-k mass) */
  dropped: number;
  alloc: BandwidthAllocation;
  objective: number;
}

export function selectJoint(params: JointParams): SelectionPolicy {
  const { theta } = params;
  const quality = params.quality ?? "price";
  if (!(theta >= 0 && theta < 1)) throw new Error(`joint: theta must be in [0, 1), got ${theta}`);
  const kappa = theta > 0 ? (1 - theta) / theta : Infinity;
  return (router, ctx) => {
    const top = selectTopK(router, ctx);
    const radio = ctx.costs?.radio;
    if (!radio) throw new Error("the joint policy needs the cell's radio state: run it with a scenario");
    const pairs = top.offsets[top.rows]!;
    const rowOf = new Int32Array(pairs);
    const total = new Float64Array(top.rows);
    for (let r = 0; r < top.rows; r++) {
      for (let i = top.offsets[r]!; i < top.offsets[r + 1]!; i++) {
        rowOf[i] = r;
        total[r]! += top.weights[i]!;
      }
    }
    const first = allocateForPairs(radio, top.experts);
    const t0 = Math.max(first.finishMs, 1e-12);
    const objective = (alloc: BandwidthAllocation, dropped: number) => (quality === "price" ? alloc.finishMs / t0 + (dropped > 0 ? kappa * (dropped / top.rows) : 0) : alloc.finishMs);
    let state: JointState = {
      kept: new Uint8Array(pairs).fill(1),
      mass: Float64Array.from(total),
      count: Int32Array.from({ length: top.rows }, (_, r) => top.offsets[r + 1]! - top.offsets[r]!),
      dropped: 0,
      alloc: first,
      objective: objective(first, 0),
    };
    // the pairs of each device, lightest first
    const byDevice = radio.devices.map(() => [] as number[]);
    for (let i = 0; i < pairs; i++) byDevice[radio.expertDevice[top.experts[i]!]!]!.push(i);
    for (const list of byDevice) list.sort((a, b) => top.weights[a]! - top.weights[b]!);

    /** `from` with up to `limit` more of `list`'s pairs dropped, lightest first, as far as the tokens allow; null if none could be. */
    const relieve = (from: JointState, list: readonly number[], limit: number): JointState | null => {
      const kept = from.kept.slice(), mass = from.mass.slice(), count = from.count.slice();
      let dropped = from.dropped, n = 0;
      for (const i of list) {
        if (n >= limit) break;
        const r = rowOf[i]!;
        if (!kept[i] || count[r]! <= 1) continue;
        if (quality === "token-mass" && mass[r]! - top.weights[i]! < (1 - theta) * total[r]! - 1e-12) continue;
        kept[i] = 0;
        mass[r]! -= top.weights[i]!;
        count[r]!--;
        const before = 1 - (mass[r]! + top.weights[i]!) / total[r]!, after = 1 - mass[r]! / total[r]!;
        dropped += after / (1 - after) - before / (1 - before);
        n++;
      }
      if (n === 0) return null;
      const alloc = allocateForPairs(radio, top.experts, kept);
      return { kept, mass, count, dropped, alloc, objective: objective(alloc, dropped) };
    };

    if (theta > 0) {
      for (;;) {
        let best: JointState | null = null;
        for (const list of byDevice) {
          for (const limit of list.length > 1 ? [1, Infinity] : [1]) {
            const trial = relieve(state, list, limit);
            if (trial && trial.objective < (best ?? state).objective - 1e-12) best = trial;
          }
        }
        if (!best) break;
        state = best;
      }
    }
    const decision = keepCandidates(top, true, state.kept);
    return { ...decision, bandwidthShares: Float64Array.from(state.alloc.shares) };
  };
}
