// A browser tab's mobile lifecycle, in a real headless chromium: it says what it is (kind browser, its user
// agent, its battery) in /health and /metrics; hidden mid-generation it keeps serving until its experts
// are placed on the other device and leaves once its calls in flight are answered (each expert on one
// device only, yet no call failed or went elsewhere; the single-process output); shown again it rejoins. The run also takes the device page's screenshots (desktop and phone) into docs/web/.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Page } from "playwright-core";
import { Engine } from "../../runtime/engine.js";
import { spawnLocalDevices } from "../../runtime/local-cluster.js";
import { newJoinToken } from "../../protocol/handshake.js";
import { browserSkip, launchBrowser } from "../../testing/browser.js";
import { greedyTokens, singleProcessTokens, startBrowserHub } from "../../testing/browser-hub.js";
import { sharedPath } from "../../testing/shared.js";
import { until } from "../../testing/until.js";

const brown = sharedPath("models/brown-moe");
/** docs/web of the repository (this file runs as dist/web/device/lifecycle.test.js) */
const SCREENSHOTS = fileURLToPath(new URL("../../../docs/web/", import.meta.url));


/**
 * Makes the page hidden or shown again, as a phone's browser does (its visibility state, then the event);
 * then keeps the page busy for `busyMs`, so that calls the base station sends meanwhile are still in flight when it hears the page leave.
 */
function setVisibility(page: Page, state: "hidden" | "visible", busyMs = 0): Promise<void> {
  return page.evaluate(([s, ms]) => {
    Object.defineProperty(document, "visibilityState", { value: s, configurable: true });
    Object.defineProperty(document, "hidden", { value: s === "hidden", configurable: true });
    document.dispatchEvent(new Event("visibilitychange"));
    for (const t0 = performance.now(); performance.now() - t0 < ms; );
  }, [state, busyMs] as const);
}

test("a browser tab reports its kind, user agent and battery; hidden mid-generation it drains (no call lost, none retried, replicas 1) and leaves; shown again it rejoins", { skip: browserSkip || brown.skip }, async () => {
  const want = await singleProcessTokens(brown.path);

  const token = newJoinToken();
  const lines: string[] = [];
  let engine: Engine | undefined;
  const { hub, app, metrics, port, fingerprint, close } = await startBrowserHub({ model: brown.path, weightDType: "f32", wireDType: "f32", joinTokens: [token], log: (l) => lines.push(l) }, () => engine);
  const devices = spawnLocalDevices(`wss://127.0.0.1:${port}`, token, 1, 1, ["--fingerprint", fingerprint]);
  const browser = await launchBrowser({ trustAnyCertificate: true });
  const browserDevice = () => hub.status().devices.find((d) => d.kind === "browser");
  try {
    const tab = await browser.context.newPage();
    tab.on("console", (m) => lines.push(`[tab] ${m.text()}`));
    await tab.setViewportSize({ width: 1280, height: 800 });
    await tab.goto(`https://127.0.0.1:${port}/device#token=${token}`);
    await Promise.race([hub.start(2), devices.failed]);
    devices.settled();
    await until(async () => (await tab.textContent("#state")) === "serving", "the tab serves");

    // what each device is, in /health and /metrics
    const userAgent = await tab.evaluate(() => navigator.userAgent);
    // chromium reports a battery (a desktop's: full, or on mains power): its heartbeat brings it
    if (await tab.evaluate(() => "getBattery" in navigator)) await until(() => browserDevice()?.battery, "the tab's heartbeat brings its battery");
    const health = (await (await app.request("/health")).json()) as { devices: Array<{ name: string; kind: string; userAgent?: string; battery?: { level: number; charging: boolean } }> };
    const listed = health.devices;
    assert.deepEqual(listed.map((d) => d.kind).sort(), ["browser", "node"], JSON.stringify(listed));
    assert.equal(listed.find((d) => d.kind === "browser")!.userAgent, userAgent);
    assert.equal(listed.find((d) => d.kind === "node")!.userAgent, undefined);
    assert.deepEqual(listed.find((d) => d.kind === "browser")!.battery, browserDevice()!.battery);
    const name = browserDevice()!.name;
    const text = await metrics.text();
    assert.ok(text.includes(`distmoe_device_info{device="${name}",kind="browser",user_agent="${userAgent}"} 1`), text);
    assert.match(text, /distmoe_device_info\{device="local-0",kind="node",user_agent=""\} 1/);

    engine = Engine.load(brown.path, { dtype: "f32", executor: hub.executor });
    assert.deepEqual(await greedyTokens(engine), want);
    await until(async () => Number(await tab.textContent("#calls")) > 0 && (await tab.textContent("#rtt")) !== "–", "the page counts its calls and has measured its link");
    mkdirSync(SCREENSHOTS, { recursive: true });
    await tab.screenshot({ path: `${SCREENSHOTS}device-desktop.png` });
    await tab.setViewportSize({ width: 390, height: 844 });
    await tab.screenshot({ path: `${SCREENSHOTS}device-phone.png` });

    // hidden while a request runs: the tab serves until its experts are on the other device, and leaves once its calls in flight are answered
    const retried = engine.expertUsage().retries;
    const served = () => hub.deviceCalls().find((d) => d.name === name)?.calls ?? 0;
    const before = served();
    assert.ok(before > 0, "the tab is the first host of some experts");
    const generation = greedyTokens(engine);
    await until(() => served() > before, "the tab serves the request");
    await setVisibility(tab, "hidden", 300);
    await until(() => browserDevice() === undefined, "the base station sees the tab leave");
    assert.equal(await tab.textContent("#state"), "away");
    await until(async () => (await tab.textContent("#log"))?.includes("rejoining when shown again"), "the page sees its connection closed");
    await until(async () => (await tab.textContent("#in-flight")) === "0", "every call sent to the tab before it left answered before the connection closed", 2000);
    assert.deepEqual(await generation, want, "the request completes, the same");
    assert.equal(engine.expertUsage().failed_calls, 0, "no call failed: the tab answered those in flight before it left");
    assert.equal(engine.expertUsage().retries, retried, "and none went to another host: each call sent to the tab was answered by it");
    assert.ok(lines.some((l) => l.includes(`${name} left`)), "the hub logs the tab leaving");

    // shown again: it rejoins, under its identity, and serves
    await setVisibility(tab, "visible");
    await until(() => browserDevice()?.ready === true, "the tab rejoins");
    await until(async () => (await tab.textContent("#state")) === "serving", "the page says it serves again");
    assert.equal(browserDevice()!.name, name, "the same device, by its identity");
    assert.deepEqual(await greedyTokens(engine), want);
    assert.equal(engine.expertUsage().failed_calls, 0);
  } catch (e) {
    process.stderr.write(`${lines.join("\n")}\n`);
    throw e;
  } finally {
    engine?.close();
    await browser.close();
    await close();
    await devices.exited();
  }
});
