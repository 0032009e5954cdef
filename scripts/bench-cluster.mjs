#!/usr/bin/env node
// The distributed runtime against its cost model. For 1, 2 and 4 local device processes, without and
// with an emulated link, it measures decode time per token and puts beside it what the latency model
// (src/channel/latency.ts) predicts for the routing each step actually took. The model's inputs are
// measured here, each on its own: the base station's time per token (experts answered at once), one
// expert call's compute time at batch 1 (cycling through every expert's weights, cold as in decode),
// and the loopback link itself: a bare WebSocket round trip between two processes with a call-sized
// frame, taken as the link's delay (half each way) under any emulated one. The ratio measured /
// predicted is the runtime's overhead over the model. Then decode throughput at 1, 4 and 16 concurrent
// streams, and how long a device joining a running cluster takes to be placed and loaded.
// Usage: node scripts/bench-cluster.mjs [--model DIR] [--tokens 48] [--link "rate=100mbit,delay=2ms"]
import { parseScriptArgs, refuseOption } from "./lib/script-args.mjs";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { WebSocketServer } from "ws";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Engine } from "../dist/runtime/engine.js";
import { startLocalCluster } from "../dist/runtime/local-cluster.js";
import { LocalExpertExecutor } from "../dist/moe/local-executor.js";
import { parseLink } from "../dist/channel/link.js";
import { stepLatencyMs } from "../dist/channel/latency.js";
import { wireBytes } from "../dist/protocol/activations.js";

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values: a } = parseScriptArgs(import.meta.url, {
  paths: ["model"],
  options: { model: { type: "string", default: path.resolve(root, "../shared/models/brown-moe") }, tokens: { type: "string", default: "48" }, link: { type: "string", default: "rate=100mbit,delay=2ms" } },
});
let link;
try {
  link = parseLink(a.link);
} catch (e) {
  refuseOption(import.meta.url, `--link: ${e.message}`);
}
const model = a.model, N = Number(a.tokens);
const prompt = (e) => e.tokenizer.encode("The jury said it did find that many of the");
// the prediction is of a mean time per token, so its inputs are means too (tails included)
const mean = (xs) => xs.reduce((s, x) => s + x, 0) / xs.length;

// the base station's own time per decode token: experts answered instantly with zeros
const bsEngine = Engine.load(model, { executor: { dispatch: (calls) => calls.map((c) => Promise.resolve({ output: new Float32Array(c.input.length), computeMs: 0, roundTripMs: 0 })) } });
await bsEngine.generate(prompt(bsEngine), { temperature: 0, maxTokens: 8 });
const bsRun = await bsEngine.generate(prompt(bsEngine), { temperature: 0, maxTokens: N });
const bsMs = bsRun.decodeMs / bsRun.decodeSteps;
bsEngine.close();

// one expert call at batch 1 on one thread, as a device process computes it, going through every
// layer's experts in turn so that each call finds its weights out of cache, as decode does
const one = Engine.load(model, { threads: 1 });
const local = new LocalExpertExecutor(one.backend, one.weights.layers.map((l) => l.experts), one.config.hidden);
const row = new Float32Array(one.config.hidden).fill(0.1);
const callTimes = [];
const sparse = one.weights.layers.flatMap((l, layer) => l.experts.map((w, expert) => (w ? { layer, expert } : null)).filter(Boolean));
for (let i = 0; i < 300; i++) {
  const t0 = performance.now();
  local.compute({ ...sparse[i % sparse.length], rows: 1, input: row });
  callTimes.push(performance.now() - t0);
}
const callMs = mean(callTimes.slice(50));
const hidden = one.config.hidden;
one.close();
// a bare WebSocket round trip to another process, with a frame the size of a call at batch 1
const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
await new Promise((r) => wss.once("listening", r));
const echo = spawn(process.execPath, ["-e", `const W=require(${JSON.stringify(require.resolve("ws"))});const w=new W("ws://127.0.0.1:${wss.address().port}");w.on("message",(d)=>w.send(d));`], { stdio: "ignore" });
const peer = await new Promise((r) => wss.once("connection", r));
const frame = new Uint8Array(hidden * 4 + 100);
const rtts = [];
for (let i = 0; i < 1000; i++) {
  const t0 = performance.now();
  await new Promise((r) => { peer.once("message", r); peer.send(frame); });
  rtts.push(performance.now() - t0);
}
const rttMs = mean(rtts.slice(100));
const loopback = { downBps: 0, upBps: 0, delayMs: rttMs / 2, jitterMs: 0, loss: 0 };
echo.kill();
wss.close();
console.log(`model ${path.basename(model)}; base station ${bsMs.toFixed(3)} ms per token; one expert call ${(callMs * 1000).toFixed(0)} µs; bare WebSocket round trip ${(rttMs * 1000).toFixed(0)} µs; link when shaped: ${a.link}\n`);
console.log("| devices | link | decode tok/s | measured ms/token | predicted ms/token | overhead |");
console.log("|---|---|---|---|---|---|");

for (const shaped of [false, true]) {
  for (const devices of [1, 2, 4]) {
    const records = [];
    const cluster = await startLocalCluster({ model, devices, weightDType: "f32", wireDType: "f32", link: shaped ? () => link : undefined, log: () => {} });
    const engine = Engine.load(model, { executor: cluster.hub.executor, trace: { record: (r) => records.push(r) } });
    await engine.generate(prompt(engine), { temperature: 0, maxTokens: 8 });
    records.length = 0;
    const r = await engine.generate(prompt(engine), { temperature: 0, maxTokens: N });
    const measured = r.decodeMs / r.decodeSteps;
    // the model's prediction for each decode step's actual routing
    const linkPath = shaped ? { ...link, delayMs: link.delayMs + loopback.delayMs } : loopback;
    const costs = new Map(cluster.hub.placed.map((name) => [name, { weightMs: callMs, rowMs: 0, link: linkPath }]));
    const steps = new Map();
    for (const rec of records) {
      const calls = [];
      const counts = new Map();
      for (let i = 0; i < rec.decision.offsets[rec.decision.rows]; i++) counts.set(rec.decision.experts[i], (counts.get(rec.decision.experts[i]) ?? 0) + 1);
      for (const [expert, rows] of counts) calls.push({ device: cluster.hub.hostOf(rec.layer, expert), rows });
      (steps.get(rec.step) ?? steps.set(rec.step, []).get(rec.step)).push({ calls });
    }
    const decodeSteps = [...steps.keys()].sort((x, y) => x - y).slice(1, 1 + r.decodeSteps);
    const predicted = decodeSteps.reduce((s, k) => s + stepLatencyMs(bsMs, steps.get(k), costs, hidden * wireBytes("f32")), 0) / decodeSteps.length;
    console.log(`| ${devices} | ${shaped ? a.link : "loopback"} | ${(1000 / measured).toFixed(1)} | ${measured.toFixed(2)} | ${predicted.toFixed(2)} | ${(measured / predicted).toFixed(2)}× |`);
    engine.close();
    await cluster.close();
  }
}

console.log("\n| concurrent streams (4 devices, loopback) | total decode tok/s |");
console.log("|---|---|");
const cluster = await startLocalCluster({ model, devices: 4, weightDType: "f32", wireDType: "f32", log: () => {} });
const engine = Engine.load(model, { executor: cluster.hub.executor, maxBatch: 16 });
await engine.generate(prompt(engine), { temperature: 0, maxTokens: 8 });
for (const streams of [1, 4, 16]) {
  const t0 = performance.now();
  const rs = await Promise.all(Array.from({ length: streams }, (_, i) => engine.generate(prompt(engine), { temperature: 0.8, seed: i, maxTokens: N })));
  const tokens = rs.reduce((s, r) => s + r.tokens.length, 0);
  console.log(`| ${streams} | ${(tokens / ((performance.now() - t0) / 1000)).toFixed(1)} |`);
}
engine.close();
await cluster.close();

// a device joining a running cluster of 2: from its process start until the new placement is in use
const joined = await startLocalCluster({ model, devices: 2, weightDType: "f32", wireDType: "f32", log: () => {} });
const t0 = performance.now();
const late = spawn(process.execPath, [path.join(root, "bin/distmoe.js"), "device", "--bs", joined.hub.url, "--name", "late", "--threads", "1", "--spin-ms", "0"], {
  stdio: "ignore",
  env: { ...process.env, DISTMOE_JOIN_TOKEN: joined.joinToken },
});
while (!joined.hub.placed.includes("late")) await new Promise((r) => setTimeout(r, 10));
console.log(`\na device joining 2 others was placed and had loaded its experts ${(performance.now() - t0).toFixed(0)} ms after its process started`);
await joined.close();
late.kill();
