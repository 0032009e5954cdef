// What a tier policy reads for one layer, built the same way by the runtime's tiered executor, the
// simulated bench and the base station's tiers in the cell: the step's token counts, which experts the
// fast tier holds, and for MoNDE's statistics the windowed load, the load of the expert a copy would
// push out and the experts already on their way in. And a step's plan carried out on the cache, where
// copies are made at once (the simulations; the runtime's copies land one by one as they arrive).
import type { TierInput, TierPricing } from "../policies/tiers.js";
import type { TierPlan } from "./cost-model.js";
import type { ExpertCache } from "./expert-cache.js";

export function layerInput<T>(layer: number, counts: Int32Array, cache: ExpertCache<T>, load: (expert: number) => number, price: TierPricing, arriving?: ArrayLike<boolean>): TierInput {
  // this layer's called residents are about to be used: a copy may not push them out
  const inUse = (l: number, e: number) => l === layer && counts[e]! > 0;
  return {
    counts,
    resident: Array.from(counts, (_, e) => cache.has(layer, e)),
    price,
    window: { load: Array.from(counts, (_, e) => load(e)), displaced: cache.displacedLoad(inUse), ...(arriving ? { arriving } : {}) },
  };
}

/**
 * `plan`'s fast experts in `layer`: the residents are used first, then each copy is admitted (built by
 * `make`), pushing out by the cache's rule but never a copy of this step still to come. So a budget of
 * one expert holds the last copy once the residents have run.
 */
export function applyPlan<T>(cache: ExpertCache<T>, layer: number, plan: TierPlan, make: (expert: number) => T): void {
  const pending = new Set(plan.copy);
  for (const e of plan.fast) if (!pending.has(e)) cache.use(layer, e);
  for (const e of plan.copy) {
    pending.delete(e);
    cache.admit(layer, e, () => make(e), (l, x) => l === layer && pending.has(x));
  }
}
