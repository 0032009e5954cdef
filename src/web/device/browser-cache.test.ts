// Browser tabs that leave and come back, in a real headless chromium: two tabs of one browser profile and
// two device processes hold every expert twice (replicas 2). Closing a tab in the middle of a generation
// leaves the output the single-process engine's; reopening it is the same device (its identity is kept),
// which the base station places on the experts it held before, so it rejoins from the weights it keeps in
// the Origin Private File System without the base station streaming them again, and serves again; a
// cached tensor damaged while it was closed is streamed again, and only that. A browser without
// OPFS keeps its weights in IndexedDB, and rejoins from them as well. A page keeps its storage within
// twice the memory it offers: what an earlier model left there goes, what it holds stays; a model's folder
// removed while a tab serves is made again for what it is assigned next.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import { Engine } from "../../runtime/engine.js";
import { spawnLocalDevices } from "../../runtime/local-cluster.js";
import { newJoinToken } from "../../protocol/handshake.js";
import { browserSkip, launchBrowser } from "../../testing/browser.js";
import { greedyTokens, singleProcessTokens, startBrowserHub } from "../../testing/browser-hub.js";
import { sharedPath } from "../../testing/shared.js";
import { until } from "../../testing/until.js";
import { SETTING_KEY } from "./memory-offer.js";

const brown = sharedPath("models/brown-moe");
const TOKENS = 32;

test("2 device processes and 2 tabs: a tab closed mid-generation leaves the output whole (replicas 2); reopened, it is placed on what it held and rejoins from its cache (none of it streamed again) and serves; damaged cached tensors alone are streamed again", { skip: browserSkip || brown.skip }, async () => {
  const want = await singleProcessTokens(brown.path, TOKENS);

  const token = newJoinToken();
  const lines: string[] = [];
  const bs = await startBrowserHub({ model: brown.path, weightDType: "f32", wireDType: "f32", replicas: 2, joinTokens: [token], log: (l) => lines.push(l) });
  const { hub } = bs;
  const processes = spawnLocalDevices(`wss://127.0.0.1:${bs.port}`, token, 2, 1, ["--fingerprint", bs.fingerprint]);
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
  // its experts as the base station last knew them ready, and the bytes of one expert as streamed (f32: all alike)
  const heldBy = (name: string) => new Set(hub.knownDevices().find((k) => k.name === name)!.experts.map(([l, e]) => `${l}:${e}`));
  let expertBytes = 0;
  /**
   * Waits for a reopened tab to be ready, and returns the bytes of the experts it holds now that it did
   * not hold before: the most a download is due for (less where it still keeps one from an earlier placement). Its share follows its speed, measured anew on
   * each join, so it may hold an expert or two more or fewer than before, and where its peers meanwhile
   * hold the same experts, placement keeps as many copies as it can on the whole, which may leave this
   * tab (rather than a peer) the one new expert a re-plan must place: of its own it keeps all its share
   * takes but a couple.
   */
  const rejoined = async (name: string, before: Set<string>): Promise<number> => {
    await until(() => device(name)?.ready, `${name} to load its experts again`);
    const now = heldBy(name);
    const added = [...now].filter((p) => !before.has(p)).length;
    assert.ok(added <= Math.max(0, now.size - before.size) + 2, `${name} holds ${now.size} experts, ${added} of them new (it held ${before.size})`);
    return added * expertBytes;
  };
  const serving = (tab: Page) => until(async () => (await tab.textContent("#state")) === "serving", "the tab to serve");
  const log = (tab: Page) => tab.textContent("#log").then((t) => t ?? "");
  try {
    const [tab0, tab1] = await Promise.all(["browser-a", "browser-b"].map(open));
    await Promise.race([hub.start(4), processes.failed]);
    processes.settled();
    await Promise.all([tab0!, tab1!].map(serving));
    const first = device("browser-a")!;
    assert.ok(first.weightBytes > 0 && first.experts > 0, "the weights were streamed to the tab");
    expertBytes = first.weightBytes / first.experts;
    const heldA = heldBy("browser-a");
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
    const grown = await rejoined("browser-a", heldA);
    await serving(again);
    // at most its new experts are streamed (fewer where it kept one from an earlier placement)
    const streamedA = device("browser-a")!.weightBytes;
    assert.ok(streamedA <= grown, `nothing it held before was streamed to the reopened tab (${streamedA} bytes, its new experts ${grown})`);
    assert.equal(await again.getAttribute("#weights", "data-bytes"), String(streamedA), "and the page received just that");
    assert.match(await log(again), /identity SHA256:\S+ \(kept from an earlier visit\)/);
    assert.equal(hub.knownDevices().filter((k) => k.name === "browser-a").map((k) => k.fingerprint).join(), fingerprint, "the same identity");
    assert.deepEqual(await greedy(), want);
    assert.ok(device("browser-a")!.calls > 0, "the reopened tab serves");

    // the memory it offers, set on the page, is kept for its next visit
    await again.fill("#memory", "2048");
    await again.dispatchEvent("#memory", "change");
    await until(async () => /will offer 2048 MiB from the next time this page joins/.test(await log(again)), "the setting to be kept");

    // one cached tensor of each expert it holds damaged (the tab has loaded them: it reads the cache again only when reopened)
    const heldBefore = heldBy("browser-a");
    const damaged = await again.evaluate(async (held) => {
      const out: Record<string, { name: string; bytes: number }> = {};
      const models = await (await navigator.storage.getDirectory()).getDirectoryHandle("weights");
      for await (const [, model] of models as unknown as AsyncIterable<[string, FileSystemDirectoryHandle]>) {
        for await (const [name, entry] of model as unknown as AsyncIterable<[string, FileSystemFileHandle]>) {
          const match = /layers\.(\d+)\..*experts\.(\d+)\./.exec(name);
          const expert = match && `${match[1]}:${match[2]}`;
          if (!expert || !held.includes(expert) || out[expert]) continue;
          const bytes = new Uint8Array(await (await entry.getFile()).arrayBuffer());
          const header = new DataView(bytes.buffer).getUint32(0, true);
          bytes[bytes.length - 1]! ^= 1;
          const w = await entry.createWritable();
          await w.write(bytes);
          await w.close();
          out[expert] = { name, bytes: bytes.length - 4 - header };
        }
      }
      return out;
    }, [...heldBefore]);
    assert.equal(Object.keys(damaged).length, heldBefore.size, "a cached tensor of each expert it holds is damaged");
    await again.close({ runBeforeUnload: false });
    await until(() => !device("browser-a"), "the base station to see browser-a leave again");
    const third = await open("browser-a");
    const grownAgain = await rejoined("browser-a", heldBefore);
    await serving(third);
    const kept = [...heldBy("browser-a")].filter((p) => heldBefore.has(p));
    const restreamed = kept.reduce((n, p) => n + damaged[p]!.bytes, 0);
    const streamedThird = device("browser-a")!.weightBytes;
    assert.ok(streamedThird >= restreamed && streamedThird <= restreamed + grownAgain, `of what it held, the damaged tensors were streamed again and nothing else (${streamedThird} bytes; damaged ${restreamed}, new experts ${grownAgain})`);
    assert.equal(await third.getAttribute("#weights", "data-bytes"), String(streamedThird));
    const example = damaged[kept[0]!]!.name;
    assert.match(await log(third), new RegExp(`the cached ${example.replace(/\./g, "\\.")} is damaged \\(checksum`));
    assert.match(await log(third), /offers 2048\.0 MiB for experts: this page's setting/);
    assert.equal(await third.inputValue("#memory"), "2048");
    assert.deepEqual(await greedy(), want);

    // the tab that keeps its weights in IndexedDB rejoins from them too
    assert.match(await log(tab1!), /weights are kept in IndexedDB/);
    const heldB = heldBy("browser-b");
    await tab1!.close({ runBeforeUnload: false });
    await until(() => !device("browser-b"), "the base station to see browser-b leave");
    const b = await open("browser-b");
    const grownB = await rejoined("browser-b", heldB);
    await serving(b);
    assert.ok(device("browser-b")!.weightBytes <= grownB, "nothing it held before was streamed to the reopened browser-b");
    assert.match(await log(b), /weights are kept in IndexedDB/);
  } catch (e) {
    process.stderr.write(`${lines.join("\n")}\n`);
    throw e;
  } finally {
    engine.close();
    await browser.close();
    await bs.close();
    await processes.exited();
  }
});

test("a tab's weight cache stays within twice its offer: another model's old tensors, in OPFS or IndexedDB, are removed once it has streamed its experts, and the tensors of the experts it holds stay", { skip: browserSkip || brown.skip }, async () => {
  const token = newJoinToken();
  const lines: string[] = [];
  const bs = await startBrowserHub({ model: brown.path, weightDType: "f32", wireDType: "f32", replicas: 1, joinTokens: [token], log: (l) => lines.push(l) });
  const { hub } = bs;
  const browser = await launchBrowser({ trustAnyCertificate: true });
  // each store gets one old tensor larger than the budget (2 × the least offer, 64 MiB): only its removal brings the store within it
  const OLD = "an-older-model", JUNK_MIB = 136;
  try {
    // the origin's storage, filled from a page of the base station's origin before any tab joins, and the least offer set
    const filler = await browser.context.newPage();
    await filler.goto(`https://127.0.0.1:${bs.port}/health`);
    await filler.evaluate(
      async ([old, mib, settingKey]) => {
        localStorage.setItem(settingKey, "64");
        const chunk = new Uint8Array(1 << 20).fill(7);
        const w = await (await (await (await navigator.storage.getDirectory()).getDirectoryHandle("weights", { create: true })).getDirectoryHandle(old, { create: true })).getFileHandle("model.layers.0.mlp.experts.0.gate_proj.weight", { create: true });
        const out = await w.createWritable();
        for (let i = 0; i < mib; i++) await out.write(chunk);
        await out.close();
        // IndexedDB as the page lays it out (storage.ts): database distmoe-device, stores weights and identity, keys "model/tensor"
        const db = await new Promise<IDBDatabase>((resolve, reject) => {
          const r = indexedDB.open("distmoe-device", 1);
          r.onupgradeneeded = () => (r.result.createObjectStore("weights"), r.result.createObjectStore("identity"));
          r.onsuccess = () => resolve(r.result);
          r.onerror = () => reject(r.error);
        });
        await new Promise((resolve, reject) => {
          const t = db.transaction("weights", "readwrite");
          t.objectStore("weights").put({ header: "{}", data: new Uint8Array(mib << 20).fill(7), writtenAt: Date.now() - 60_000 }, `${old}/model.layers.0.mlp.experts.0.gate_proj.weight`);
          t.oncomplete = resolve;
          t.onerror = () => reject(t.error);
        });
        db.close();
      },
      [OLD, JUNK_MIB, SETTING_KEY] as const,
    );
    await filler.close();

    const open = async (name: string): Promise<Page> => {
      const tab = await browser.context.newPage();
      if (name === "idb") {
        // no OPFS; and a usage estimate that lags behind IndexedDB's writes (as Chromium's did in CI): the trim must not trust it
        await tab.addInitScript(() => {
          delete (StorageManager.prototype as Partial<StorageManager>).getDirectory;
          StorageManager.prototype.estimate = async () => ({ usage: 0, quota: 2 ** 40 });
        });
      }
      tab.on("console", (m) => lines.push(`[${name}] ${m.text()}`));
      await tab.goto(`https://127.0.0.1:${bs.port}/device#token=${token}&name=${name}`);
      return tab;
    };
    const [opfs, idb] = await Promise.all(["opfs", "idb"].map(open));
    await hub.start(2);
    const log = (tab: Page) => tab.textContent("#log").then((t) => t ?? "");
    for (const tab of [opfs!, idb!]) {
      await until(async () => (await tab.textContent("#state")) === "serving", "the tab to serve");
      await until(async () => /removed 1 kept tensors \(136\.0 MiB, the oldest not held\) to keep the weights within 128\.0 MiB/.test(await log(tab)), `${tab === opfs ? "the OPFS" : "the IndexedDB"} tab to trim its cache`);
      assert.match(await log(tab), /offers 64\.0 MiB for experts: this page's setting/);
    }
    assert.match(await log(idb!), /weights are kept in IndexedDB/);

    // what is left in each store: no tensor of the old model, and every tensor of the experts each tab holds
    const expertsOf = (name: string) => hub.knownDevices().find((k) => k.name === name)!.experts.map(([l, e]) => `${l}:${e}`);
    const left = await opfs!.evaluate(async () => {
      const files: string[] = [], keys: string[] = [];
      for await (const [model, dir] of (await (await navigator.storage.getDirectory()).getDirectoryHandle("weights")) as unknown as AsyncIterable<[string, FileSystemDirectoryHandle]>) {
        for await (const [name] of dir as unknown as AsyncIterable<[string, FileSystemHandle]>) files.push(`${model}/${name}`);
      }
      const db = await new Promise<IDBDatabase>((resolve, reject) => {
        const r = indexedDB.open("distmoe-device", 1);
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error);
      });
      keys.push(...(await new Promise<IDBValidKey[]>((resolve) => (db.transaction("weights").objectStore("weights").getAllKeys().onsuccess = (e) => resolve((e.target as IDBRequest<IDBValidKey[]>).result)))).map(String));
      db.close();
      return { files, keys };
    });
    for (const [store, names, tab] of [["OPFS", left.files, "opfs"], ["IndexedDB", left.keys, "idb"]] as const) {
      assert.deepEqual(names.filter((n) => n.startsWith(`${OLD}/`)), [], `${store}: the old model's tensor is gone`);
      const held = new Set(names.map((n) => /layers\.(\d+)\..*experts\.(\d+)\./.exec(n)).filter((m) => m !== null).map((m) => `${m[1]}:${m[2]}`));
      const experts = expertsOf(tab);
      assert.ok(experts.length > 0 && experts.every((p) => held.has(p)), `${store}: the tensors of the experts ${tab} holds stay`);
      assert.equal(names.length, 3 * experts.length, `${store}: its experts' three tensors each, nothing else`);
    }

    // its model's folder removed while it serves (by another tab's trim, or the user clearing the site's data): what it is assigned next is stored anew
    await opfs!.evaluate(async () => {
      const weights = await (await navigator.storage.getDirectory()).getDirectoryHandle("weights");
      for await (const [model] of weights as unknown as AsyncIterable<[string, FileSystemHandle]>) await weights.removeEntry(model, { recursive: true });
    });
    await idb!.close({ runBeforeUnload: false });
    const all = 4 * 8;
    await until(() => hub.status().devices.length === 1 && hub.status().devices[0]!.ready && hub.status().devices[0]!.experts === all, "the opfs tab to take every expert");
    assert.equal(expertsOf("opfs").length, all);
  } catch (e) {
    process.stderr.write(`${lines.join("\n")}\n`);
    throw e;
  } finally {
    await browser.close();
    await bs.close();
  }
});
