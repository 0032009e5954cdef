import { test } from "node:test";
import assert from "node:assert/strict";
import { expectedCallMs, stepLatencyMs, transferMs } from "./latency.js";

test("a step costs the BS time plus, per layer, its slowest device: transfers both ways and its calls in turn", () => {
  assert.equal(transferMs(1000, 8e6, 2), 3);
  const link = { downBps: 8e6, upBps: 4e6, delayMs: 2, jitterMs: 0, loss: 0 };
  const devices = new Map([
    ["a", { callMs: 1, link }],
    ["b", { callMs: 0.5, link: null }],
  ]);
  // layer 1: a gets 2 calls of 1 row of 1000 bytes: down 2000 B = 2 ms + 2, up = 4 ms + 2, compute 2 → 12; b: 0.5
  // layer 2: b only: 1 call → 0.5
  const t = stepLatencyMs(10, [{ calls: [{ device: "a", rows: 1 }, { device: "a", rows: 1 }, { device: "b", rows: 1 }] }, { calls: [{ device: "b", rows: 1 }] }], devices, 1000);
  assert.equal(t, 10 + 12 + 0.5);
  assert.throws(() => stepLatencyMs(0, [{ calls: [{ device: "z", rows: 1 }] }], devices, 4), /no cost known for device z/);
});

test("an expert call is expected to take its roofline time plus the link both ways", () => {
  const shape = { weightBytes: 4e6, macsPerRow: 1e6, rows: 1, activationBytes: 1000 };
  // memory bound: 4 MB at 2 GB/s = 2 ms; compute 2 MFLOP at 10 GFLOP/s = 0.2 ms
  assert.equal(expectedCallMs(shape, { readGbps: 2, gflops: 10 }, null), 2);
  // compute bound with 100 rows: 200 MFLOP at 10 GFLOP/s = 20 ms; link 1 ms + 1 ms delay each way
  const link = { downBps: 8e6, upBps: 8e6, delayMs: 1, jitterMs: 0, loss: 0 };
  assert.equal(expectedCallMs({ ...shape, rows: 100 }, { readGbps: 2, gflops: 10 }, link), 20 + 4);
});
