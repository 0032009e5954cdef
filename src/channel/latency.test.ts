import { test } from "node:test";
import assert from "node:assert/strict";
import { callMs, deviceCost, deviceLayerTime, layerTime, stepLatencyMs, transferMs } from "./latency.js";

test("a step costs the BS time plus, per layer, its slowest device: transfers both ways and its calls in turn", () => {
  assert.equal(transferMs(1000, 8e6, 2), 3);
  const link = { downBps: 8e6, upBps: 4e6, delayMs: 2, jitterMs: 0, loss: 0 };
  const devices = new Map([
    ["a", { weightMs: 1, rowMs: 0, link }],
    ["b", { weightMs: 0.5, rowMs: 0, link: null }],
  ]);
  // layer 1: a gets 2 calls of 1 row of 1000 bytes: down 2000 B = 2 ms + 2, up = 4 ms + 2, compute 2 → 12; b: 0.5
  // layer 2: b only: 1 call → 0.5
  const layers = [{ calls: [{ device: "a", rows: 1 }, { device: "a", rows: 1 }, { device: "b", rows: 1 }] }, { calls: [{ device: "b", rows: 1 }] }];
  assert.deepEqual(layerTime(layers[0]!, devices, 1000), { ms: 12, downMs: 4, computeMs: 2, upMs: 6, device: "a" });
  assert.equal(stepLatencyMs(10, layers, devices, 1000), 10 + 12 + 0.5);
  assert.throws(() => stepLatencyMs(0, [{ calls: [{ device: "z", rows: 1 }] }], devices, 4), /no cost known for device z/);
});

test("an expert call takes its roofline time: weight bytes over bandwidth, or FLOPs over compute rate", () => {
  // 4 MB at 2 GB/s = 2 ms; a row is 2 MFLOP, 0.2 ms at 10 GFLOP/s
  const cost = deviceCost({ weightBytes: 4e6, macsPerRow: 1e6 }, { readGbps: 2, gflops: 10 }, null);
  assert.equal(callMs(cost, 1), 2);
  assert.equal(callMs(cost, 100), 20);
  const link = { downBps: 8e6, upBps: 8e6, delayMs: 1, jitterMs: 0, loss: 0 };
  assert.equal(deviceLayerTime({ ...cost, link }, [{ rows: 100 }], 10).ms, 20 + 2 + 2);
});
