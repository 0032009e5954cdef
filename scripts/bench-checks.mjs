#!/usr/bin/env node
// What checking the devices' expert results costs. A base station with real device processes on this
// machine (loopback) decodes greedily from a fixed prompt with: no result checks at all, the
// plausibility checks (bounds), and spot checks at each --verify-rate (a share of the calls computed
// twice; the step waits for both) — with 1 replica (the base station computes the second opinion from
// its own copy of the weights) and with 2 (the other replica does). Each configuration has its own
// cluster, all started at once and each warmed up with `--warmup` generations (a fresh device process
// decodes at half speed at first and at full only after some 1500 tokens); then the configurations take turns, one generation each, `--reps` times, so that
// whatever else the machine does falls on all of them alike. Each figure is the median of a
// configuration's decode tokens/s, and its ratio to "checks off" the median of the rounds' ratios
// (with their quartiles: how much the machine's noise moves it).
// Prints a table and writes the JSON.
// Usage: node scripts/bench-checks.mjs [--model DIR] [--tokens 128] [--reps 24] [--warmup 12] [--rates 0.01,0.1,1]
//        [--devices 2] [--wire-dtype f32] [--json docs/bench/checks.json]
import { parseScriptArgs } from "./lib/script-args.mjs";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Engine } from "../dist/runtime/engine.js";
import { onCluster, startLocalCluster } from "../dist/runtime/local-cluster.js";
import { Referee } from "../dist/runtime/hub/referee.js";
import { Checkpoint } from "../dist/model/checkpoint.js";
import { readModelConfig } from "../dist/model/config.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values: a } = parseScriptArgs(import.meta.url, {
  paths: ["model"],
  options: {
    model: { type: "string", default: path.resolve(root, "../shared/models/brown-moe") },
    tokens: { type: "string", default: "128" },
    reps: { type: "string", default: "24" },
    warmup: { type: "string", default: "12" },
    rates: { type: "string", default: "0.01,0.1,1" },
    devices: { type: "string", default: "2" },
    "wire-dtype": { type: "string", default: "f32" },
    json: { type: "string", default: path.join(root, "docs/bench/checks.json") },
  },
});
const TOKENS = Number(a.tokens), REPS = Number(a.reps), WARMUP = Number(a.warmup), DEVICES = Number(a.devices);
const RATES = a.rates.split(",").map(Number);
if (![TOKENS, REPS, DEVICES].every((n) => Number.isInteger(n) && n >= 1) || !(Number.isInteger(WARMUP) && WARMUP >= 0) || RATES.some((r) => !(r > 0 && r <= 1)) || DEVICES < 2) {
  process.stderr.write("bench-checks: --tokens and --reps are positive integers, --warmup one from 0, --devices at least 2, --rates shares in (0, 1]\n");
  process.exit(2);
}
const PROMPT = "The jury said it did find that many of the";
const quantile = (xs, q) => [...xs].sort((x, y) => x - y)[Math.round(q * (xs.length - 1))];
const median = (xs) => quantile(xs, 0.5);

/** The checks of each column: off, bounds only, and spot checks at each rate (bounds too). */
const modes = [
  { name: "checks off", hub: { resultChecks: false } },
  { name: "bounds", hub: {} },
  ...RATES.map((rate) => ({ name: `verify ${rate}`, hub: { verifyRate: rate } })),
];
const configs = [1, 2].flatMap((replicas) => modes.map((m) => ({ ...m, replicas, run: null, runs: [], usage: null, text: null })));

/** A configuration's cluster and an engine over it. */
async function start(c) {
  const cluster = await startLocalCluster({ model: a.model, devices: DEVICES, weightDType: "f32", wireDType: a["wire-dtype"], replicas: c.replicas, ...c.hub, log: () => undefined });
  // one compute thread, not spinning: the devices share this machine's cores
  return onCluster(cluster, () => ({ engine: Engine.load(a.model, { threads: 1, spinMs: 0, executor: cluster.hub.executor }) }));
}

/** One greedy generation of configuration `c`; its decode rate, text and expert usage are kept unless it warms up. */
async function generate(c, timed) {
  const r = await c.run.engine.generate(c.run.engine.tokenizer.encode(PROMPT), { temperature: 0, maxTokens: TOKENS });
  if (!timed) return;
  c.runs.push((1000 * r.decodeSteps) / r.decodeMs);
  c.text ??= r.text;
  if (r.text !== c.text) throw new Error(`${c.name}, ${c.replicas} replicas: the greedy text changed between runs`);
  for (const [k, v] of Object.entries(r.experts)) (c.usage ??= {})[k] = (c.usage[k] ?? 0) + v;
}

const t0 = performance.now();
try {
  for (const c of configs) {
    c.run = await start(c);
    for (let i = 0; i < WARMUP; i++) await generate(c, false);
  }
  process.stderr.write(`${configs.length} clusters started and warmed up in ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
  for (let rep = 0; rep < REPS; rep++) {
    // each round in another order, so that none is always first after another
    for (let i = 0; i < configs.length; i++) await generate(configs[(i + rep) % configs.length], true);
    process.stderr.write(`round ${rep + 1}/${REPS}\n`);
  }
} finally {
  for (const c of configs) await c.run?.close();
}

console.log(`\n${path.basename(a.model)}, ${DEVICES} device processes on loopback, wire ${a["wire-dtype"]}, ${os.availableParallelism()} cores; greedy, ${TOKENS} new tokens, median of ${REPS} runs each\n`);
console.log("| replicas | checks | decode tok/s | ms/token | vs checks off (middle half of rounds) | calls checked | mismatches |");
console.log("|---|---|---|---|---|---|---|");
const rows = [];
for (const c of configs) {
  const tps = median(c.runs);
  // paired: each round's rate against "checks off" in the same round, so that drift falls out
  const off = configs.find((x) => x.replicas === c.replicas && x.name === "checks off").runs;
  const ratios = c.runs.map((x, i) => x / off[i]);
  const [lo, ratio, hi] = [0.25, 0.5, 0.75].map((q) => quantile(ratios, q));
  const checked = c.usage.verified_calls / c.usage.calls;
  rows.push({ replicas: c.replicas, checks: c.name, tokensPerS: tps, runs: c.runs, vsChecksOff: ratio, vsChecksOffQuartiles: [lo, hi], verifiedShare: checked, usage: c.usage });
  console.log(`| ${c.replicas} | ${c.name} | ${tps.toFixed(1)} | ${(1000 / tps).toFixed(2)} | ${ratio.toFixed(2)} (${lo.toFixed(2)}–${hi.toFixed(2)}) | ${(100 * checked).toFixed(1)} % | ${c.usage.mismatched_results} |`);
}
const sameText = configs.every((c) => c.text === configs[0].text);
console.log(`\ngreedy text identical in every configuration: ${sameText}; ${((performance.now() - t0) / 1000).toFixed(0)} s in all`);

// the base station's own check of one call (batch 1, each expert once loaded): the referee's cost
const refereeUs = (() => {
  const ck = Checkpoint.open(a.model), cfg = readModelConfig(a.model);
  const referee = new Referee(ck, cfg, "f32");
  const input = Float32Array.from({ length: cfg.hidden }, (_, i) => Math.sin(i));
  const calls = Array.from({ length: cfg.layers * cfg.experts }, (_, i) => ({ layer: Math.floor(i / cfg.experts), expert: i % cfg.experts, rows: 1, input }));
  for (const c of calls) referee.answer(c);
  const times = [];
  for (let r = 0; r < 20; r++) {
    const t = performance.now();
    for (const c of calls) referee.answer(c);
    times.push(((performance.now() - t) * 1000) / calls.length);
  }
  referee.close();
  ck.close();
  return quantile(times, 0.5);
})();
console.log(`the base station's own check of one call (batch 1): ${refereeUs.toFixed(1)} µs (median of 20 passes over every expert)`);
mkdirSync(path.dirname(a.json), { recursive: true });
writeFileSync(a.json, `${JSON.stringify({ model: path.basename(a.model), devices: DEVICES, wireDType: a["wire-dtype"], cores: os.availableParallelism(), tokens: TOKENS, prompt: PROMPT, runsPerConfig: REPS, sameText, refereeUsPerCall: refereeUs, rows }, null, 2)}\n`);
console.log(`wrote ${path.relative(process.cwd(), a.json)}`);
if (!sameText || rows.some((r) => r.usage.mismatched_results > 0)) process.exit(1);
