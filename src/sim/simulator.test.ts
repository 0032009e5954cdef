import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { loadScenario } from "../channel/scenario.js";
import { parseModelConfig } from "../model/config.js";
import { REPO_ROOT } from "../testing/shared.js";
import { Random } from "../util/random.js";
import { EventQueue } from "./event-queue.js";
import { traceRouting } from "./routing-source.js";
import { simulateAll } from "./parallel.js";
import { scaleScenario, simulate, type SimOptions, type SimReport } from "./simulator.js";

test("the event queue pops in time order", () => {
  const q = new EventQueue(), rng = new Random(3), times: number[] = [];
  for (let i = 0; i < 1000; i++) {
    const t = rng.next() * 100;
    times.push(t);
    q.push(t, i);
  }
  let last = -Infinity;
  while (q.size > 0) {
    const t = q.peekTime(), id = q.pop();
    assert.ok(t >= last && times[id] === t);
    last = t;
  }
});

const cfg = parseModelConfig(JSON.parse(readFileSync(path.join(REPO_ROOT, "configs/mixtral-8x7b.json"), "utf8")));
const scenario = loadScenario(path.join(REPO_ROOT, "scenarios/cell-8.json"));
const opts = (o: Partial<SimOptions>): SimOptions => ({
  cfg, scenario, weightDType: "bf16", wireDType: "bf16", replicas: 1, spec: { name: "topk" }, routing: { synthetic: { seed: 2 } }, users: 4, tokensPerUser: 8, slotMs: 5, ...o,
});

test("simulate Mixtral-8x7B on the cell: every token passes every layer; dropping experts shortens tokens; more users queue", () => {
  const top = simulate(opts({}));
  assert.equal(top.tokens, 32);
  assert.equal(top.expert_calls, 32 * 32 * 2, "top-2 in 32 layers");
  assert.ok(top.latency_ms.p50 <= top.latency_ms.p95 && top.latency_ms.p95 <= top.latency_ms.p99);
  assert.ok(top.device_busy.every((b) => b >= 0 && b <= 1));
  const wlr = simulate(opts({ spec: { name: "wlr", theta: 0.9 } }));
  assert.ok(wlr.experts_per_token < 2 && wlr.dropped_gate_mass > 0);
  assert.ok(wlr.latency_ms.mean < top.latency_ms.mean, `wlr ${wlr.latency_ms.mean.toFixed(1)} ms vs top-k ${top.latency_ms.mean.toFixed(1)} ms`);
  const crowded = simulate(opts({ users: 32, tokensPerUser: 2 }));
  assert.ok(crowded.latency_ms.mean > top.latency_ms.mean, "queues at the devices");
  const wide = scaleScenario(scenario, 64);
  assert.equal(new Set(wide.devices.map((d) => d.name)).size, 64);
  assert.equal(simulate(opts({ scenario: wide })).tokens, 32);
});

test("a routing trace replays its recorded experts and weights, and a bad one is refused with its line", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "distmoe-trace-"));
  const file = path.join(dir, "trace.jsonl");
  writeFileSync(file, [0, 1].map((layer) => JSON.stringify({ step: 0, layer, tokens: [{ position: 0, experts: [3, 5], weights: [0.7, 0.3] }] })).join("\n") + "\n");
  const { router: r, top } = traceRouting(file, 8, { topK: 2, normalize: true }).next(7);
  assert.equal(r.layer, 7);
  assert.deepEqual([r.probs[3], r.probs[5], r.probs[0]], [Math.fround(0.7), Math.fround(0.3), 0]);
  assert.deepEqual([...top.experts], [3, 5]);
  writeFileSync(file, '{"layer": 0, "tokens": [{"experts": [9, 1], "weights": [0.5, 0.5]}]}\n');
  assert.throws(() => traceRouting(file, 8, { topK: 2, normalize: true }), /trace.jsonl:1: a token's experts must be integers below 8/);
  writeFileSync(file, '{"layer": 0, "tokens": [{"experts": [1], "weights": [1]}]}\n');
  assert.throws(() => traceRouting(file, 8, { topK: 2, normalize: true }), /record the trace with --policy topk/);
});

test("a sweep on worker processes gives the same reports as one run after another, and a run's error comes back", async () => {
  const runs = [opts({}), opts({ spec: { name: "wlr", theta: 0.5 } }), opts({ spec: { name: "deadline", budgetMs: 40 } })];
  const timeless = ({ wall_s, calls_per_wall_s, ...r }: SimReport) => (assert.ok(wall_s > 0 && calls_per_wall_s > 0), r);
  assert.deepEqual((await simulateAll(runs, 2)).map(timeless), runs.map(simulate).map(timeless));
  await assert.rejects(simulateAll([opts({}), opts({ routing: { trace: "/nonexistent/trace.jsonl" } })], 2), /cannot read the routing trace \/nonexistent\/trace.jsonl: ENOENT/);
});

test("simulate with a BS budget: near is plain WDMoE; monde keeps hot experts at the BS and shortens tokens; offload's reads dwarf the radio at Mixtral's size", () => {
  const o = (tiers?: SimOptions["tiers"]) => simulate(opts({ users: 1, tokensPerUser: 48, tiers }));
  const plain = o();
  const tiers = (policy: "near" | "monde" | "offload") => o({ policy, budget: 0.5, window: 64 });
  const near = tiers("near"), monde = tiers("monde"), offload = tiers("offload");
  assert.deepEqual([near.latency_ms, near.tiers!.bs_share], [plain.latency_ms, 0]);
  assert.equal(plain.tiers, null);
  assert.ok(monde.tiers!.bs_share > 0.1 && monde.tiers!.prefetches_per_token > 0, `monde: ${JSON.stringify(monde.tiers)}`);
  assert.ok(monde.latency_ms.mean < plain.latency_ms.mean, `monde ${monde.latency_ms.mean} ms against plain ${plain.latency_ms.mean} ms`);
  assert.ok(offload.tiers!.bs_share === 1 && offload.latency_ms.mean > 2 * plain.latency_ms.mean, "a 352 MB expert read at 3 GB/s takes longer than a radio round trip");
  assert.equal(monde.expert_calls, plain.expert_calls, "the tiers move calls, they do not drop them");
});
