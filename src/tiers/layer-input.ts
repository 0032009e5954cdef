// What a tier policy reads for one layer, built the same way by the runtime's tiered executor and by
// the simulated bench: the step's token counts, which experts the fast tier holds, and for MoNDE's
// statistics the windowed load and the load of the expert a copy would push out.
import type { TierInput } from "../policies/tiers.js";
import { tierPricing, type TierCosts } from "./cost-model.js";
import type { ExpertCache } from "./expert-cache.js";
import type { LoadWindow } from "./load-window.js";

export function layerInput<T>(layer: number, counts: Int32Array, cache: ExpertCache<T>, load: LoadWindow, costs: TierCosts): TierInput {
  const windowLoad = Array.from(counts, (_, e) => load.load(layer, e));
  // this layer's called residents are about to be used: a copy may not push them out
  const inUse = (l: number, e: number) => l === layer && counts[e]! > 0;
  return {
    counts,
    resident: Array.from(counts, (_, e) => cache.has(layer, e)),
    price: tierPricing(costs, counts),
    window: { load: windowLoad, displaced: cache.displacedLoad(inUse) },
  };
}
