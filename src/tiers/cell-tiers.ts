// MoNDE's tiers in the WDMoE setting. The base station's edge server is the fast tier: given a budget
// for expert weights it keeps hot experts itself, read in from its store (the checkpoint on its disk).
// The devices that hold the experts are the near tier, reached over the radio: a cold expert's rows go
// to its device, as in plain WDMoE. The tier policies (policies/tiers.ts) decide per layer and token;
// this prices their plans and keeps the BS's experts between tokens.
//
//   copy     = store delay + S_e / B_store                    (the store serves one read at a time)
//   T_fast   = Σ_copied copy + Σ_fast callMs(BS, n_e)          (the BS computes after the reads it waits for)
//   T_near   = the slowest called device's down + compute + up, on the band as the cell splits it
//   layer    = max(T_fast, T_near)                             (the BS and the devices work at once)
//
// A prefetch (monde's copy by statistics) does not delay the token: it is read in the background and
// joins the BS's experts when the read ends on the cell's clock. The evaluation runs a window of tokens
// layer by layer, so each MoE layer keeps its own state, followed in token order: the budget is split
// equally over the layers, and each layer's background reads get an equal share of the store's rate.
import type { CellCosts } from "../channel/cell-costs.js";
import { callMs, deviceCost, type DeviceCost, type LayerTime } from "../channel/latency.js";
import type { Scenario } from "../channel/scenario.js";
import type { WeightDType } from "../kernels/backend.js";
import type { ModelConfig } from "../model/config.js";
import { expertWork } from "../model/work-shape.js";
import { planTiers, type TierPolicyName, type TierPricing } from "../policies/tiers.js";
import type { LayerCosts, RoutingDecision } from "../policies/selection.js";
import type { TierPlan } from "./cost-model.js";
import { ExpertCache } from "./expert-cache.js";
import { applyPlan, layerInput } from "./layer-input.js";
import { LoadWindow } from "./load-window.js";

/** The BS's tiers as a run asks for them: the tier policy, the budget, the statistics' window, the store. */
export interface BsTierSpec {
  policy: TierPolicyName;
  /** the BS's budget for expert weights, as a share of each MoE layer's experts */
  budget: number;
  /** tokens of routing statistics monde keeps its hot set by */
  window: number;
  /** the BS store's read rate, GB/s (default the scenario's) */
  storeGbps?: number;
}

/** What a run reports of the BS's tiers. */
export interface BsTierReport {
  policy: TierPolicyName;
  bs_budget: number;
  bs_experts_per_layer: number;
  store_gbps: number;
  /** share of expert calls the BS computed */
  bs_share: number;
  /** store reads per token: waited for, and in the background */
  copies_per_token: number;
  prefetches_per_token: number;
  weight_bytes_per_token: number;
  /** activations over the radio, both ways */
  radio_bytes_per_token: number;
}

/** What a plan costs in one MoE layer at one token's moment. */
export interface CellTierCosts {
  /** the layer's costs in the cell at that moment (devices' latencies, radio) */
  layer: LayerCosts;
  cell: CellCosts;
  /** an expert call on the BS */
  bs: DeviceCost;
  /** reading one expert from the BS's store into its memory, ms */
  copyMs: number;
  /** the band's split where the selection policy made one (joint); else the cell's mode */
  shares?: Float64Array;
}

export interface CellTierTime {
  ms: number;
  /** the BS's side: reads waited for, then its experts */
  fastMs: number;
  /** the devices' side: the slowest called device */
  near: Omit<LayerTime, "device">;
}

export function cellPlanTime(c: CellTierCosts, plan: TierPlan, counts: ArrayLike<number>): CellTierTime {
  let fastMs = plan.copy.length * c.copyMs;
  for (const e of plan.fast) fastMs += callMs(c.bs, counts[e]!);
  const pairs: number[] = [];
  for (const e of plan.near) for (let n = 0; n < counts[e]!; n++) pairs.push(e);
  const near = pairs.length > 0 ? c.cell.pairsTime(c.layer, pairs, c.shares) : { ms: 0, downMs: 0, computeMs: 0, upMs: 0 };
  return { ms: Math.max(fastMs, near.ms), fastMs, near };
}

/** The tier policies' view of the cell for one layer and token. A one-token call saves its device's round trip less the BS's call. */
export function cellTierPricing(c: CellTierCosts, counts: ArrayLike<number>): TierPricing {
  const bsCall = callMs(c.bs, 1);
  return {
    time: (plan) => cellPlanTime(c, plan, counts).ms,
    payback: (e) => {
      const saving = c.layer.expertLatencyMs[e]! - bsCall;
      return saving > 0 ? Math.ceil(c.copyMs / saving) : Infinity;
    },
    rank: (e) => c.layer.expertLatencyMs[e]!,
  };
}

export interface CellTierOptions {
  policy: TierPolicyName;
  /** the model's layers and experts per MoE layer */
  layers: number;
  experts: number;
  /** the budget asked for, as a share of each layer's experts, and the experts it holds per MoE layer */
  budget: number;
  perLayer: number;
  /** one expert's weights as the BS holds them */
  expertBytes: number;
  bs: DeviceCost;
  /** one read from the store: delay and rate */
  store: { delayMs: number; gbps: number };
  /** the MoE layers, which share the store's rate for background reads */
  moeLayers: number;
  /** tokens of routing statistics monde keeps its hot set by */
  window: number;
}

export interface CellTierTotals {
  /** expert calls, and those the BS computed */
  calls: number;
  bsCalls: number;
  /** reads the token waited for, and background ones */
  copies: number;
  prefetches: number;
  /** weights read from the store */
  weightBytes: number;
  /** activations over the radio, in rows each way */
  radioRows: number;
}

export class CellTiers {
  private readonly caches: Array<ExpertCache<number>>;
  private readonly loads: LoadWindow[];
  /** per layer: experts being read in the background, and when each read ends */
  private readonly arriving: Array<Map<number, number>>;
  /** per layer: when its background reads so far end */
  private readonly storeFreeMs: Float64Array;
  private readonly copyMs: number;
  private readonly prefetchMs: number;
  totals: CellTierTotals = { calls: 0, bsCalls: 0, copies: 0, prefetches: 0, weightBytes: 0, radioRows: 0 };

  /** The tiers `spec` asks for, for model `cfg` (its experts held as `weightDType`) on `scenario`'s BS. */
  static forCell(cfg: ModelConfig, scenario: Scenario, weightDType: WeightDType, spec: BsTierSpec): CellTiers {
    if (!(spec.budget >= 0 && spec.budget <= 1)) throw new Error(`the BS's budget must be a share of the experts in [0, 1], got ${spec.budget}`);
    const expert = expertWork(cfg, weightDType);
    return new CellTiers({
      policy: spec.policy,
      layers: cfg.layers,
      experts: cfg.experts,
      budget: spec.budget,
      perLayer: Math.floor(spec.budget * cfg.experts + 1e-9),
      expertBytes: expert.weightBytes,
      bs: deviceCost(expert, scenario.bs, null),
      store: { delayMs: scenario.bs.storeDelayMs, gbps: spec.storeGbps ?? scenario.bs.storeGbps },
      moeLayers: cfg.sparseLayers.filter(Boolean).length,
      window: spec.window,
    });
  }

  constructor(readonly o: CellTierOptions) {
    if ((o.policy === "offload" || o.policy === "monde") && o.perLayer < 1) throw new Error(`the BS's budget holds no expert per layer (${o.experts} per layer: one needs ${(100 / o.experts).toFixed(1)}% of the experts)`);
    this.loads = Array.from({ length: o.layers }, () => new LoadWindow(1, o.experts, o.window));
    const eviction = o.policy === "offload" ? "lru" : "load";
    this.caches = Array.from({ length: o.layers }, (_, l) => new ExpertCache<number>(o.perLayer * o.expertBytes, o.expertBytes, eviction, () => undefined, (_l, e) => this.loads[l]!.load(0, e)));
    this.arriving = Array.from({ length: o.layers }, () => new Map());
    this.storeFreeMs = new Float64Array(o.layers);
    this.copyMs = o.store.delayMs + o.expertBytes / (o.store.gbps * 1e6);
    this.prefetchMs = o.store.delayMs + (o.moeLayers * o.expertBytes) / (o.store.gbps * 1e6);
  }

  /** The totals per token, over `tokens` tokens, with `rowBytes` per row on the radio. */
  report(tokens: number, rowBytes: number): BsTierReport {
    const s = this.totals;
    return {
      policy: this.o.policy,
      bs_budget: this.o.budget,
      bs_experts_per_layer: this.o.perLayer,
      store_gbps: this.o.store.gbps,
      bs_share: s.bsCalls / s.calls,
      copies_per_token: s.copies / tokens,
      prefetches_per_token: s.prefetches / tokens,
      weight_bytes_per_token: s.weightBytes / tokens,
      radio_bytes_per_token: (2 * s.radioRows * rowBytes) / tokens,
    };
  }

  /** The experts the BS holds in `layer` at `ms` (background reads landed by then). */
  held(layer: number, ms: number): boolean[] {
    this.land(layer, ms);
    return Array.from({ length: this.o.experts }, (_, e) => this.caches[layer]!.has(layer, e));
  }

  /**
   * One token's calls in `layer` at `ms` (the selection's `decision`, with the layer's costs in the cell
   * then): the tier policy's plan, carried out, and its time.
   */
  step(layer: number, ms: number, decision: RoutingDecision, costs: LayerCosts, cell: CellCosts): CellTierTime & { plan: TierPlan } {
    const { o } = this, pairs = decision.experts;
    const c: CellTierCosts = { layer: costs, cell, bs: o.bs, copyMs: this.copyMs, shares: decision.bandwidthShares };
    const cache = this.caches[layer]!, load = this.loads[layer]!, arriving = this.arriving[layer]!;
    const counts = new Int32Array(o.experts);
    for (let i = 0; i < pairs.length; i++) counts[pairs[i]!]!++;
    counts.forEach((n, e) => n > 0 && load.add(0, e, n));
    this.land(layer, ms);
    const plan = planTiers(o.policy, layerInput(layer, counts, cache, (e) => load.load(0, e), cellTierPricing(c, counts), Array.from(counts, (_, e) => arriving.has(e))));
    applyPlan(cache, layer, plan, (e) => e);
    for (const e of plan.copy) arriving.delete(e);
    for (const e of plan.prefetch) {
      const end = Math.max(ms, this.storeFreeMs[layer]!) + this.prefetchMs;
      this.storeFreeMs[layer] = end;
      arriving.set(e, end);
    }
    load.nextStep();
    const t = this.totals;
    t.calls += plan.fast.length + plan.near.length;
    t.bsCalls += plan.fast.length;
    t.copies += plan.copy.length;
    t.prefetches += plan.prefetch.length;
    t.weightBytes += (plan.copy.length + plan.prefetch.length) * o.expertBytes;
    for (const e of plan.near) t.radioRows += counts[e]!;
    return { ...cellPlanTime(c, plan, counts), plan };
  }

  /** Background reads of `layer` that have ended by `ms` join the BS's experts, evicting by the cache's rule. */
  private land(layer: number, ms: number): void {
    const arriving = this.arriving[layer]!;
    for (const [e, end] of arriving) {
      if (end > ms) continue;
      arriving.delete(e);
      this.caches[layer]!.admit(layer, e, () => e);
    }
  }
}
