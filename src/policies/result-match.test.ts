import { test } from "node:test";
import assert from "node:assert/strict";
import { RESULT_TOLERANCE, resultMismatch, resultTolerance } from "./result-match.js";

const hidden = 4;
const base = new Float32Array([0.5, -1, 2, 0.25, 3, 1, -0.5, 2]);
const scaled = (v: Float32Array, s: number) => v.map((x) => x * s);
/** A copy of `base` whose row 1 is scaled so that it differs from base's row 1 by `share` of its norm. */
const off = (share: number) => new Float32Array([...base.subarray(0, hidden), ...scaled(base.subarray(hidden), 1 / (1 - share))]);

test("each wire dtype's tolerance holds up to its edge and not beyond, in any row", () => {
  for (const wire of ["f32", "f16", "bf16"] as const) {
    const tol = resultTolerance(wire, "f32");
    assert.equal(tol.relative, RESULT_TOLERANCE.wire[wire]);
    assert.equal(resultMismatch(base, base, hidden, tol), null);
    assert.equal(resultMismatch(off(tol.relative * 0.99), base, hidden, tol), null, `${wire}: just inside`);
    const m = resultMismatch(off(tol.relative * 1.01), base, hidden, tol);
    assert.equal(m?.row, 1, `${wire}: just outside, in row 1`);
    assert.ok(Math.abs(m!.difference / (tol.relative * 1.01) - 1) < 1e-2, `${wire}: the difference is reported (${m!.difference})`);
    assert.equal(resultMismatch(base, off(tol.relative * 1.01), hidden, tol)?.row, 1, `${wire}: either way round`);
    assert.ok(resultMismatch(scaled(base, 1.05), base, hidden, resultTolerance(wire, "q4")), `${wire}: a copy scaled by 1.05 fails even with quantized weights`);
  }
});

test("quantized and bf16 weights widen the tolerance; f16's subnormals have an absolute floor", () => {
  const q8 = resultTolerance("f32", "q8");
  assert.equal(q8.relative, RESULT_TOLERANCE.wire.f32 + RESULT_TOLERANCE.quantizedWeights);
  assert.deepEqual(resultTolerance("bf16", "q4"), resultTolerance("bf16", "q8"));
  assert.equal(resultMismatch(off(0.005), base, hidden, q8), null);
  // bf16 weights: the native kernels round activations to bf16 where the wasm ones do not
  assert.deepEqual(resultTolerance("f32", "bf16"), q8);
  assert.ok(resultMismatch(off(0.005), base, hidden, resultTolerance("f32", "f32")));
  // values f16 holds only as subnormals (spacing 2^-24): a row of them against zeros
  const tiny = new Float32Array(hidden).fill(2 ** -25), zero = new Float32Array(hidden);
  assert.equal(resultMismatch(tiny, zero, hidden, resultTolerance("f16", "f32")), null);
  assert.ok(resultMismatch(tiny.map((x) => x * 4), zero, hidden, resultTolerance("f16", "f32")));
  assert.ok(resultMismatch(tiny, zero, hidden, resultTolerance("f32", "f32")), "f32 has no such floor");
  assert.equal(resultMismatch(zero, zero, hidden, resultTolerance("f32", "f32")), null, "zero rows agree");
});

test("non-finite values never agree, not even with themselves", () => {
  const tol = resultTolerance("bf16", "q4");
  for (const v of [NaN, Infinity, -Infinity]) {
    const bad = base.map((x, i) => (i === 5 ? v : x));
    assert.equal(resultMismatch(bad, base, hidden, tol)?.row, 1, `${v} against a finite row`);
    assert.equal(resultMismatch(bad, bad, hidden, tol)?.row, 1, `${v} against itself`);
  }
});
