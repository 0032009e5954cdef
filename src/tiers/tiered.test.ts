// MoNDE on the real runtime: the base station's fast tier with a budget, the near tier in its own process.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { TIER_POLICIES } from "../policies/tiers.js";
import { Engine } from "../runtime/engine.js";
import { sharedPath } from "../testing/shared.js";
import { ExpertStore } from "./expert-store.js";
import { startTiered } from "./tiered-runtime.js";

const model = sharedPath("models/brown-moe");
const corpus = sharedPath("corpus/brown/valid.txt");
const quiet = () => undefined;

test("offload, near and monde give the single-process greedy tokens; the fast tier stays within its budget", { skip: model.skip || corpus.skip }, async () => {
  const text = readFileSync(corpus.path, "utf8").slice(0, 2000);
  const single = Engine.load(model.path, { dtype: "bf16" });
  const prompt = single.tokenizer.encode(text).slice(0, 96);
  const want = (await single.generate(prompt, { temperature: 0, maxTokens: 12 })).tokens;
  single.close();
  for (const policy of TIER_POLICIES) {
    let overBudget = 0, fastCalls = 0, nearCalls = 0;
    const setup = await startTiered({
      model: model.path, policy, budgetFraction: 0.25, weightDType: "bf16", wireDType: "f32", link: null, log: quiet,
      onLayer: (r) => {
        fastCalls += r.fast.length;
        nearCalls += r.near.length;
        // reports come only from generate below, once setup is assigned
        if (setup.tiers.budget.usedBytes > setup.tiers.budget.bytes) overBudget++;
      },
    });
    try {
      const got = (await setup.engine.generate(prompt, { temperature: 0, maxTokens: 12 })).tokens;
      assert.deepEqual(got, want, `${policy}: the same greedy tokens as one process`);
      assert.equal(overBudget, 0);
      assert.ok(setup.tiers.budget.usedBytes <= setup.tiers.budget.bytes && setup.tiers.budget.experts === 8, "25 % of 32 experts");
      const t = setup.tiers.totals;
      if (policy === "offload") assert.ok(t.nearCalls === 0 && t.copies > 0 && t.weightBytes > 0, "offload copies every expert it has not got");
      if (policy === "near") assert.ok(t.fastCalls === 0 && t.copies === 0 && t.weightBytes === 0 && t.activationBytes > 0, "near moves activations only");
      assert.ok(fastCalls + nearCalls > 0);
    } finally {
      await setup.close();
    }
  }
});

test("copies from the store: offload and monde read experts from the checkpoint and give the same greedy tokens; a dtype the checkpoint does not hold is refused", { skip: model.skip || corpus.skip }, async () => {
  const text = readFileSync(corpus.path, "utf8").slice(0, 2000);
  const single = Engine.load(model.path, { dtype: "bf16" });
  const prompt = single.tokenizer.encode(text).slice(0, 64);
  const want = (await single.generate(prompt, { temperature: 0, maxTokens: 8 })).tokens;
  const cfg = single.config;
  single.close();
  const store = ExpertStore.open(model.path, cfg, "bf16");
  try {
    const held = await store.read(1, 5);
    assert.deepEqual(held.shapes, [[cfg.expertFfn, cfg.hidden], [cfg.expertFfn, cfg.hidden], [cfg.hidden, cfg.expertFfn]]);
    assert.equal(held.payload.length, 3 * cfg.expertFfn * cfg.hidden * 2);
  } finally {
    store.close();
  }
  assert.throws(() => ExpertStore.open(model.path, cfg, "f32"), /stores its experts as BF16.*--dtype bf16/);
  for (const policy of ["offload", "monde"] as const) {
    const setup = await startTiered({ model: model.path, policy, budgetFraction: 0.25, weightDType: "bf16", wireDType: "f32", link: null, copyFrom: "store", log: quiet });
    try {
      assert.ok(setup.store && setup.store.gbps > 0 && setup.tiers.costs.store, "the store's rate is measured and modelled");
      const got = (await setup.engine.generate(prompt, { temperature: 0, maxTokens: 8 })).tokens;
      assert.deepEqual(got, want, `${policy}: the same greedy tokens with copies from the store`);
      if (policy === "offload") assert.ok(setup.tiers.totals.copies > 0 && setup.tiers.totals.nearCalls === 0);
    } finally {
      await setup.close();
    }
  }
});
