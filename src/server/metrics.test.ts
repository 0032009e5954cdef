import { test } from "node:test";
import assert from "node:assert/strict";
import { ServerMetrics } from "./metrics.js";
import type { DeviceStatus } from "../runtime/hub/status.js";

test("a departed device's metric series are removed; the others stay", async () => {
  const zero = { calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 };
  const m = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => zero);
  m.deviceCall("d0", 2, 100, 200);
  m.deviceCall("d1", 3, 100, 200);
  m.removeDevice("d0");
  const text = await m.text();
  assert.doesNotMatch(text, /device="d0"/);
  assert.match(text, /distmoe_device_call_seconds_count\{device="d1"\} 1/);
  assert.match(text, /distmoe_device_bytes_total\{device="d1",direction="received"\} 200/);
});

test("a user agent is a peer's text: quotes, backslashes and braces in it stay inside its label (one series, one line); the longest one a hello may carry fits", async () => {
  const zero = { calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 };
  const m = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => zero);
  const hostile = 'x" } distmoe_fake{a="1"} 1 \\';
  const longest = "M".repeat(256);
  const tab = (name: string, userAgent: string): DeviceStatus => ({ name, ready: true, quarantined: false, calls: 0, experts: 0, weightBytes: 0, kind: "browser", userAgent, gflops: 1, leaving: false });
  m.describeDevices(() => [tab("t1", hostile), tab("t2", longest)]);
  const text = await m.text();
  assert.ok(text.split("\n").includes('distmoe_device_info{device="t1",kind="browser",user_agent="x\\" } distmoe_fake{a=\\"1\\"} 1 \\\\"} 1'), "escaped, on its own line");
  assert.ok(text.split("\n").includes(`distmoe_device_info{device="t2",kind="browser",user_agent="${longest}"} 1`));
  assert.doesNotMatch(text, /^distmoe_fake/m, "no series of the peer's making");
});

test("each device's compute rate is a series labelled with what computes (and a WebGPU adapter's name, escaped like a user agent)", async () => {
  const zero = { calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 };
  const m = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => zero);
  const base = { ready: true, quarantined: false, calls: 0, experts: 0, weightBytes: 0, leaving: false };
  m.describeDevices(() => [
    { ...base, name: "d0", kind: "node", compute: "wasm", gflops: 12.5 },
    { ...base, name: "tab", kind: "browser", userAgent: "x", compute: "webgpu", adapter: 'gpu" 1', gflops: 0.25 },
    { ...base, name: "old", kind: "node", gflops: 3 },
  ]);
  const lines = (await m.text()).split("\n");
  assert.ok(lines.includes('distmoe_device_compute_gflops{device="d0",compute="wasm",adapter=""} 12.5'));
  assert.ok(lines.includes('distmoe_device_compute_gflops{device="tab",compute="webgpu",adapter="gpu\\" 1"} 0.25'));
  assert.ok(lines.includes('distmoe_device_compute_gflops{device="old",compute="",adapter=""} 3'), "a device that did not say what computes");
});
