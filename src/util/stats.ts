// Small statistics the benchmarks share.

/** The median of `xs` (the mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** The q-quantile of `xs` (0 ≤ q ≤ 1), the nearest rank: q = 0.5 of an even count is the upper middle one. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0 || !(q >= 0 && q <= 1)) throw new Error(`quantile ${q} of ${xs.length} numbers`);
  return [...xs].sort((a, b) => a - b)[Math.round(q * (xs.length - 1))]!;
}
