// The base station's own answers to expert calls: what the experts compute, from weights loaded when
// first needed, within a bounded cache.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { openBackend } from "../../kernels/select-backend.js";
import { Checkpoint } from "../../model/checkpoint.js";
import { readModelConfig } from "../../model/config.js";
import { initModel } from "../../model/init-model.js";
import { loadExperts } from "../../model/weights.js";
import { LocalExpertExecutor } from "../../moe/local-executor.js";
import { Referee } from "./referee.js";

test("the referee answers as the experts compute, loading each when first needed and keeping no more than its cache holds", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-referee-"));
  // the kernels the referee opens for itself (the default ones), so that the answers are the same bits
  const { backend } = openBackend({ threads: 1 });
  try {
    initModel({ arch: "MixtralForCausalLM", layers: 2, hidden: 64, experts: 4, topK: 2, seed: 3, out: dir });
    const cfg = readModelConfig(dir);
    const ck = Checkpoint.open(dir);
    const all = new LocalExpertExecutor(backend, loadExperts(backend, ck, cfg, { dtype: "f32" }), cfg.hidden);
    const expertBytes = 3 * cfg.expertFfn * cfg.hidden * 4;
    const input = Float32Array.from({ length: 2 * cfg.hidden }, (_, i) => Math.sin(i));
    const order: Array<[number, number]> = [[0, 0], [1, 3], [0, 0], [1, 3], [0, 1]];
    for (const [cacheBytes, loads] of [[expertBytes, 5], [2 * expertBytes, 3]] as const) {
      const referee = new Referee(ck, cfg, "f32", cacheBytes);
      for (const [layer, expert] of order) {
        const call = { layer, expert, rows: 2, input };
        assert.deepEqual(referee.answer(call), all.compute(call).output, `expert ${expert} of layer ${layer}`);
        assert.ok(referee.bytes <= cacheBytes, `${referee.bytes} bytes held, ${cacheBytes} allowed`);
      }
      assert.equal(referee.loads, loads, `with room for ${cacheBytes / expertBytes} experts`);
      referee.close();
    }
    all.close();
    ck.close();
  } finally {
    backend.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
