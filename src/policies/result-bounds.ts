// Plausibility of an expert's results: a device can answer a well-formed frame with wrong numbers. A
// result row must be finite, not all zero for a non-zero input, and, once enough accepted rows of that
// (layer, expert) have been seen, its output-to-input norm ratio must lie within the range seen so far
// widened by a generous margin. Only rows of accepted results are learned from, so rejected ones never
// widen the range.

export interface ResultBoundsOptions {
  /** Accepted rows of an expert before its ratio range applies. */
  minSample: number;
  /** How far outside the seen ratio range a row may lie: [min / margin, max × margin]. */
  margin: number;
}

/**
 * Measured on brown-moe (600 sampled tokens after four prompts): the ratio ‖output‖ / ‖input‖ of one
 * expert spans up to 83×, and a row falls at most 11.3× outside the range of the rows before it (with
 * 32, 64 or 128 of them). A margin of 32 leaves room for that; a ×1000 copy then still fails on 99 %
 * of rows, and zeros, NaN and huge values always.
 */
export const DEFAULT_RESULT_BOUNDS: ResultBoundsOptions = { minSample: 32, margin: 32 };

/** Accepted rows of one expert: how many, and the range of their log norm ratios. */
interface Seen {
  rows: number;
  min: number;
  max: number;
}

export class ResultBounds {
  private readonly seen = new Map<string, Seen>();
  private readonly logMargin: number;

  constructor(private readonly opts: ResultBoundsOptions = DEFAULT_RESULT_BOUNDS) {
    this.logMargin = Math.log(opts.margin);
  }

  /** What is wrong with `output` as expert `expert` of layer `layer`'s answer to `input` (rows of `hidden`), or null. */
  check(layer: number, expert: number, input: Float32Array, output: Float32Array, hidden: number): string | null {
    for (let i = 0; i < output.length; i++) if (!Number.isFinite(output[i]!)) return `non-finite values (${output[i]})`;
    const s = this.seen.get(`${layer}/${expert}`);
    const applies = s !== undefined && s.rows >= this.opts.minSample;
    for (let r = 0; r * hidden < output.length; r++) {
      const ratio = logRatio(input, output, r, hidden);
      if (ratio === null) continue;
      if (ratio === -Infinity) return `an all-zero row for a non-zero input`;
      if (applies && (ratio < s.min - this.logMargin || ratio > s.max + this.logMargin)) {
        return `a row ${Math.exp(ratio).toPrecision(3)}× its input's norm, outside ${(Math.exp(s.min) / this.opts.margin).toPrecision(3)}–${(Math.exp(s.max) * this.opts.margin).toPrecision(3)}× learned from ${s.rows} rows`;
      }
    }
    return null;
  }

  /** Learns from the rows of a result that passed check(). */
  learn(layer: number, expert: number, input: Float32Array, output: Float32Array, hidden: number): void {
    const key = `${layer}/${expert}`;
    const s = this.seen.get(key) ?? this.seen.set(key, { rows: 0, min: Infinity, max: -Infinity }).get(key)!;
    for (let r = 0; r * hidden < output.length; r++) {
      const ratio = logRatio(input, output, r, hidden);
      if (ratio === null || !Number.isFinite(ratio)) continue;
      s.rows++;
      s.min = Math.min(s.min, ratio);
      s.max = Math.max(s.max, ratio);
    }
  }
}

/** ln(‖output row r‖ / ‖input row r‖); null when the input row is zero (no ratio to judge by). */
function logRatio(input: Float32Array, output: Float32Array, r: number, hidden: number): number | null {
  let x = 0;
  let y = 0;
  for (let i = r * hidden; i < (r + 1) * hidden; i++) {
    x += input[i]! * input[i]!;
    y += output[i]! * output[i]!;
  }
  return x === 0 ? null : 0.5 * Math.log(y / x);
}
