// The browser device's in-memory weight store, in Node (no browser needed): experts loaded from it are the
// experts loaded from the checkpoint's files, byte for byte, and it tells the base station what it holds.
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
import { MemoryWeights } from "./memory-weights.js";

test("experts loaded from tensors kept in memory are those loaded from the files; checksums name what is held", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-memory-weights-"));
  const backend = new WasmBackend({ threads: 1, arenaPages: 256 });
  try {
    initModel({ arch: "MixtralForCausalLM", layers: 2, hidden: 64, experts: 4, topK: 2, seed: 7, out: dir });
    const model = openModel(dir);
    const holds = (l: number, e: number) => (l + e) % 2 === 0;
    const names = planTensors(model.config, true, holds).specs.filter((s) => s.expert).map((s) => s.name);
    const store = new MemoryWeights("m");
    const sums: Record<string, string> = {};
    for (const name of names) {
      const t = model.store.get(name)!;
      const data = readStoredTensor(t);
      sums[name] = await sha256Hex(data);
      store.put(name, t.dtype as SourceDType, t.shape as [number, number], data, sums[name]);
    }
    assert.deepEqual(store.checksums([...names, "absent.weight"]), sums, "what it holds, with the checksum each was checked against");
    const opts = { dtype: "f32" as const, holdsExpert: holds };
    const fromFiles = loadExperts(backend, model.store, model.config, opts);
    const fromMemory = loadExperts(backend, store.open(names), model.config, opts);
    model.store.close();
    let compared = 0;
    fromFiles.forEach((row, l) => row.forEach((w, e) => {
      assert.equal(w === null, !holds(l, e));
      if (!w) return;
      const m = fromMemory[l]![e]!;
      for (const part of ["gate", "up", "down"] as const) assert.deepEqual(backend.weightData(m[part]), backend.weightData(w[part]), `${part} of expert ${e}, layer ${l}`);
      compared++;
    }));
    assert.equal(compared, 4);
    assert.throws(() => store.open(["absent.weight"]), /the weights of absent.weight are not held/);
  } finally {
    backend.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
