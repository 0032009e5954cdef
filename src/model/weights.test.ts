import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { NativeBackend } from "../kernels/native/native-backend.js";
import { nativeSkip } from "../testing/backends.js";
import { Checkpoint } from "./checkpoint.js";
import { readModelConfig } from "./config.js";
import { initModel } from "./init-model.js";
import { loadExperts } from "./weights.js";

// A device holding every expert of a layer releases some of them when reassigned: what it frees must be
// given back then, not when the last of the layer's experts goes (allocWeights' group buffer would hold it).
test("loadExperts: a layer's experts loaded together are freed one by one, each giving its memory back", { skip: nativeSkip() }, () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-weights-"));
  const be = new NativeBackend({ threads: 1 });
  try {
    initModel({ arch: "MixtralForCausalLM", layers: 1, hidden: 64, experts: 4, topK: 2, seed: 3, fileDType: "f32", out: dir });
    const cfg = readModelConfig(dir);
    const ck = Checkpoint.open(dir);
    const before = be.memoryUsage().weights;
    const experts = loadExperts(be, ck, cfg, { dtype: "f32" })[0]!;
    ck.close();
    const expertBytes = 3 * cfg.expertFfn * cfg.hidden * 4;
    assert.equal(be.memoryUsage().weights, before + 4 * expertBytes);
    for (const x of experts.slice(1)) for (const w of [x!.gate, x!.up, x!.down]) be.freeWeight(w);
    assert.equal(be.memoryUsage().weights, before + expertBytes, "three of four experts freed");
  } finally {
    be.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
