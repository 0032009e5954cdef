import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { CellCosts } from "../channel/cell-costs.js";
import { ChannelModel } from "../channel/channel-model.js";
import { callMs, deviceCost } from "../channel/latency.js";
import { loadScenario } from "../channel/scenario.js";
import { planTiers, TIER_POLICIES, type TierPolicyName } from "../policies/tiers.js";
import { REPO_ROOT } from "../testing/shared.js";
import { Random } from "../util/random.js";
import { cellPlanTime, cellTierPricing, CellTiers, type CellTierCosts } from "./cell-tiers.js";

const scenario = loadScenario(path.join(REPO_ROOT, "scenarios/cell-8.json"));
// brown-moe's expert in bf16; experts 0..7 of each of 2 layers on devices 0..7
const expert = { weightBytes: 3 * 256 * 512 * 2, macsPerRow: 3 * 256 * 512 };
const hosts = [0, 1].map(() => Array.from({ length: 8 }, (_, e) => [e]));
const cell = () => new CellCosts(new ChannelModel(scenario), { expert, rowBytes: 512, hosts, bandwidth: "equal" });
const bs = deviceCost(expert, scenario.bs, null);
const none = new Array<boolean>(8).fill(false);

test("in the cell, a layer's time is the later of the BS (reads, then its experts) and the slowest called device", () => {
  const c = cell(), layer = c.layerCosts(c.snapshotAt(0), 0);
  const costs: CellTierCosts = { layer, cell: c, bs, copyMs: 0.3 };
  const counts = [1, 1, 0, 0, 0, 0, 0, 1];
  const devices = cellPlanTime(costs, { fast: [], copy: [], near: [0, 1, 7], prefetch: [] }, counts);
  assert.ok(Math.abs(devices.ms - c.pairsTime(layer, [0, 1, 7]).ms) < 1e-12, "all on the devices: plain WDMoE's layer time");
  const mixed = cellPlanTime(costs, { fast: [0, 1], copy: [1], near: [7], prefetch: [3] }, counts);
  assert.ok(Math.abs(mixed.fastMs - (0.3 + 2 * callMs(bs, 1))) < 1e-12, "one read waited for, then two calls at the BS; the prefetch does not count");
  assert.ok(Math.abs(mixed.ms - Math.max(mixed.fastMs, layer.expertLatencyMs[7]!)) < 1e-12);
});

test("monde in the cell: never slower than offload or near for the step; copies the slowest device's expert first", () => {
  const c = cell(), rng = new Random(3);
  for (let trial = 0; trial < 200; trial++) {
    const layer = c.layerCosts(c.snapshotAt(trial * 50), 0);
    const costs: CellTierCosts = { layer, cell: c, bs, copyMs: 0.2 + 3 * rng.next() };
    const counts = Array.from({ length: 8 }, () => (rng.next() < 0.7 ? 0 : 1 + Math.floor(3 * rng.next())));
    const resident = none.map(() => rng.next() < 0.25);
    const t = (p: TierPolicyName) => cellPlanTime(costs, planTiers(p, { counts, resident, price: cellTierPricing(costs, counts) }), counts).ms;
    assert.ok(t("monde") <= Math.min(t("offload"), t("near")) + 1e-12, `counts ${counts}: monde ${t("monde")}, offload ${t("offload")}, near ${t("near")}`);
  }
  // two experts with one token each, the later index on the slower device: the index alone would pick the other
  const layer = c.layerCosts(c.snapshotAt(0), 0), ms = layer.expertLatencyMs;
  const [fast, slow] = [0, 1, 2, 3, 4, 5, 6, 7].flatMap((a) => [0, 1, 2, 3, 4, 5, 6, 7].filter((b) => b > a && ms[b]! > ms[a]!).map((b) => [a, b]))[0]!;
  const costs: CellTierCosts = { layer, cell: c, bs, copyMs: 1e-3 };
  const counts = none.map((_, e) => (e === fast || e === slow ? 1 : 0));
  assert.deepEqual(planTiers("monde", { counts, resident: none, price: { ...cellTierPricing(costs, counts), time: (p) => (p.copy.length > 1 ? Infinity : cellPlanTime(costs, p, counts).ms) } }).copy, [slow]);
});

test("the BS's tiers over a run: the budget holds per layer; near never holds an expert; monde's hot expert lands by the cell's clock and then runs at the BS", () => {
  const tiers = (policy: TierPolicyName, perLayer: number) => new CellTiers({ policy, budget: perLayer / 8, layers: 2, experts: 8, perLayer, expertBytes: expert.weightBytes, bs, store: { delayMs: 0.1, gbps: 0.05 }, moeLayers: 2, window: 32 });
  const rng = new Random(9);
  const tokens = Array.from({ length: 400 }, () => [rng.next() < 0.6 ? 3 : Math.floor(8 * rng.next()), Math.floor(8 * rng.next())].filter((e, i, a) => a.indexOf(e) === i));
  for (const policy of TIER_POLICIES) {
    const c = cell(), t = tiers(policy, 2);
    let landedAt = -1;
    tokens.forEach((pairs, i) => {
      const ms = i * 20;
      const decision = { rows: 1, offsets: Int32Array.from([0, pairs.length]), experts: Int32Array.from(pairs), weights: new Float32Array(pairs.length) };
      const r = t.step(0, ms, decision, c.layerCosts(c.snapshotAt(ms), 0), c);
      const held = t.held(0, ms);
      assert.ok(held.filter(Boolean).length <= 2, `${policy}: at most 2 experts held`);
      if (policy === "near") assert.ok(!held.includes(true) && r.plan.fast.length === 0);
      if (policy === "monde" && landedAt < 0 && held[3]) landedAt = i;
      if (policy === "monde" && landedAt >= 0 && pairs.includes(3)) assert.ok(r.plan.fast.includes(3) && !r.plan.copy.includes(3), "the hot expert runs at the BS, uncopied");
    });
    if (policy === "monde") {
      // the hot expert's read takes 2 layers × 786 KB at 0.05 GB/s ≈ 31 ms on the cell's clock: it lands a few tokens after it is asked for
      assert.ok(landedAt > 0 && t.totals.prefetches >= 1, `monde prefetched the hot expert (landed at token ${landedAt})`);
      assert.ok(t.totals.bsCalls > 0.4 * t.totals.calls, `most of the hot expert's calls ran at the BS (${t.totals.bsCalls} of ${t.totals.calls})`);
    }
  }
  assert.throws(() => tiers("monde", 0), /holds no expert per layer/);
});
