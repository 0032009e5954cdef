// The WDMoE evaluation in the distributed runtime: real device processes whose links are shaped by the
// scenario's channel model, the policy choosing experts from the same cell's state, tokens decoded one
// per step (teacher-forced over the text, windows as in perplexity.ts). Each step's wall time is
// measured; its modelled time is the step's measured BS time plus, for each MoE layer, the latency
// model's time for the decision taken (channel/cell-costs.ts) with the devices' probed speeds, plus
// the runtime's own transport per layer (sockets, frames, process wake-ups: what a one-row call's
// round trip takes beyond the model's time for it, measured before the runs on the same cluster).
// The two agree when the model is right about the links and the devices; their ratio is the check.
import { CellCosts } from "../channel/cell-costs.js";
import { ChannelModel, startingClock } from "../channel/channel-model.js";
import type { Scenario } from "../channel/scenario.js";
import type { WeightDType } from "../kernels/backend.js";
import { expertWork } from "../model/work-shape.js";
import { makePolicy, type PolicySpec } from "../policies/registry.js";
import type { SelectionPolicy } from "../policies/selection.js";
import { wireBytes, type WireDType } from "../protocol/activations.js";
import { Engine } from "../runtime/engine.js";
import { startLocalCluster } from "../runtime/local-cluster.js";
import { logProb, PPL_WINDOW } from "./perplexity.js";
import type { ExpertExecutor } from "../moe/executor.js";
import { median } from "../util/stats.js";
import { POLL_WHEN_WAITING_ON_PEERS } from "../kernels/select-backend.js";

export interface ClusterEvalOptions {
  model: string;
  /** the cell; its first `devices` devices are played by the local device processes */
  scenario: Scenario;
  devices: number;
  weightDType: WeightDType;
  wireDType: WireDType;
  threads?: number;
  /** untimed decode steps before the first policy, so code and caches are warm */
  warmupTokens?: number;
}

export interface Distribution {
  mean: number;
  p50: number;
  p95: number;
}

export interface ClusterEvalReport {
  policy: string;
  theta: number | null;
  budget_ms: number | null;
  scenario: string;
  devices: number;
  tokens: number;
  perplexity: number;
  accuracy: number;
  experts_per_token: number;
  /** per token: wall time of the decode step */
  measured_ms: Distribution;
  /** per token: the step's measured BS time + the modelled MoE layers */
  modelled_ms: Distribution;
  /** mean measured ÷ mean modelled */
  measured_over_modelled: number;
  /** the BS's own time per token (measured), in both */
  bs_ms: number;
  /** the runtime's transport per MoE layer beyond the latency model (measured), in the modelled time */
  transport_ms: number;
}

function distribution(values: readonly number[]): Distribution {
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { mean: s.reduce((a, b) => a + b, 0) / s.length, p50: at(0.5), p95: at(0.95) };
}

/** Runs each policy of `specs` over `tokens` on a local cluster shaped by the scenario's cell. */
export async function evaluateOnCluster(o: ClusterEvalOptions, tokens: readonly number[], specs: readonly PolicySpec[], onProgress?: (spec: PolicySpec, done: number, total: number) => void): Promise<ClusterEvalReport[]> {
  if (o.devices > o.scenario.devices.length) throw new Error(`the scenario ${o.scenario.name} has ${o.scenario.devices.length} devices; ${o.devices} were asked for`);
  const scenario: Scenario = { ...o.scenario, devices: o.scenario.devices.slice(0, o.devices).map((d, i) => ({ ...d, name: `local-${i}` })) };
  const channel = new ChannelModel(scenario);
  const clock = startingClock();
  const cluster = await startLocalCluster({ model: o.model, devices: o.devices, weightDType: o.weightDType, wireDType: o.wireDType, link: channel.linkModel(undefined, clock) });
  let current: { policy: SelectionPolicy; modelledMs: number; kept: number; pairs: number } | null = null;
  let costs: CellCosts | null = null;
  const policy: SelectionPolicy = (router, ctx) => {
    const run = current!;
    const lc = costs!.layerCosts(costs!.snapshotAt(clock(performance.now())), router.layer);
    const d = run.policy(router, { ...ctx, costs: lc });
    run.modelledMs += costs!.layerTime(lc, d).ms;
    run.kept += d.experts.length;
    run.pairs += d.rows;
    return d;
  };
  let engine: Engine | null = null;
  try {
    engine = Engine.load(o.model, { dtype: o.weightDType, threads: o.threads, poll: POLL_WHEN_WAITING_ON_PEERS, executor: cluster.hub.executor, policy });
    const cfg = engine.config, hub = cluster.hub;
    const hosts = cfg.sparseLayers.map((sparse, l) => (sparse ? Array.from({ length: cfg.experts }, (_, e) => [channel.indexOf(hub.hostOf(l, e)!)]) : []));
    const speeds = scenario.devices.map((d) => hub.capabilitiesOf(d.name) ?? d);
    costs = new CellCosts(channel, { expert: expertWork(cfg, o.weightDType), rowBytes: cfg.hidden * wireBytes(o.wireDType), hosts, bandwidth: "equal", speeds });
    const model = engine.model;
    const moeLayers = cfg.sparseLayers.filter(Boolean).length;
    const V = cfg.vocabSize;
    const cache = model.newSequence(PPL_WINDOW);
    try {
      const decode = async (t: number) => {
        if (t % PPL_WINDOW === 0) cache.clear();
        const [logits] = await model.forward([{ cache, tokens: [tokens[t]!], logits: "all" }]);
        return logits!;
      };
      current = { policy: makePolicy({ name: "topk" }, moeLayers), modelledMs: 0, kept: 0, pairs: 0 };
      for (let t = 0; t < (o.warmupTokens ?? 8); t++) await decode(t);
      const transportMs = await measureTransport(hub.executor, costs, clock, cfg.sparseLayers.indexOf(true), cfg.hidden, scenario.devices.length, (l, e) => channel.indexOf(hub.hostOf(l, e)!));
      const reports: ClusterEvalReport[] = [];
      for (const spec of specs) {
        const run = (current = { policy: makePolicy(spec, moeLayers), modelledMs: 0, kept: 0, pairs: 0 });
        const measured: number[] = [], modelled: number[] = [];
        let nll = 0, correct = 0, bs = 0;
        for (let t = 0; t + 1 < tokens.length; t++) {
          const wait0 = model.expertTiming.waitMs;
          run.modelledMs = 0;
          const t0 = performance.now();
          const logits = await decode(t);
          const wall = performance.now() - t0;
          const bsMs = wall - (model.expertTiming.waitMs - wait0);
          measured.push(wall);
          modelled.push(bsMs + run.modelledMs + moeLayers * transportMs);
          bs += bsMs;
          const target = tokens[t + 1]!;
          nll -= logProb(logits, target);
          let best = 0;
          for (let j = 1; j < V; j++) if (logits[j]! > logits[best]!) best = j;
          if (best === target) correct++;
          onProgress?.(spec, t + 1, tokens.length - 1);
        }
        const n = measured.length;
        const m = distribution(measured), p = distribution(modelled);
        reports.push({
          policy: spec.name,
          theta: spec.theta ?? null,
          budget_ms: spec.budgetMs ?? null,
          scenario: scenario.name,
          devices: o.devices,
          tokens: n,
          perplexity: Math.exp(nll / n),
          accuracy: correct / n,
          experts_per_token: run.kept / run.pairs,
          measured_ms: m,
          modelled_ms: p,
          measured_over_modelled: m.mean / p.mean,
          bs_ms: bs / n,
          transport_ms: transportMs,
        });
      }
      return reports;
    } finally {
      cache.free();
    }
  } finally {
    engine?.close();
    await cluster.close();
  }
}

/**
 * The runtime's transport per layer beyond the latency model: one-row calls to each device in turn,
 * each call's round trip less the model's time for it at that moment (median of 8 rounds).
 */
async function measureTransport(executor: ExpertExecutor, costs: CellCosts, clock: (nowMs: number) => number, layer: number, hidden: number, devices: number, hostOf: (layer: number, expert: number) => number): Promise<number> {
  const experts = costs.opts.hosts[layer]!.length;
  const samples: number[] = [];
  for (let round = 0; round < 8; round++) {
    for (let k = 0; k < devices; k++) {
      const e = Array.from({ length: experts }, (_, x) => x).find((x) => hostOf(layer, x) === k);
      if (e === undefined) continue;
      const lc = costs.layerCosts(costs.snapshotAt(clock(performance.now())), layer);
      const modelled = costs.layerTime(lc, { rows: 1, offsets: Int32Array.from([0, 1]), experts: Int32Array.from([e]), weights: Float32Array.from([1]) }).ms;
      const [call] = executor.dispatch([{ layer, expert: e, rows: 1, input: new Float32Array(hidden) }]);
      samples.push((await call!).roundTripMs - modelled);
    }
  }
  return Math.max(0, median(samples));
}
