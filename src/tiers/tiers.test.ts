import { test } from "node:test";
import assert from "node:assert/strict";
import { planTiers, TIER_POLICIES } from "../policies/tiers.js";
import { Random } from "../util/random.js";
import { breakEvenTokens, copyMs, paybackCalls, planTime, tierCosts, tierPricing } from "./cost-model.js";
import { ExpertCache } from "./expert-cache.js";
import { parseModelConfig } from "../model/config.js";
import type { ExpertCall } from "../moe/executor.js";
import type { DeviceHub } from "../runtime/device-hub.js";
import { hubTiers, LINK_MEASURE_TRIES, nearSpeed } from "./hub-tiers.js";
import { LoadWindow } from "./load-window.js";

// brown-moe's expert in bf16 (3 × 256 × 512), a link of 1 GB/s, a fast tier computing 10× faster than the near one
const expert = { weightBytes: 3 * 256 * 512 * 2, macsPerRow: 3 * 256 * 512 };
const costs = tierCosts(expert, 512, { gbps: 1, delayMs: 0.01 }, { gflops: 50, readGbps: 10 }, { gflops: 5, readGbps: 10 });
const none = new Array<boolean>(8).fill(false);
const counts = (...c: number[]) => [...c, ...new Array<number>(8 - c.length).fill(0)];

test("the cost model: copying costs the weights over the link, near costs the rows both ways; the break-even lies between", () => {
  assert.ok(Math.abs(copyMs(costs) - (0.01 + expert.weightBytes / 1e6)) < 1e-12);
  const n = breakEvenTokens(costs);
  assert.ok(n > 1 && n < 100, `break-even at ${n} tokens`);
  const one = (e: number, plan: "fast" | "near", c: number[]) => planTime(costs, plan === "fast" ? { fast: [e], copy: [e], near: [], prefetch: [] } : { fast: [], copy: [], near: [e], prefetch: [] }, c).ms;
  assert.ok(one(0, "fast", counts(n)) < one(0, "near", counts(n)) && one(0, "fast", counts(n - 1)) >= one(0, "near", counts(n - 1)));
  assert.equal(breakEvenTokens(tierCosts(expert, 512, { gbps: 1, delayMs: 0 }, { gflops: 1, readGbps: 10 }, { gflops: 5, readGbps: 10 })), Infinity, "never, when fast computes slower");
});

test("with a store, copies cost the store's read and the link carries only rows", () => {
  const stored = tierCosts(expert, 512, { gbps: 1, delayMs: 0.01 }, { gflops: 50, readGbps: 10 }, { gflops: 5, readGbps: 10 }, { gbps: 4, delayMs: 0 });
  assert.ok(Math.abs(copyMs(stored) - expert.weightBytes / 4e6) < 1e-12);
  const c = counts(1, 1);
  const t = planTime(stored, { fast: [0], copy: [0], near: [1], prefetch: [] }, c);
  assert.ok(Math.abs(t.linkMs - Math.max((2 * 512) / 1e6, expert.weightBytes / 4e6)) < 1e-12, "the longer of the rows over the link and the weights from the store");
  assert.ok(breakEvenTokens(stored) < breakEvenTokens(costs), "a faster source pays sooner");
});

test("monde copies an expert with many tokens and computes one with few near; offload copies all, near copies none; residents are never copied", () => {
  assert.deepEqual(planTiers("monde", { counts: counts(200), resident: none, price: tierPricing(costs, counts(200)) }), { fast: [0], copy: [0], near: [], prefetch: [] });
  assert.deepEqual(planTiers("monde", { counts: counts(1), resident: none, price: tierPricing(costs, counts(1)) }), { fast: [], copy: [], near: [0], prefetch: [] });
  const mixed = counts(3, 200, 1, 0, 150);
  assert.deepEqual(planTiers("monde", { counts: mixed, resident: none, price: tierPricing(costs, mixed) }).near.sort(), [0, 2]);
  assert.deepEqual(planTiers("offload", { counts: mixed, resident: none, price: tierPricing(costs, mixed) }), { fast: [1, 4, 0, 2], copy: [1, 4, 0, 2], near: [], prefetch: [] });
  assert.deepEqual(planTiers("near", { counts: mixed, resident: none, price: tierPricing(costs, mixed) }), { fast: [], copy: [], near: [1, 4, 0, 2], prefetch: [] });
  const resident = none.map((_, e) => e === 1);
  for (const p of TIER_POLICIES) {
    const plan = planTiers(p, { counts: mixed, resident, price: tierPricing(costs, mixed) });
    assert.ok(plan.fast.includes(1) && !plan.copy.includes(1) && !plan.near.includes(1), `${p}: the resident expert runs fast, uncopied`);
  }
});

test("monde prefetches the expert most used lately once its load beats the displaced one's by the copy's payback, when the link has room", () => {
  const one = counts(1, 1, 0, 0, 0, 0, 0, 400);
  const payback = paybackCalls(costs);
  const window = (load0: number, displaced: number) => ({ load: counts(load0, 2), displaced });
  assert.deepEqual(planTiers("monde", { counts: one, resident: none, price: tierPricing(costs, one), window: window(payback, 0) }).prefetch, [0]);
  assert.deepEqual(planTiers("monde", { counts: one, resident: none, price: tierPricing(costs, one), window: window(payback - 1, 0) }).prefetch, [], "its load has not paid yet");
  assert.deepEqual(planTiers("monde", { counts: one, resident: none, price: tierPricing(costs, one), window: window(payback + 3, 4) }).prefetch, [], "not enough above the expert it would push out");
  assert.deepEqual(planTiers("monde", { counts: one, resident: none, price: tierPricing(costs, one), window: window(payback + 3, Infinity) }).prefetch, [], "nothing can make room");
  assert.deepEqual(planTiers("monde", { counts: counts(1, 1), resident: none, price: tierPricing(costs, counts(1, 1)), window: window(payback, 0) }).prefetch, [], "the copy would outlast the layer");
});

test("monde's layer time is never above offload's or near's, on random loads and residencies", () => {
  const rng = new Random(5);
  for (let trial = 0; trial < 300; trial++) {
    const c = counts(...Array.from({ length: 8 }, () => (rng.next() < 0.3 ? 0 : Math.floor(rng.next() ** 3 * 300))));
    const resident = none.map(() => rng.next() < 0.25);
    const t = (p: (typeof TIER_POLICIES)[number]) => planTime(costs, planTiers(p, { counts: c, resident, price: tierPricing(costs, c) }), c).ms;
    assert.ok(t("monde") <= Math.min(t("offload"), t("near")) + 1e-12, `counts ${c}: monde ${t("monde")} vs offload ${t("offload")}, near ${t("near")}`);
  }
});

test("the expert cache never exceeds its budget; LRU evicts the least recent, load eviction the least loaded; pinned experts stay", () => {
  const freed: string[] = [];
  const lru = new ExpertCache<string>(3.5 * 100, 100, "lru", (v) => freed.push(v));
  assert.equal(lru.capacity, 3);
  for (const e of [0, 1, 2]) lru.admit(0, e, () => `e${e}`);
  lru.use(0, 0);
  lru.admit(0, 3, () => "e3");
  assert.deepEqual(freed, ["e1"], "expert 1 was used least recently");
  const rng = new Random(2);
  for (let i = 0; i < 200; i++) {
    lru.admit(rng.nextU32() % 4, rng.nextU32() % 8, () => "x", (l, e) => l === 0 && e === 3);
    assert.ok(lru.bytes <= lru.budgetBytes && lru.has(0, 3));
  }
  const loads = new Map([["0:0", 50], ["0:1", 5], ["0:2", 20]]);
  const byLoad = new ExpertCache<number>(300, 100, "load", () => undefined, (l, e) => loads.get(`${l}:${e}`) ?? 0);
  for (const e of [0, 1, 2]) byLoad.admit(0, e, () => e);
  byLoad.use(0, 1);
  byLoad.admit(0, 5, () => 5);
  assert.deepEqual(byLoad.held().map(([, e]) => e).sort(), [0, 2, 5], "the least loaded (1) went, though it was used last");
  assert.throws(() => new ExpertCache<number>(50, 100, "lru", () => undefined).admit(0, 0, () => 0), /holds no expert/);
  assert.throws(() => byLoad.admit(1, 1, () => 1, () => true), /full of experts still in use/);
});

test("the load window counts the last `window` steps only", () => {
  const w = new LoadWindow(2, 4, 3);
  w.add(1, 2, 5);
  w.nextStep();
  w.add(1, 2, 1);
  w.nextStep();
  assert.equal(w.load(1, 2), 6);
  w.nextStep();
  assert.equal(w.load(1, 2), 1, "step 0 has left the window");
  w.nextStep();
  assert.equal(w.load(1, 2), 0);
  assert.equal(w.load(0, 2), 0);
  assert.throws(() => new LoadWindow(1, 1, 0), /whole number of steps/);
});

test("the near tier's speed is the slowest device's; a device that claims a rate of 0 does not make the near tier free", () => {
  assert.deepEqual(nearSpeed([{ gflops: 40, readGbps: 8 }, { gflops: 10, readGbps: 20 }]), { gflops: 10, readGbps: 8 });
  assert.deepEqual(nearSpeed([{ gflops: 0, readGbps: 0 }, { gflops: 10, readGbps: 20 }]), { gflops: 10, readGbps: 20 });
});

test("measuring the devices' link takes a failed sample again (a device leaving meanwhile), and gives up with what to do after LINK_MEASURE_TRIES", async () => {
  const cfg = parseModelConfig({ architectures: ["MixtralForCausalLM"], vocab_size: 64, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 2, num_local_experts: 4, num_experts_per_tok: 2 }, "test");
  /** a hub whose first `failing` copies fail, as when the device holding the expert has just left */
  const hub = (failing: number) => {
    let copies = 0;
    return {
      placed: ["d0"],
      capabilitiesOf: () => ({ gflops: 10, readGbps: 5 }),
      pullExpert: async () => {
        if (copies++ < failing) throw new Error("no ready device holds expert 0 of layer 0");
        return { payload: new Uint8Array(4096) };
      },
      executor: { dispatch: (calls: readonly ExpertCall[]) => calls.map((c) => Promise.resolve({ output: new Float32Array(c.rows * 16), computeMs: 0.1, roundTripMs: 0.3 })) },
    } as unknown as DeviceHub;
  };
  const opts = { policy: "monde" as const, budgetFraction: 0.25, window: 8, weightDType: "f32" as const, wireDType: "f32" as const, link: null, store: null, linkPauseMs: () => 0 };
  const tiers = await hubTiers(hub(2), cfg, opts);
  assert.equal(tiers.link.emulated, false);
  assert.ok(tiers.link.gbps > 0 && Math.abs(tiers.link.delayMs - 0.1) < 1e-9, `measured ${JSON.stringify(tiers.link)}`);
  await assert.rejects(hubTiers(hub(LINK_MEASURE_TRIES), cfg, opts), /cannot measure the devices' link .*no ready device.*give --link with a rate/);
});
