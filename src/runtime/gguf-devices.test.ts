// A GGUF model served with device processes: the experts' tensors are streamed as the file stores them
// (ggml blocks, the type named in each frame), checked by the device before it caches them, and loaded
// as the kernels hold them (blocks kept, or converted to the nearest dtype, as the device's log says).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { tensorName } from "../model/arch.js";
import { readStoredTensor } from "../model/checkpoint.js";
import { GgufModel } from "../model/gguf-model.js";
import { f16Bits } from "../model/ggml-encode.js";
import { encodeFrame, type Message } from "../protocol/frames.js";
import { deviceProcess, scriptedBs, type ScriptedConnection } from "../testing/device-peers.js";
import { sharedPath } from "../testing/shared.js";
import { until } from "../testing/until.js";
import { Engine } from "./engine.js";
import { startLocalCluster } from "./local-cluster.js";

const q8 = sharedPath("models/brown-moe-gguf/brown-moe-q8_0.gguf");
const prompt = "The jury said it did find that many of Georgia's registration and election laws";

async function greedy(engine: Engine, n: number): Promise<number[]> {
  return (await engine.generate(engine.tokenizer.encode(prompt), { temperature: 0, maxTokens: n })).tokens;
}

test("a Q8_0 GGUF on 2 local devices fetching their weights: its experts streamed as Q8_0 blocks give the single-process greedy tokens", { skip: q8.skip, timeout: 120_000 }, async () => {
  const single = Engine.load(q8.path);
  const want = await greedy(single, 16);
  single.close();
  const g = GgufModel.open(q8.path);
  const t = g.config.arch.tensors;
  let q8Bytes = 0, tensors = 0;
  for (let l = 0; l < g.config.layers; l++) for (let e = 0; e < g.config.experts; e++) for (const tmpl of [t.expertGate, t.expertUp, t.expertDown]) {
    q8Bytes += g.get(tensorName(tmpl, l, e))!.bytes;
    tensors++;
  }
  g.close();
  const cache = mkdtempSync(path.join(os.tmpdir(), "distmoe-gguf-devices-"));
  try {
    const cluster = await startLocalCluster({ model: q8.path, devices: 2, weightDType: "q8", wireDType: "f32", log: () => undefined, deviceArgs: ["--fetch-weights", "--cache", cache] });
    try {
      const engine = Engine.load(q8.path, { executor: cluster.hub.executor });
      const got = await greedy(engine, 16);
      engine.close();
      assert.deepEqual(got, want);
      const streamed = cluster.hub.deviceCalls().reduce((s, d) => s + d.weightBytes, 0);
      assert.equal(streamed, q8Bytes, "every expert streamed once, in the file's Q8_0 blocks (not widened)");
    } finally {
      await cluster.close();
    }
    const [id] = readdirSync(cache).filter((f) => !f.startsWith("."));
    assert.equal(readdirSync(path.join(cache, id!)).length, tensors, "every expert tensor cached");
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});

test("a device refuses GGUF weights of a wrong length, an unknown type or the wrong shape, and loads Q8_0 as it is and Q4_K as q8, saying so", { skip: q8.skip, timeout: 60_000 }, async () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "distmoe-gguf-hostile-"));
  const g = GgufModel.open(q8.path);
  const bs = await scriptedBs();
  const device = deviceProcess(["--bs", bs.url, "--name", "gguf", "--cache", path.join(tmp, "cache")]);
  try {
    const t = g.config.arch.tensors;
    const names = (l: number, e: number) => [t.expertGate, t.expertUp, t.expertDown].map((tmpl) => tensorName(tmpl, l, e));
    const weights = (name: string): Extract<Message, { type: "weights" }> => {
      const info = g.get(name)!;
      const payload = readStoredTensor(info);
      return { type: "weights", name, dtype: "Q8_0", shape: [info.shape[0]!, info.shape[1]!], sha256: createHash("sha256").update(payload).digest("hex"), payload };
    };
    /** Q4_K blocks of small random values: a scale of 1/64 for each block's nibbles and sub-block scales, and a min of 0 */
    const q4k = (name: string): Extract<Message, { type: "weights" }> => {
      const [rows, cols] = g.get(name)!.shape as [number, number];
      const payload = new Uint8Array((rows * cols / 256) * 144).map(() => Math.floor(Math.random() * 256));
      for (let b = 0; b < payload.length; b += 144) payload.set([f16Bits(1 / 64) & 255, f16Bits(1 / 64) >> 8, 0, 0], b);
      return { type: "weights", name, dtype: "Q4_K", shape: [rows, cols], sha256: createHash("sha256").update(payload).digest("hex"), payload };
    };
    const next = async (c: ScriptedConnection, type: Message["type"]): Promise<Message> => {
      const m = await c.frames();
      assert.equal(m.type, type, JSON.stringify(m).slice(0, 300));
      return m;
    };
    const connect = async (): Promise<ScriptedConnection> => {
      const c = await bs.next();
      await next(c, "hello");
      return c;
    };
    const assign = (c: ScriptedConnection, experts: Array<[number, number]>) =>
      c.ws.send(encodeFrame({ type: "assign", model: "/nowhere/brown-moe.gguf", modelId: "g1", config: g.hfConfig, weightDType: "q8", wireDType: "f32", experts }));
    /** A frame the protocol refuses: the device drops the connection with the reason, and comes back. */
    const badFrame = async (c: ScriptedConnection, frame: Uint8Array, why: RegExp): Promise<ScriptedConnection> => {
      const closed = new Promise<[number, string]>((r) => c.ws.once("close", (code, reason) => r([code, reason.toString()])));
      c.ws.send(frame);
      const [code, reason] = await closed;
      assert.equal(code, 1002, reason);
      assert.match(reason, /^bad frame: weights /, "the reason, cut to a close frame's length");
      await until(() => why.test(device.stderr()), `the device to log ${why}`);
      return connect();
    };

    let c = await connect();
    const gate = weights(names(0, 0)[0]!);
    assign(c, [[0, 0]]);
    await next(c, "fetch");
    c = await badFrame(c, encodeFrame({ ...gate, payload: gate.payload.subarray(1) }), /weights model\.layers\.0\.block_sparse_moe\.experts\.0\.w1\.weight: \[512,256\] Q8_0 needs 139264 payload bytes, got 139263/);
    assign(c, [[0, 0]]);
    await next(c, "fetch");
    c = await badFrame(c, encodeFrame({ ...gate, dtype: "Q2_K" as "Q8_0" }), /weights needs name .*dtype \(F32, BF16, F16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K\)/);
    // a frame of the protocol, but not the shape the config implies: an error, the connection kept
    assign(c, [[0, 0]]);
    await next(c, "fetch");
    c.ws.send(encodeFrame({ ...gate, shape: [256, 512] }));
    const refused = await next(c, "error");
    assert.match(refused.type === "error" ? refused.message : "", /have shape \[256, 512\] but the config implies \[512, 256\]/);
    // an honest stream: Q8_0 blocks kept as they are
    assign(c, [[0, 0]]);
    await next(c, "fetch");
    for (const name of names(0, 0)) c.ws.send(encodeFrame(weights(name)));
    c.ws.send(encodeFrame({ type: "fetched", sent: 3, bytes: 0 }));
    assert.deepEqual(await next(c, "ready"), { type: "ready", experts: [[0, 0]] });
    assert.match(device.stderr(), /loaded 1 experts: Q8_0 blocks kept as q8 \(3 tensors\)/);
    // Q4_K, which the kernels lack: converted to q8 at load
    assign(c, [[0, 0], [0, 1]]);
    await next(c, "fetch");
    for (const name of names(0, 1)) c.ws.send(encodeFrame(q4k(name)));
    c.ws.send(encodeFrame({ type: "fetched", sent: 3, bytes: 0 }));
    assert.deepEqual(await next(c, "ready"), { type: "ready", experts: [[0, 0], [0, 1]] });
    assert.match(device.stderr(), /loaded 1 experts: Q4_K dequantized and requantized to q8 \(3 tensors\)/);
    // the Q4_K expert computes finite outputs
    const input = new Float32Array(g.config.hidden).map((_, i) => Math.sin(i));
    c.ws.send(encodeFrame({ type: "call", id: 1, layer: 0, experts: [[1, 1]], hidden: g.config.hidden, dtype: "f32", payload: new Uint8Array(input.buffer) }));
    const result = await next(c, "result");
    assert.ok(result.type === "result" && new Float32Array(result.payload.slice().buffer).every(Number.isFinite));
    // the base station's file, at a plain absolute path holding the very config assigned, is read here: nothing fetched
    c.ws.send(encodeFrame({ type: "assign", model: q8.path, modelId: "g1", config: g.hfConfig, weightDType: "q8", wireDType: "f32", experts: [[0, 0], [0, 1], [1, 2]] }));
    assert.deepEqual(await next(c, "ready"), { type: "ready", experts: [[0, 0], [0, 1], [1, 2]] });
    assert.deepEqual([...readdirSync(path.join(tmp, "cache", "g1"))].sort(), [...names(0, 0), ...names(0, 1)].map((n) => `${n}.safetensors`).sort(), "only the streamed experts are cached");
    assert.equal(device.child.exitCode, null, "the device is still running");
  } finally {
    device.child.kill("SIGKILL");
    g.close();
    await bs.close();
    rmSync(tmp, { recursive: true, force: true });
  }
});
