// Whether two holders' results for one expert call agree: a spot check has a call computed twice (by a
// replica, or by the base station from its own copy of the weights) and compares the results row by
// row. Honest results differ a little: each crosses the wire rounded to the wire dtype, and holders
// may sum in another order (another SIMD variant; quantized weights' kernels round the activations
// too). A row agrees when ‖a − b‖ ≤ relative × max(‖a‖, ‖b‖) + absolute × √hidden.
import type { WeightDType } from "../kernels/backend.js";
import type { WireDType } from "../protocol/activations.js";

export interface ResultTolerance {
  /** the largest difference of two rows, as a share of the larger row's norm */
  relative: number;
  /** and per value, for rows so small that the wire dtype holds them coarsely (f16's subnormals) */
  absolute: number;
}

/**
 * Measured on brown-moe by `node scripts/measure-result-tolerance.mjs [--dtype q8]` (30 prompts × 100
 * greedy tokens, 27,168 rows; each call computed from its input as the wire carries it): a device's
 * result (plain SIMD, 1 thread, rounded to the wire dtype) against the base station's (relaxed SIMD,
 * 2 threads, unrounded). The largest row difference with f32 weights was 3.1e-7 (f32 wire), 3.6e-4
 * (f16) and 2.7e-3 (bf16); with q8 weights 1.4e-3, 9.1e-4 and 2.6e-3. With the base station on the
 * native kernels (`--base native`, 10 prompts × 100 tokens, 8,968 rows), which quantize the activations
 * too (to Q8_0 against q8/q4 weights, to bf16 against bf16 ones), the largest differences with
 * quantized or bf16 weights were 6.2e-3 (q8), 3.7e-3 (q4), 4.6e-3 (bf16) on the f32 wire, 7.7e-3 on bf16;
 * with f32 weights as before (3.7e-7, 3.4e-4, 2.7e-3). Each tolerance below is 4× or more what was seen
 * (f32 270×, for other kernels' summation orders), and a copy scaled by 1.05 (a row 4.8 % off) still
 * fails with every pair of dtypes.
 */
export const RESULT_TOLERANCE = {
  wire: { f32: 1e-4, f16: 4e-3, bf16: 1.6e-2 } satisfies Record<WireDType, number>,
  /**
   * added for q8 and q4 weights, and for bf16 ones: the native kernels (ggml) round the activations to bf16
   * against bf16 weights, where the wasm kernels keep them f32 (1.5e-3 between the two on one product, measured
   * in src/kernels/native/native-backend.test.ts), and a device and its base station may run either
   */
  quantizedWeights: 2.5e-2,
};

/** The spacing of each wire dtype's smallest values: two roundings to it differ by at most this per value. */
const SMALLEST_SPACING: Record<WireDType, number> = { f32: 2 ** -149, f16: 2 ** -24, bf16: 2 ** -133 };

/** How far two honest results may differ, for results sent in `wire` and computed with `weights`. */
export function resultTolerance(wire: WireDType, weights: WeightDType): ResultTolerance {
  const quantized = weights !== "f32";
  return { relative: RESULT_TOLERANCE.wire[wire] + (quantized ? RESULT_TOLERANCE.quantizedWeights : 0), absolute: SMALLEST_SPACING[wire] };
}

/** The first row of `a` that differs from the same row of `b` beyond `tol`, with its ‖a − b‖ / max(‖a‖, ‖b‖); null when they agree. */
export function resultMismatch(a: Float32Array, b: Float32Array, hidden: number, tol: ResultTolerance): { row: number; difference: number } | null {
  const floor = tol.absolute * Math.sqrt(hidden);
  for (let r = 0; r * hidden < a.length; r++) {
    let d = 0, na = 0, nb = 0;
    for (let i = r * hidden; i < (r + 1) * hidden; i++) {
      d += (a[i]! - b[i]!) ** 2;
      na += a[i]! ** 2;
      nb += b[i]! ** 2;
    }
    const larger = Math.sqrt(Math.max(na, nb));
    // a non-finite value anywhere is a mismatch (∞ would be within a tolerance of ∞)
    if (!(Number.isFinite(d) && Math.sqrt(d) <= tol.relative * larger + floor)) return { row: r, difference: Math.sqrt(d) / larger };
  }
  return null;
}
