import { test } from "node:test";
import assert from "node:assert/strict";
import { stepLatencyMs, transferMs } from "./latency.js";

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
