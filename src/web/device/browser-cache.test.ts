// Browser tabs that leave and come back, in a real headless chromium: two tabs of one browser profile
// hold every expert (replicas 2). Closing one in the middle of a generation leaves the output the
// single-process engine's; reopening it is the same device (its identity is kept), which rejoins from the
// weights it keeps in the Origin Private File System without the base station streaming them again and
// serves again; a cached tensor damaged while it was closed is the one streamed again. A browser without
// OPFS keeps its weights in IndexedDB, and rejoins from them as well.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import { Engine } from "../../runtime/engine.js";
import { newJoinToken } from "../../protocol/handshake.js";
import { browserSkip, launchBrowser } from "../../testing/browser.js";
import { greedyTokens, singleProcessTokens, startBrowserHub } from "../../testing/browser-hub.js";
import { sharedPath } from "../../testing/shared.js";
import { until } from "../../testing/until.js";

const brown = sharedPath("models/brown-moe");
const TOKENS = 32;

test("a tab closed mid-generation leaves the output whole (replicas 2); reopened, it rejoins from its cache (no bytes streamed) and serves; a damaged cached tensor alone is streamed again", { skip: browserSkip || brown.skip }, async () => {
  const want = await singleProcessTokens(brown.path, TOKENS);

  const token = newJoinToken();
  const lines: string[] = [];
  const bs = await startBrowserHub({ model: brown.path, weightDType: "f32", wireDType: "f32", replicas: 2, joinTokens: [token], log: (l) => lines.push(l) });
  const { hub } = bs;
  const browser = await launchBrowser({ trustAnyCertificate: true });
  const engine = Engine.load(brown.path, { dtype: "f32", executor: hub.executor });
  const greedy = () => greedyTokens(engine, TOKENS);
  const device = (name: string) => hub.status().devices.find((d) => d.name === name);
  // browser-b is a browser without OPFS: it keeps its weights in IndexedDB
  const open = async (name: string): Promise<Page> => {
    const tab = await browser.context.newPage();
    if (name === "browser-b") await tab.addInitScript(() => delete (StorageManager.prototype as Partial<StorageManager>).getDirectory);
    tab.on("console", (m) => lines.push(`[${name}] ${m.text()}`));
    await tab.goto(`https://127.0.0.1:${bs.port}/device#token=${token}&name=${name}`);
    return tab;
  };
  const serving = (tab: Page) => until(async () => (await tab.textContent("#state")) === "serving", "the tab to serve");
  const log = (tab: Page) => tab.textContent("#log").then((t) => t ?? "");
  try {
    const [tab0, tab1] = await Promise.all(["browser-a", "browser-b"].map(open));
    await hub.start(2);
    await Promise.all([tab0!, tab1!].map(serving));
    const first = device("browser-a")!;
    assert.ok(first.weightBytes > 0 && first.experts > 0, "the weights were streamed to the tab");
    const fingerprint = hub.knownDevices().find((k) => k.name === "browser-a")!.fingerprint;

    // closed while the request runs: the other replica serves the rest
    let finished = false;
    const running = greedy().finally(() => (finished = true));
    await until(() => (device("browser-a")?.calls ?? 0) > 20, "browser-a to serve calls of the request");
    await tab0!.close({ runBeforeUnload: false });
    assert.equal(finished, false, "the tab closed while the request ran");
    assert.deepEqual(await running, want, "the request completed with the single-process output");
    await until(() => !device("browser-a"), "the base station to see browser-a leave");

    const again = await open("browser-a");
    await until(() => device("browser-a")?.ready && device("browser-a")!.experts === first.experts, "browser-a to load every expert again");
    await serving(again);
    assert.equal(device("browser-a")!.weightBytes, 0, "nothing was streamed to the reopened tab");
    assert.equal(await again.getAttribute("#weights", "data-bytes"), "0", "and the page received nothing");
    assert.match(await log(again), /identity SHA256:\S+ \(kept from an earlier visit\)/);
    assert.equal(hub.knownDevices().filter((k) => k.name === "browser-a").map((k) => k.fingerprint).join(), fingerprint, "the same identity");
    assert.deepEqual(await greedy(), want);
    assert.ok(device("browser-a")!.calls > 0, "the reopened tab serves");

    // the memory it offers, set on the page, is kept for its next visit
    await again.fill("#memory", "2048");
    await again.dispatchEvent("#memory", "change");
    await until(async () => /will offer 2048 MiB from the next time this page joins/.test(await log(again)), "the setting to be kept");

    // one cached tensor damaged (the tab has loaded it: it reads the cache again only when reopened)
    const damaged = await again.evaluate(async () => {
      const models = await (await navigator.storage.getDirectory()).getDirectoryHandle("weights");
      for await (const [, model] of models as unknown as AsyncIterable<[string, FileSystemDirectoryHandle]>) {
        for await (const [name, entry] of model as unknown as AsyncIterable<[string, FileSystemFileHandle]>) {
          const bytes = new Uint8Array(await (await entry.getFile()).arrayBuffer());
          const header = new DataView(bytes.buffer).getUint32(0, true);
          bytes[bytes.length - 1]! ^= 1;
          const w = await entry.createWritable();
          await w.write(bytes);
          await w.close();
          return { name, bytes: bytes.length - 4 - header };
        }
      }
      throw new Error("no cached tensor");
    });
    await again.close({ runBeforeUnload: false });
    await until(() => !device("browser-a"), "the base station to see browser-a leave again");
    const third = await open("browser-a");
    await until(() => device("browser-a")?.ready && device("browser-a")!.experts === first.experts, "browser-a to load every expert once more");
    await serving(third);
    assert.equal(device("browser-a")!.weightBytes, damaged.bytes, `only ${damaged.name} was streamed again`);
    assert.equal(await third.getAttribute("#weights", "data-bytes"), String(damaged.bytes));
    assert.match(await log(third), /offers 2048\.0 MiB for experts: this page's setting/);
    assert.equal(await third.inputValue("#memory"), "2048");
    assert.match(await log(third), new RegExp(`the cached ${damaged.name.replace(/\./g, "\\.")} is damaged \\(checksum`));
    assert.deepEqual(await greedy(), want);

    // the tab that keeps its weights in IndexedDB rejoins from them too
    assert.match(await log(tab1!), /weights are kept in IndexedDB/);
    await tab1!.close({ runBeforeUnload: false });
    await until(() => !device("browser-b"), "the base station to see browser-b leave");
    const b = await open("browser-b");
    await until(() => device("browser-b")?.ready && device("browser-b")!.experts === first.experts, "browser-b to load every expert again");
    await serving(b);
    assert.equal(device("browser-b")!.weightBytes, 0, "nothing was streamed to the reopened browser-b");
    assert.match(await log(b), /weights are kept in IndexedDB/);
  } catch (e) {
    process.stderr.write(`${lines.join("\n")}\n`);
    throw e;
  } finally {
    engine.close();
    await browser.close();
    await bs.close();
  }
});
