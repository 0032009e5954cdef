import { test } from "node:test";
import assert from "node:assert/strict";
import { routerProbabilities } from "../moe/router.js";
import { Random } from "../util/random.js";
import { selectDeadline } from "./deadline.js";
import { selectTopK } from "./selection.js";

const rows = 32;
const logits = new Random(5).fillNormal(new Float32Array(rows * 8), 1.5);
const router = { layer: 0, rows, experts: 8, logits, probs: routerProbabilities(logits, rows, 8) };
const ctx = { topK: 2, normalize: true, costs: { expertLatencyMs: Float64Array.from([1, 2, 3, 4, 5, 6, 7, 8]) } };

test("deadline: an unbounded budget is top-k; every kept expert fits the budget, or the token keeps its fastest; weights sum to 1", () => {
  const top = selectTopK(router, ctx);
  const d = selectDeadline({ layerBudgetMs: Infinity })(router, ctx);
  assert.deepEqual([d.offsets, d.experts, d.weights], [top.offsets, top.experts, top.weights]);
  let lastKept = Infinity;
  for (const budget of [8, 6, 4, 2, 0.5]) {
    const s = selectDeadline({ layerBudgetMs: budget })(router, ctx);
    for (let r = 0; r < rows; r++) {
      const kept = Array.from(s.experts.subarray(s.offsets[r]!, s.offsets[r + 1]!));
      const cand = Array.from(top.experts.subarray(top.offsets[r]!, top.offsets[r + 1]!));
      assert.ok(kept.length >= 1);
      const fits = cand.filter((e) => ctx.costs.expertLatencyMs[e]! <= budget);
      assert.deepEqual(kept, fits.length > 0 ? fits : [Math.min(...cand)], `row ${r} at ${budget} ms`);
      const sum = s.weights.subarray(s.offsets[r]!, s.offsets[r + 1]!).reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(sum - 1) < 1e-6);
    }
    assert.ok(s.experts.length <= lastKept, "a tighter budget keeps no more experts");
    lastKept = s.experts.length;
  }
  assert.throws(() => selectDeadline({ layerBudgetMs: 1 })(router, { topK: 2, normalize: true }), /needs the experts' latencies/);
});
