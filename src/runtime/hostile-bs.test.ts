// A real `distmoe device` against a hostile base station: names that would lead out of its cache,
// assignments beyond the memory it offers or beyond the model, configs of absurd size, weights of the
// wrong shape, a model path that is not plainly the model, and frames that are not frames. Each costs
// the base station one clear error (or the connection, for a frame that is not one); nothing is written
// outside the cache, and the device serves on.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { tensorName } from "../model/arch.js";
import { Checkpoint } from "../model/checkpoint.js";
import { readModelConfig } from "../model/config.js";
import { initModel } from "../model/init-model.js";
import { encodeFrame, type Message } from "../protocol/frames.js";
import { deviceProcess, scriptedBs, type ScriptedConnection } from "../testing/device-peers.js";
import { until } from "../testing/until.js";

type Pair = [number, number];

test("a device refuses what a hostile base station sends, writes nothing outside its cache, and serves on", { timeout: 120_000 }, async () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "distmoe-hostile-bs-"));
  const model = path.join(tmp, "model");
  // the device runs in `home` and caches in home/cache; a copy of the model lies where the relative path "model" leads from there
  const home = path.join(tmp, "home");
  const cache = path.join(home, "cache");
  initModel({ arch: "MixtralForCausalLM", layers: 2, hidden: 64, experts: 4, topK: 2, seed: 31, out: model });
  mkdirSync(home);
  cpSync(model, path.join(home, "model"), { recursive: true });
  const config = JSON.parse(readFileSync(path.join(model, "config.json"), "utf8")) as Record<string, unknown>;
  const t = readModelConfig(model).arch.tensors;
  const ck = Checkpoint.open(model);
  const bs = await scriptedBs();
  // an expert of this model is 3 × 64 × 128 f32 = 96 KiB: five fit in the memory offered, six do not
  const device = deviceProcess(["--bs", bs.url, "--name", "victim", "--cache", cache, "--memory", "512KiB"], home);
  try {
    const assign = (experts: Pair[], more: Partial<Extract<Message, { type: "assign" }>> = {}): Uint8Array =>
      encodeFrame({ type: "assign", model: "/nowhere/model", modelId: "m1", config, weightDType: "f32", wireDType: "f32", experts, ...more });
    const weights = (name: string): Extract<Message, { type: "weights" }> => {
      const info = ck.get(name)!;
      const payload = info.file.read(name);
      return { type: "weights", name, dtype: info.dtype as "F32" | "BF16" | "F16", shape: [info.shape[0]!, info.shape[1]!], sha256: createHash("sha256").update(payload).digest("hex"), payload };
    };
    const tensors = (experts: readonly Pair[]) => experts.flatMap(([l, e]) => [t.expertGate, t.expertUp, t.expertDown].map((tmpl) => tensorName(tmpl, l, e)));
    const next = async (c: ScriptedConnection, type: Message["type"]): Promise<Message> => {
      const m = await c.frames();
      assert.equal(m.type, type, JSON.stringify(m).slice(0, 300));
      return m;
    };
    const refused = async (c: ScriptedConnection, why: RegExp) => {
      const m = await next(c, "error");
      assert.ok(m.type === "error" && why.test(m.message), m.type === "error" ? m.message : "");
      await until(() => why.test(device.stderr()), `the device to log ${why}`);
    };
    /** Answers the device's fetch of `experts` as an honest base station would. */
    const serve = async (c: ScriptedConnection, experts: Pair[]) => {
      assert.deepEqual(await next(c, "fetch"), { type: "fetch", experts, have: {} });
      for (const name of tensors(experts)) c.ws.send(encodeFrame(weights(name)));
      c.ws.send(encodeFrame({ type: "fetched", sent: experts.length * 3, bytes: 0 }));
    };
    const connect = async (holds?: Pair[]): Promise<ScriptedConnection> => {
      const c = await bs.next();
      const hello = await next(c, "hello");
      assert.deepEqual(hello.type === "hello" ? hello.holds : null, holds);
      return c;
    };

    let c = await connect();
    // sizes: weighed before anything is allocated or fetched
    c.ws.send(assign([[0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1], [1, 2], [1, 3]]));
    await refused(c, /cannot load the assigned experts: 8 experts need 0\.8 MiB \(0\.1 MiB each\), more than the 0\.5 MiB this device offers/);
    c.ws.send(assign([[0, 0]], { config: { ...config, intermediate_size: 1 << 20 } }));
    await refused(c, /1 experts need 768\.0 MiB \(768\.0 MiB each\), more than the 0\.5 MiB/);
    c.ws.send(assign([[0, 0]], { config: { ...config, hidden_size: 2 ** 40 } }));
    await refused(c, /assigned config: hidden_size must be at most 65536, got 1099511627776/);
    c.ws.send(assign([[0, 0]], { config: { ...config, num_hidden_layers: 1e9 } }));
    await refused(c, /assigned config: num_hidden_layers must be at most 1024/);
    // experts beyond the model, or twice
    c.ws.send(assign([[2, 0]]));
    await refused(c, /\[2, 0\] is not an expert of this model \(2 layers of 4 experts\)/);
    c.ws.send(assign([[0, 0], [0, 0]]));
    await refused(c, /expert 0 of layer 0 is assigned twice/);
    // weights: only the tensors asked for, in the shapes the config implies
    c.ws.send(assign([[0, 0], [0, 1]]));
    assert.equal((await next(c, "fetch")).type, "fetch");
    c.ws.send(encodeFrame(weights(tensors([[1, 0]])[0]!)));
    assert.deepEqual(await next(c, "error"), { type: "error", message: "unexpected weights model.layers.1.block_sparse_moe.experts.0.w1.weight" });
    const gate = weights(tensors([[0, 0]])[0]!);
    c.ws.send(encodeFrame({ ...gate, shape: [gate.shape[1], gate.shape[0]] }));
    await refused(c, /weights model\.layers\.0\.block_sparse_moe\.experts\.0\.w1\.weight have shape \[64, 128\] but the config implies \[128, 64\]/);
    assert.ok(!existsSync(path.join(cache, "m1", `${gate.name}.safetensors`)), "weights of the wrong shape are not kept");
    // an honest assignment after all that
    c.ws.send(assign([[0, 0], [0, 1]]));
    await serve(c, [[0, 0], [0, 1]]);
    assert.deepEqual(await next(c, "ready"), { type: "ready", experts: [[0, 0], [0, 1]] });
    // the base station's model path is read only where it is plainly the model: not relative to where the device runs, no `..`
    c.ws.send(assign([[0, 0], [0, 1], [1, 0]], { model: "model" }));
    await serve(c, [[1, 0]]);
    assert.equal((await next(c, "ready")).type, "ready");
    assert.match(device.stderr(), /not reading the base station's model path model: only a plain absolute path is read; streaming the weights/);
    c.ws.send(assign([[0, 0], [0, 1], [1, 0], [1, 1]], { model: `${model}/../model` }));
    await serve(c, [[1, 1]]);
    assert.equal((await next(c, "ready")).type, "ready");
    // …and read there when it is
    c.ws.send(assign([[0, 0], [0, 1], [1, 0], [1, 1], [1, 2]], { model }));
    assert.deepEqual(await next(c, "ready"), { type: "ready", experts: [[0, 0], [0, 1], [1, 0], [1, 1], [1, 2]] }, "read from the model directory, nothing fetched");
    // assignments that add up: what is held beyond the new one goes rather than exceed the memory offered
    c.ws.send(assign([[1, 3]]));
    await serve(c, [[1, 3]]);
    assert.deepEqual(await next(c, "ready"), { type: "ready", experts: [[1, 3]] });
    assert.match(device.stderr(), /dropping the 5 experts held beyond the new assignment: with it they would exceed the 0\.5 MiB offered/);

    // frames that are not frames of the protocol, or name a path: the device drops the connection with the reason, and comes back
    const name = tensors([[1, 3]])[0]!;
    const truncated = encodeFrame(weights(name));
    const hostile: Array<[string | Uint8Array, number, RegExp]> = [
      [assign([[1, 3]], { modelId: ".." }), 1002, /assign needs model, modelId \(letters, digits, _ \. -, not a dot first\)/],
      [assign([[1, 3]], { modelId: "../escape" }), 1002, /modelId/],
      [assign([[1, 3]], { modelId: path.join(tmp, "escape") }), 1002, /modelId/],
      [encodeFrame({ ...weights(name), name: "../escape" }), 1002, /weights needs name \(letters, digits, _ \. -, not a dot first\)/],
      [encodeFrame({ ...weights(name), name: `x/${name}` }), 1002, /weights needs name/],
      [encodeFrame({ ...weights(name), name: `${name}\0` }), 1002, /weights needs name/],
      [encodeFrame({ ...weights(name), name: "w".repeat(600) }), 1002, /weights needs name/],
      [truncated.subarray(0, truncated.length - 1), 1002, /\[128,64\] BF16 needs 16384 payload bytes, got 16383/],
      [Uint8Array.from([0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 1]), 1002, /bad magic/],
      ["{\"type\": \"assign\"}", 1003, /text frames are not part of the protocol/],
    ];
    const badFrames = () => device.stderr().split("\n").filter((l) => l.startsWith("[device victim] bad frame: "));
    for (const [i, [frame, code, why]] of hostile.entries()) {
      const closed = new Promise<[number, string]>((r) => c.ws.once("close", (code, reason) => r([code, reason.toString()])));
      c.ws.send(frame);
      const answer = await c.frames().catch(() => null);
      assert.equal(answer, null, `the device answered ${JSON.stringify(answer)?.slice(0, 300)} instead of closing the connection`);
      const [gotCode, reason] = await closed;
      assert.equal(gotCode, code, reason);
      assert.match(reason, why);
      await until(() => badFrames().length === i + 1, "the device to log the bad frame");
      assert.match(badFrames()[i]!, why);
      // back, holding what it held; loaded on this connection, it comes back soon again after the next
      c = await connect([[1, 3]]);
      c.ws.send(assign([[1, 3]]));
      assert.deepEqual(await next(c, "ready"), { type: "ready", experts: [[1, 3]] });
    }

    assert.equal(device.child.exitCode, null, "the device is still running");
    device.child.kill("SIGTERM");
    assert.deepEqual(await next(c, "leave"), { type: "leave", reason: "device stopping" });
    assert.equal(await device.exit, 0, device.stderr());

    // nothing written but the cache: one folder for the one model id, holding only its tensors
    assert.deepEqual(readdirSync(tmp).sort(), ["home", "model"]);
    assert.deepEqual(readdirSync(home).sort(), ["cache", "model"]);
    assert.deepEqual(readdirSync(path.join(home, "model"), { recursive: true }).sort(), readdirSync(model, { recursive: true }).sort());
    assert.deepEqual(readdirSync(cache).sort(), [".identity", "m1"], "the model's folder, and the device's identity");
    assert.deepEqual(readdirSync(path.join(cache, ".identity")), ["victim.key"]);
    const cached = readdirSync(path.join(cache, "m1"));
    assert.deepEqual(cached.sort(), tensors([[0, 0], [0, 1], [1, 0], [1, 1], [1, 3]]).map((n) => `${n}.safetensors`).sort());
  } finally {
    device.child.kill("SIGKILL");
    ck.close();
    await bs.close();
    rmSync(tmp, { recursive: true, force: true });
  }
});

test("a base station that streams weights for made-up model ids and never lets an assignment complete does not fill the device's disk: the cache stays within its budget", { timeout: 120_000 }, async () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "distmoe-hostile-bs-cache-"));
  const model = path.join(tmp, "model"), cache = path.join(tmp, "cache");
  initModel({ arch: "MixtralForCausalLM", layers: 2, hidden: 64, experts: 4, topK: 2, seed: 32, out: model });
  const config = JSON.parse(readFileSync(path.join(model, "config.json"), "utf8")) as Record<string, unknown>;
  const t = readModelConfig(model).arch.tensors;
  const ck = Checkpoint.open(model);
  const bs = await scriptedBs();
  // each model id below gets 11 tensors of 16 KiB (bf16 as the file has them): 176 KiB, more than the budget in two
  const device = deviceProcess(["--bs", bs.url, "--name", "victim", "--cache", cache, "--memory", "512KiB", "--cache-max", "300KiB"]);
  const cachedBytes = () => readdirSync(cache, { recursive: true, withFileTypes: true }).filter((f) => f.isFile() && f.name.endsWith(".safetensors")).reduce((n, f) => n + statSync(path.join(f.parentPath, f.name)).size, 0);
  try {
    const c = await bs.next();
    assert.equal((await c.frames()).type, "hello");
    const experts: Pair[] = [[0, 0], [0, 1], [0, 2], [0, 3]];
    const names = experts.flatMap(([l, e]) => [t.expertGate, t.expertUp, t.expertDown].map((tmpl) => tensorName(tmpl, l, e)));
    for (const modelId of ["made-up-1", "made-up-2", "made-up-3", "made-up-4"]) {
      c.ws.send(encodeFrame({ type: "assign", model: "/nowhere/model", modelId, config, weightDType: "f32", wireDType: "f32", experts }));
      assert.equal((await c.frames()).type, "fetch");
      // every tensor but the last: the assignment never completes
      for (const name of names.slice(0, -1)) {
        const info = ck.get(name)!;
        const payload = info.file.read(name);
        c.ws.send(encodeFrame({ type: "weights", name, dtype: info.dtype as "BF16", shape: [info.shape[0]!, info.shape[1]!], sha256: createHash("sha256").update(payload).digest("hex"), payload }));
      }
      c.ws.send(encodeFrame({ type: "fetched", sent: names.length - 1, bytes: 0 }));
      const m = await c.frames();
      assert.ok(m.type === "error" && /tensors never came/.test(m.message), JSON.stringify(m).slice(0, 300));
    }
    await until(() => cachedBytes() <= 300 * 1024, "the cache to be trimmed to its budget", 15_000);
    assert.equal(device.child.exitCode, null, "the device is still running");
  } finally {
    device.child.kill("SIGKILL");
    ck.close();
    await bs.close();
    rmSync(tmp, { recursive: true, force: true });
  }
});
