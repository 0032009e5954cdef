import { test } from "node:test";
import assert from "node:assert/strict";
import { ServerMetrics } from "./metrics.js";

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
