// The browser device's weight store, in Node over entries kept in a Map (the page keeps them in OPFS or
// IndexedDB, storage.ts): experts loaded from it are those loaded from the checkpoint's files, byte for
// byte; it tells the base station what it holds intact; a damaged entry is reported missing and removed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { WasmBackend } from "../../kernels/wasm/wasm-backend.js";
import { readStoredTensor } from "../../model/checkpoint.js";
import { initModel } from "../../model/init-model.js";
import { openModel } from "../../model/open-model.js";
import { loadExperts, planTensors } from "../../model/weights.js";
import type { SourceDType } from "../../kernels/backend.js";
import { sha256Hex } from "../../protocol/handshake.js";
import { BrowserWeights, type Entries } from "./browser-weights.js";

function mapEntries(): Entries & { map: Map<string, { header: string; data: Uint8Array }> } {
  const map = new Map<string, { header: string; data: Uint8Array }>();
  return {
    map,
    read: async (name) => map.get(name) ?? null,
    write: async (name, header, data) => void map.set(name, { header, data: data.slice() }),
    remove: async (name) => void map.delete(name),
    has: async (name) => map.has(name),
  };
}

test("experts loaded from the browser store are those loaded from the files; checksums name what is held intact", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-browser-weights-"));
  const backend = new WasmBackend({ threads: 1, arenaPages: 256 });
  try {
    initModel({ arch: "MixtralForCausalLM", layers: 2, hidden: 64, experts: 4, topK: 2, seed: 7, out: dir });
    const model = openModel(dir);
    const holds = (l: number, e: number) => (l + e) % 2 === 0;
    const names = planTensors(model.config, true, holds).specs.filter((s) => s.expert).map((s) => s.name);
    const entries = mapEntries();
    const store = new BrowserWeights(entries, () => undefined);
    const sums: Record<string, string> = {};
    let bytes = 0;
    for (const name of names) {
      const t = model.store.get(name)!;
      const data = readStoredTensor(t);
      sums[name] = await sha256Hex(data);
      bytes += data.length;
      await store.put(name, t.dtype as SourceDType, t.shape as [number, number], data, sums[name]);
    }
    assert.equal(store.received, bytes);
    // a reopened page: a new store over the same entries holds them all
    const reopened = new BrowserWeights(entries, () => undefined);
    assert.deepEqual(await reopened.checksums([...names, "absent.weight"]), sums, "what it holds, with the checksum each was checked against");
    const opts = { dtype: "f32" as const, holdsExpert: holds };
    const fromFiles = loadExperts(backend, model.store, model.config, opts);
    const ck = await reopened.open(names);
    const fromStore = loadExperts(backend, ck, model.config, opts);
    ck.close();
    assert.equal(ck.get(names[0]!), undefined, "closing drops the bytes read");
    model.store.close();
    let compared = 0;
    fromFiles.forEach((row, l) => row.forEach((w, e) => {
      assert.equal(w === null, !holds(l, e));
      if (!w) return;
      const m = fromStore[l]![e]!;
      for (const part of ["gate", "up", "down"] as const) assert.deepEqual(backend.weightData(m[part]), backend.weightData(w[part]), `${part} of expert ${e}, layer ${l}`);
      compared++;
    }));
    assert.equal(compared, 4);
    assert.equal(reopened.received, 0, "nothing was received again");
    await assert.rejects(reopened.open(["absent.weight"]), /the weights of absent.weight are not held intact/);
  } finally {
    backend.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a damaged or foreign entry is not reported held, is removed, and cannot be opened", async () => {
  const entries = mapEntries();
  const lines: string[] = [];
  const store = new BrowserWeights(entries, (l) => lines.push(l));
  const data = new Uint8Array(16).map((_, i) => i);
  const sum = await sha256Hex(data);
  for (const name of ["flipped", "short", "dtype", "header", "intact"]) await store.put(name, "F32", [2, 2], data, sum);
  entries.map.get("flipped")!.data[3]! ^= 1;
  entries.map.get("short")!.data = data.subarray(0, 12);
  entries.map.get("dtype")!.header = entries.map.get("dtype")!.header.replace('"F32"', '"Q9_9"');
  entries.map.get("header")!.header = "{";
  assert.deepEqual(await store.checksums(["flipped", "short", "dtype", "header", "intact"]), { intact: sum });
  assert.deepEqual([...entries.map.keys()], ["intact"], "the damaged entries were removed, to be fetched again");
  assert.equal(lines.length, 4);
  assert.match(lines[0]!, /^the cached flipped is damaged \(checksum [0-9a-f]{64}, kept as [0-9a-f]{64}\): fetching it again$/);
  assert.match(lines[1]!, /\[2, 2\] F32 is not 12 bytes/);
  assert.match(lines[2]!, /dtype "Q9_9"/);
  entries.map.get("intact")!.data[0]! ^= 1;
  await assert.rejects(store.open(["intact"]), /the weights of intact are not held intact/);
});
