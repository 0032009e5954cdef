import { test } from "node:test";
import assert from "node:assert/strict";
import { Sampler, argmax } from "./sampler.js";

const logits = Float32Array.from([0.1, 2.0, 1.9, -1, 0.5]);

test("temperature 0 and top-k 1 are greedy", () => {
  assert.equal(new Sampler({ temperature: 0 }).sample(logits), 1);
  const s = new Sampler({ temperature: 1.5, topK: 1, seed: 3 });
  for (let i = 0; i < 20; i++) assert.equal(s.sample(logits), 1);
  assert.equal(argmax(Float32Array.from([3, 3, 1])), 0, "ties go to the lower id");
});

test("a seed makes sampling reproducible; different seeds differ", () => {
  const draw = (seed: number) => Array.from({ length: 50 }, (() => { const s = new Sampler({ temperature: 1, seed }); return () => s.sample(logits); })());
  assert.deepEqual(draw(42), draw(42));
  assert.notDeepEqual(draw(42), draw(43));
});

test("sampling frequencies follow softmax(logits / T); top-p keeps only the nucleus", () => {
  const s = new Sampler({ temperature: 1, seed: 1 });
  const counts = new Array(5).fill(0);
  const n = 20000;
  for (let i = 0; i < n; i++) counts[s.sample(logits)]++;
  const z = Array.from(logits).reduce((a, l) => a + Math.exp(l), 0);
  for (let i = 0; i < 5; i++) assert.ok(Math.abs(counts[i] / n - Math.exp(logits[i]!) / z) < 0.015, `token ${i}`);
  // probabilities ≈ [0.07, 0.44, 0.40, 0.02, 0.11]: p = 0.5 keeps tokens 1 and 2 only
  const nucleus = new Sampler({ temperature: 1, topP: 0.5, seed: 2 });
  const seen = new Set(Array.from({ length: 500 }, () => nucleus.sample(logits)));
  assert.deepEqual([...seen].sort(), [1, 2]);
});

test("invalid sampling settings are refused", () => {
  assert.throws(() => new Sampler({ temperature: -1 }), /temperature/);
  assert.throws(() => new Sampler({ temperature: 1, topP: 0 }), /top-p/);
  assert.throws(() => new Sampler({ temperature: 1, topK: 1.5 }), /top-k/);
});
