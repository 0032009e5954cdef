import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { initModel } from "../model/init-model.js";
import { makePolicy } from "../policies/registry.js";
import { Engine } from "../runtime/engine.js";
import { ServerMetrics } from "./metrics.js";
import type { DeviceStatus } from "../runtime/hub/status.js";

test("a departed device's metric series are removed; the others stay", async () => {
  const zero = { calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 };
  const m = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => zero);
  m.deviceCall("d0", 2, 100, 200);
  m.deviceCall("d1", 3, 100, 200);
  m.removeDevice("d0");
  const text = await m.text();
  assert.doesNotMatch(text, /device="d0"/);
  assert.match(text, /distmoe_device_call_seconds_count\{device="d1"\} 1/);
  assert.match(text, /distmoe_device_bytes_total\{device="d1",direction="received"\} 200/);
});

test("a user agent is a peer's text: quotes, backslashes and braces in it stay inside its label (one series, one line); the longest one a hello may carry fits", async () => {
  const zero = { calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 };
  const m = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => zero);
  const hostile = 'x" } distmoe_fake{a="1"} 1 \\';
  const longest = "M".repeat(256);
  const tab = (name: string, userAgent: string): DeviceStatus => ({ name, ready: true, quarantined: false, calls: 0, experts: 0, weightBytes: 0, kind: "browser", userAgent, gflops: 1, leaving: false });
  m.describeDevices(() => [tab("t1", hostile), tab("t2", longest)]);
  const text = await m.text();
  assert.ok(text.split("\n").includes('distmoe_device_info{device="t1",kind="browser",user_agent="x\\" } distmoe_fake{a=\\"1\\"} 1 \\\\"} 1'), "escaped, on its own line");
  assert.ok(text.split("\n").includes(`distmoe_device_info{device="t2",kind="browser",user_agent="${longest}"} 1`));
  assert.doesNotMatch(text, /^distmoe_fake/m, "no series of the peer's making");
});

test("each device's compute rate is a series labelled with what computes (and a WebGPU adapter's name, escaped like a user agent)", async () => {
  const zero = { calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 };
  const m = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => zero);
  const base = { ready: true, quarantined: false, calls: 0, experts: 0, weightBytes: 0, leaving: false };
  m.describeDevices(() => [
    { ...base, name: "d0", kind: "node", compute: "wasm", gflops: 12.5 },
    { ...base, name: "tab", kind: "browser", userAgent: "x", compute: "webgpu", adapter: 'gpu" 1', gflops: 0.25 },
    { ...base, name: "old", kind: "node", gflops: 3 },
  ]);
  const lines = (await m.text()).split("\n");
  assert.ok(lines.includes('distmoe_device_compute_gflops{device="d0",compute="wasm",adapter=""} 12.5'));
  assert.ok(lines.includes('distmoe_device_compute_gflops{device="tab",compute="webgpu",adapter="gpu\\" 1"} 0.25'));
  assert.ok(lines.includes('distmoe_device_compute_gflops{device="old",compute="",adapter=""} 3'), "a device that did not say what computes");
});

test("the experts the BS holds under MoNDE's tiers: a gauge per layer, read at each scrape (an evicted one leaves)", async () => {
  const zero = { calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 };
  const m = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => zero);
  let held: Array<[number, number]> | null = null;
  m.countBsExperts(() => held);
  assert.doesNotMatch(await m.text(), /^distmoe_bs_experts\{/m, "no tiers yet: no series");
  held = [[1, 0], [1, 3], [3, 2]];
  let lines = (await m.text()).split("\n");
  assert.ok(lines.includes('distmoe_bs_experts{layer="1"} 2') && lines.includes('distmoe_bs_experts{layer="3"} 1'));
  held = [[1, 3]];
  lines = (await m.text()).split("\n");
  assert.ok(lines.includes('distmoe_bs_experts{layer="1"} 1') && !lines.some((l) => l.startsWith('distmoe_bs_experts{layer="3"}')));
});

test("what the engine's steps did is exported: expert use per (layer, expert), gate mass kept and dropped, decode steps and their time split; a live policy change shows in them", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-metrics-"));
  initModel({ arch: "Qwen3MoeForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed: 3 });
  const engine = Engine.load(dir, { dtype: "f32", threads: 1 });
  try {
    const m = new ServerMetrics(() => engine.scheduler.depth, () => engine.expertUsage());
    m.countEngineWork(() => engine.work());
    const value = async (name: string, labels: Record<string, string> = {}) =>
      (await m.registry.getSingleMetric(name)!.get()).values.filter((v) => Object.entries(labels).every(([k, x]) => String(v.labels[k]) === x)).reduce((s, v) => s + v.value, 0);
    const prompt = engine.tokenizer.encode("hello there");
    await engine.generate(prompt, { temperature: 0, maxTokens: 6 });
    const use = await value("distmoe_expert_use_total");
    const kept = await value("distmoe_gate_mass_total", { fate: "kept" });
    // top-k: k experts per (token, layer), nothing dropped; 2 MoE layers × (prompt + 5 decoded tokens fed back)
    assert.equal(kept, 2 * (prompt.length + 5));
    assert.equal(use, 2 * kept);
    assert.equal(await value("distmoe_gate_mass_total", { fate: "dropped" }), 0);
    assert.equal(await value("distmoe_expert_use_total", { layer: "0" }), kept, "layer 0's pairs: its rows × k");
    assert.equal(await value("distmoe_decode_steps_total"), 5);
    assert.equal(await value("distmoe_decoded_tokens_total"), 5);
    assert.ok((await value("distmoe_decode_seconds_total", { part: "bs_compute" })) > 0);
    assert.match(await m.text(), /distmoe_expert_use_total\{layer="1",expert="\d"\} \d+/);

    // WLR with a high θ and equal latencies keeps a token's second expert only when its weight nearly equals the first's
    const equal = new Float64Array(4).fill(1);
    const wlr = makePolicy({ name: "wlr", theta: 0.99 }, 2);
    engine.setPolicy((router, ctx) => wlr(router, { ...ctx, costs: { expertLatencyMs: equal } }));
    await engine.generate(prompt, { temperature: 0, maxTokens: 6 });
    const rows = (await value("distmoe_gate_mass_total")) - kept;
    const used = (await value("distmoe_expert_use_total")) - use;
    assert.equal(rows, 2 * (prompt.length + 5));
    assert.ok(used < 2 * rows && used >= rows, `fewer than k experts per token under wlr θ=0.99 (${used} pairs for ${rows} rows)`);
    assert.ok((await value("distmoe_gate_mass_total", { fate: "dropped" })) > 0, "the gate mass wlr dropped");
  } finally {
    engine.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
