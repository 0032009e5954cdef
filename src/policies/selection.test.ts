import { test } from "node:test";
import assert from "node:assert/strict";
import { selectTopK } from "./selection.js";
import { routerProbabilities } from "../moe/router.js";
import { planDispatch, gatherRows, combineInto } from "../moe/dispatch.js";

const logits = Float32Array.from([
  1, 3, 2, 0, // row 0: experts 1, 2
  0, 0, 0, 5, // row 1: experts 3, then a tie among 0..2 → lowest index 0
  4, 1, 4.5, 1, // row 2: experts 2, 0
]);
const router = { layer: 0, rows: 3, experts: 4, logits, probs: routerProbabilities(logits, 3, 4) };

test("router probabilities are a softmax per row", () => {
  for (let r = 0; r < 3; r++) {
    const p = router.probs.subarray(r * 4, r * 4 + 4);
    assert.ok(Math.abs(p.reduce((a, b) => a + b, 0) - 1) < 1e-6);
  }
  assert.ok(Math.abs(router.probs[1]! - Math.exp(3) / (Math.exp(1) + Math.exp(3) + Math.exp(2) + 1)) < 1e-6);
});

test("top-k keeps the most probable experts, best first, renormalised when asked", () => {
  const d = selectTopK(router, { topK: 2, normalize: true });
  assert.deepEqual(Array.from(d.offsets), [0, 2, 4, 6]);
  assert.deepEqual(Array.from(d.experts), [1, 2, 3, 0, 2, 0]);
  for (let r = 0; r < 3; r++) assert.ok(Math.abs(d.weights[2 * r]! + d.weights[2 * r + 1]! - 1) < 1e-6);
  const raw = selectTopK(router, { topK: 2, normalize: false });
  assert.ok(Math.abs(raw.weights[0]! - router.probs[1]!) < 1e-7, "raw weights are the probabilities");
});

test("the dispatch plan groups rows per expert and combine applies each row's weight", () => {
  const d = selectTopK(router, { topK: 2, normalize: true });
  const plan = planDispatch(d, 4);
  assert.deepEqual(plan.map((b) => [b.expert, Array.from(b.rows)]), [[0, [1, 2]], [1, [0]], [2, [0, 2]], [3, [1]]]);
  // with identity experts the combined output is the input times the kept weight mass (1 per row)
  const x = Float32Array.from([1, 2, 3, 4, 5, 6]);
  const out = new Float32Array(6);
  for (const b of plan) combineInto(out, 2, b, gatherRows(x, 2, b.rows));
  for (let i = 0; i < 6; i++) assert.ok(Math.abs(out[i]! - x[i]!) < 1e-6);
});
