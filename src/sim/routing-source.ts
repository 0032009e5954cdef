// Where the simulator's router outputs come from: a routing trace recorded from a real run (`distmoe
// eval --trace`), or a synthetic router. Either gives, per (token, layer), one row of gate
// probabilities; the selection policies then choose from it exactly as they do in the engine.
import { readFileSync } from "node:fs";
import { Random } from "../util/random.js";
import { selectTopK, type RouterOutput, type RoutingDecision } from "../policies/selection.js";

/** One token's router output at a layer, with the model's own top-k of it. */
export interface RoutedToken {
  router: RouterOutput;
  top: RoutingDecision;
}

export interface RoutingSource {
  readonly experts: number;
  /** The next token at `layer` (valid until the next call). */
  next(layer: number): RoutedToken;
}

/** The model's routing: its number of experts per token and whether it renormalises their weights. */
export interface ModelRouting {
  topK: number;
  normalize: boolean;
}

/**
 * A layer's router rows in flat arrays, each row's top-k worked out once: a simulation draws the same
 * rows millions of times, and rows kept as objects would scatter them over memory a cache cannot hold.
 */
class RowPool {
  readonly logits: Float32Array;
  readonly probs: Float32Array;
  private readonly topExperts: Int32Array;
  private readonly topWeights: Float32Array;

  constructor(readonly rows: number, private readonly experts: number, private readonly model: ModelRouting) {
    this.logits = new Float32Array(rows * experts);
    this.probs = new Float32Array(rows * experts);
    this.topExperts = new Int32Array(rows * model.topK);
    this.topWeights = new Float32Array(rows * model.topK);
  }

  /** Call once the rows' logits and probabilities are written. */
  rank(): this {
    const E = this.experts, k = this.model.topK;
    for (let r = 0; r < this.rows; r++) {
      const top = selectTopK({ layer: 0, rows: 1, experts: E, logits: this.logits.subarray(r * E, (r + 1) * E), probs: this.probs.subarray(r * E, (r + 1) * E) }, this.model);
      this.topExperts.set(top.experts, r * k);
      this.topWeights.set(top.weights, r * k);
    }
    return this;
  }

  /** Copies row `r` into `into` as layer `layer`'s. */
  load(r: number, layer: number, into: { router: RouterOutput & { layer: number }; top: RoutingDecision }): RoutedToken {
    const E = this.experts, k = this.model.topK;
    const { logits, probs } = into.router, { experts, weights } = into.top;
    into.router.layer = layer;
    for (let e = 0, at = r * E; e < E; e++, at++) {
      logits[e] = this.logits[at]!;
      probs[e] = this.probs[at]!;
    }
    for (let i = 0, at = r * k; i < k; i++, at++) {
      experts[i] = this.topExperts[at]!;
      weights[i] = this.topWeights[at]!;
    }
    return into;
  }
}

/** The one token a source hands out, rewritten by each call. */
function scratchToken(experts: number, topK: number): { router: RouterOutput & { layer: number }; top: RoutingDecision } {
  return {
    router: { layer: 0, rows: 1, experts, logits: new Float32Array(experts), probs: new Float32Array(experts) },
    top: { rows: 1, offsets: Int32Array.from([0, topK]), experts: new Int32Array(topK), weights: new Float32Array(topK) },
  };
}

/** Where the router rows come from, as plain data (a simulation's options cross to worker threads). */
export type RoutingSpec = { trace: string } | { synthetic: Omit<SyntheticRoutingOptions, "experts" | keyof ModelRouting> };

export function routingSource(spec: RoutingSpec, experts: number, model: ModelRouting): RoutingSource {
  return "trace" in spec ? traceRouting(spec.trace, experts, model) : syntheticRouting({ ...spec.synthetic, ...model, experts });
}

export interface SyntheticRoutingOptions extends ModelRouting {
  experts: number;
  /** spread of the gate logits (larger: more confident routers) */
  logitStd?: number;
  /** expert popularity: expert e's logit is shifted by −skew·ln(1 + rank), a Zipf-like load imbalance */
  skew?: number;
  seed?: number;
}

/** How many router rows the synthetic router draws per layer; tokens pick among them at random. */
const SYNTHETIC_POOL = 1024;

/** Gate logits drawn i.i.d. normal per token, with a per-layer popularity order; a pool of rows per layer, drawn once. */
export function syntheticRouting(o: SyntheticRoutingOptions): RoutingSource {
  const E = o.experts, std = o.logitStd ?? 1.5, skew = o.skew ?? 0.5;
  const rng = new Random(o.seed ?? 1);
  const pools: RowPool[] = [];
  const poolOf = (layer: number): RowPool => {
    let pool = pools[layer];
    if (pool) return pool;
    // a random popularity order per layer
    const order = Array.from({ length: E }, (_, e) => e);
    for (let i = E - 1; i > 0; i--) {
      const j = rng.nextU32() % (i + 1);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const bias = new Float32Array(E);
    order.forEach((e, rank) => (bias[e] = -skew * Math.log(1 + rank)));
    pool = new RowPool(SYNTHETIC_POOL, E, o);
    for (let r = 0; r < SYNTHETIC_POOL; r++) {
      const l = pool.logits.subarray(r * E, (r + 1) * E), p = pool.probs.subarray(r * E, (r + 1) * E);
      let max = -Infinity, sum = 0;
      for (let e = 0; e < E; e++) max = Math.max(max, (l[e] = rng.normal() * std + bias[e]!));
      for (let e = 0; e < E; e++) sum += p[e] = Math.exp(l[e]! - max);
      for (let e = 0; e < E; e++) p[e]! /= sum;
    }
    return (pools[layer] = pool.rank());
  };
  const token = scratchToken(E, o.topK);
  return {
    experts: E,
    next(layer) {
      return poolOf(layer).load(rng.nextU32() % SYNTHETIC_POOL, layer, token);
    },
  };
}

/**
 * Replays a routing trace (JSON Lines of {layer, tokens: [{experts, weights}]}): each token's recorded
 * experts get their recorded weights as probabilities, the rest nothing, so top-k of the replay is the
 * recorded choice. A simulated model with more layers than the trace reuses its layers in turn.
 */
export function traceRouting(file: string, experts: number, model: ModelRouting): RoutingSource {
  const { topK } = model;
  const byLayer: Array<Array<{ experts: number[]; weights: number[] }>> = [];
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new Error(`cannot read the routing trace ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    let rec: { layer?: unknown; tokens?: unknown };
    try {
      rec = JSON.parse(line) as typeof rec;
    } catch {
      throw new Error(`${file}:${i + 1}: not JSON`);
    }
    if (!Number.isInteger(rec.layer) || !Array.isArray(rec.tokens)) throw new Error(`${file}:${i + 1}: expected {layer, tokens: [...]}`);
    for (const t of rec.tokens as Array<{ experts?: unknown; weights?: unknown }>) {
      const ex = t.experts as number[], w = t.weights as number[];
      if (!Array.isArray(ex) || !Array.isArray(w) || ex.length !== w.length || ex.some((e) => !Number.isInteger(e) || e < 0 || e >= experts)) {
        throw new Error(`${file}:${i + 1}: a token's experts must be integers below ${experts}, one weight each`);
      }
      if (ex.length !== topK) throw new Error(`${file}:${i + 1}: a token carries ${ex.length} experts, the model routes to ${topK} (record the trace with --policy topk)`);
      (byLayer[rec.layer as number] ??= []).push({ experts: ex, weights: w });
    }
  });
  const layers = byLayer
    .filter((l) => l && l.length > 0)
    .map((recs) => {
      const pool = new RowPool(recs.length, experts, model);
      pool.logits.fill(-Infinity);
      recs.forEach((rec, r) =>
        rec.experts.forEach((e, i) => {
          pool.probs[r * experts + e] = rec.weights[i]!;
          pool.logits[r * experts + e] = Math.log(Math.max(rec.weights[i]!, 1e-30));
        }),
      );
      return pool.rank();
    });
  if (layers.length === 0) throw new Error(`${file}: no routing records`);
  const cursor = layers.map(() => 0);
  const token = scratchToken(experts, topK);
  return {
    experts,
    next(layer) {
      const l = layer % layers.length, r = cursor[l]!;
      cursor[l] = (r + 1) % layers[l]!.rows;
      return layers[l]!.load(r, layer, token);
    },
  };
}
