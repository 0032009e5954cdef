// MoNDE in the runtime: an ExpertExecutor for a base station whose fast tier (its own memory and
// compute) holds only a budget of expert weights, beside a near tier that holds every expert and
// computes where the weights live. Per layer and step the tier policy (policies/tiers.ts) splits the
// called experts: near ones are sent their rows at once; fast ones run here one after another, the
// residents first while the copied ones' weights come in (from the near tier, or read from the store),
// then each copy as it lands in the cache (which evicts by its rule to stay within the budget). What
// happened is reported per layer and summed: which experts ran where, weight and activation bytes
// moved, time in each tier.
import type { Backend } from "../kernels/backend.js";
import { layoutBytes } from "../kernels/weight-layout.js";
import type { ModelConfig } from "../model/config.js";
import { ffnDTypes, weightFromData, type FfnWeights } from "../model/weights.js";
import type { ExpertCall, ExpertExecutor, ExpertResult } from "../moe/executor.js";
import { LocalExpertExecutor } from "../moe/local-executor.js";
import { planTiers, type TierPolicyName } from "../policies/tiers.js";
import { wireBytes, type WireDType } from "../protocol/activations.js";
import type { HeldExpert } from "../runtime/device-hub.js";
import { copySource, planTime, tierPricing, type TierCosts, type TierTime } from "./cost-model.js";
import { ExpertCache } from "./expert-cache.js";
import { layerInput } from "./layer-input.js";
import { LoadWindow } from "./load-window.js";

export interface TieredOptions {
  policy: TierPolicyName;
  costs: TierCosts;
  /** bytes of expert weights the fast tier may hold */
  budgetBytes: number;
  /** steps of routing statistics kept for eviction by load */
  window: number;
  /** the near tier: computes any expert where its weights live */
  near: ExpertExecutor;
  /** copies an expert's weights in: from the near tier as held there, or from the store (tiers/expert-store.ts) */
  pull: (layer: number, expert: number) => Promise<HeldExpert>;
  /** the activations' dtype on the link to the near tier */
  wireDType: WireDType;
  /** told of every layer's split as it completes */
  onLayer?: (report: TierLayerReport) => void;
}

/** One layer of one step: where its experts ran and what moved. */
export interface TierLayerReport {
  step: number;
  layer: number;
  /** tokens per called expert, by expert index */
  counts: Record<number, number>;
  /** experts run in the fast tier (the hot ones), of which `copied` had their weights copied in */
  fast: number[];
  copied: number[];
  near: number[];
  /** experts whose copy started in the background, for later steps */
  prefetched: number[];
  /** weights copied for this layer's fast calls (a prefetch counts in the totals when it lands) */
  weightBytes: number;
  activationBytes: number;
  /** experts the cache let go to make room */
  evictions: number;
  /** wall time until the last fast / near result, ms */
  fastMs: number;
  nearMs: number;
  /** what the cost model predicted for the split */
  predicted: TierTime;
}

/** Sums over every layer and step so far. */
export interface TierTotals {
  layers: number;
  fastCalls: number;
  nearCalls: number;
  copies: number;
  /** experts copied in the background by their windowed load */
  prefetches: number;
  evictions: number;
  weightBytes: number;
  activationBytes: number;
  fastMs: number;
  nearMs: number;
}

function emptyTotals(): TierTotals {
  return { layers: 0, fastCalls: 0, nearCalls: 0, copies: 0, prefetches: 0, evictions: 0, weightBytes: 0, activationBytes: 0, fastMs: 0, nearMs: 0 };
}

interface Cached {
  layer: number;
  expert: number;
  w: FfnWeights;
}

export class TieredExecutor implements ExpertExecutor {
  /** what the fast tier holds, as the local executor reads it */
  private readonly table: Array<Array<FfnWeights | null>>;
  private readonly local: LocalExpertExecutor;
  private readonly cache: ExpertCache<Cached>;
  private load: LoadWindow;
  private step = 0;
  private lastLayer = Infinity;
  totals: TierTotals = emptyTotals();

  /**
   * The cost model the policy decides by. Its copy rate follows what copies actually take (a moving
   * average of each layer's copy bytes over the time they took to land): on a busy machine moving
   * weights costs the tiers' own cycles too, and a rate measured idle would copy too eagerly.
   */
  costs: TierCosts;

  constructor(private readonly backend: Backend, private readonly cfg: ModelConfig, private readonly opts: TieredOptions) {
    this.costs = opts.costs;
    this.table = Array.from({ length: cfg.layers }, () => new Array<FfnWeights | null>(cfg.experts).fill(null));
    this.local = new LocalExpertExecutor(backend, this.table, cfg.hidden);
    this.load = new LoadWindow(cfg.layers, cfg.experts, opts.window);
    const release = (c: Cached) => {
      for (const w of [c.w.gate, c.w.up, c.w.down]) backend.freeWeight(w);
      this.table[c.layer]![c.expert] = null;
    };
    const eviction = opts.policy === "offload" ? "lru" : "load";
    this.cache = new ExpertCache<Cached>(opts.budgetBytes, opts.costs.expertBytes, eviction, release, (l, e) => this.load.load(l, e));
  }

  /** Back to an empty fast tier, no statistics and no totals (a benchmark after its warm-up). */
  reset(): void {
    this.costs = this.opts.costs;
    this.cache.clear();
    this.load = new LoadWindow(this.cfg.layers, this.cfg.experts, this.opts.window);
    this.step = 0;
    this.lastLayer = Infinity;
    this.totals = emptyTotals();
  }

  /** Experts the fast tier holds now, as [layer, expert]. */
  resident(): Array<[number, number]> {
    return this.cache.held();
  }

  get budget(): { bytes: number; experts: number; usedBytes: number } {
    return { bytes: this.cache.budgetBytes, experts: this.cache.capacity, usedBytes: this.cache.bytes };
  }

  dispatch(calls: readonly ExpertCall[]): Array<Promise<ExpertResult>> {
    if (calls.length === 0) return [];
    const layer = calls[0]!.layer;
    // a step passes the layers in order: a layer at or below the last one starts the next step
    if (layer <= this.lastLayer && this.lastLayer !== Infinity) {
      this.step++;
      this.load.nextStep();
    }
    this.lastLayer = layer;
    const counts = new Int32Array(this.cfg.experts);
    for (const c of calls) {
      counts[c.expert]! += c.rows;
      this.load.add(layer, c.expert, c.rows);
    }
    const plan = planTiers(this.opts.policy, layerInput(layer, counts, this.cache, (e) => this.load.load(layer, e), tierPricing(this.costs, counts)));
    const index = new Map(calls.map((c, i) => [c.expert, i]));
    const results = new Array<Promise<ExpertResult>>(calls.length);

    const t0 = performance.now(), evictedBefore = this.cache.evictions;
    // every copy is asked for first: the near tier sends them before it computes its calls, and the
    // link works while the residents are computed here
    const pulls = new Map(plan.copy.map((e) => [e, this.opts.pull(layer, e)]));
    if (pulls.size > 0) {
      void Promise.all(pulls.values()).then((held) => this.observeCopies(held.reduce((n, h) => n + h.payload.length, 0), performance.now() - t0), () => undefined);
    }
    const nearCalls = plan.near.map((e) => calls[index.get(e)!]!);
    const nearResults = this.opts.near.dispatch(nearCalls);
    plan.near.forEach((e, i) => (results[index.get(e)!] = nearResults[i]!));
    const nearDone = Promise.allSettled(nearResults).then(() => performance.now() - t0);
    for (const e of plan.prefetch) this.prefetch(layer, e);
    for (const p of pulls.values()) p.catch(() => undefined);
    const pending = new Set(plan.fast);
    this.inUse.clear();
    for (const e of plan.fast) this.inUse.add(`${layer}:${e}`);
    let weightBytes = 0;
    const fastRun = (async () => {
      const out = new Map<number, ExpertResult>();
      for (const e of plan.fast) {
        if (!this.cache.use(layer, e)) {
          const held = await pulls.get(e)!;
          weightBytes += held.payload.length;
          this.cache.admit(layer, e, () => this.materialize(layer, e, held), (l, x) => l === layer && pending.has(x));
        }
        out.set(e, this.local.compute(calls[index.get(e)!]!));
        pending.delete(e);
        this.inUse.delete(`${layer}:${e}`);
      }
      return out;
    })();
    plan.fast.forEach((e) => (results[index.get(e)!] = fastRun.then((out) => out.get(e)!)));
    const fastDone = fastRun.then(
      () => performance.now() - t0,
      () => performance.now() - t0,
    );

    void Promise.all([fastDone, nearDone]).then(([fastMs, nearMs]) => {
      const nearRows = plan.near.reduce((n, e) => n + counts[e]!, 0);
      const report: TierLayerReport = {
        step: this.step,
        layer,
        counts: Object.fromEntries(calls.map((c) => [c.expert, counts[c.expert]!])),
        fast: plan.fast,
        copied: plan.copy,
        near: plan.near,
        prefetched: plan.prefetch,
        weightBytes,
        activationBytes: 2 * nearRows * this.cfg.hidden * wireBytes(this.opts.wireDType),
        evictions: this.cache.evictions - evictedBefore,
        fastMs: plan.fast.length > 0 ? fastMs : 0,
        nearMs: plan.near.length > 0 ? nearMs : 0,
        predicted: planTime(this.costs, plan, counts),
      };
      const t = this.totals;
      t.layers++;
      t.fastCalls += plan.fast.length;
      t.nearCalls += plan.near.length;
      t.copies += plan.copy.length;
      t.evictions += report.evictions;
      t.weightBytes += report.weightBytes;
      t.activationBytes += report.activationBytes;
      t.fastMs += report.fastMs;
      t.nearMs += report.nearMs;
      this.opts.onLayer?.(report);
    });
    return results;
  }

  /** Moves the model's copy rate (the store's, else the link's) towards what `bytes` of copies landing in `ms` showed (weight 1/4 per layer). */
  private observeCopies(bytes: number, ms: number): void {
    const key = this.costs.store ? "store" : "link";
    const src = copySource(this.costs);
    const seen = bytes / (Math.max(ms - src.delayMs, 1e-3) * 1e6);
    this.costs = { ...this.costs, [key]: { ...src, gbps: 0.75 * src.gbps + 0.25 * seen } };
  }

  /** Experts of the layer being computed that a landing prefetch may not push out. */
  private readonly inUse = new Set<string>();

  /** Copies an expert in the background; it joins the cache when it lands (unless it would push out one in use). */
  private prefetch(layer: number, expert: number): void {
    this.opts.pull(layer, expert).then(
      (held) => {
        if (this.cache.has(layer, expert)) return;
        try {
          this.cache.admit(layer, expert, () => this.materialize(layer, expert, held), (l, e) => this.inUse.has(`${l}:${e}`));
          this.totals.prefetches++;
          this.totals.weightBytes += held.payload.length;
        } catch {
          // everything held is in use right now: the statistics will ask again
        }
      },
      () => undefined,
    );
  }

  /** An expert's weights from the bytes the near tier sent, held here in their dtypes (or the nearest these kernels have). */
  private materialize(layer: number, expert: number, held: HeldExpert): Cached {
    const dtypes = ffnDTypes(held.dtype);
    const want = [[this.cfg.expertFfn, this.cfg.hidden], [this.cfg.expertFfn, this.cfg.hidden], [this.cfg.hidden, this.cfg.expertFfn]];
    if (held.shapes.length !== 3 || held.shapes.some(([r, c], i) => r !== want[i]![0] || c !== want[i]![1])) throw new Error(`expert ${expert} of layer ${layer} came as ${JSON.stringify(held.shapes)}, not ${JSON.stringify(want)}`);
    const sizes = held.shapes.map(([r, c], i) => layoutBytes(dtypes[i]!, r, c) ?? NaN);
    const total = sizes.reduce((a, b) => a + b, 0);
    if (total !== held.payload.length) throw new Error(`expert ${expert} of layer ${layer}: ${held.payload.length} bytes for ${total} as ${held.dtype}`);
    const parts: FfnWeights["gate"][] = [];
    let at = 0;
    try {
      held.shapes.forEach(([r, c], i) => {
        parts.push(weightFromData(this.backend, dtypes[i]!, r, c, held.payload.subarray(at, at + sizes[i]!)));
        at += sizes[i]!;
      });
    } catch (e) {
      for (const w of parts) this.backend.freeWeight(w);
      throw e;
    }
    const [gate, up, down] = parts as [FfnWeights["gate"], FfnWeights["up"], FfnWeights["down"]];
    const w = { gate, up, down };
    this.table[layer]![expert] = w;
    return { layer, expert, w };
  }

  close(): void {
    this.cache.clear();
    this.local.close();
  }
}
