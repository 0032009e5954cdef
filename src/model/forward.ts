// The one forward pass for every architecture in arch.ts, with switches for the variants (q/k/v/o
// biases, q/k norm over the projection or per head, clip_qkv, shared expert, dense layers).
// A step takes the new tokens of any number of sequences as one batch of rows: linear layers and the
// MoE block see all rows at once, attention runs per sequence against its own KV cache.
import type { Backend, OpTape, RopeTable, Tensor } from "../kernels/backend.js";
import { MoeBlock, type ExpertCallStats, type ExpertTiming, type MoeDeps, type OneJobStep, type RoutingStats } from "../moe/moe-layer.js";
import type { RoutingTap, StepTap } from "../moe/token-routing.js";
import type { SelectionPolicy } from "../policies/selection.js";
import type { ModelConfig } from "./config.js";
import { KVCache } from "./kv-cache.js";
import { StepBuffers } from "./step-buffers.js";
import type { LayerWeights, ModelWeights } from "./weights.js";

export type LogitsWanted = "last" | "all" | "none";

export interface BatchItem {
  readonly cache: KVCache;
  readonly tokens: ArrayLike<number>;
  readonly logits: LogitsWanted;
  /** Records the routing of the item's last row (the one whose logits give its next token) in this step. */
  readonly routing?: RoutingTap;
}

function sub(t: Tensor, byteOffset: number, bytes: number): Tensor {
  return { arena: t.arena, ptr: t.ptr + byteOffset, bytes };
}

/** The taps of a step's items, each on its item's last row. */
function stepTaps(items: readonly BatchItem[]): StepTap[] {
  const taps: StepTap[] = [];
  let end = 0;
  for (const it of items) {
    end += it.tokens.length;
    if (it.routing && it.tokens.length > 0) taps.push({ row: end - 1, tap: it.routing });
  }
  return taps;
}

export class Transformer {
  private readonly rope: RopeTable;
  private readonly moe: MoeBlock;
  /** per step: x, h, tmp, q, k, v, att, positions */
  private readonly stepBufs: StepBuffers;
  /** per step, for the rows whose logits are wanted: picked rows, normed, logits */
  private readonly logitBufs: StepBuffers;
  private step = 0;
  /** Steps begun and not ended. */
  private inFlight = 0;
  /** The last single-sequence decode step's layers as the backend recorded them (Backend.endTape), and what they ran over. */
  private decodeTape: { tape: OpTape; cache: KVCache; bufs: readonly Tensor[]; moe: OneJobStep | null } | null = null;

  constructor(
    readonly backend: Backend,
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    deps: MoeDeps,
    /** Longest sequence this model instance will see (sizes the rotary table). */
    readonly contextLength: number,
  ) {
    if (contextLength > config.maxPositions) throw new Error(`context ${contextLength} exceeds the model's ${config.maxPositions} positions`);
    this.rope = backend.ropeTable(contextLength, config.headDim, config.ropeTheta);
    this.moe = new MoeBlock(backend, config, deps);
    const H = config.hidden, qDim = config.heads * config.headDim, kvDim = config.kvHeads * config.headDim;
    this.stepBufs = new StepBuffers(backend, [H, H, H, qDim, kvDim, kvDim, qDim, 1]);
    this.logitBufs = new StepBuffers(backend, [H, H, config.vocabSize], 16);
  }

  /** What the expert executors did, counted since this model was built. */
  get expertStats(): Readonly<ExpertCallStats> {
    return this.moe.stats;
  }

  /** Where the MoE layers' waits on their executors went, summed since this model was built. */
  get expertTiming(): Readonly<ExpertTiming> {
    return this.moe.timing;
  }

  /** What the selection policy chose, counted since this model was built. */
  get routingStats(): Readonly<RoutingStats> {
    return this.moe.routing;
  }

  /** Routes with `policy` from the next step on. */
  setPolicy(policy: SelectionPolicy): void {
    this.moe.setPolicy(policy);
  }

  newSequence(capacity = this.contextLength): KVCache {
    return new KVCache(this.backend, this.config, Math.min(capacity, this.contextLength));
  }

  /** Runs one step; returns, per item, its logits (rows × vocab: its last row, all rows, or none). */
  async forward(items: readonly BatchItem[]): Promise<Float32Array[]> {
    const { backend: be, config: c } = this;
    const rows = items.reduce((s, it) => s + it.tokens.length, 0);
    if (rows === 0) return items.map(() => new Float32Array(0));
    for (const it of items) {
      if (it.cache.length + it.tokens.length > it.cache.capacity) {
        throw new Error(`sequence of ${it.cache.length + it.tokens.length} tokens exceeds its context of ${it.cache.capacity}`);
      }
    }
    const bufs = this.stepBufs.take(rows);
    const x = bufs[0]!, pos = bufs[7]!; // see stepBufs
    const step = this.step++;
    this.moe.beginStep();
    this.inFlight++;
    let done = false;
    try {
      const ids: number[] = [];
      const positions = be.i32(pos, 0, rows);
      let r = 0;
      for (const it of items) {
        for (let i = 0; i < it.tokens.length; i++, r++) {
          ids.push(it.tokens[i]!);
          positions[r] = it.cache.length + i;
        }
      }
      const posList = positions.slice();
      const taps = items.some((it) => it.routing) ? stepTaps(items) : null;
      be.embed(x, this.weights.embed, ids);
      await this.runLayers(items, bufs, rows, step, posList, taps);
      for (const it of items) it.cache.length += it.tokens.length;
      const logits = this.logits(items, x, rows);
      done = true;
      return logits;
    } finally {
      this.inFlight--;
      this.moe.endStep(step, done);
      this.stepBufs.give(rows, bufs);
    }
  }

  /**
   * The step's layers. A single sequence's decode step keeps their ops as the backend recorded them (a tape), and
   * the next step records them again from it where it still holds (replayLayers): the calls' checks and keys
   * cost more than the rest of the step's JavaScript.
   */
  private async runLayers(items: readonly BatchItem[], bufs: Tensor[], rows: number, step: number, positions: ArrayLike<number>, taps: readonly StepTap[] | null): Promise<void> {
    const be = this.backend;
    const decode = items.length === 1 && rows === 1 && !taps && this.inFlight === 1 && be.beginTape !== undefined;
    if (decode && this.replayLayers(items[0]!.cache, bufs, step)) return;
    if (decode) be.beginTape!();
    let ran = false;
    try {
      await this.layers(items, bufs, rows, step, positions, taps);
      ran = true;
    } finally {
      if (decode) {
        const tape = be.endTape!();
        // a step begun while this one awaited (its ops may be among these) leaves no tape
        this.decodeTape = ran && tape && this.step === step + 1 ? { tape, cache: items[0]!.cache, bufs, moe: this.moe.oneJobStep(step) } : null;
      }
    }
  }

  private async layers(items: readonly BatchItem[], bufs: Tensor[], rows: number, step: number, positions: ArrayLike<number>, taps: readonly StepTap[] | null): Promise<void> {
    const { backend: be, config: c } = this;
    const H = c.hidden;
    const [x, h, tmp, q, k, v, att, pos] = bufs as [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor];
    for (let l = 0; l < c.layers; l++) {
      const w = this.weights.layers[l]!;
      be.rmsnorm(h, x, w.attnNorm, rows, H, c.rmsEps);
      this.attention(l, w, items, h, q, k, v, att, pos, rows);
      be.matmul(tmp, att, w.o, rows);
      if (w.oBias) be.addBias(tmp, w.oBias, rows);
      be.add(x, x, tmp, rows * H);

      be.rmsnorm(h, x, w.ffnNorm, rows, H, c.rmsEps);
      if (w.dense) be.ffn(tmp, h, w.dense, rows);
      else await this.moe.forward(l, w, h, tmp, rows, step, positions, taps);
      be.add(x, x, tmp, rows * H);
    }
  }

  /**
   * Records the layers' ops again as the last decode step's tape holds them, where it still holds: the same
   * sequence and step buffers, a cache not freed, MoE layers that would run as one job as they did. The checks the
   * calls made hold by construction: the position is within the cache (forward checked it), whose capacity is
   * within the rotary table (newSequence).
   */
  private replayLayers(cache: KVCache, bufs: readonly Tensor[], step: number): boolean {
    const t = this.decodeTape;
    if (!t || t.cache !== cache || t.bufs !== bufs || cache.k.length !== this.config.layers) return false;
    if (t.moe && !this.moe.canReplayOneJob(step, 1, t.moe)) return false;
    if (!this.backend.replayTape!(t.tape, cache.length)) {
      this.decodeTape = null;
      return false;
    }
    if (t.moe) this.moe.replayOneJob(step, 1, t.moe);
    return true;
  }

  private attention(l: number, w: LayerWeights, items: readonly BatchItem[], h: Tensor, q: Tensor, k: Tensor, v: Tensor, att: Tensor, pos: Tensor, rows: number): void {
    const { backend: be, config: c } = this;
    const qDim = c.heads * c.headDim, kvDim = c.kvHeads * c.headDim;
    be.matmulMany(h, [[q, w.q], [k, w.k], [v, w.v]], rows);
    if (w.qBias) be.addBias(q, w.qBias, rows);
    if (w.kBias) be.addBias(k, w.kBias, rows);
    if (w.vBias) be.addBias(v, w.vBias, rows);
    if (c.arch.qkNorm === "full") {
      be.rmsnorm(q, q, w.qNorm!, rows, qDim, c.rmsEps);
      be.rmsnorm(k, k, w.kNorm!, rows, kvDim, c.rmsEps);
    } else if (c.arch.qkNorm === "per-head") {
      be.rmsnorm(q, q, w.qNorm!, rows * c.heads, c.headDim, c.rmsEps);
      be.rmsnorm(k, k, w.kNorm!, rows * c.kvHeads, c.headDim, c.rmsEps);
    }
    if (c.clipQkv !== null) {
      be.clamp(q, rows * qDim, c.clipQkv);
      be.clamp(k, rows * kvDim, c.clipQkv);
      be.clamp(v, rows * kvDim, c.clipQkv);
    }
    be.rope(q, rows, c.heads, c.headDim, pos, this.rope);
    be.rope(k, rows, c.kvHeads, c.headDim, pos, this.rope);

    let r = 0;
    for (const it of items) {
      const n = it.tokens.length, start = it.cache.length;
      // positions r.. are this item's cache rows start..
      const at = sub(pos, r * 4, n * 4);
      be.setRows(it.cache.k[l]!, sub(k, r * kvDim * 4, n * kvDim * 4), n, kvDim, at);
      be.setRows(it.cache.v[l]!, sub(v, r * kvDim * 4, n * kvDim * 4), n, kvDim, at);
      be.attention(sub(att, r * qDim * 4, n * qDim * 4), sub(q, r * qDim * 4, n * qDim * 4), it.cache.k[l]!, it.cache.v[l]!, n, start, c.heads, c.kvHeads, c.headDim);
      r += n;
    }
  }

  private logits(items: readonly BatchItem[], x: Tensor, rows: number): Float32Array[] {
    const { backend: be, config: c } = this;
    const H = c.hidden, V = c.vocabSize;
    // Pick the rows whose logits are wanted, then one final norm and LM-head product over them.
    const picks: number[] = [];
    let r = 0;
    for (const it of items) {
      const n = it.tokens.length;
      if (it.logits === "all") for (let i = 0; i < n; i++) picks.push(r + i);
      else if (it.logits === "last") picks.push(r + n - 1);
      r += n;
    }
    if (picks.length === 0) return items.map(() => new Float32Array(0));
    const bufs = this.logitBufs.take(picks.length);
    const [sel, normed, out] = bufs as [Tensor, Tensor, Tensor];
    try {
      // consecutive rows (a decode step's, a prefill's last) are read where they are: JavaScript touching x would
      // end the backend's job there (the native backend runs what it recorded when memory is read)
      const first = picks[0]!, consecutive = picks[picks.length - 1]! - first === picks.length - 1;
      const input = consecutive ? sub(x, first * H * 4, picks.length * H * 4) : sel;
      if (!consecutive) {
        const xs = be.f32(x, 0, rows * H), ss = be.f32(sel, 0, picks.length * H);
        picks.forEach((row, i) => ss.set(xs.subarray(row * H, (row + 1) * H), i * H));
      }
      be.rmsnorm(normed, input, this.weights.outputNorm, picks.length, H, c.rmsEps);
      be.matmul(out, normed, this.weights.lmHead, picks.length);
      const all = be.f32(out, 0, picks.length * V);
      let p = 0;
      return items.map((it) => {
        const n = it.logits === "all" ? it.tokens.length : it.logits === "last" ? 1 : 0;
        const res = all.slice(p * V, (p + n) * V);
        p += n;
        return res;
      });
    } finally {
      this.logitBufs.give(picks.length, bufs);
    }
  }

  close(): void {
    this.moe.close();
    this.stepBufs.close();
    this.logitBufs.close();
  }
}
