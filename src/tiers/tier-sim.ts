// `bench tiers --simulate`: the tier policies on published hardware and a model this machine cannot
// hold (default Mixtral-8x7B's config), by the same cost model, policies, cache and load window as
// the runtime. A prefill of the prompt and greedy decode steps at batch 1, router rows from the
// synthetic router (with its popularity skew); the fast tier also runs attention and the routers
// (their weights resident), timed by its roofline. Tokens/s per policy, and their ratios to offload.
import { callMs, deviceCost, type DeviceSpeed } from "../channel/latency.js";
import type { WeightDType } from "../kernels/backend.js";
import type { ModelConfig } from "../model/config.js";
import { bsLayerWork, expertWork, headWork } from "../model/work-shape.js";
import { planTiers, type TierPolicyName } from "../policies/tiers.js";
import { routingSource } from "../sim/routing-source.js";
import { planTime, tierCosts, tierPricing, type TierLink } from "./cost-model.js";
import { ExpertCache } from "./expert-cache.js";
import { applyPlan, layerInput } from "./layer-input.js";
import { LoadWindow } from "./load-window.js";

export interface TierHardware {
  name: string;
  /** what the figures are, and where they come from */
  about: string;
  link: TierLink;
  fast: DeviceSpeed;
  near: DeviceSpeed;
}

// Published peaks and effective rates (see ../shared/research/monde.md, section 3): H100 SXM HBM3
// 3.35 TB/s and 989 TFLOP/s dense bf16; PCIe x16 about 25 GB/s effective at Gen4 and 50 at Gen5, 10 µs
// per transfer; DDR5 about 70 GB/s effective for 2 channels, 250 for 8, 450 for 12 at 6400; a CPU's
// bf16 rate about 1 TFLOP/s on a desktop, 2 with AVX-512 on a server, 21 with AMX.
const H100: DeviceSpeed = { readGbps: 3350, gflops: 989_000 };
export const TIER_HARDWARE: readonly TierHardware[] = [
  { name: "pcie4-ddr5x2", about: "H100 + PCIe Gen4 x16 + desktop CPU, 2-channel DDR5", link: { gbps: 25, delayMs: 0.01 }, fast: H100, near: { readGbps: 70, gflops: 1000 } },
  { name: "pcie4-ddr5x8", about: "H100 + PCIe Gen4 x16 + server CPU (AVX-512), 8-channel DDR5", link: { gbps: 25, delayMs: 0.01 }, fast: H100, near: { readGbps: 250, gflops: 2000 } },
  { name: "pcie5-ddr5x8", about: "H100 + PCIe Gen5 x16 + server CPU (AVX-512), 8-channel DDR5", link: { gbps: 50, delayMs: 0.01 }, fast: H100, near: { readGbps: 250, gflops: 2000 } },
  { name: "pcie5-ddr5x12-amx", about: "H100 + PCIe Gen5 x16 + server CPU (AMX), 12-channel DDR5-6400", link: { gbps: 50, delayMs: 0.01 }, fast: H100, near: { readGbps: 450, gflops: 21_000 } },
];

export interface TierSimOptions {
  cfg: ModelConfig;
  hardware: TierHardware;
  policy: TierPolicyName;
  budgetFraction: number;
  promptTokens: number;
  genTokens: number;
  weightDType: WeightDType;
  /** bytes of one activation value on the link */
  wireBytes: number;
  window: number;
  skew?: number;
  seed?: number;
}

export interface TierSimResult {
  hardware: string;
  policy: TierPolicyName;
  fast_budget: number;
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
  weight_bytes_per_token: number;
  activation_bytes_per_token: number;
}

export function simulateTiers(o: TierSimOptions): TierSimResult {
  const { cfg, hardware: hw } = o;
  const expert = expertWork(cfg, o.weightDType);
  const costs = tierCosts(expert, cfg.hidden * o.wireBytes, hw.link, hw.fast, hw.near);
  const moeLayers = cfg.sparseLayers.map((s, l) => (s ? l : -1)).filter((l) => l >= 0);
  const load = new LoadWindow(cfg.layers, cfg.experts, o.window);
  const cache = new ExpertCache<null>(Math.floor(o.budgetFraction * moeLayers.length * cfg.experts) * expert.weightBytes, expert.weightBytes, o.policy === "offload" ? "lru" : "load", () => undefined, (l, e) => load.load(l, e));
  const routing = routingSource({ synthetic: { skew: o.skew, seed: o.seed } }, cfg.experts, { topK: cfg.topK, normalize: cfg.normTopK });
  const fastMs = (w: ReturnType<typeof headWork>, rows: number) => callMs(deviceCost(w, hw.fast, null), rows);
  let weightBytes = 0, activationBytes = 0;

  /** One forward pass over `rows` tokens: the fast tier's own layers and each MoE layer's split. */
  const step = (rows: number): number => {
    let ms = fastMs(headWork(cfg, o.weightDType), 1);
    for (let l = 0; l < cfg.layers; l++) {
      ms += fastMs(bsLayerWork(cfg, o.weightDType, l), rows);
      if (!cfg.sparseLayers[l]) continue;
      const counts = new Int32Array(cfg.experts);
      for (let r = 0; r < rows; r++) for (const e of routing.next(l).top.experts) counts[e]!++;
      counts.forEach((n, e) => n > 0 && load.add(l, e, n));
      const plan = planTiers(o.policy, layerInput(l, counts, cache, (e) => load.load(l, e), tierPricing(costs, counts)));
      applyPlan(cache, l, plan, () => null);
      ms += planTime(costs, plan, counts).ms;
      // a prefetch lands in the background, resident from the next step
      for (const e of plan.prefetch) cache.admit(l, e, () => null);
      weightBytes += (plan.copy.length + plan.prefetch.length) * expert.weightBytes;
      activationBytes += 2 * plan.near.reduce((n, e) => n + counts[e]!, 0) * costs.rowBytes;
    }
    load.nextStep();
    return ms;
  };
  const prefillMs = step(o.promptTokens);
  let decodeMs = 0;
  for (let t = 0; t < o.genTokens; t++) decodeMs += step(1);
  const tokens = o.promptTokens + o.genTokens;
  return {
    hardware: hw.name,
    policy: o.policy,
    fast_budget: o.budgetFraction,
    prefill_tokens_per_s: o.promptTokens / (prefillMs / 1000),
    decode_tokens_per_s: o.genTokens / (decodeMs / 1000),
    weight_bytes_per_token: weightBytes / tokens,
    activation_bytes_per_token: activationBytes / tokens,
  };
}
