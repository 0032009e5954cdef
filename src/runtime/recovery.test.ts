// A device outlives its base station: it reconnects with backoff, keeps the experts it holds (so a
// restarted base station resends nothing), and gives up only after --retry-for.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { DeviceHub } from "./device-hub.js";
import { Engine } from "./engine.js";
import { runDevice } from "./device.js";
import { Backoff } from "./backoff.js";
import { initModel } from "../model/init-model.js";
import { encodeFrame, type Message } from "../protocol/frames.js";
import { encodeActivations } from "../protocol/activations.js";
import { newJoinToken } from "../protocol/handshake.js";
import { duration } from "../cli/options.js";
import { until } from "../testing/until.js";
import { deviceProcess, scriptedBs } from "../testing/device-peers.js";

const quiet = () => undefined;
/** How long a test waits for what should happen in well under a second before it fails. */
const PATIENCE_MS = 60_000;

/** A port nothing listens on (until someone takes it). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server.close(r));
  return port;
}

function withTempDir(fn: (dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-recovery-"));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test("a base station restarted under running devices: they reconnect by themselves, keep their experts, are sent no weights again and serve the same output", withTempDir(async (dir) => {
  const model = path.join(dir, "model");
  initModel({ arch: "MixtralForCausalLM", layers: 2, hidden: 64, experts: 4, topK: 2, seed: 21, out: model });
  const port = await freePort();
  // replicas = devices: every device holds every expert, so the placement after the restart cannot differ
  const token = newJoinToken();
  const listen = () => DeviceHub.listen({ model, weightDType: "f32", wireDType: "f32", replicas: 2, port, joinTokens: [token], log: quiet });
  const generate = async (hub: DeviceHub) => {
    const engine = Engine.load(model, { dtype: "f32", executor: hub.executor });
    try {
      return (await engine.generate(engine.tokenizer.encode("come back"), { temperature: 0, maxTokens: 12 })).tokens;
    } finally {
      engine.close();
    }
  };
  const single = Engine.load(model, { dtype: "f32" });
  const want = (await single.generate(single.tokenizer.encode("come back"), { temperature: 0, maxTokens: 12 })).tokens;
  single.close();

  let hub = await listen();
  const devices = [0, 1].map((i) => deviceProcess(["--bs", hub.url, "--token", token, "--name", `d${i}`, "--fetch-weights", "--cache", path.join(dir, `cache-${i}`)]));
  try {
    await hub.start(2);
    assert.deepEqual(await generate(hub), want);
    assert.ok(hub.deviceCalls().every((d) => d.weightBytes > 0), "the weights were streamed to both devices");

    await hub.close();
    await until(() => devices.every((d) => /reconnecting in [0-9.]+ s/.test(d.stderr())), "the devices to notice");
    for (const d of devices) assert.match(d.stderr(), /base station left \(base station shutting down\); reconnecting in [0-9.]+ s\n/);
    hub = await listen();
    await hub.start(2);
    assert.deepEqual(await generate(hub), want, "the same output after the restart");
    assert.deepEqual(hub.deviceCalls().map((d) => d.weightBytes), [0, 0], "nothing was streamed again");
    for (const d of devices) {
      assert.equal(d.child.exitCode, null, "the same processes serve");
      assert.match(d.stderr(), /connected to ws:\/\/127\.0\.0\.1:\d+; holds 8 experts\n/, "the hello says what it holds");
      assert.match(d.stderr(), /holds 8 experts \(0 newly loaded\)\n/, "the experts stayed in memory");
    }
  } finally {
    await hub.close();
    for (const d of devices) d.child.kill("SIGTERM");
    const codes = await Promise.all(devices.map((d) => d.exit));
    assert.deepEqual(codes, [0, 0], "stopped by a signal, a device ends normally");
  }
}));

test("--retry-for: a device that cannot reach its base station gives up after that long, with the reason; by default it keeps trying", async () => {
  const port = await freePort();
  const bs = `ws://127.0.0.1:${port}`;
  const bounded = deviceProcess(["--bs", bs, "--name", "patient", "--retry-for", "1s"]);
  assert.equal(await bounded.exit, 1);
  const lines = bounded.stderr().trim().split("\n");
  assert.match(lines[0]!, /identity SHA256:/, "it says who it is first");
  assert.match(lines[1]!, /kernels: (native|wasm) \(/, "then which kernels it computes with");
  assert.match(lines[2]!, new RegExp(`cannot reach ${bs}: ECONNREFUSED; retrying in [0-9.]+ s$`));
  assert.match(lines.at(-1)!, new RegExp(`^distmoe: error: gave up on the base station after [0-9.]+ s out of reach \\(limit 1\\.0 s\\); last: cannot reach ${bs}: ECONNREFUSED$`));

  const forever = deviceProcess(["--bs", bs, "--name", "forever"]);
  try {
    await until(() => (forever.stderr().match(/retrying in/g) ?? []).length >= 3, "three attempts");
    assert.equal(forever.child.exitCode, null, "still trying");
  } finally {
    forever.child.kill("SIGTERM");
  }
  assert.equal(await forever.exit, 0, "a signal while waiting to retry ends it normally");

  const refused = deviceProcess(["--bs", bs, "--retry-for", "soon"]);
  assert.equal(await refused.exit, 1);
  assert.match(refused.stderr(), /expected a duration such as 30s, 5m or 1h \(units ms, s, m, h\), got "soon"/);
});

test("durations: 250ms, 30s, 5m, 1.5h and 0 in milliseconds; anything else refused", () => {
  assert.equal(duration("250ms"), 250);
  assert.equal(duration("30s"), 30_000);
  assert.equal(duration("5m"), 300_000);
  assert.equal(duration("1.5h"), 5_400_000);
  assert.equal(duration("0"), 0);
  for (const bad of ["", "5", "-1s", "1d", "s", "1e3s"]) assert.throws(() => duration(bad), /expected a duration/, bad);
});

test("backoff: each delay within [bound/2, bound], the bound doubling to the cap; reset starts over", () => {
  const low = new Backoff({ firstMs: 100, capMs: 1000 }, () => 0);
  assert.deepEqual(Array.from({ length: 6 }, () => low.next()), [50, 100, 200, 400, 500, 500]);
  const high = new Backoff({ firstMs: 100, capMs: 1000 }, () => 1);
  assert.deepEqual(Array.from({ length: 6 }, () => high.next()), [100, 200, 400, 800, 1000, 1000]);
  high.reset();
  assert.equal(high.next(), 100);
});

test("a device told leave reconnects, says what it holds and loads nothing again; no calls before the new connection's assignment; stopped, it says leave", { timeout: 60_000 }, withTempDir(async (dir) => {
  initModel({ arch: "MixtralForCausalLM", layers: 2, hidden: 64, experts: 4, topK: 2, seed: 22, out: dir });
  const config = JSON.parse(readFileSync(path.join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  const assign = (experts: Array<[number, number]>): Message => ({ type: "assign", model: dir, modelId: "m", config, weightDType: "f32", wireDType: "f32", experts });
  const bs = await scriptedBs();
  const stop = new AbortController();
  const lines: string[] = [];
  const running = runDevice({ bs: bs.url, name: "d", threads: 1, backoff: { firstMs: 10, capMs: 20 }, signal: stop.signal, log: (l) => lines.push(l) });
  try {
    let c = await bs.next();
    assert.deepEqual(Object.keys(await c.frames()), ["type", "name", "capabilities", "nonce", "key", "signature"], "a first hello holds nothing");
    c.ws.send(encodeFrame(assign([[0, 1], [1, 2]])));
    assert.deepEqual(await c.frames(), { type: "ready", experts: [[0, 1], [1, 2]] });
    c.ws.send(encodeFrame({ type: "leave", reason: "restarting" }));

    c = await bs.next();
    const hello = await c.frames();
    assert.ok(hello.type === "hello", hello.type);
    assert.deepEqual(hello.holds, [[0, 1], [1, 2]]);
    c.ws.send(encodeFrame({ type: "call", id: 1, layer: 1, experts: [[2, 1]], hidden: 64, dtype: "f32", payload: encodeActivations(new Float32Array(64).fill(0.5), "f32") }));
    assert.deepEqual(await c.frames(), { type: "error", id: 1, message: "no experts assigned yet" }, "no calls before this connection's assignment");
    c.ws.send(encodeFrame(assign([[0, 1], [1, 2]])));
    assert.deepEqual(await c.frames(), { type: "ready", experts: [[0, 1], [1, 2]] });
    assert.ok(lines.includes("holds 2 experts (0 newly loaded)"), lines.join("\n"));
    c.ws.send(encodeFrame({ type: "call", id: 2, layer: 1, experts: [[2, 1]], hidden: 64, dtype: "f32", payload: encodeActivations(new Float32Array(64).fill(0.5), "f32") }));
    assert.equal((await c.frames()).type, "result");

    stop.abort();
    assert.deepEqual(await c.frames(), { type: "leave", reason: "device stopping" });
    await running;
  } finally {
    stop.abort();
    await running.catch(() => undefined);
    await bs.close();
  }
}));

test("a connection lost mid-fetch: its assignment is given up and nothing of it reaches the next connection; weights not asked for are refused", { timeout: 60_000 }, withTempDir(async (dir) => {
  const model = path.join(dir, "model");
  initModel({ arch: "MixtralForCausalLM", layers: 2, hidden: 64, experts: 4, topK: 2, seed: 23, out: model });
  const config = JSON.parse(readFileSync(path.join(model, "config.json"), "utf8")) as Record<string, unknown>;
  const assign = (experts: Array<[number, number]>): Message => ({ type: "assign", model, modelId: "m", config, weightDType: "f32", wireDType: "f32", experts });
  const bs = await scriptedBs();
  const stop = new AbortController();
  const lines: string[] = [];
  const running = runDevice({ bs: bs.url, name: "d", threads: 1, fetchWeights: true, cacheDir: path.join(dir, "cache"), backoff: { firstMs: 10, capMs: 20 }, signal: stop.signal, log: (l) => lines.push(l) });
  try {
    let c = await bs.next();
    assert.equal((await c.frames()).type, "hello");
    c.ws.send(encodeFrame(assign([[1, 3]])));
    assert.deepEqual(await c.frames(), { type: "fetch", experts: [[1, 3]], have: {} });
    const payload = new Uint8Array(4);
    const unasked: Message = { type: "weights", name: "model.layers.0.other.weight", dtype: "F32", shape: [1, 1], sha256: createHash("sha256").update(payload).digest("hex"), payload };
    c.ws.send(encodeFrame(unasked));
    assert.deepEqual(await c.frames(), { type: "error", message: "unexpected weights model.layers.0.other.weight" }, "weights not asked for are refused");
    // a name that could leave the cache does not even decode: the device drops the connection
    c.ws.send(encodeFrame({ ...unasked, name: "../../escape" }));
    const [code, reason] = await new Promise<[number, string]>((r) => c.ws.once("close", (code, why) => r([code, why.toString()])));
    assert.equal(code, 1002);
    assert.match(reason, /weights needs name \(letters, digits/);
    assert.ok(!existsSync(path.join(dir, "escape.safetensors")), "nothing was written");

    c = await bs.next();
    const hello = await c.frames();
    assert.ok(hello.type === "hello" && hello.holds === undefined, "nothing was loaded");
    assert.ok(lines.some((l) => /reconnecting in [0-9.]+ s$/.test(l)), lines.join("\n"));
    c.ws.send(encodeFrame(assign([[0, 0]])));
    assert.deepEqual(await c.frames(), { type: "fetch", experts: [[0, 0]], have: {} }, "this connection's fetch, and no word of the old assignment");
    stop.abort();
    assert.deepEqual(await c.frames(), { type: "leave", reason: "device stopping" });
    await running;
  } finally {
    stop.abort();
    await running.catch(() => undefined);
    await bs.close();
  }
}));

test("--retry-for 0: a base station that leaves ends the device normally; one that drops ends it with an error", async () => {
  const bs = await scriptedBs();
  try {
    const leaving = deviceProcess(["--bs", bs.url, "--name", "once", "--retry-for", "0"]);
    let c = await bs.next();
    assert.equal((await c.frames()).type, "hello");
    c.ws.send(encodeFrame({ type: "leave", reason: "base station shutting down" }));
    assert.equal(await leaving.exit, 0);
    assert.match(leaving.stderr(), /base station left \(base station shutting down\); not reconnecting\n$/);

    const dropped = deviceProcess(["--bs", bs.url, "--name", "once", "--retry-for", "0"]);
    c = await bs.next();
    assert.equal((await c.frames()).type, "hello");
    c.ws.terminate();
    assert.equal(await dropped.exit, 1);
    assert.match(dropped.stderr(), /\ndistmoe: error: base station went away \(code 1006\); not reconnecting\n$/);
  } finally {
    await bs.close();
  }
});
