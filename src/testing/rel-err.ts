// How far two backends' results lie apart: the relative L2 error of `got` against `want`.
export function relErr(got: Float32Array, want: Float32Array): number {
  let d = 0, n = 0;
  for (let i = 0; i < want.length; i++) {
    d += (got[i]! - want[i]!) ** 2;
    n += want[i]! ** 2;
  }
  return Math.sqrt(d / n);
}
