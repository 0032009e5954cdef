// The device page as the base station serves it: only where browser devices are allowed, every file
// with the headers that make the page cross-origin isolated (or, as a proxy dropping them would, without),
// the kernels as WebAssembly, the compute threads' worker script.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createApp } from "./app.js";
import { ServerMetrics } from "./metrics.js";

const NO_USAGE = { calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 };
const app = (devicePage: boolean | "not-isolated") => createApp({ engine: () => undefined, modelName: "m", metrics: new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => NO_USAGE), devicePage });

test("/device and what it loads are served, cross-origin isolated, only where browser devices are allowed", async () => {
  const on = app(true);
  for (const [route, type] of [["/device", /^text\/html/], ["/device/device.js", /^text\/javascript/], ["/device/kernel-worker.js", /^text\/javascript/], ["/device/kernels-simd.wasm", /^application\/wasm$/], ["/device/kernels-relaxed.wasm", /^application\/wasm$/]] as const) {
    const res = await on.request(route);
    assert.equal(res.status, 200, route);
    assert.match(res.headers.get("content-type") ?? "", type, route);
    assert.equal(res.headers.get("cross-origin-opener-policy"), "same-origin", route);
    assert.equal(res.headers.get("cross-origin-embedder-policy"), "require-corp", route);
    assert.match(res.headers.get("content-security-policy") ?? "", /default-src 'self'.*worker-src 'self'.*connect-src 'self'/, route);
    const body = new Uint8Array(await res.arrayBuffer());
    if (route.endsWith(".wasm")) assert.deepEqual([...body.subarray(0, 4)], [0, 0x61, 0x73, 0x6d], "a WebAssembly module");
    if (route === "/device") assert.match(new TextDecoder().decode(body), /<script type="module" src="\/device\/device.js">/);
  }
  const notIsolated = await app("not-isolated").request("/device/kernel-worker.js");
  assert.equal(notIsolated.status, 200);
  assert.equal(notIsolated.headers.get("cross-origin-opener-policy"), null);
  assert.equal(notIsolated.headers.get("cross-origin-embedder-policy"), null);
  assert.match(notIsolated.headers.get("content-security-policy") ?? "", /default-src 'self'/);
  const off = app(false);
  for (const route of ["/device", "/device/device.js", "/device/kernels-simd.wasm"]) assert.equal((await off.request(route)).status, 404, route);
});
