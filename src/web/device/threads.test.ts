// The device page's compute threads, in a real headless chromium: cross-origin isolated, a tab computes on
// its own thread and Web Workers (the kernel pool's loop, bundled beside the page), says how many, and
// serves brown-moe's calls with the single-process greedy output; served without the COOP/COEP headers it
// says it computes on one thread and why, and still serves them correctly. The thread count's setting and default are pure.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { BrowserContext, Page } from "playwright-core";
import { Engine } from "../../runtime/engine.js";
import { newJoinToken } from "../../protocol/handshake.js";
import { browserSkip, launchBrowser } from "../../testing/browser.js";
import { greedyTokens, singleProcessTokens, startBrowserHub } from "../../testing/browser-hub.js";
import { sharedPath } from "../../testing/shared.js";
import { until } from "../../testing/until.js";
import { DEFAULT_MAX, parseThreads, threadCount } from "./threads.js";

const brown = sharedPath("models/brown-moe");

test("a page computes on its setting's threads, else the cores the browser reports (at most DEFAULT_MAX), and on one where it is not cross-origin isolated", () => {
  assert.deepEqual(threadCount("3", 8, true), { threads: 3, from: "this page's setting" });
  assert.equal(threadCount(null, 2, true).threads, 2);
  assert.equal(threadCount(null, 16, true).threads, DEFAULT_MAX);
  assert.equal(threadCount(null, undefined, true).threads, 1);
  assert.equal(threadCount(null, 0, true).threads, 1);
  assert.equal(threadCount("3", 8, false).threads, 1);
  assert.match(threadCount("3", 8, false).from, /^this page is not cross-origin isolated/);
  for (const bad of ["", "0", "65", "-2", "2.5", "two", "1e1"]) {
    assert.equal(parseThreads(bad), null, bad);
    assert.equal(threadCount(bad, 2, true).threads, 2, `${bad}: the default`);
  }
  assert.equal(parseThreads(" 4 "), 4);
});

/** One tab of `context` as the only device of a base station whose page is `isolated` or not: it serves the greedy run, which must give `want`. */
async function serveAlone(context: BrowserContext, want: number[], isolated: boolean): Promise<Page> {
  const token = newJoinToken();
  const lines: string[] = [];
  const bs = await startBrowserHub({ model: brown.path, weightDType: "f32", wireDType: "f32", joinTokens: [token], log: (l) => lines.push(l) }, undefined, { isolated });
  let engine: Engine | undefined;
  try {
    const tab = await context.newPage();
    tab.on("console", (m) => lines.push(`[tab] ${m.text()}`));
    const response = await tab.goto(`https://127.0.0.1:${bs.port}/device#token=${token}`);
    assert.equal(response?.headers()["cross-origin-embedder-policy"], isolated ? "require-corp" : undefined);
    await until(() => bs.hub.status().devices.length === 1, "the tab joins");
    await bs.hub.start(1);
    await until(async () => (await tab.textContent("#state")) === "serving", "the tab serves");
    engine = Engine.load(brown.path, { dtype: "f32", executor: bs.hub.executor });
    assert.deepEqual(await greedyTokens(engine), want);
    assert.ok(Number(await tab.textContent("#calls")) > 0, "the tab served the calls");
    return tab;
  } catch (e) {
    process.stderr.write(`${lines.join("\n")}\n`);
    throw e;
  } finally {
    engine?.close();
    await bs.close();
  }
}

test("brown-moe served by one tab: on 2 threads (its own and a Web Worker) where cross-origin isolated, on 1 where not; both the single-process greedy output", { skip: browserSkip || brown.skip }, async () => {
  const want = await singleProcessTokens(brown.path);
  const browser = await launchBrowser({ trustAnyCertificate: true });
  try {
    // isolated, on the setting's 2 threads whatever this machine's cores
    await browser.context.addInitScript(() => localStorage.setItem("distmoe.threads", "2"));
    const isolated = await serveAlone(browser.context, want, true);
    assert.equal(await isolated.evaluate(() => crossOriginIsolated), true);
    assert.equal(await isolated.getAttribute("#kernels", "data-threads"), "2");
    assert.match((await isolated.textContent("#kernels")) ?? "", /^wasm \(\w+ SIMD\) on 2 threads$/);
    assert.deepEqual(isolated.workers().map((w) => new URL(w.url()).pathname), ["/device/kernel-worker.js"], "one compute thread beside the page's own");
    await until(async () => Number(await isolated.getAttribute("#kernels", "data-worker-shares")) > 0, "the worker computed shares of the prompt's kernels");
    await isolated.close();

    // the same page without the headers that isolate it (as a proxy that drops them serves it): one thread, and the page says why
    const alone = await serveAlone(browser.context, want, false);
    assert.equal(await alone.evaluate(() => crossOriginIsolated), false);
    assert.equal(await alone.getAttribute("#kernels", "data-threads"), "1");
    assert.match((await alone.textContent("#kernels")) ?? "", /^wasm \(\w+ SIMD\) on 1 thread: this page is not cross-origin isolated \(/);
    assert.deepEqual(alone.workers(), []);
  } finally {
    await browser.close();
  }
});
