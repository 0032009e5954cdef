// Small statistics the benchmarks share.

/** The median of `xs` (the mean of the middle two for an even count); NaN for none. */
export function median(xs: readonly number[]): number {
  return xs.length === 0 ? NaN : quantile(xs, 0.5);
}

/**
 * The q-quantile of `xs` (0 ≤ q ≤ 1), interpolated linearly between the sorted numbers (R's type 7, numpy's
 * default): the median of an even count is the mean of the middle two, and the quartiles of an odd count
 * lie symmetrically about the median.
 */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0 || !(q >= 0 && q <= 1)) throw new Error(`quantile ${q} of ${xs.length} numbers`);
  const s = [...xs].sort((a, b) => a - b);
  const at = q * (s.length - 1), lo = Math.floor(at);
  return lo + 1 < s.length ? s[lo]! + (at - lo) * (s[lo + 1]! - s[lo]!) : s[lo]!;
}
