import { test } from "node:test";
import assert from "node:assert/strict";
import { selectTopK, selectWlr } from "./selection.js";
import { Random } from "../util/random.js";
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

/** A random batch of router outputs and device latencies, for the WLR properties. */
function randomLayer(seed: number, rows: number, experts: number) {
  const rng = new Random(seed);
  const logits = rng.fillNormal(new Float32Array(rows * experts), 2);
  const router = { layer: 0, rows, experts, logits, probs: routerProbabilities(logits, rows, experts) };
  const expertLatencyMs = Float64Array.from({ length: experts }, () => 1 + rng.next() * 20);
  return { router, costs: { expertLatencyMs } };
}

test("wlr with θ = 0 is the model's top-k routing, exactly", () => {
  for (const normalize of [true, false]) {
    const { router: r, costs } = randomLayer(1, 64, 8);
    const ctx = { topK: 2, normalize, costs };
    assert.deepEqual(selectWlr({ theta: 0 })(r, ctx), selectTopK(r, ctx));
  }
});

test("wlr: the kept experts shrink as θ grows, so the layer's slowest latency never rises; weights keep the top-k mass; at least one expert", () => {
  const { router: r, costs } = randomLayer(2, 256, 8);
  const ctx = { topK: 2, normalize: true, costs };
  let last: ReturnType<ReturnType<typeof selectWlr>> | null = null;
  let lastKept = Infinity;
  for (let t = 0; t <= 10; t++) {
    const d = selectWlr({ theta: t / 10 })(r, ctx);
    const kept = d.offsets[d.rows]!;
    assert.ok(kept <= lastKept, `θ = ${t / 10}: ${kept} kept after ${lastKept}`);
    for (let row = 0; row < d.rows; row++) {
      const from = d.offsets[row]!, to = d.offsets[row + 1]!;
      assert.ok(to - from >= 1, "at least one expert per token");
      let sum = 0, slowest = 0;
      for (let i = from; i < to; i++) {
        sum += d.weights[i]!;
        slowest = Math.max(slowest, costs.expertLatencyMs[d.experts[i]!]!);
      }
      assert.ok(Math.abs(sum - 1) < 1e-6, "renormalised to the top-k mass (1 here)");
      if (last) {
        const prev = Array.from(last.experts.subarray(last.offsets[row]!, last.offsets[row + 1]!));
        for (let i = from; i < to; i++) assert.ok(prev.includes(d.experts[i]!), "kept sets are nested");
        const prevSlowest = Math.max(...prev.map((e) => costs.expertLatencyMs[e]!));
        assert.ok(slowest <= prevSlowest, "a token's slowest expert is never slower at a larger θ");
      }
    }
    last = d;
    lastKept = kept;
  }
  assert.ok(lastKept < 2 * 256, "θ = 1 drops experts");
  const raw = selectWlr({ theta: 1, renormalize: false })(r, ctx);
  const top = selectTopK(r, ctx);
  for (let row = 0; row < raw.rows; row++) {
    for (let i = raw.offsets[row]!; i < raw.offsets[row + 1]!; i++) {
      const j = Array.from(top.experts.subarray(top.offsets[row]!, top.offsets[row + 1]!)).indexOf(raw.experts[i]!);
      assert.equal(raw.weights[i], top.weights[top.offsets[row]! + j], "without renormalising, the kept weights are the top-k ones");
    }
  }
  assert.throws(() => selectWlr({ theta: 0.5 })(r, { topK: 2, normalize: true }), /needs the experts' latencies/);
  assert.throws(() => selectWlr({ theta: 1.5 }), /theta must be in \[0, 1\]/);
});
