// A browser tab computing its experts on WebGPU, in a real headless chromium (its adapter is SwiftShader's,
// on the CPU): as the only device on brown-moe it gives the single-process engine's greedy output (f32
// weights and activations), and the base station's /health and /metrics say it computes on WebGPU. The
// page's address chooses the compute: #compute=wasm keeps the kernels, an unknown choice is an error.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Engine } from "../../runtime/engine.js";
import { newJoinToken } from "../../protocol/handshake.js";
import { browserSkip, launchBrowser } from "../../testing/browser.js";
import { greedyTokens, singleProcessTokens, startBrowserHub } from "../../testing/browser-hub.js";
import { sharedPath } from "../../testing/shared.js";
import { until } from "../../testing/until.js";

const brown = sharedPath("models/brown-moe");

test("brown-moe on one browser tab computing on WebGPU: the single-process greedy output (f32); /health and /metrics say it computes on webgpu", { skip: browserSkip || brown.skip }, async (t) => {
  const token = newJoinToken();
  const lines: string[] = [];
  let engine: Engine | undefined;
  const { hub, app, metrics, port, close } = await startBrowserHub({ model: brown.path, weightDType: "f32", wireDType: "f32", joinTokens: [token], log: (l) => lines.push(l) }, () => engine);
  const browser = await launchBrowser({ trustAnyCertificate: true, webgpu: true });
  try {
    const tab = await browser.context.newPage();
    tab.on("console", (m) => lines.push(`[tab] ${m.text()}`));
    // the base station's origin, before the page joins: does this browser offer an adapter?
    await tab.goto(`https://127.0.0.1:${port}/health`);
    if (!(await tab.evaluate(async () => !!(await (navigator as unknown as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu?.requestAdapter())))) return t.skip("the launched chromium offers no WebGPU adapter");
    // the address chooses: the kernels, or nothing it does not know
    for (const [fragment, compute, detail] of [["compute=wasm", "wasm", /^the base station refused this device/], ["compute=cuda", "–", /^compute=cuda in the address is neither wasm nor webgpu$/]] as const) {
      const other = await browser.context.newPage();
      await other.goto(`https://127.0.0.1:${port}/device#${fragment}`);
      await until(async () => (await other.textContent("#state")) === "error", `the page with ${fragment} (and no join token) gives up`);
      assert.match((await other.textContent("#detail")) ?? "", detail);
      assert.match((await other.textContent("#compute")) ?? "", compute === "wasm" ? /^the wasm kernels$/ : /^–$/);
      await other.close();
    }

    const want = await singleProcessTokens(brown.path);
    await tab.goto(`https://127.0.0.1:${port}/device#token=${token}&name=gpu-tab&compute=webgpu`);
    await hub.start(1);
    await until(async () => (await tab.textContent("#state")) === "serving", "the tab serves");
    assert.equal(await tab.getAttribute("#compute", "data-compute"), "webgpu");
    assert.match((await tab.textContent("#compute")) ?? "", /^WebGPU \(.+\)$/);

    engine = Engine.load(brown.path, { dtype: "f32", executor: hub.executor });
    assert.deepEqual(await greedyTokens(engine), want);
    assert.equal(engine.expertUsage().failed_calls, 0);
    assert.ok(!lines.some((l) => /computing on the wasm kernels|experts stay on the wasm kernels/.test(l)), "every call computed on WebGPU");

    const health = (await (await app.request("/health")).json()) as { devices: Array<{ name: string; compute?: string; adapter?: string; gflops: number }> };
    const tabStatus = health.devices.find((d) => d.name === "gpu-tab");
    assert.equal(tabStatus?.compute, "webgpu", JSON.stringify(health.devices));
    assert.ok(tabStatus.adapter && tabStatus.gflops > 0, "its adapter and measured rate");
    const text = await metrics.text();
    assert.match(text, /^distmoe_device_compute_gflops\{device="gpu-tab",compute="webgpu",adapter="[^"]+"\} [0-9.e-]+$/m);
  } catch (e) {
    process.stderr.write(`${lines.join("\n")}\n`);
    throw e;
  } finally {
    engine?.close();
    await browser.close();
    await close();
  }
});
