import { test } from "node:test";
import assert from "node:assert/strict";
import { ResultBounds } from "./result-bounds.js";

const hidden = 4;
/** One row of `hidden` values, all `v`. */
const row = (v: number) => new Float32Array(hidden).fill(v);
const input = row(1);

/** Bounds that have learned `n` rows of expert 0 of layer 0 with output/input ratios spread 1–3×. */
function learned(n: number): ResultBounds {
  const b = new ResultBounds({ minSample: 8, margin: 4 });
  for (let i = 0; i < n; i++) b.learn(0, 0, input, row(1 + (2 * i) / Math.max(1, n - 1)), hidden);
  return b;
}

test("non-finite values and all-zero rows are refused from the first result on", () => {
  const b = learned(0);
  assert.match(b.check(0, 0, input, row(NaN), hidden)!, /non-finite values \(NaN\)/);
  assert.match(b.check(0, 0, input, row(Infinity), hidden)!, /non-finite/);
  assert.match(b.check(0, 0, input, row(0), hidden)!, /all-zero row/);
  assert.equal(b.check(0, 0, row(0), row(0), hidden), null, "a zero input has no ratio to judge by");
  assert.equal(b.check(0, 0, input, row(1e30), hidden), null, "no bounds before the minimum sample");
});

test("after the minimum sample a row must lie within the learned range widened by the margin", () => {
  assert.equal(learned(7).check(0, 0, input, row(1000), hidden), null, "7 rows are not enough");
  const b = learned(8);
  for (const ok of [0.25, 1, 3, 12]) assert.equal(b.check(0, 0, input, row(ok), hidden), null, `${ok}× passes`);
  assert.match(b.check(0, 0, input, row(12.5), hidden)!, /12\.5× its input's norm, outside 0\.250–12\.0× learned from 8 rows/);
  assert.match(b.check(0, 0, input, row(0.24), hidden)!, /outside/);
  assert.match(b.check(0, 0, input, row(1e30), hidden)!, /outside/);
  assert.equal(b.check(0, 1, input, row(1000), hidden), null, "each (layer, expert) learns on its own");
  assert.equal(b.check(1, 0, input, row(1000), hidden), null);
});

test("a scaled copy fails in any row of a result; the accepted rows widen the range", () => {
  const b = learned(8);
  const two = new Float32Array([...row(1), ...row(1)]);
  assert.match(b.check(0, 0, two, new Float32Array([...row(2), ...row(2000)]), hidden)!, /2\.00e\+3× its input/);
  b.learn(0, 0, input, row(10), hidden);
  assert.equal(b.check(0, 0, input, row(40), hidden), null);
});
