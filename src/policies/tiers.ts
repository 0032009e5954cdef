// Tier policies (MoNDE): for one MoE layer and step, given how many tokens each expert got and which
// experts' weights the fast tier holds, decide where each called expert runs. Pure functions of
// plain data; plans are priced by the setting's cost model (tiers/cost-model.ts for a fast tier beside
// a near-data tier, tiers/cell-tier-costs.ts for a base station beside its wireless devices).
//   offload: parameter offloading (DeepSpeed / FlexGen / mixtral-offloading style): every called expert
//            runs fast, its weights copied in first unless resident.
//   near:    every called expert that is not resident runs where its weights live; only rows move.
//   monde:   resident experts run fast; of the others, the h with the most tokens are copied in and
//            run fast, the rest run near, with h the one that minimises the layer's time. Both tiers
//            work at once, so this balances their finishing times, and an expert is copied only when
//            its tokens pay for its weights (the cost model's break-even). Decode steps bring one token
//            per expert, which never pays; so the expert with the most load over the recent window is
//            prefetched (copied in the background, for later steps; it runs near now) when that load
//            exceeds the load of the expert it would push out by the copy's payback and the link has
//            room for the copy within the layer's time, one per layer and step: the hot set follows
//            the statistics of recent steps, as EPLB re-lays experts out in the background, changes
//            only when the traffic has moved enough to pay, and never slows the step it starts in.
import type { TierPlan } from "../tiers/cost-model.js";

export const TIER_POLICIES = ["offload", "near", "monde"] as const;
export type TierPolicyName = (typeof TIER_POLICIES)[number];

/** What a setting's cost model says about one layer and step's plans. */
export interface TierPricing {
  /** the modelled time of the layer carrying out `plan` this step, ms (a background copy counts only where it delays the step) */
  time(plan: TierPlan): number;
  /** one-token calls of `expert` after which copying it in has paid for the copy (Infinity: never) */
  payback(expert: number): number;
  /** among experts with as many tokens, which to copy first (higher first): where near costs differ per expert, the slowest */
  rank?(expert: number): number;
}

export interface TierInput {
  /** per expert of the layer: tokens routed to it this step (0: not called) */
  counts: ArrayLike<number>;
  /** per expert: whether the fast tier holds its weights now */
  resident: ArrayLike<boolean>;
  price: TierPricing;
  /**
   * monde: per expert, its tokens over the recent window; the windowed load of the expert a copy
   * would push out; and the experts already on their way in (not asked for twice)
   */
  window?: { load: ArrayLike<number>; displaced: number; arriving?: ArrayLike<boolean> };
}

/** The called experts, most tokens first (then by the pricing's rank, then lower index first). */
function calledByLoad(counts: ArrayLike<number>, price: TierPricing): number[] {
  const called: number[] = [];
  for (let e = 0; e < counts.length; e++) if (counts[e]! > 0) called.push(e);
  const rank = new Float64Array(counts.length);
  if (price.rank) for (const e of called) rank[e] = price.rank(e);
  return called.sort((a, b) => counts[b]! - counts[a]! || rank[b]! - rank[a]! || a - b);
}

export function planTiers(policy: TierPolicyName, input: TierInput): TierPlan {
  const { counts, resident, price } = input;
  const called = calledByLoad(counts, price);
  const held = called.filter((e) => resident[e]);
  const cold = called.filter((e) => !resident[e]);
  switch (policy) {
    case "offload":
      return { fast: called, copy: cold, near: [], prefetch: [] };
    case "near":
      return { fast: held, copy: [], near: cold, prefetch: [] };
    case "monde": {
      const split = (h: number): TierPlan => ({ fast: [...held, ...cold.slice(0, h)], copy: cold.slice(0, h), near: cold.slice(h), prefetch: [] });
      let best = split(0), bestMs = price.time(best);
      for (let h = 1; h <= cold.length; h++) {
        const plan = split(h), ms = price.time(plan);
        if (ms < bestMs) [best, bestMs] = [plan, ms];
      }
      // of the experts left near, the most used lately, if its load has paid for a copy and the link
      // has room for it in this layer's time: hot by statistics, at no cost to this step
      const w = input.window;
      const warm = w ? best.near.filter((e) => !w.arriving?.[e] && w.load[e]! - w.displaced >= price.payback(e)).sort((a, b) => w.load[b]! - w.load[a]! || a - b)[0] : undefined;
      if (warm === undefined) return best;
      const withCopy = { ...best, prefetch: [warm] };
      return price.time(withCopy) <= bestMs ? withCopy : best;
    }
  }
}
