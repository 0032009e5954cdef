// Expert selection jointly with bandwidth allocation (the journal WDMoE's idea), for one layer:
//   minimise the layer's time T(S, β) = max_k t_k(S, β_k)
//   subject to Σ β_k ≤ 1, and for every token: kept gate mass ≥ (1 − ε) × its top-k mass, ≥ 1 expert.
// For a fixed selection S the best split is allocateBandwidth's (equal finishing times). The solver
// alternates: starting from top-k, it tries to relieve each device in turn (dropping that device's
// token-expert pairs, lightest first, as far as the tokens' quality budgets allow), re-solves the
// split for each trial, keeps the trial that shortens T most, and stops when none does. Kept weights
// are scaled back to each token's top-k total, as WLR does. ε = 0 is top-k with the optimal split.
import { callMs } from "../channel/latency.js";
import { allocateBandwidth, type BandwidthAllocation, type BandwidthDemand } from "./bandwidth.js";
import { selectTopK, type RadioCosts, type SelectionPolicy } from "./selection.js";

export interface JointParams {
  /** the share of each token's top-k gate mass that may be dropped */
  epsilon: number;
}

/** The best split of the band for a layer's (token, expert) pairs (those `kept`, default all), and the layer's time with it. */
export function allocateForPairs(radio: RadioCosts, experts: Int32Array, kept?: Uint8Array): BandwidthAllocation {
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

export function selectJoint(params: JointParams): SelectionPolicy {
  const { epsilon } = params;
  if (!(epsilon >= 0 && epsilon < 1)) throw new Error(`joint: epsilon must be in [0, 1), got ${epsilon}`);
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
    let kept: Uint8Array = new Uint8Array(pairs).fill(1);
    let mass: Float64Array = Float64Array.from(total);
    let count: Int32Array = Int32Array.from({ length: top.rows }, (_, r) => top.offsets[r + 1]! - top.offsets[r]!);
    let best = allocateForPairs(radio, top.experts, kept);
    // the pairs of each device, lightest first
    const byDevice = radio.devices.map(() => [] as number[]);
    for (let i = 0; i < pairs; i++) byDevice[radio.expertDevice[top.experts[i]!]!]!.push(i);
    for (const list of byDevice) list.sort((a, b) => top.weights[a]! - top.weights[b]!);

    for (;;) {
      let step: { kept: Uint8Array; mass: Float64Array; count: Int32Array; alloc: BandwidthAllocation } | null = null;
      for (const list of byDevice) {
        const k2 = kept.slice(), m2 = mass.slice(), c2 = count.slice();
        let dropped = 0;
        for (const i of list) {
          const r = rowOf[i]!;
          if (!k2[i] || c2[r]! <= 1 || m2[r]! - top.weights[i]! < (1 - epsilon) * total[r]! - 1e-12) continue;
          k2[i] = 0;
          m2[r]! -= top.weights[i]!;
          c2[r]!--;
          dropped++;
        }
        if (dropped === 0) continue;
        const alloc = allocateForPairs(radio, top.experts, k2);
        if (alloc.finishMs < (step?.alloc.finishMs ?? best.finishMs)) step = { kept: k2, mass: m2, count: c2, alloc };
      }
      if (!step) break;
      ({ kept, mass, count } = step);
      best = step.alloc;
    }

    const offsets = new Int32Array(top.rows + 1);
    const experts: number[] = [], weights: number[] = [];
    for (let r = 0; r < top.rows; r++) {
      const scale = mass[r]! < total[r]! ? total[r]! / mass[r]! : 1;
      for (let i = top.offsets[r]!; i < top.offsets[r + 1]!; i++) {
        if (!kept[i]) continue;
        experts.push(top.experts[i]!);
        weights.push(top.weights[i]! * scale);
      }
      offsets[r + 1] = experts.length;
    }
    return { rows: top.rows, offsets, experts: Int32Array.from(experts), weights: Float32Array.from(weights), bandwidthShares: Float64Array.from(best.shares) };
  };
}
