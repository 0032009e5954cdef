import { test } from "node:test";
import assert from "node:assert/strict";
import { allocateForPairs, selectJoint } from "./joint.js";
import { selectTopK, type RadioCosts } from "./selection.js";
import { routerProbabilities } from "../moe/router.js";
import { Random } from "../util/random.js";

/** 8 experts on 4 devices, one of them on a weak link; a batch of random tokens. */
function layer(seed: number, rows: number) {
  const rng = new Random(seed);
  const logits = rng.fillNormal(new Float32Array(rows * 8), 1.5);
  const router = { layer: 0, rows, experts: 8, logits, probs: routerProbabilities(logits, rows, 8) };
  const link = (rx: number) => ({ downRxOverN0: rx * 100, upRxOverN0: rx, downPowerSplit: true });
  const radio: RadioCosts = {
    cellHz: 20e6,
    rowBits: 256 * 16,
    expertDevice: Int32Array.from([0, 0, 1, 1, 2, 2, 3, 3]),
    devices: [1e9, 5e8, 2e8, 5e6].map((rx) => ({ link: link(rx), weightMs: 0.05, rowMs: 0.001, delayMs: 0.5 })),
  };
  return { router, costs: { expertLatencyMs: new Float64Array(8), radio } };
}

test("joint with ε = 0 is top-k with the optimal bandwidth split", () => {
  const { router, costs } = layer(1, 4);
  const ctx = { topK: 2, normalize: true, costs };
  const d = selectJoint({ epsilon: 0 })(router, ctx);
  const top = selectTopK(router, ctx);
  assert.deepEqual([d.offsets, d.experts, d.weights], [top.offsets, top.experts, top.weights]);
  assert.ok(Math.abs(d.bandwidthShares!.reduce((s, x) => s + x, 0) - 1) < 1e-9);
});

test("joint keeps every token within its quality budget and is never slower than top-k", () => {
  for (const rows of [1, 4, 16]) {
    const { router, costs } = layer(rows, rows);
    const ctx = { topK: 2, normalize: true, costs };
    const top = selectTopK(router, ctx);
    for (const epsilon of [0.1, 0.3, 0.5]) {
      const d = selectJoint({ epsilon })(router, ctx);
      for (let r = 0; r < rows; r++) {
        const from = d.offsets[r]!, to = d.offsets[r + 1]!;
        assert.ok(to > from, "at least one expert per token");
        let keptTop = 0, sum = 0;
        for (let i = from; i < to; i++) {
          sum += d.weights[i]!;
          const j = Array.from(top.experts.subarray(top.offsets[r]!, top.offsets[r + 1]!)).indexOf(d.experts[i]!);
          assert.ok(j >= 0, "only top-k candidates");
          keptTop += top.weights[top.offsets[r]! + j]!;
        }
        assert.ok(keptTop >= 1 - epsilon - 1e-6, `token ${r} keeps ${keptTop.toFixed(3)} of its mass at ε = ${epsilon}`);
        assert.ok(Math.abs(sum - 1) < 1e-5, "weights scaled back to the top-k total");
      }
    }
    const base = allocateForPairs(costs.radio, top.experts).finishMs;
    const relaxed = allocateForPairs(costs.radio, selectJoint({ epsilon: 0.5 })(router, ctx).experts).finishMs;
    assert.ok(relaxed <= base, `${rows} tokens: ${relaxed.toFixed(3)} ms at ε = 0.5 vs ${base.toFixed(3)} ms for top-k`);
    if (rows === 1) assert.ok(relaxed < base, "a lone token can spare an expert, and the layer gets faster");
  }
  assert.throws(() => selectJoint({ epsilon: 0.2 })(layer(1, 1).router, { topK: 2, normalize: true }), /needs the cell's radio state/);
});
