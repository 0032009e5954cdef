import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { loadScenario } from "../channel/scenario.js";
import { Engine } from "../runtime/engine.js";
import { REPO_ROOT, sharedPath } from "../testing/shared.js";
import { perplexity, protocolTokens } from "./perplexity.js";
import { headlines, sweepCsv, tradeoffPicture } from "./sweep.js";
import type { PolicySpec } from "../policies/registry.js";
import { WirelessEval, type EvalReport } from "./wireless-eval.js";
import type { BsTierSpec } from "../tiers/cell-tiers.js";

const model = sharedPath("models/brown-moe");
const corpus = sharedPath("corpus/brown/valid.txt");

test("eval on brown-moe: top-k is the model's own perplexity; wlr at θ = 0 is top-k; dropping experts lowers the modelled latency", { skip: model.skip || corpus.skip }, async () => {
  let harness: WirelessEval | null = null;
  const engine = Engine.load(model.path, { policy: (r, c) => harness!.policy(r, c) });
  const plain = Engine.load(model.path);
  try {
    harness = new WirelessEval({ cfg: engine.config, scenario: loadScenario(path.join(REPO_ROOT, "scenarios/cell-8.json")), weightDType: "bf16", wireDType: "f16", replicas: 1, tokenMs: 20 });
    const tokens = protocolTokens(engine.tokenizer, readFileSync(corpus.path, "utf8"), 513);
    const run = (spec: Parameters<WirelessEval["evaluate"]>[2], band: "equal" | "optimal" = "equal") => harness!.evaluate(engine.model, tokens, spec, { bandwidth: band });
    const top = await run({ name: "topk" });
    assert.equal(top.perplexity, (await perplexity(plain.model, tokens)).perplexity);
    assert.equal(top.experts_per_token, 2);
    assert.equal(top.dropped_gate_mass, 0);
    const b = top.breakdown_ms;
    assert.ok(Math.abs(b.bs_compute + b.down + b.device_compute + b.up - top.latency_ms.mean) < 1e-9 * top.latency_ms.mean, "the breakdown adds up");
    assert.ok(top.latency_ms.p50 <= top.latency_ms.p95);

    const same = (a: EvalReport, c: EvalReport) => assert.deepEqual([a.perplexity, a.latency_ms, a.breakdown_ms], [c.perplexity, c.latency_ms, c.breakdown_ms]);
    same(await run({ name: "wlr", theta: 0 }), top);
    const topOptimal = await run({ name: "topk" }, "optimal");
    assert.ok(topOptimal.latency_ms.mean < top.latency_ms.mean, "the optimal split beats the static one");
    same(await run({ name: "joint", theta: 0 }), topOptimal);

    for (const r of [await run({ name: "wlr", theta: 0.5 }), await run({ name: "joint", theta: 0.7 }, "optimal"), await run({ name: "deadline", budgetMs: top.latency_ms.mean })]) {
      assert.ok(r.experts_per_token < 2 && r.dropped_gate_mass > 0, `${r.policy} drops experts`);
      assert.ok(r.latency_ms.mean < (r.bandwidth === "optimal" ? topOptimal : top).latency_ms.mean, `${r.policy} is faster than top-k on the same band`);
      assert.ok(r.perplexity > top.perplexity * 0.98 && Number.isFinite(r.perplexity));
    }
  } finally {
    engine.close();
    plain.close();
  }
});

test("eval with the BS's tiers: outputs unchanged; near is plain WDMoE; monde keeps hot experts at the BS and lowers latency where offload raises it", { skip: model.skip || corpus.skip }, async () => {
  let harness: WirelessEval | null = null;
  const engine = Engine.load(model.path, { policy: (r, c) => harness!.policy(r, c) });
  try {
    harness = new WirelessEval({ cfg: engine.config, scenario: loadScenario(path.join(REPO_ROOT, "scenarios/cell-8.json")), weightDType: "bf16", wireDType: "f16", replicas: 1, tokenMs: 20 });
    const tokens = protocolTokens(engine.tokenizer, readFileSync(corpus.path, "utf8"), 513);
    const run = (tiers?: BsTierSpec, spec: PolicySpec = { name: "topk" }) => harness!.evaluate(engine.model, tokens, spec, { bandwidth: "equal", tiers });
    const plain = await run();
    const at = (policy: BsTierSpec["policy"], storeGbps: number) => run({ policy, budget: 0.25, window: 64, storeGbps });
    const near = await at("near", 0.2), monde = await at("monde", 0.2), offload = await at("offload", 0.2);
    assert.deepEqual([near.latency_ms, near.tiers!.bs_share], [plain.latency_ms, 0], "near: every expert on its device, as without tiers");
    for (const r of [near, monde, offload]) {
      assert.equal(r.perplexity, plain.perplexity, `${r.tiers!.policy} moves work, not results`);
      const b = r.breakdown_ms;
      assert.ok(Math.abs(b.bs_compute + b.down + b.device_compute + b.up + b.bs_experts - r.latency_ms.mean) < 1e-9 * r.latency_ms.mean, "the breakdown adds up");
    }
    assert.ok(monde.tiers!.bs_share > 0.1 && monde.tiers!.prefetches_per_token > 0, `monde keeps hot experts at the BS (${monde.tiers!.bs_share} of the calls)`);
    assert.ok(monde.latency_ms.mean < plain.latency_ms.mean && offload.latency_ms.mean > plain.latency_ms.mean, `monde ${monde.latency_ms.mean} ms, offload ${offload.latency_ms.mean} ms, plain ${plain.latency_ms.mean} ms`);
    for (const spec of [{ name: "wlr", theta: 0.5 }, { name: "joint", theta: 0.5 }] as const) {
      const [withTiers, without] = [await run({ policy: "monde", budget: 0.25, window: 64, storeGbps: 0.2 }, spec), await run(undefined, spec)];
      assert.deepEqual([withTiers.perplexity, withTiers.dropped_gate_mass], [without.perplexity, without.dropped_gate_mass], `${spec.name} chooses as in plain WDMoE`);
      assert.ok(withTiers.latency_ms.mean < without.latency_ms.mean, `${spec.name}: the BS's hot experts save time`);
    }
  } finally {
    engine.close();
  }
});

test("sweep outputs: CSV with a header and a row per point; headlines against the baseline; an SVG with every series", () => {
  const report = (policy: string, theta: number | null, ppl: number, ms: number): EvalReport => ({
    policy, theta, budget_ms: null, bandwidth: "equal", scenario: "s", tokens: 10, perplexity: ppl, accuracy: 0.3, experts_per_token: 2, dropped_gate_mass: 0,
    latency_ms: { mean: ms, p50: ms, p95: ms }, breakdown_ms: { bs_compute: 0, down: ms / 2, device_compute: 0, up: ms / 2, bs_experts: 0 }, policy_us: 1, tiers: null,
  });
  const points = [
    { series: "topk, equal band", report: report("topk", null, 100, 10) },
    { series: "wlr, equal band", report: report("wlr", 0.1, 100.5, 8) },
    { series: "wlr, equal band", report: report("wlr", 0.5, 104, 6) },
    { series: "wlr, equal band", report: report("wlr", 0.9, 110, 4) },
  ];
  const csv = sweepCsv(points).trim().split("\n");
  assert.equal(csv.length, 5);
  assert.ok(csv[0]!.startsWith("series,policy,theta"));
  const h = headlines(points).find((x) => x.series === "wlr, equal band")!;
  assert.ok(Math.abs(h.within1pct!.reduction - 0.2) < 1e-12 && Math.abs(h.within5pct!.reduction - 0.4) < 1e-12);
  const svg = tradeoffPicture(points, "s");
  assert.ok(svg.startsWith("<svg") && svg.includes("wlr, equal band") && (svg.match(/<circle/g) ?? []).length === 4 + 2);
});
