// Where the simulator's router outputs come from: a routing trace recorded from a real run (`distmoe
// eval --trace`), or a synthetic router. Either gives, per (token, layer), one row of gate
// probabilities; the selection policies then choose from it exactly as they do in the engine.
import { readFileSync } from "node:fs";
import { Random } from "../util/random.js";
import type { RouterOutput } from "../policies/selection.js";

export interface RoutingSource {
  readonly experts: number;
  /** The router output of the next token at `layer` (one row; valid until the next call). */
  next(layer: number): RouterOutput;
}

export interface SyntheticRoutingOptions {
  experts: number;
  /** spread of the gate logits (larger: more confident routers) */
  logitStd?: number;
  /** expert popularity: expert e's logit is shifted by −skew·ln(1 + rank), a Zipf-like load imbalance */
  skew?: number;
  seed?: number;
}

/** How many router rows the synthetic router draws per layer; tokens pick among them at random. */
const SYNTHETIC_POOL = 4096;

/** Gate logits drawn i.i.d. normal per token, with a per-layer popularity order; a pool of rows per layer, drawn once. */
export function syntheticRouting(o: SyntheticRoutingOptions): RoutingSource {
  const E = o.experts, std = o.logitStd ?? 1.5, skew = o.skew ?? 0.5;
  const rng = new Random(o.seed ?? 1);
  const pools = new Map<number, { logits: Float32Array; probs: Float32Array }>();
  const poolOf = (layer: number) => {
    let pool = pools.get(layer);
    if (pool) return pool;
    // a random popularity order per layer
    const order = Array.from({ length: E }, (_, e) => e);
    for (let i = E - 1; i > 0; i--) {
      const j = rng.nextU32() % (i + 1);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const bias = new Float32Array(E);
    order.forEach((e, rank) => (bias[e] = -skew * Math.log(1 + rank)));
    pool = { logits: new Float32Array(SYNTHETIC_POOL * E), probs: new Float32Array(SYNTHETIC_POOL * E) };
    for (let r = 0; r < SYNTHETIC_POOL; r++) {
      const l = pool.logits.subarray(r * E, (r + 1) * E), p = pool.probs.subarray(r * E, (r + 1) * E);
      let max = -Infinity, sum = 0;
      for (let e = 0; e < E; e++) max = Math.max(max, (l[e] = rng.normal() * std + bias[e]!));
      for (let e = 0; e < E; e++) sum += p[e] = Math.exp(l[e]! - max);
      for (let e = 0; e < E; e++) p[e]! /= sum;
    }
    pools.set(layer, pool);
    return pool;
  };
  return {
    experts: E,
    next(layer) {
      const pool = poolOf(layer), r = rng.nextU32() % SYNTHETIC_POOL;
      return { layer, rows: 1, experts: E, logits: pool.logits.subarray(r * E, (r + 1) * E), probs: pool.probs.subarray(r * E, (r + 1) * E) };
    },
  };
}

/**
 * Replays a routing trace (JSON Lines of {layer, tokens: [{experts, weights}]}): each token's recorded
 * experts get their recorded weights as probabilities, the rest nothing, so top-k of the replay is the
 * recorded choice. A simulated model with more layers than the trace reuses its layers in turn.
 */
export function traceRouting(file: string, experts: number, topK: number): RoutingSource {
  const byLayer: Array<Array<{ experts: number[]; weights: number[] }>> = [];
  readFileSync(file, "utf8").split("\n").forEach((line, i) => {
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
  const layers = byLayer.filter((l) => l && l.length > 0);
  if (layers.length === 0) throw new Error(`${file}: no routing records`);
  const cursor = layers.map(() => 0);
  const logits = new Float32Array(experts), probs = new Float32Array(experts);
  return {
    experts,
    next(layer) {
      const l = layer % layers.length, recs = layers[l]!;
      const rec = recs[cursor[l]!]!;
      cursor[l] = (cursor[l]! + 1) % recs.length;
      probs.fill(0);
      logits.fill(-Infinity);
      rec.experts.forEach((e, i) => {
        probs[e] = rec.weights[i]!;
        logits[e] = Math.log(Math.max(rec.weights[i]!, 1e-30));
      });
      return { layer, rows: 1, experts, logits, probs };
    },
  };
}
