import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { REPO_ROOT } from "../testing/shared.js";
import { allocateForPairs } from "../policies/joint.js";
import { chooseReplica } from "../policies/replica.js";
import { CellCosts } from "./cell-costs.js";
import { ChannelModel } from "./channel-model.js";
import { loadScenario } from "./scenario.js";

const scenario = loadScenario(path.join(REPO_ROOT, "scenarios/cell-8.json"));
const expert = { weightBytes: 3 * 256 * 512 * 2, macsPerRow: 3 * 256 * 512 };
// experts 0..7 on devices 0..7; expert 8 on devices 0 and 7 (a replica)
const hosts = [[...Array.from({ length: 8 }, (_, e) => [e]), [7, 0]]];
const costs = (bandwidth: "equal" | "optimal") => new CellCosts(new ChannelModel(scenario), { expert, rowBytes: 512, hosts, bandwidth });
const decision = (experts: number[]) => ({ rows: 1, offsets: Int32Array.from([0, experts.length]), experts: Int32Array.from(experts), weights: new Float32Array(experts.length).fill(1 / experts.length) });

test("a one-row call's latency: both links, both delays and the roofline; a replica is served by its faster host", () => {
  const c = costs("equal");
  const lc = c.layerCosts(c.snapshotAt(0), 0);
  for (let e = 0; e < 8; e++) {
    const t = c.layerTime(lc, decision([e]));
    assert.ok(Math.abs(t.ms - lc.expertLatencyMs[e]!) < 1e-9, `expert ${e}: layer time ${t.ms} vs the policies' estimate ${lc.expertLatencyMs[e]}`);
    assert.ok(t.downMs > scenario.delayMs && t.upMs > scenario.delayMs && t.computeMs > 0);
  }
  assert.equal(lc.radio!.expertDevice[8], chooseReplica([7, 0], lc.expertLatencyMs));
  assert.equal(lc.expertLatencyMs[8], Math.min(lc.expertLatencyMs[0]!, lc.expertLatencyMs[7]!));
  assert.equal(chooseReplica([3, 1, 2], [0, 5, 1, 9]), 2);
});

test("a layer's time is its slowest device's; the optimal band is the joint solver's split and beats the equal one", () => {
  const eq = costs("equal"), opt = costs("optimal");
  for (const ms of [0, 500, 3000]) {
    const le = eq.layerCosts(eq.snapshotAt(ms), 0), lo = opt.layerCosts(opt.snapshotAt(ms), 0);
    for (const pair of [[0, 7], [2, 5], [1, 3]]) {
      const d = decision(pair);
      const slowest = Math.max(...pair.map((e) => eq.layerTime(le, decision([e])).ms));
      assert.ok(Math.abs(eq.layerTime(le, d).ms - slowest) < 1e-9, "equal band: the slower of the two calls");
      const t = opt.layerTime(lo, d).ms;
      assert.ok(Math.abs(t - allocateForPairs(lo.radio!, d.experts).finishMs) < 1e-9 * t, "optimal band: the solver's finishing time");
      assert.ok(t < slowest, `optimal ${t.toFixed(3)} ms < equal ${slowest.toFixed(3)} ms`);
    }
  }
});
