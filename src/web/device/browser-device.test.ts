// Browser tabs as expert devices, in a real headless chromium: the base station serves the device page over
// TLS (self-signed, as `serve --tls self-signed` does), tabs that open it with the join token join beside
// device processes and serve expert calls with the same kernels, and the greedy output is the
// single-process engine's; a tab without the token is refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Engine } from "../../runtime/engine.js";
import { spawnLocalDevices } from "../../runtime/local-cluster.js";
import { newJoinToken } from "../../protocol/handshake.js";
import { browserSkip, launchBrowser } from "../../testing/browser.js";
import { greedyTokens, singleProcessTokens, startBrowserHub } from "../../testing/browser-hub.js";
import { sharedPath } from "../../testing/shared.js";
import { until } from "../../testing/until.js";

const brown = sharedPath("models/brown-moe");


test("brown-moe on 2 device processes and 2 browser tabs, over TLS: the single-process greedy output (f32 activations); a tab without the join token is refused", { skip: browserSkip || brown.skip }, async () => {
  const want = await singleProcessTokens(brown.path);

  const token = newJoinToken();
  const lines: string[] = [];
  const bs = await startBrowserHub({ model: brown.path, weightDType: "f32", wireDType: "f32", joinTokens: [token], log: (l) => lines.push(l) });
  const { hub, port } = bs;
  const devices = spawnLocalDevices(`wss://127.0.0.1:${port}`, token, 2, 1, ["--fingerprint", bs.fingerprint]);
  const browser = await launchBrowser({ trustAnyCertificate: true });
  let engine: Engine | undefined;
  try {
    const page = await browser.context.newPage();
    const response = await page.goto(`https://127.0.0.1:${port}/device`);
    assert.equal(response?.headers()["cross-origin-opener-policy"], "same-origin");
    assert.equal(response?.headers()["cross-origin-embedder-policy"], "require-corp");
    await until(async () => (await page.textContent("#state")) === "error", "the tab without the token gives up");
    assert.match((await page.textContent("#detail")) ?? "", /^the base station refused this device: not admitted: no join token presented/);
    assert.equal(await page.evaluate(() => crossOriginIsolated), true, "the page is cross-origin isolated (its kernels' shared memory needs it)");

    // one browser profile: each tab is its own device by its name (a page keeps an identity per name)
    const tabs = await Promise.all([0, 1].map(async (i) => {
      const tab = await browser.context.newPage();
      tab.on("console", (m) => lines.push(`[tab] ${m.text()}`));
      await tab.goto(`https://127.0.0.1:${port}/device#token=${token}&name=browser-tab${i}`);
      return tab;
    }));
    await Promise.race([hub.start(4), devices.failed]);
    devices.settled();
    const names = hub.status().devices.map((d) => d.name).sort();
    assert.equal(names.filter((n) => n.startsWith("browser-")).length, 2, names.join(", "));
    assert.equal(names.filter((n) => n.startsWith("local-")).length, 2, names.join(", "));
    for (const tab of tabs) await until(async () => (await tab.textContent("#state")) === "serving", "each tab serves");

    engine = Engine.load(brown.path, { dtype: "f32", executor: hub.executor });
    assert.deepEqual(await greedyTokens(engine), want);
    for (const tab of tabs) {
      assert.ok(Number(await tab.textContent("#experts")) > 0, "each tab holds experts");
      assert.ok(Number(await tab.textContent("#calls")) > 0, "and served calls");
    }
  } catch (e) {
    process.stderr.write(`${lines.join("\n")}\n`);
    throw e;
  } finally {
    engine?.close();
    await browser.close();
    await bs.close();
    await devices.exited();
  }
});
