// The WDMoE evaluation: the real model over real text with a selection policy in the loop, each token
// priced on a wireless cell. Tokens are decoded one per step on the cell's clock (token t at t × tokenMs),
// so a token's experts are chosen with the channel of its moment, and its latency is the model's
// (channel/latency.ts): BS time + Σ over MoE layers of the slowest called device's down + compute + up.
// The model itself runs windows of tokens at once (the quality is the same: attention is causal); the
// harness hands each row of a window to the policy as its own decode step. Every run starts the cell
// from the scenario's seed, so policies are compared on the same fading. Given a BS budget, the BS
// keeps hot experts itself (tiers/cell-tiers.ts) and a layer takes the later of the BS and the devices.
import type { WeightDType } from "../kernels/backend.js";
import { CellCosts, type BandwidthMode, type CellSnapshot } from "../channel/cell-costs.js";
import { ChannelModel } from "../channel/channel-model.js";
import { callMs, deviceCost } from "../channel/latency.js";
import type { Scenario } from "../channel/scenario.js";
import type { ModelConfig } from "../model/config.js";
import type { Transformer } from "../model/forward.js";
import { bsLayerWork, expertWork, headWork } from "../model/work-shape.js";
import { placeExperts } from "../policies/placement.js";
import { CellTiers, type BsTierReport, type BsTierSpec } from "../tiers/cell-tiers.js";
import { makePolicy, type PolicySpec } from "../policies/registry.js";
import { topKMass, type RouterOutput, type RoutingDecision, type SelectionContext, type SelectionPolicy } from "../policies/selection.js";
import { wireBytes, type WireDType } from "../protocol/activations.js";
import { perplexity } from "./perplexity.js";

export interface WirelessEvalOptions {
  cfg: ModelConfig;
  scenario: Scenario;
  /** how the devices and the BS hold the weights (sets the bytes each reads) */
  weightDType: WeightDType;
  /** how activations travel */
  wireDType: WireDType;
  /** devices holding each expert */
  replicas: number;
  /** time between tokens on the cell's clock, ms */
  tokenMs: number;
}

export interface EvalRunOptions {
  /** how the band is split where the policy does not split it */
  bandwidth: BandwidthMode;
  /** absent: the BS holds no experts (plain WDMoE) */
  tiers?: BsTierSpec;
  onProgress?: (done: number, total: number) => void;
}

export interface EvalReport {
  policy: string;
  /** wlr and joint: θ; null otherwise */
  theta: number | null;
  budget_ms: number | null;
  bandwidth: BandwidthMode;
  scenario: string;
  tokens: number;
  perplexity: number;
  accuracy: number;
  /** experts called per token and MoE layer (the model's k under topk) */
  experts_per_token: number;
  /** share of the top-k gate mass a token did not use, averaged over tokens and MoE layers */
  dropped_gate_mass: number;
  latency_ms: { mean: number; p50: number; p95: number };
  /**
   * means per token; bs_compute + down + device_compute + up + bs_experts = latency_ms.mean, each MoE
   * layer counted by the side that set its time (bs_experts: the BS's own experts and the reads it waited for)
   */
  breakdown_ms: { bs_compute: number; down: number; device_compute: number; up: number; bs_experts: number };
  /** the policy's own time per token and MoE layer, µs */
  policy_us: number;
  /** with a BS budget (tiers/cell-tiers.ts): where the experts ran and what moved */
  tiers: BsTierReport | null;
}

/** What one run gathers while the model runs. */
class RunState {
  readonly latency: Float64Array;
  down = 0;
  up = 0;
  compute = 0;
  bsExperts = 0;
  pairs = 0;
  kept = 0;
  dropped = 0;
  policyMs = 0;
  windowStart = 0;
  windowCells: CellSnapshot[] = [];

  constructor(readonly policy: SelectionPolicy, readonly costs: CellCosts, readonly tiers: CellTiers | null, targets: number) {
    this.latency = new Float64Array(targets);
  }
}

export class WirelessEval {
  /** Hand this to the engine as its selection policy; it runs the policy of the current evaluation. */
  readonly policy: SelectionPolicy = (router, ctx) => this.decide(router, ctx);
  private readonly hosts: number[][][];
  private readonly bsMs: number;
  private readonly moeLayers: number;
  private readonly rowBytes: number;
  private run: RunState | null = null;

  constructor(readonly opts: WirelessEvalOptions) {
    const { cfg, scenario } = opts;
    this.hosts = placeExperts(cfg.sparseLayers, cfg.experts, scenario.devices, { replicas: opts.replicas }).hosts;
    const bs = (shape: ReturnType<typeof headWork>) => callMs(deviceCost(shape, scenario.bs, null), 1);
    this.bsMs = cfg.sparseLayers.reduce((t, _, l) => t + bs(bsLayerWork(cfg, opts.weightDType, l)), bs(headWork(cfg, opts.weightDType)));
    this.moeLayers = cfg.sparseLayers.filter(Boolean).length;
    this.rowBytes = cfg.hidden * wireBytes(opts.wireDType);
  }


  /**
   * Perplexity and modelled latency of `model` (built with this.policy) over `tokens` under `spec`,
   * the band split by `run.bandwidth` where the policy does not split it, the BS keeping experts by `run.tiers`.
   */
  async evaluate(model: Transformer, tokens: readonly number[], spec: PolicySpec, { bandwidth, tiers, onProgress }: EvalRunOptions): Promise<EvalReport> {
    const { opts } = this;
    const costs = new CellCosts(new ChannelModel(opts.scenario), {
      expert: expertWork(opts.cfg, opts.weightDType),
      rowBytes: this.rowBytes,
      hosts: this.hosts,
      bandwidth,
    });
    const cellTiers = tiers ? CellTiers.forCell(opts.cfg, opts.scenario, opts.weightDType, tiers) : null;
    const run = (this.run = new RunState(makePolicy(spec, this.moeLayers), costs, cellTiers, tokens.length - 1));
    try {
      const ppl = await perplexity(model, tokens, {
        onProgress,
        onWindow: (start, n) => {
          run.windowStart = start;
          run.windowCells = Array.from({ length: n }, (_, r) => costs.snapshotAt((start + r) * opts.tokenMs));
        },
      });
      const lat = Float64Array.from(run.latency, (ms) => ms + this.bsMs);
      const n = lat.length;
      const sorted = lat.slice().sort();
      const pct = (q: number) => sorted[Math.min(n - 1, Math.floor(q * n))]!;
      return {
        policy: spec.name,
        theta: spec.name === "wlr" || spec.name === "joint" ? spec.theta! : null,
        budget_ms: spec.name === "deadline" ? spec.budgetMs! : null,
        bandwidth: spec.name === "joint" ? "optimal" : bandwidth,
        scenario: opts.scenario.name,
        tokens: ppl.tokens,
        perplexity: ppl.perplexity,
        accuracy: ppl.correct / ppl.tokens,
        experts_per_token: run.kept / run.pairs,
        dropped_gate_mass: run.dropped / run.pairs,
        latency_ms: { mean: lat.reduce((a, b) => a + b, 0) / n, p50: pct(0.5), p95: pct(0.95) },
        breakdown_ms: { bs_compute: this.bsMs, down: run.down / n, device_compute: run.compute / n, up: run.up / n, bs_experts: run.bsExperts / n },
        policy_us: (run.policyMs * 1000) / run.pairs,
        tiers: cellTiers ? cellTiers.report(n, this.rowBytes) : null,
      };
    } finally {
      this.run = null;
    }
  }

  /** Each row of the window as its own decode step: the policy with the costs of its token's moment, then its modelled time. */
  private decide(router: RouterOutput, ctx: SelectionContext): RoutingDecision {
    const run = this.run;
    if (!run) throw new Error("the evaluation's policy runs only inside evaluate()");
    const E = router.experts;
    const parts: RoutingDecision[] = [];
    for (let r = 0; r < router.rows; r++) {
      const row: RouterOutput = { layer: router.layer, rows: 1, experts: E, logits: router.logits.subarray(r * E, (r + 1) * E), probs: router.probs.subarray(r * E, (r + 1) * E) };
      const costs = run.costs.layerCosts(run.windowCells[r]!, router.layer);
      const t0 = performance.now();
      const d = run.policy(row, { ...ctx, costs });
      run.policyMs += performance.now() - t0;
      const t = run.tiers ? run.tiers.step(router.layer, (run.windowStart + r) * this.opts.tokenMs, d, costs, run.costs) : { fastMs: 0, near: run.costs.layerTime(costs, d) };
      const layerMs = Math.max(t.fastMs, t.near.ms);
      run.latency[run.windowStart + r]! += layerMs;
      if (t.near.ms >= t.fastMs) {
        run.down += t.near.downMs;
        run.up += t.near.upMs;
        run.compute += t.near.computeMs;
      } else run.bsExperts += t.fastMs;
      run.pairs++;
      run.kept += d.experts.length;
      let keptMass = 0;
      for (const e of d.experts) keptMass += row.probs[e]!;
      run.dropped += 1 - keptMass / topKMass(row.probs, ctx.topK);
      parts.push(d);
    }
    return concatDecisions(parts);
  }
}

/** The decisions of consecutive rows as one. */
function concatDecisions(parts: readonly RoutingDecision[]): RoutingDecision {
  const rows = parts.reduce((s, p) => s + p.rows, 0);
  const pairs = parts.reduce((s, p) => s + p.experts.length, 0);
  const offsets = new Int32Array(rows + 1), experts = new Int32Array(pairs), weights = new Float32Array(pairs);
  let row = 0, at = 0;
  for (const p of parts) {
    for (let r = 1; r <= p.rows; r++) offsets[row + r] = at + p.offsets[r]!;
    experts.set(p.experts, at);
    weights.set(p.weights, at);
    row += p.rows;
    at += p.experts.length;
  }
  return { rows, offsets, experts, weights };
}
