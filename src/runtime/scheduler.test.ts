import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Engine } from "./engine.js";
import { Scheduler, type GenerationResult } from "./scheduler.js";
import { initModel } from "../model/init-model.js";
import { testBackends } from "../testing/backends.js";

for (const { backend, skip } of testBackends()) {
  test(`concurrent requests, batched step by step, each get what they get alone (${backend} kernels)`, { skip }, async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-sched-"));
    try {
      initModel({ arch: "OlmoeForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed: 8 });
      const engine = Engine.load(dir, { dtype: "f32", threads: 2, backend });
      try {
        const prompts = ["a", "bb cc", "the third prompt", "x y z", "a longer prompt than the others, by far", "six"];
        const lengths = [5, 9, 3, 12, 7, 1];
        const alone: GenerationResult[] = [];
        for (let i = 0; i < prompts.length; i++) alone.push(await engine.generate(engine.tokenizer.encode(prompts[i]!), { temperature: 0, maxTokens: lengths[i]! }));
        // a small batch limit so that requests also wait for a place
        const scheduler = new Scheduler(engine, 4);
        const streamed = prompts.map(() => [] as string[]);
        const together = await Promise.all(
          prompts.map((p, i) => scheduler.submit({ prompt: engine.tokenizer.encode(p), temperature: 0, maxTokens: lengths[i]!, onText: (piece) => streamed[i]!.push(piece) })),
        );
        together.forEach((r, i) => {
          assert.deepEqual(r.tokens, alone[i]!.tokens, `request ${i}`);
          assert.equal(streamed[i]!.join(""), r.text);
          assert.equal(r.stopReason, alone[i]!.stopReason);
        });
        assert.deepEqual(scheduler.depth, { waiting: 0, active: 0 });
        // a request aborted while it streams ends at the next step, beside one that goes on
        const abort = new AbortController();
        let pieces = 0;
        const [cancelled, other] = await Promise.all([
          scheduler.submit({ prompt: engine.tokenizer.encode("abort me"), temperature: 0, maxTokens: 50, signal: abort.signal, onText: () => ++pieces === 3 && abort.abort() }),
          scheduler.submit({ prompt: engine.tokenizer.encode(prompts[3]!), temperature: 0, maxTokens: lengths[3]! }),
        ]);
        assert.equal(cancelled.stopReason, "cancelled");
        assert.ok(cancelled.tokens.length <= 4, `stopped after ${cancelled.tokens.length} tokens`);
        assert.deepEqual(other.tokens, alone[3]!.tokens, "its neighbour is unaffected");
        assert.throws(() => scheduler.submit({ prompt: [], temperature: 0, maxTokens: 3 }), /prompt is empty/);
      } finally {
        engine.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

for (const { backend, skip } of testBackends()) {
  test(`an engine closed while requests run: each request settles, none takes the process down (${backend} kernels)`, { skip }, async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-sched-close-"));
    try {
      initModel({ arch: "OlmoeForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed: 8 });
      const engine = Engine.load(dir, { dtype: "f32", threads: 2, backend });
      let pieces = 0;
      const runs = ["first prompt", "second"].map((p) => engine.generate(engine.tokenizer.encode(p), { temperature: 0, maxTokens: 40 }, () => ++pieces === 3 && engine.close()));
      for (const r of await Promise.allSettled(runs)) {
        if (r.status === "rejected") assert.match((r.reason as Error).message, /closed/);
      }
      assert.ok(pieces >= 3);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
