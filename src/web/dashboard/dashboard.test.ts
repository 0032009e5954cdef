// The dashboard page in headless chromium against a real `serve --local-devices 4` (every device its own
// process, links emulated, MoNDE's hot experts at the BS): the topology shows the four devices; the
// playground streams a completion with an API key, and a token hovered or focused shows its experts per
// layer and their devices; the placement marks the experts the BS holds; the admin's policy control
// lowers the experts per token the page shows; a killed device turns failed
// on the page; a view key gets the views without the controls (the server refuses it there too), and no
// key gets nothing. The run writes the page's screenshots (desktop and narrow) into docs/web/.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Page } from "playwright-core";
import { initModel } from "../../model/init-model.js";
import { browserSkip, launchBrowser } from "../../testing/browser.js";
import { deviceChildren, start } from "../../testing/cli-process.js";
import { until } from "../../testing/until.js";

/** docs/web of the repository (this file runs as dist/web/dashboard/dashboard.test.js) */
const SCREENSHOTS = fileURLToPath(new URL("../../../docs/web/", import.meta.url));
const API_KEY = "api-key-0123", VIEW_KEY = "view-key-0123", ADMIN_KEY = "admin-key-0123";

/** Opens the dashboard in a new tab and gives it `key`. */
async function openWith(open: () => Promise<Page>, base: string, key: string): Promise<Page> {
  const tab = await open();
  await tab.goto(`${base}/`);
  await tab.fill("#key", key);
  await tab.click("#key-form button");
  return tab;
}

/** The page shows the 4 devices and the BS serving on them. */
const showsCell = async (tab: Page) => (await tab.locator(".device[data-device]").count()) === 4 && (await tab.textContent("#health")) === "health: ok";
const expertsPerToken = async (tab: Page) => Number((await tab.getAttribute("#experts-per-token", "data-value")) || NaN);

async function complete(tab: Page): Promise<string> {
  // marked first, so a click that submits nothing cannot pass for a completion that ended
  await tab.evaluate(() => void (document.getElementById("completion")!.dataset.done = "not started"));
  await tab.click("#prompt-form button");
  await until(async () => (await tab.getAttribute("#completion", "data-done")) === "true" || (await tab.getAttribute("#completion", "class")) === "error", "the completion to end");
  assert.notEqual(await tab.getAttribute("#completion", "class"), "error", (await tab.textContent("#completion")) ?? "");
  return (await tab.textContent("#completion")) ?? "";
}

test("dashboard page against serve --local-devices 4: topology, playground, policy control, a failed device, a viewer without controls", { skip: browserSkip }, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-dashboard-"));
  const children: ChildProcess[] = [];
  const browser = await launchBrowser();
  const logs: string[] = [];
  /** what the page and the base station said, shown when the test fails */
  let said = async () => logs.join("\n");
  browser.context.on("page", (tab) => {
    tab.on("console", (m) => logs.push(`[tab] ${m.text()}`));
    tab.on("pageerror", (e) => logs.push(`[tab error] ${e.message}`));
  });
  try {
    initModel({ arch: "MixtralForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed: 5 });
    const bs = start([
      "serve", "--model", dir, "--port", "0", "--local-devices", "4", "--threads", "1", "--state-dir", path.join(dir, "state"), "--link", "rate=100mbit,delay=1ms",
      // MoNDE: a fast store (the checkpoint, bf16 as it holds its experts) beside the 1 ms links, so monde keeps the experts used at the BS
      "--bs-budget", "0.25", "--bs-store-gbps", "10", "--dtype", "bf16",
      "--api-key", API_KEY, "--view-key", VIEW_KEY, "--admin-key", ADMIN_KEY,
    ]);
    children.push(bs.child);
    const port = await until(() => /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(bs.err())?.[1], "the BS to listen");
    const base = `http://127.0.0.1:${port}`;
    said = async () => [...logs, `[bs] ${bs.err()}`, ...(await Promise.all(browser.context.pages().map(async (p) => `[page] ${await p.textContent("header").catch(() => "")} ${await p.textContent("#devices").catch(() => "")}`)))].join("\n");
    const page = await browser.context.newPage();
    await page.setViewportSize({ width: 1440, height: 1100 });
    const admin = await openWith(async () => page, base, ADMIN_KEY);
    assert.equal(await admin.evaluate(() => location.href), `${base}/`, "the key is never in the address");

    await until(() => showsCell(admin), "the topology to show 4 devices serving");
    assert.match((await admin.textContent('.device[data-device="local-0"]')) ?? "", /emulated link: ↓ 100 Mbit\/s ↑ 100 Mbit\/s.*RTT 2 ms/s);
    await until(() => admin.isVisible("#controls"), "the admin's controls");

    // a user (API key): the views without the controls; the playground streams a completion, and the snapshots then show top-k routing
    const user = await openWith(() => browser.context.newPage(), base, API_KEY);
    await until(() => showsCell(user), "the user's topology");
    assert.ok((await complete(user)).length > 0, "the completion has text");
    // a token hovered (one that shows: a control character has no width), then one focused: its experts per layer (top-2 of 4 here), each with the device that computed it (the base station itself for the experts MoNDE runs there)
    const run = String.raw`[0-3] \(\d\.\d\d\) (?:local-[0-3]|base station)`;
    const routed = new RegExp(`^(token \\d+layer 0: ${run} · ${run}layer 1: ${run} · ${run})+$`);
    assert.equal(await user.isVisible("#token-info"), false);
    await user.hover("#completion .token:visible >> nth=0");
    await until(() => user.isVisible("#token-info"), "the token's routing on hover");
    assert.match((await user.textContent("#token-info")) ?? "", routed);
    await user.focus("#completion .token >> nth=-1");
    assert.match((await user.textContent("#token-info")) ?? "", routed);
    await until(async () => (await expertsPerToken(admin)) === 2, "top-k: 2 experts per token on the page");
    await until(async () => Number(await admin.getAttribute("#bs-experts", "data-value")) > 0 && (await admin.isVisible("#bs-legend")), "the BS's own experts marked on the placement");
    assert.equal(await user.isVisible("#controls"), false, "no controls for an API key");

    // θ through the controls: fewer experts per token in the next snapshots
    await admin.selectOption("#policy-name", "wlr");
    await admin.fill("#policy-knob", "0.99");
    await admin.click("#policy-form button");
    await until(async () => (await admin.textContent("#policy")) === "policy: wlr θ=0.99", "the new policy in a snapshot");
    await until(async () => (await admin.textContent("#control-result")) === "policy: wlr θ=0.99", "the control's answer on the page");
    // the admin's key runs the playground too; wlr θ=0.99 keeps one expert for most tokens
    await complete(admin);
    await until(async () => (await expertsPerToken(admin)) < 2, "fewer experts per token under wlr θ=0.99");
    await admin.hover("#completion .token:visible >> nth=0");
    await until(() => admin.isVisible("#token-info"), "the token's routing on the admin's page");

    mkdirSync(SCREENSHOTS, { recursive: true });
    await admin.screenshot({ path: `${SCREENSHOTS}dashboard-desktop.png`, fullPage: true });
    await admin.setViewportSize({ width: 390, height: 844 });
    // once the layout has followed the resize, a phone's width holds the whole page (one screenshot taken at once came out 694 px wide)
    await until(async () => (await admin.evaluate(() => document.documentElement.scrollWidth)) <= 390, "no sideways scrolling at a phone's width");
    await admin.screenshot({ path: `${SCREENSHOTS}dashboard-narrow.png`, fullPage: true });

    // a viewer: the views, no controls, and the server refuses its key there
    const viewer = await openWith(() => browser.context.newPage(), base, VIEW_KEY);
    await until(() => showsCell(viewer), "the viewer's topology");
    assert.equal(await viewer.isVisible("#controls"), false, "no controls for a viewer");
    const refused = await viewer.evaluate(async (key) => (await fetch("/admin/policy", { method: "PUT", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: '{"name":"topk"}' })).status, VIEW_KEY);
    assert.equal(refused, 401);
    const stranger = await openWith(() => browser.context.newPage(), base, "not-a-key");
    await until(async () => (await stranger.textContent("#key-error")) === "This key may not view the dashboard.", "no key, no view");
    assert.equal(await stranger.isVisible("#views"), false);

    // a killed device turns failed (how fast is for scripts/bench-dashboard.mjs; the time is noted here)
    const killed = performance.now();
    process.kill(deviceChildren(bs.child.pid!).get("local-3")!, "SIGKILL");
    await until(async () => (await admin.getAttribute('.device[data-device="local-3"]', "data-state")) === "failed", "the killed device shown failed");
    t.diagnostic(`the killed device was shown failed on the page after ${Math.round(performance.now() - killed)} ms`);
    assert.equal(await admin.getAttribute('.device[data-device="local-3"]', "title"), "disconnected");
    assert.ok(logs.every((l) => !l.includes("[tab error]")), logs.join("\n"));
  } catch (e) {
    console.error(await said());
    throw e;
  } finally {
    await browser.close();
    for (const c of children) c.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});
