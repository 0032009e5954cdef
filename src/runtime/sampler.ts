// Next-token choice from logits: greedy at temperature 0, otherwise temperature, top-k and top-p
// (nucleus) filtering and a draw from a seeded random source.
import { Random } from "../util/random.js";

export interface SamplingOptions {
  /** 0 = greedy */
  temperature: number;
  /** keep the k most likely tokens (0 = all) */
  topK?: number;
  /** keep the smallest set whose probability reaches p (1 = all) */
  topP?: number;
  seed?: number;
}

export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

export class Sampler {
  private readonly rng: Random;

  constructor(private readonly opts: SamplingOptions) {
    if (!(opts.temperature >= 0)) throw new Error(`temperature must be ≥ 0, got ${opts.temperature}`);
    if (opts.topP !== undefined && !(opts.topP > 0 && opts.topP <= 1)) throw new Error(`top-p must be in (0, 1], got ${opts.topP}`);
    if (opts.topK !== undefined && !(Number.isInteger(opts.topK) && opts.topK >= 0)) throw new Error(`top-k must be a non-negative integer, got ${opts.topK}`);
    this.rng = new Random(opts.seed ?? Date.now());
  }

  sample(logits: Float32Array): number {
    const { temperature, topK = 0, topP = 1 } = this.opts;
    if (temperature === 0) return argmax(logits);
    // candidates sorted by logit, cut by top-k
    let ids = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]!);
    if (topK > 0 && topK < ids.length) ids = ids.slice(0, topK);
    const max = logits[ids[0]!]!;
    const p = ids.map((i) => Math.exp((logits[i]! - max) / temperature));
    const total = p.reduce((a, b) => a + b, 0);
    // nucleus: the shortest prefix whose mass reaches topP
    let keep = ids.length, mass = 0;
    if (topP < 1) {
      for (let i = 0; i < ids.length; i++) {
        mass += p[i]! / total;
        if (mass >= topP) {
          keep = i + 1;
          break;
        }
      }
    }
    const kept = p.slice(0, keep).reduce((a, b) => a + b, 0);
    let u = this.rng.next() * kept;
    for (let i = 0; i < keep; i++) {
      u -= p[i]!;
      if (u <= 0) return ids[i]!;
    }
    return ids[keep - 1]!;
  }
}
