// Expert results are checked: a device answering well-formed frames with NaN, zeros, huge values or a
// scaled copy of the true result is failed over (or its experts dropped), counted and taken out of
// service; one answering a copy scaled too little for the bounds is found out by spot checks
// (verifyRate), which honest devices pass on the real model in every wire dtype. Honest devices run in
// this process (runDevice); the rogue is a raw WebSocket client that computes the true result with its
// own copy of the weights and then spoils it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { DeviceHub, type HubOptions } from "./device-hub.js";
import { runDevice } from "./device.js";
import { Engine } from "./engine.js";
import { WasmBackend } from "../kernels/wasm/wasm-backend.js";
import { Checkpoint } from "../model/checkpoint.js";
import { readModelConfig } from "../model/config.js";
import { initModel } from "../model/init-model.js";
import { loadWeights } from "../model/weights.js";
import { LocalExpertExecutor } from "../moe/local-executor.js";
import { decodeActivations, encodeActivations, splitRows, concatRows } from "../protocol/activations.js";
import { decodeFrame, encodeFrame } from "../protocol/frames.js";
import { ServerMetrics } from "../server/metrics.js";
import { CLOSE } from "../protocol/socket.js";
import { provenHello } from "../testing/hello.js";
import { sharedPath } from "../testing/shared.js";
import { until } from "../testing/until.js";
import { ephemeralIdentity, type DeviceIdentity } from "./device-identity.js";

const PROMPT = "checked results";
const TOKENS = 24;
const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-checks-"));
initModel({ arch: "MixtralForCausalLM", layers: 2, hidden: 64, experts: 4, topK: 2, seed: 31, out: dir });
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

const single = Engine.load(dir, { dtype: "f32" });
const want = (await single.generate(single.tokenizer.encode(PROMPT), { temperature: 0, maxTokens: TOKENS })).tokens;
single.close();

/** Every expert of the model, computed in this process: what the rogue spoils. */
const cfg = readModelConfig(dir);
const backend = new WasmBackend({ threads: 1 });
const weights = loadWeights(backend, Checkpoint.open(dir), cfg, { dtype: "f32" });
const truth = new LocalExpertExecutor(backend, weights.layers.map((l) => l.experts), cfg.hidden);

type Spoil = "nan" | "zeros" | "huge" | "scaled" | "slightly scaled";
const spoil: Record<Spoil, (v: Float32Array) => Float32Array> = {
  nan: (v) => v.map((x, i) => (i === 5 ? NaN : x)),
  zeros: (v) => v.fill(0),
  huge: (v) => v.fill(1e30),
  scaled: (v) => v.map((x) => x * 1000),
  // within the norm bounds: only a second opinion finds it out
  "slightly scaled": (v) => v.map((x) => x * 1.05),
};

/** A device (with `identity`) that claims to be fast, takes every expert assigned, and answers every call spoiled. */
function rogue(url: string, how: Spoil, identity?: DeviceIdentity): WebSocket {
  const ws = new WebSocket(url);
  ws.on("message", async (d: Buffer) => {
    const m = decodeFrame(new Uint8Array(d));
    // the hub asks for no join token: the proof's token is any
    if (m.type === "challenge") ws.send(await provenHello("any-token-0123456789", m.nonce, "rogue", { memoryBytes: 1e9, gflops: 500, readGbps: 500, weightDTypes: ["f32"], wireDTypes: ["f32"] }, identity));
    if (m.type === "assign") ws.send(encodeFrame({ type: "ready", experts: m.experts }));
    if (m.type !== "call") return;
    const inputs = splitRows(decodeActivations(m.payload, m.dtype), m.hidden, m.experts.map(([, r]) => r));
    const outputs = m.experts.map(([expert, rows], i) => truth.compute({ layer: m.layer, expert, rows, input: inputs[i]! }).output);
    const payload = encodeActivations(spoil[how](concatRows(outputs)), "f32");
    ws.send(encodeFrame({ type: "result", id: m.id, experts: m.experts, hidden: m.hidden, dtype: "f32", computeMs: 0, payload }));
  });
  return ws;
}

/**
 * A hub (with `options`) with `honest` devices that first serves a warm-up generation (its results
 * teach the bounds), then the rogue joins; `fn` gets the engine over the hub and the hub's log.
 */
async function withRogue(how: Spoil, replicas: number, honest: number, fn: (engine: Engine, hub: DeviceHub, lines: string[]) => Promise<void>, options: Partial<HubOptions> = {}, identity?: DeviceIdentity): Promise<void> {
  const lines: string[] = [];
  const hub = await DeviceHub.listen({ model: dir, weightDType: "f32", wireDType: "f32", replicas, resultBounds: { minSample: 8 }, log: (l) => lines.push(l), ...options });
  const devices = Array.from({ length: honest }, (_, i) => runDevice({ bs: hub.url, name: `honest${i}`, threads: 1, spinMs: 0, retryForMs: 0, log: () => undefined }).catch(() => undefined));
  const engine = Engine.load(dir, { dtype: "f32", executor: hub.executor });
  let ws: WebSocket | undefined;
  try {
    await hub.start(honest);
    const warm = await engine.generate(engine.tokenizer.encode(PROMPT), { temperature: 0, maxTokens: TOKENS });
    assert.deepEqual(warm.tokens, want);
    assert.equal(warm.experts.rejected_results, 0, "honest devices trip nothing");
    ws = rogue(hub.url, how, identity);
    const t0 = performance.now();
    while (!(hub.placed.includes("rogue") && hub.deviceCalls().find((d) => d.name === "rogue")?.ready)) {
      assert.ok(performance.now() - t0 < 30_000, "the rogue is placed");
      await new Promise((r) => setTimeout(r, 10));
    }
    await fn(engine, hub, lines);
  } finally {
    ws?.close();
    engine.close();
    await hub.close();
    await Promise.all(devices);
  }
}

for (const how of ["nan", "zeros", "huge", "scaled"] as const) {
  test(`a rogue answering ${how} is failed over and taken out of service; with 2 replicas the output is unchanged`, async () => {
    await withRogue(how, 2, 2, async (engine, hub, lines) => {
      const metrics = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => engine.expertUsage());
      const r = await engine.generate(engine.tokenizer.encode(PROMPT), { temperature: 0, maxTokens: TOKENS });
      assert.deepEqual(r.tokens, want, "the replicas served what the rogue spoiled");
      assert.ok(r.experts.rejected_results! > 0 && r.experts.retries > 0 && r.experts.failed_calls === 0, JSON.stringify(r.experts));
      assert.ok(hub.deviceCalls().find((d) => d.name === "rogue")!.quarantined, "the rogue is out of service");
      const why = { nan: /non-finite values/, zeros: /all-zero row/, huge: /its input's norm, outside/, scaled: /its input's norm, outside/ }[how];
      assert.ok(lines.some((l) => l.startsWith("rogue is out of service") && /device rogue returned .* for expert \d+ of layer \d+/.test(l) && why.test(l)), lines.join("\n"));
      assert.match(await metrics.text(), new RegExp(`distmoe_expert_results_rejected_total ${engine.expertUsage().rejected_results}\\b`));
    });
  });
}

test("with 1 replica the rogue's results are dropped and the response reports it", async () => {
  await withRogue("scaled", 1, 1, async (engine, hub) => {
    // one step: the rogue's frame of each layer fails, short of the failures that put it out of service
    const r = await engine.generate(engine.tokenizer.encode(PROMPT), { temperature: 0, maxTokens: 1 });
    assert.ok(r.experts.rejected_results! > 0 && r.experts.failed_calls > 0 && r.experts.dropped_slots > 0, JSON.stringify(r.experts));
    // the next step's failure puts it out of service: its experts have no host until they are placed again
    await assert.rejects(engine.generate(engine.tokenizer.encode(PROMPT), { temperature: 0, maxTokens: 1 }), /no live device holds expert/);
    assert.ok(hub.deviceCalls().find((d) => d.name === "rogue")!.quarantined, "the rogue is out of service");
  });
});

test("spot checks find out a rogue within the bounds at once; with 2 replicas the output is unchanged, and it is counted", async () => {
  await withRogue("slightly scaled", 2, 2, async (engine, hub, lines) => {
    const metrics = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => engine.expertUsage());
    const r = await engine.generate(engine.tokenizer.encode(PROMPT), { temperature: 0, maxTokens: TOKENS });
    assert.deepEqual(r.tokens, want, "the results that agree with the base station's were used");
    assert.equal(r.experts.rejected_results, 0, "the norm bounds pass a copy scaled by 1.05");
    assert.ok(r.experts.mismatched_results! > 0 && r.experts.verified_calls === r.experts.calls && r.experts.failed_calls === 0, JSON.stringify(r.experts));
    assert.ok(hub.deviceCalls().find((d) => d.name === "rogue")!.quarantined, "the rogue is out of service");
    const found = lines.filter((l) => l.startsWith("rogue is out of service"));
    assert.equal(found.length, 1, lines.join("\n"));
    assert.match(found[0]!, /^rogue is out of service for a wrong result: expert \d+ of layer \d+, row \d+ 4\.76 % off the base station's \(tolerance 0\.0100 %\)$/);
    assert.equal(`rogue is out of service ${hub.status().devices.find((d) => d.name === "rogue")!.outOfService}`, found[0], "its status says why, as the log did");
    const text = await metrics.text();
    assert.match(text, new RegExp(`distmoe_expert_results_mismatched_total ${engine.expertUsage().mismatched_results}\\b`));
    assert.match(text, new RegExp(`distmoe_expert_calls_verified_total ${engine.expertUsage().verified_calls}\\b`));
  }, { verifyRate: 1 });
});

test("a device found returning wrong results is refused when it comes back, until the operator forgets it", async () => {
  const identity = await ephemeralIdentity();
  await withRogue("slightly scaled", 2, 2, async (engine, hub) => {
    await engine.generate(engine.tokenizer.encode(PROMPT), { temperature: 0, maxTokens: TOKENS });
    const known = hub.knownDevices().find((k) => k.name === "rogue")!;
    assert.equal(known.fingerprint, identity.fingerprint);
    assert.match(known.outOfService?.why ?? "", /^for a wrong result: expert \d+ of layer \d+/);
    const back = rogue(hub.url, "slightly scaled", identity);
    const closed = await new Promise<{ code: number; reason: string }>((r) => back.once("close", (code, reason) => r({ code, reason: reason.toString() })));
    assert.equal(closed.code, CLOSE.notAdmitted);
    assert.match(closed.reason, /not admitted: this device \(SHA256:.*\) was taken out of service at /);
    assert.ok(hub.forgetDevice(identity.fingerprint));
    const forgiven = rogue(hub.url, "slightly scaled", identity);
    await until(() => hub.deviceCalls().some((d) => d.name === "rogue" && d.ready), "forgotten, it is admitted again");
    forgiven.close();
  }, { verifyRate: 1 }, identity);
});

test("with 1 replica the base station checks: the rogue is out of service from its first checked result on", async () => {
  await withRogue("slightly scaled", 1, 1, async (engine, hub) => {
    const r = await engine.generate(engine.tokenizer.encode(PROMPT), { temperature: 0, maxTokens: 1 }).catch((e: Error) => e);
    // the step's later calls to the rogue's experts have no host until they are placed again: the step fails rather than use its results
    if (r instanceof Error) assert.match(r.message, /no live device holds expert \d+ of layer \d+ \(its host: rogue out of service\)/);
    else assert.deepEqual(r.tokens, want.slice(0, 1), "the base station's results replaced the rogue's");
    assert.ok(engine.expertUsage().mismatched_results! > 0 && engine.expertUsage().rejected_results === 0, JSON.stringify(engine.expertUsage()));
    assert.ok(hub.deviceCalls().find((d) => d.name === "rogue")!.quarantined, "out of service at once, not after a few failures");
  }, { verifyRate: 1 });
});

test("without result checks any well-formed result is used; spot checks need them, and a rate from 0 to 1", async () => {
  await withRogue("zeros", 2, 2, async (engine, hub) => {
    const r = await engine.generate(engine.tokenizer.encode(PROMPT), { temperature: 0, maxTokens: 4 });
    assert.ok(r.experts.rejected_results === 0 && r.experts.verified_calls === 0, JSON.stringify(r.experts));
    assert.ok(!hub.deviceCalls().find((d) => d.name === "rogue")!.quarantined);
  }, { resultChecks: false });
  await assert.rejects(DeviceHub.listen({ model: dir, weightDType: "f32", wireDType: "f32", resultChecks: false, verifyRate: 0.1 }), /spot checks are result checks/);
  await assert.rejects(DeviceHub.listen({ model: dir, weightDType: "f32", wireDType: "f32", verifyRate: 1.5 }), /from 0 to 1, not 1\.5/);
});

const brown = sharedPath("models/brown-moe");

test("honest devices pass every spot check on brown-moe in every wire dtype, with 1 and 2 replicas: the text is as without checks", { skip: brown.skip }, async () => {
  const prompt = "The jury said it did find that many of the";
  /** A greedy generation over a hub with 2 in-process devices, and the activation bytes sent to devices. */
  const run = async (wireDType: "f32" | "f16" | "bf16", replicas: number, verifyRate: number) => {
    let bytesSent = 0;
    const hub = await DeviceHub.listen({ model: brown.path, weightDType: "f32", wireDType, replicas, verifyRate, log: () => undefined, onCall: (_, __, out) => (bytesSent += out) });
    const devices = [0, 1].map((i) => runDevice({ bs: hub.url, name: `d${i}`, threads: 1, spinMs: 0, retryForMs: 0, log: () => undefined }).catch(() => undefined));
    const engine = Engine.load(brown.path, { dtype: "f32", executor: hub.executor });
    try {
      await hub.start(2);
      const r = await engine.generate(engine.tokenizer.encode(prompt), { temperature: 0, maxTokens: 32 });
      return { r, bytesSent };
    } finally {
      engine.close();
      await hub.close();
      await Promise.all(devices);
    }
  };
  for (const wire of ["f32", "f16", "bf16"] as const) {
    const plain = await run(wire, 1, 0);
    assert.equal(plain.r.experts.verified_calls, 0);
    for (const replicas of [1, 2]) {
      const checked = await run(wire, replicas, 1);
      const e = checked.r.experts;
      assert.equal(checked.r.text, plain.r.text, `${wire}, ${replicas} replicas`);
      assert.ok(e.verified_calls === e.calls && e.mismatched_results === 0 && e.rejected_results === 0 && e.failed_calls === 0, `${wire}, ${replicas} replicas: ${JSON.stringify(e)}`);
      // with a replica to ask, every call went to two devices; without, the base station checked them
      assert.equal(checked.bytesSent, replicas * plain.bytesSent, `${wire}, ${replicas} replicas: bytes sent to devices`);
    }
  }
});
