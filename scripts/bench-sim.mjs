#!/usr/bin/env node
// The simulator's speed and where it goes. First its parts, each timed alone: one device's channel
// draw (a fading step and the rates on its share, what a transfer crossing a slot costs), a router row
// from the routing source, and each policy on a row whose top-k is known. Then whole simulations of
// the README's configurations, with their counts (token-layers, expert calls, channel draws): the
// parts' sum (draws × draw + token-layers × (row + policy)) is the floor the event loop adds to, and
// the measured time is reported against it.
// Usage: node scripts/bench-sim.mjs [--tokens 256]
import { parseScriptArgs } from "./lib/script-args.mjs";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { CellCosts } from "../dist/channel/cell-costs.js";
import { ChannelModel } from "../dist/channel/channel-model.js";
import { loadScenario } from "../dist/channel/scenario.js";
import { parseModelConfig } from "../dist/model/config.js";
import { makePolicy } from "../dist/policies/registry.js";
import { routingSource } from "../dist/sim/routing-source.js";
import { scaleScenario, simulate } from "../dist/sim/simulator.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values: a } = parseScriptArgs(import.meta.url, { options: { tokens: { type: "string", default: "256" } } });
const scenario = loadScenario(path.join(root, "scenarios/cell-8.json"));
const config = (name) => parseModelConfig(JSON.parse(readFileSync(path.join(root, `configs/${name}.json`), "utf8")));
/** ns per call of f(i), best of three rounds of n */
const time = (n, f) => {
  let best = Infinity;
  for (let round = 0; round < 3; round++) {
    const t = performance.now();
    for (let i = 0; i < n; i++) f(i);
    best = Math.min(best, ((performance.now() - t) * 1e6) / n);
  }
  return best;
};

const K = scenario.devices.length, N = 1_000_000;
let slot = 0;
const cell = new CellCosts(new ChannelModel(scenario), { expert: { weightBytes: 1e6, macsPerRow: 1e6 }, rowBytes: 8192, hosts: [], bandwidth: "equal" });
const drawNs = time(N, (i) => cell.equalRateAt(i % K, 5 * (slot += i % K === 0 ? 1 : 0), "down"));
console.log(`channel draw (fading step + rates on the share): ${drawNs.toFixed(0)} ns`);

const parts = {};
for (const name of ["mixtral-8x7b", "olmoe-1b-7b"]) {
  const cfg = config(name);
  const routing = routingSource({ synthetic: { seed: 1 } }, cfg.experts, { topK: cfg.topK, normalize: cfg.normTopK });
  const rowNs = time(N, (i) => routing.next(i % cfg.layers));
  const latency = Float64Array.from({ length: cfg.experts }, (_, e) => 5 + (e % 7));
  const policyNs = {};
  for (const spec of [{ name: "topk" }, { name: "wlr", theta: 0.5 }, { name: "deadline", budgetMs: 8 }]) {
    const policy = makePolicy(spec, cfg.layers);
    policyNs[spec.name] = time(N, (i) => {
      const { router, top } = routing.next(i % cfg.layers);
      policy(router, { topK: cfg.topK, normalize: cfg.normTopK, top, costs: { expertLatencyMs: latency } });
    }) - rowNs;
  }
  parts[name] = { rowNs, policyNs };
  console.log(`${name}: router row ${rowNs.toFixed(0)} ns; policy on it: ${Object.entries(policyNs).map(([p, ns]) => `${p} ${ns.toFixed(0)} ns`).join(", ")}`);
}

console.log(`\n| model, cell | policy | token-layers | expert calls | channel draws | draws/call | wall (s) | µs per token-layer | calls/s | parts' floor / wall |\n|---|---|---|---|---|---|---|---|---|---|`);
const runs = [
  ["mixtral-8x7b", 8, 16, { name: "topk" }],
  ["mixtral-8x7b", 8, 16, { name: "wlr", theta: 0.5 }],
  ["mixtral-8x7b", 64, 64, { name: "topk" }],
  ["mixtral-8x7b", 64, 64, { name: "wlr", theta: 0.5 }],
  ["olmoe-1b-7b", 64, 64, { name: "topk" }],
  ["olmoe-1b-7b", 64, 64, { name: "wlr", theta: 0.5 }],
];
for (const [name, devices, users, spec] of runs) {
  const cfg = config(name);
  const r = simulate({
    cfg, scenario: devices === K ? scenario : scaleScenario(scenario, devices), spec, weightDType: "bf16", wireDType: "bf16", replicas: 1,
    routing: { synthetic: { seed: 1 } }, users, tokensPerUser: Number(a.tokens), slotMs: 5,
  });
  const tokenLayers = r.tokens * cfg.sparseLayers.filter(Boolean).length;
  const floorS = (r.channel_draws * drawNs + tokenLayers * (parts[name].rowNs + parts[name].policyNs[spec.name])) / 1e9;
  console.log(
    `| ${name}, ${devices} devices, ${users} users | ${spec.name}${spec.theta ? ` θ=${spec.theta}` : ""} | ${tokenLayers} | ${r.expert_calls} | ${r.channel_draws} | ${(r.channel_draws / r.expert_calls).toFixed(1)} | ${r.wall_s.toFixed(2)} | ${((r.wall_s * 1e6) / tokenLayers).toFixed(2)} | ${(r.calls_per_wall_s / 1e6).toFixed(2)} M | ${(floorS / r.wall_s).toFixed(2)} |`,
  );
}
