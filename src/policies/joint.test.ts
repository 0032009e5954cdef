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

test("joint with θ = 0 is top-k with the optimal bandwidth split, in both quality settings", () => {
  const { router, costs } = layer(1, 4);
  const ctx = { topK: 2, normalize: true, costs };
  const top = selectTopK(router, ctx);
  for (const quality of ["price", "token-mass"] as const) {
    const d = selectJoint({ theta: 0, quality })(router, ctx);
    assert.deepEqual([d.offsets, d.experts, d.weights], [top.offsets, top.experts, top.weights]);
    assert.ok(Math.abs(d.bandwidthShares!.reduce((s, x) => s + x, 0) - 1) < 1e-9);
  }
});

/** Checks the decision's shape: only top-k candidates, ≥ 1 per token, weights scaled back to the top-k total; returns each token's kept top-k mass. */
function keptMass(d: ReturnType<ReturnType<typeof selectJoint>>, top: ReturnType<typeof selectTopK>): number[] {
  const out: number[] = [];
  for (let r = 0; r < d.rows; r++) {
    const from = d.offsets[r]!, to = d.offsets[r + 1]!;
    assert.ok(to > from, "at least one expert per token");
    let keptTop = 0, sum = 0;
    for (let i = from; i < to; i++) {
      sum += d.weights[i]!;
      const j = Array.from(top.experts.subarray(top.offsets[r]!, top.offsets[r + 1]!)).indexOf(d.experts[i]!);
      assert.ok(j >= 0, "only top-k candidates");
      keptTop += top.weights[top.offsets[r]! + j]!;
    }
    assert.ok(Math.abs(sum - 1) < 1e-5, "weights scaled back to the top-k total");
    out.push(keptTop);
  }
  return out;
}

test("joint (token-mass) keeps every token within its quality budget and is never slower than top-k", () => {
  for (const rows of [1, 4, 16]) {
    const { router, costs } = layer(rows, rows);
    const ctx = { topK: 2, normalize: true, costs };
    const top = selectTopK(router, ctx);
    for (const theta of [0.1, 0.3, 0.5]) {
      for (const m of keptMass(selectJoint({ theta, quality: "token-mass" })(router, ctx), top)) assert.ok(m >= 1 - theta - 1e-6, `keeps ${m.toFixed(3)} of its mass at θ = ${theta}`);
    }
    const base = allocateForPairs(costs.radio, top.experts).finishMs;
    const relaxed = allocateForPairs(costs.radio, selectJoint({ theta: 0.5, quality: "token-mass" })(router, ctx).experts).finishMs;
    assert.ok(relaxed <= base, `${rows} tokens: ${relaxed.toFixed(3)} ms at θ = 0.5 vs ${base.toFixed(3)} ms for top-k`);
    if (rows === 1) assert.ok(relaxed < base, "a lone token can spare an expert, and the layer gets faster");
  }
});

test("joint (price): latency falls and dropped mass rises as θ grows; never slower than top-k", () => {
  for (const rows of [1, 4, 16]) {
    const { router, costs } = layer(10 + rows, rows);
    const ctx = { topK: 2, normalize: true, costs };
    const top = selectTopK(router, ctx);
    const base = allocateForPairs(costs.radio, top.experts).finishMs;
    let lastMs = base, lastMass = rows;
    for (const theta of [0.1, 0.3, 0.5, 0.7, 0.9]) {
      const d = selectJoint({ theta })(router, ctx);
      const ms = allocateForPairs(costs.radio, d.experts).finishMs;
      const mass = keptMass(d, top).reduce((a, b) => a + b, 0);
      assert.ok(ms <= lastMs + 1e-9 && mass <= lastMass + 1e-6, `${rows} tokens, θ = ${theta}: ${ms.toFixed(3)} ms, kept mass ${mass.toFixed(3)}`);
      [lastMs, lastMass] = [ms, mass];
    }
    assert.ok(lastMs < base, `${rows} tokens: θ = 0.9 is faster than top-k`);
  }
  assert.throws(() => selectJoint({ theta: 0.2 })(layer(1, 1).router, { topK: 2, normalize: true }), /needs the cell's radio state/);
});
