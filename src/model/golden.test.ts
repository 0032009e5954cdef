// brown-moe (a real trained Mixtral checkpoint) against ../shared/golden, an independent float64
// PyTorch implementation of the Hugging Face semantics: ids, logits, routing, greedy continuations
// and perplexity, at the tolerances ../shared/golden/README.md states.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Engine } from "../runtime/engine.js";
import { SafetensorsFile } from "./safetensors.js";
import { perplexity, protocolTokens } from "../eval/perplexity.js";
import { sharedPath } from "../testing/shared.js";
import type { RoutingRecord } from "../moe/trace.js";
import { testBackends } from "../testing/backends.js";

const model = sharedPath("models/brown-moe");
const golden = sharedPath("golden/brown-moe.safetensors");
const corpus = sharedPath("corpus/brown/valid.txt");
const skip = model.skip || golden.skip || corpus.skip;

for (const { backend, skip: kernelsSkip } of testBackends()) {
  test(`brown-moe in f32: ids, logits, routing and greedy continuations match the golden reference (${backend} kernels)`, { skip: skip || kernelsSkip }, async (t) => {
    const g = SafetensorsFile.open(golden.path);
    const records: RoutingRecord[] = [];
    const engine = Engine.load(model.path, { dtype: "f32", backend, trace: { record: (r) => records.push(r) } });
    try {
      const prompts = JSON.parse(g.metadata.prompts!) as string[];
      assert.equal(prompts.length, 4);
      for (let i = 0; i < prompts.length; i++) {
        const ids = engine.tokenizer.encode(prompts[i]!);
        assert.deepEqual(ids, Array.from(g.readI32(`p${i}.ids`)), `prompt ${i} ids`);
        const T = ids.length;
        records.length = 0;
        const cache = engine.model.newSequence();
        const [logits] = await engine.model.forward([{ cache, tokens: ids, logits: "all" }]);
        cache.free();
        const want = g.readF32(`p${i}.logits`);
        let maxErr = 0;
        for (let j = 0; j < want.length; j++) maxErr = Math.max(maxErr, Math.abs(want[j]! - logits![j]!));
        assert.ok(maxErr <= 1e-3, `prompt ${i}: logits max abs error ${maxErr}`);
        t.diagnostic(`prompt ${i}: logits max abs error ${maxErr.toExponential(2)}`);

        const routerLogits = g.readF32(`p${i}.router_logits`), experts = g.readI32(`p${i}.experts`), weights = g.readF32(`p${i}.expert_weights`);
        assert.equal(records.length, engine.config.layers);
        for (const r of records) {
          for (let t = 0; t < T; t++) {
            for (let e = 0; e < 8; e++) {
              assert.ok(Math.abs(r.router.logits[t * 8 + e]! - routerLogits[(r.layer * T + t) * 8 + e]!) <= 1e-3, `prompt ${i} layer ${r.layer} router logit`);
            }
            for (let k = 0; k < 2; k++) {
              const at = (r.layer * T + t) * 2 + k;
              assert.equal(r.decision.experts[t * 2 + k], experts[at], `prompt ${i} layer ${r.layer} token ${t} expert ${k}`);
              assert.ok(Math.abs(r.decision.weights[t * 2 + k]! - weights[at]!) <= 1e-4, `prompt ${i} layer ${r.layer} token ${t} weight ${k}`);
            }
          }
        }
        const greedy = await engine.generate(ids, { temperature: 0, maxTokens: 32 });
        assert.deepEqual(greedy.tokens, Array.from(g.readI32(`p${i}.greedy`)), `prompt ${i} greedy continuation`);
      }
    } finally {
      engine.close();
      g.close();
    }
  });

  for (const [dtype, tolerance] of [["f32", 0.0005], ["q8", 0.01], ["q4", 0.02]] as const) {
    test(`brown-moe perplexity in ${dtype} is within ${tolerance * 100}% of the golden figure (${backend} kernels)`, { skip: skip || kernelsSkip }, async (t) => {
      const g = SafetensorsFile.open(golden.path);
      const engine = Engine.load(model.path, { dtype, backend });
      try {
        const n = Number(g.metadata.ppl_tokens);
        const tokens = protocolTokens(engine.tokenizer, readFileSync(corpus.path, "utf8"), n + 1);
        const r = await perplexity(engine.model, tokens);
        const want = Number(g.metadata.ppl);
        assert.equal(r.tokens, n);
        t.diagnostic(`perplexity ${r.perplexity.toFixed(6)} (golden ${want.toFixed(6)}, ${(100 * (r.perplexity / want - 1)).toFixed(4)}%)`);
        assert.ok(Math.abs(r.perplexity / want - 1) <= tolerance, `perplexity ${r.perplexity} vs golden ${want}`);
      } finally {
        engine.close();
        g.close();
      }
    });
  }
}
