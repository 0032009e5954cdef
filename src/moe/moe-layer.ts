// The sparse MoE block, as a seam with named parts:
//   router (gate logits → probabilities) → selection policy → dispatch plan → expert executors → combine.
// Executors are asynchronous and each gets all of the step's rows for one expert at once.
import type { Backend, ExpertBatch, Tensor } from "../kernels/backend.js";
import type { ModelConfig } from "../model/config.js";
import { StepBuffers } from "../model/step-buffers.js";
import type { ExpertTable, FfnWeights, LayerWeights } from "../model/weights.js";
import { selectTopK, selectTopKInto, topKMass, type DecisionBuffers, type RoutingDecision, type SelectionPolicy } from "../policies/selection.js";
import { combineInto, gatherRows, planDispatch } from "./dispatch.js";
import { ExpertsUnavailable, type ExpertExecutor, type ExpertResult } from "./executor.js";
import { routerProbabilities } from "./router.js";
import { BASE_STATION, layerRouting, type StepTap } from "./token-routing.js";
import type { RoutingTraceSink } from "./trace.js";

export interface MoeDeps {
  policy: SelectionPolicy;
  executor: ExpertExecutor;
  trace?: RoutingTraceSink;
  /**
   * Every layer's experts, when the executor is this process's own and holds them all: with the model's own
   * routing and no trace, the backend may then run a layer's router, experts and combine as one job
   * (Backend.moeTopK) instead of the seam's steps, which have JavaScript between them; with any routing, the
   * experts and combine after the policy's choice (Backend.moeExperts) instead of the executor's calls.
   */
  localExperts?: ExpertTable;
}

/** What the executors did, counted since the model was built. */
export interface ExpertCallStats {
  /** expert calls made (one per expert and layer per step) */
  calls: number;
  /** calls that failed for good (after any retries inside the executor) */
  failedCalls: number;
  /** (token, expert) pairs dropped because their call failed */
  droppedSlots: number;
  /** routing weight those pairs had, summed */
  droppedWeight: number;
  /** layer steps the backend ran as one job (router, experts and combine: Backend.moeTopK); their calls are counted in calls */
  oneJobLayers: number;
  /** layer steps whose chosen experts and combine the backend ran as one job after the policy (Backend.moeExperts); their calls are counted in calls */
  expertJobLayers: number;
}

/**
 * Where the MoE layers' waits on their executors went, summed over layers and steps. Each layer's wait
 * is attributed to its slowest call: that call's compute, its transfer (round trip minus compute,
 * protocol included), and the rest of the wait (failed calls, scheduling).
 */
export interface ExpertTiming {
  waitMs: number;
  deviceComputeMs: number;
  transferMs: number;
  waitingMs: number;
}

/** What the selection policy chose, counted since the model was built. */
export interface RoutingStats {
  /** (token, expert) pairs chosen, at [layer × experts + expert] */
  readonly use: Float64Array;
  /** (token, MoE layer) pairs routed */
  rows: number;
  /** the share of each such pair's top-k gate mass that the policy did not keep, summed (0 under top-k) */
  droppedGateMass: number;
}

/** A step's layers that ran as one job (Backend.moeTopK), and the set their chosen experts went to. */
export interface OneJobStep {
  readonly set: readonly Tensor[];
  readonly layers: readonly number[];
}

export class MoeBlock {
  readonly stats: ExpertCallStats = { calls: 0, failedCalls: 0, droppedSlots: 0, droppedWeight: 0, oneJobLayers: 0, expertJobLayers: 0 };
  readonly timing: ExpertTiming = { waitMs: 0, deviceComputeMs: 0, transferMs: 0, waitingMs: 0 };
  readonly routing: RoutingStats;
  /** the selection policy of the step running, and one set to take over from the next step */
  private policy: SelectionPolicy;
  private nextPolicy: SelectionPolicy | null = null;

  /** per layer call: router logits [rows][experts], shared expert output [rows][hidden] (Qwen2-MoE) */
  private readonly bufs: StepBuffers;
  /** Router probabilities, and the model's own top-k decision, reused from layer to layer when no trace keeps them. */
  private probs = new Float32Array(0);
  private readonly decisionBuffers: DecisionBuffers = { offsets: new Int32Array(0), experts: new Int32Array(0), weights: new Float32Array(0) };

  /** Per layer, its experts when this process holds them all (see MoeDeps.localExperts), else null; absent until first asked. */
  private readonly local: Array<readonly FfnWeights[] | null> = [];
  /** Per step in flight, the experts its one-job layers chose, [layer][rows][topK] i32, until endStep counts them. */
  private readonly chosen = new Map<number, { rows: number; set: Tensor[]; layers: number[] }>();
  private readonly chosenBufs: StepBuffers;
  private readonly seen: Int32Array;
  private stamp = 0;

  constructor(private readonly backend: Backend, private readonly cfg: ModelConfig, private readonly deps: MoeDeps) {
    this.bufs = new StepBuffers(backend, [cfg.experts, cfg.arch.sharedExpert ? cfg.hidden : 0]);
    this.chosenBufs = new StepBuffers(backend, [cfg.layers * cfg.topK]);
    this.seen = new Int32Array(cfg.experts);
    this.routing = { use: new Float64Array(cfg.layers * cfg.experts), rows: 0, droppedGateMass: 0 };
    this.policy = deps.policy;
  }

  /** Routes with `policy` from the next step on (a step in flight keeps its own: every layer of a step decides alike). */
  setPolicy(policy: SelectionPolicy): void {
    this.nextPolicy = policy;
  }

  /** Starts a step: a policy set since the last one takes over. */
  beginStep(): void {
    if (this.nextPolicy) [this.policy, this.nextPolicy] = [this.nextPolicy, null];
  }

  /**
   * out[rows][hidden] = MoE(h) for layer `layer`; h is the post-attention-norm activation. `taps`: rows
   * whose routing a sequence asked for (null: none); they do not keep the layer from running as one job.
   */
  async forward(layer: number, w: LayerWeights, h: Tensor, out: Tensor, rows: number, step: number, positions: ArrayLike<number>, taps: readonly StepTap[] | null = null): Promise<void> {
    const { backend, cfg } = this;
    const H = cfg.hidden, E = cfg.experts;
    const bufs = this.bufs.take(rows);
    const [logitsBuf, sharedOut] = bufs as [Tensor, Tensor];
    try {
      if (this.asOneJob(layer, w, h, out, rows, step)) {
        if (taps) this.tapOneJob(layer, w, h, rows, taps, logitsBuf);
        if (w.shared) this.addSharedExpert(w, h, out, rows, logitsBuf, sharedOut);
        return;
      }
      backend.matmul(logitsBuf, h, w.router!, rows);
      // With the model's own routing and no trace, nothing keeps the router output or the decision past
      // the plan: they are read in place and written into buffers reused by the next layer. Any other
      // policy (an evaluation harness, say) may keep them and gets its own.
      const trace = this.deps.trace;
      const reuse = !trace && this.policy === selectTopK;
      const view = backend.f32(logitsBuf, 0, rows * E);
      const logits = reuse ? view : view.slice();
      if (reuse && this.probs.length < rows * E) this.probs = new Float32Array(rows * E);
      const router = { layer, rows, experts: E, logits, probs: routerProbabilities(logits, rows, E, reuse ? this.probs : undefined) };
      const ctx = { topK: cfg.topK, normalize: cfg.normTopK };
      const decision = reuse ? selectTopKInto(router, ctx, this.decisionBuffers) : this.policy(router, ctx);
      trace?.record({ step, layer, positions, router, decision });
      const plan = planDispatch(decision, E);
      this.countRouting(layer, rows, plan, this.policy === selectTopK ? null : { decision, probs: router.probs });

      const local = this.localLayer(layer);
      if (local && backend.moeExperts) {
        // every expert here: the backend looks the rows up and combines the results itself, no copies through JavaScript
        backend.moeExperts(out, h, local, plan, rows);
        this.stats.calls += plan.length;
        this.stats.expertJobLayers++;
        if (taps) for (const { row, tap } of taps) tap.record(layerRouting(layer, decision, row, () => BASE_STATION));
        if (w.shared) this.addSharedExpert(w, h, out, rows, logitsBuf, sharedOut);
        return;
      }
      const x = backend.f32(h, 0, rows * H);
      const t0 = performance.now();
      const results = await Promise.allSettled(
        this.deps.executor.dispatch(plan.map((b) => ({ layer, expert: b.expert, rows: b.rows.length, input: gatherRows(x, H, b.rows) }))),
      );
      this.stats.calls += plan.length;
      this.account(performance.now() - t0, results);
      // an expert no live host can serve fails the step: dropping it for every row routed to it would be noise
      const unavailable = results.find((r) => r.status === "rejected" && r.reason instanceof ExpertsUnavailable);
      if (unavailable) throw (unavailable as PromiseRejectedResult).reason;
      if (taps) {
        // the decision is read before the next layer reuses its buffers; each expert is named by who answered its call
        const deviceOf = (expert: number) => {
          const r = results[plan.findIndex((b) => b.expert === expert)];
          return r?.status === "fulfilled" ? (r.value.device ?? BASE_STATION) : null;
        };
        for (const { row, tap } of taps) tap.record(layerRouting(layer, decision, row, deviceOf));
      }
      const scale = this.keptWeightScale(plan, results.map((r) => r.status === "fulfilled"), rows);
      const y = backend.f32(out, 0, rows * H);
      y.fill(0);
      plan.forEach((b, i) => {
        const r = results[i]!;
        if (r.status === "fulfilled") combineInto(y, H, b, r.value.output, scale);
      });

      if (w.shared) this.addSharedExpert(w, h, out, rows, logitsBuf, sharedOut);
    } finally {
      this.bufs.give(rows, bufs);
    }
  }

  /**
   * The taps of a layer that ran as one job: the model's own top-k, from the router's output computed again
   * (a matmul of the router, small beside the experts), every expert here. The step's other rows keep
   * their one job, so a request that asks for its routing changes neither the output nor the path of the
   * requests batched with it.
   */
  private tapOneJob(layer: number, w: LayerWeights, h: Tensor, rows: number, taps: readonly StepTap[], logitsBuf: Tensor): void {
    const E = this.cfg.experts;
    this.backend.matmul(logitsBuf, h, w.router!, rows);
    const logits = this.backend.f32(logitsBuf, 0, rows * E).slice();
    const decision = selectTopK({ layer, rows, experts: E, logits, probs: routerProbabilities(logits, rows, E) }, { topK: this.cfg.topK, normalize: this.cfg.normTopK });
    for (const { row, tap } of taps) tap.record(layerRouting(layer, decision, row, () => BASE_STATION));
  }

  /**
   * The layer as one job of the backend (moeTopK) where it may run so: the model's own routing, no trace
   * wanting the router's output, every expert here. The experts chosen are counted at endStep.
   */
  private asOneJob(layer: number, w: LayerWeights, h: Tensor, out: Tensor, rows: number, step: number): boolean {
    const { backend, cfg } = this;
    if (!backend.moeTopK || this.deps.trace || this.policy !== selectTopK) return false;
    const experts = this.localLayer(layer);
    if (!experts) return false;
    let held = this.chosen.get(step);
    if (!held) this.chosen.set(step, (held = { rows, set: this.chosenBufs.take(rows), layers: [] }));
    if (held.rows !== rows) throw new Error(`MoE layer ${layer}: ${rows} rows in a step of ${held.rows}`);
    const k = cfg.topK, ids = held.set[0]!;
    const chosen = { arena: ids.arena, ptr: ids.ptr + layer * rows * k * 4, bytes: rows * k * 4 };
    if (!backend.moeTopK(out, h, w.router!, experts, rows, k, cfg.normTopK, chosen)) {
      // not as one job for these weights or this many rows (see Backend.moeTopK): the seam's steps, and the
      // buffers back if no layer of the step used them (a prefill's would otherwise be kept for good)
      if (held.layers.length === 0) {
        this.chosen.delete(step);
        this.chosenBufs.give(rows, held.set);
      }
      return false;
    }
    held.layers.push(layer);
    this.stats.oneJobLayers++;
    return true;
  }

  /** The layer's experts when this process holds every one of them (MoeDeps.localExperts), else null. */
  private localLayer(layer: number): readonly FfnWeights[] | null {
    if (this.local[layer] === undefined) {
      const experts = this.deps.localExperts?.[layer];
      this.local[layer] = experts && experts.length === this.cfg.experts && experts.every((x) => x !== null) ? (experts as FfnWeights[]) : null;
    }
    return this.local[layer]!;
  }

  /** The layers of step `step` that ran as one job so far; null: none. */
  oneJobStep(step: number): OneJobStep | null {
    const c = this.chosen.get(step);
    return c ? { set: c.set, layers: [...c.layers] } : null;
  }

  /**
   * Whether step `step` may stand for a recorded one whose one-job layers were `recorded` (a decode step's ops
   * recorded again: Transformer): those layers would run as one job now, and choose into the same set.
   */
  canReplayOneJob(step: number, rows: number, recorded: OneJobStep): boolean {
    if (!this.backend.moeTopK || this.deps.trace || this.policy !== selectTopK || this.chosen.has(step)) return false;
    return this.chosenBufs.peek(rows) === recorded.set && recorded.layers.every((l) => this.local[l]);
  }

  /** Step `step` stands for the recorded one (checked by canReplayOneJob): its one-job layers count as run. */
  replayOneJob(step: number, rows: number, recorded: OneJobStep): void {
    const set = this.chosenBufs.take(rows);
    if (set !== recorded.set) throw new Error("replayOneJob: the step's chosen experts would go to another set");
    this.chosen.set(step, { rows, set, layers: [...recorded.layers] });
    this.stats.oneJobLayers += recorded.layers.length;
  }

  /** Ends a step: the experts that its one-job layers chose are counted as the calls they stand for (`completed`: the step ran to its end). */
  endStep(step: number, completed: boolean): void {
    const c = this.chosen.get(step);
    if (!c) return;
    this.chosen.delete(step);
    try {
      if (!completed) return;
      const k = this.cfg.topK, n = c.rows * k, E = this.cfg.experts, use = this.routing.use;
      // one view over every layer's ids (a view costs more than the few ids a decode step's layer holds)
      const all = this.backend.i32(c.set[0]!, 0, this.cfg.layers * n);
      for (const layer of c.layers) {
        const stamp = ++this.stamp;
        this.routing.rows += c.rows;
        for (let i = layer * n; i < (layer + 1) * n; i++) {
          const id = all[i]!;
          use[layer * E + id]!++;
          if (this.seen[id] !== stamp) {
            this.seen[id] = stamp;
            this.stats.calls++;
          }
        }
      }
    } finally {
      this.chosenBufs.give(c.rows, c.set);
    }
  }

  /**
   * Counts a layer's routing: the rows each expert was chosen for and, for a policy other than the
   * model's top-k (`chosen`), the share of each row's top-k gate mass it dropped.
   */
  private countRouting(layer: number, rows: number, plan: readonly ExpertBatch[], chosen: { decision: RoutingDecision; probs: Float32Array } | null): void {
    const r = this.routing, E = this.cfg.experts;
    r.rows += rows;
    for (const b of plan) r.use[layer * E + b.expert]! += b.rows.length;
    if (!chosen) return;
    const { decision: d, probs } = chosen;
    for (let row = 0; row < rows; row++) {
      const p = probs.subarray(row * E, (row + 1) * E);
      const top = topKMass(p, Math.min(this.cfg.topK, E));
      let kept = 0;
      for (let i = d.offsets[row]!; i < d.offsets[row + 1]!; i++) kept += p[d.experts[i]!]!;
      if (top > 0) r.droppedGateMass += Math.max(0, 1 - kept / top);
    }
  }

  private account(waitMs: number, results: ReadonlyArray<PromiseSettledResult<ExpertResult>>): void {
    let slowest: ExpertResult | null = null;
    for (const r of results) if (r.status === "fulfilled" && (!slowest || r.value.roundTripMs > slowest.roundTripMs)) slowest = r.value;
    const t = this.timing;
    t.waitMs += waitMs;
    if (!slowest) return void (t.waitingMs += waitMs);
    t.deviceComputeMs += slowest.computeMs;
    t.transferMs += Math.max(0, slowest.roundTripMs - slowest.computeMs);
    t.waitingMs += Math.max(0, waitMs - slowest.roundTripMs);
  }

  /**
   * A failed call drops its expert for its rows; each such row's surviving weights are scaled up to the
   * routing weight the row had in total, so the output keeps its magnitude. Null when nothing failed.
   */
  private keptWeightScale(plan: readonly ExpertBatch[], ok: readonly boolean[], rows: number): Float64Array | null {
    if (ok.every(Boolean)) return null;
    const total = new Float64Array(rows), kept = new Float64Array(rows);
    plan.forEach((b, i) => {
      if (!ok[i]) {
        this.stats.failedCalls++;
        this.stats.droppedSlots += b.rows.length;
      }
      b.rows.forEach((r, j) => {
        total[r]! += b.weights[j]!;
        if (ok[i]) kept[r]! += b.weights[j]!;
        else this.stats.droppedWeight += b.weights[j]!;
      });
    });
    return total.map((t, r) => (kept[r]! > 0 ? t / kept[r]! : 0));
  }

  /** Qwen2-MoE: out += sigmoid(h · w_gate) · FFN_shared(h), computed where the router runs. */
  private addSharedExpert(w: LayerWeights, h: Tensor, out: Tensor, rows: number, gateBuf: Tensor, sharedOut: Tensor): void {
    const { backend } = this;
    const H = this.cfg.hidden;
    backend.ffn(sharedOut, h, w.shared!, rows);
    backend.matmul(gateBuf, h, w.sharedGate!, rows);
    const g = backend.f32(gateBuf, 0, rows);
    const s = backend.f32(sharedOut, 0, rows * H);
    const y = backend.f32(out, 0, rows * H);
    for (let r = 0; r < rows; r++) {
      const gate = 1 / (1 + Math.exp(-g[r]!));
      for (let j = 0; j < H; j++) y[r * H + j]! += gate * s[r * H + j]!;
    }
  }

  close(): void {
    this.bufs.close();
    this.chosenBufs.close();
  }
}
