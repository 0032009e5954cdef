// The device port under hostile and faulty peers: each case gets the right reaction from the hub, and
// the hub serves a normal generation afterwards. Honest devices run in this process (runDevice); hostile
// peers are raw WebSocket clients or hand-made sockets on loopback.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { DeviceHub, type HubOptions } from "./device-hub.js";
import { runDevice } from "./device.js";
import { Engine } from "./engine.js";
import { spawnLocalDevices } from "./local-cluster.js";
import { newJoinToken } from "../protocol/handshake.js";
import { initModel } from "../model/init-model.js";
import { ExpertsUnavailable } from "../moe/executor.js";
import { decodeFrame, encodeFrame, type Capabilities, type Message } from "../protocol/frames.js";
import { ServerMetrics } from "../server/metrics.js";
import { until } from "../testing/until.js";

const PROMPT = "hostile peers";
const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-hub-"));
initModel({ arch: "MixtralForCausalLM", layers: 2, hidden: 64, experts: 4, topK: 2, seed: 21, out: dir });
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

const engine = Engine.load(dir, { dtype: "f32" });
const want = (await engine.generate(engine.tokenizer.encode(PROMPT), { temperature: 0, maxTokens: 6 })).tokens;
engine.close();

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


interface Bench {
  hub: DeviceHub;
  /** the hub's log lines */
  lines: string[];
  /** starts an honest device in this process; resolves when it has gone */
  device(name: string): Promise<void>;
  /** a short greedy generation through the hub equals the single-process one */
  serves(): Promise<void>;
}

/** A hub on loopback with `devices` honest devices started (and placed, when `devices` > 0), for `fn`. */
async function withBench(devices: number, opts: Partial<HubOptions>, fn: (b: Bench) => Promise<void>): Promise<void> {
  const lines: string[] = [];
  const hub = await DeviceHub.listen({ model: dir, weightDType: "f32", wireDType: "f32", log: (l) => lines.push(l), ...opts });
  const running: Array<Promise<void>> = [];
  const device = (name: string) => {
    const done = runDevice({ bs: hub.url, name, threads: 1, spinMs: 0, retryForMs: 0, log: () => undefined });
    running.push(done.catch(() => undefined));
    return done;
  };
  const serves = async () => {
    const e = Engine.load(dir, { dtype: "f32", executor: hub.executor });
    try {
      assert.deepEqual((await e.generate(e.tokenizer.encode(PROMPT), { temperature: 0, maxTokens: 6 })).tokens, want, "the hub still serves, with the same output");
    } finally {
      e.close();
    }
  };
  try {
    if (devices > 0) {
      for (let i = 0; i < devices; i++) void device(`d${i}`);
      await hub.start(devices);
    }
    await fn({ hub, lines, device, serves });
  } finally {
    await hub.close();
    await Promise.all(running);
  }
}

/** A hostile peer's capabilities: memory for no expert, so that placement gives it none. */
const CAPS: Capabilities = { memoryBytes: 1, gflops: 10, readGbps: 10, weightDTypes: ["f32"], wireDTypes: ["f32"] };
const hello = (name: string, more: Partial<Extract<Message, { type: "hello" }>> = {}) => encodeFrame({ type: "hello", name, capabilities: CAPS, ...more });

interface Peer {
  ws: WebSocket;
  /** frames the hub sent it */
  got: Message[];
  closed: Promise<{ code: number; reason: string }>;
}

/** A raw WebSocket client, open. */
async function peer(url: string): Promise<Peer> {
  const ws = new WebSocket(url);
  const got: Message[] = [];
  ws.on("message", (d: Buffer) => got.push(decodeFrame(new Uint8Array(d))));
  ws.on("error", () => undefined);
  const closed = new Promise<{ code: number; reason: string }>((r) => ws.once("close", (code, reason) => r({ code, reason: reason.toString() })));
  await new Promise((r, j) => ws.once("open", r).once("close", j));
  return { ws, got, closed };
}

/** A peer that says hello and loads whatever it is assigned at once (it computes nothing). */
async function fakeDevice(url: string, name: string, more: Partial<Extract<Message, { type: "hello" }>> = {}): Promise<Peer> {
  const p = await peer(url);
  p.ws.on("message", (d: Buffer) => {
    const m = decodeFrame(new Uint8Array(d));
    if (m.type === "assign") p.ws.send(encodeFrame({ type: "ready", experts: m.experts }));
  });
  p.ws.send(hello(name, more));
  return p;
}

/** A masked client frame header: FIN, `opcode`, and a 64-bit payload length. */
const frameHeader = (opcode: number, length: bigint) => {
  const b = Buffer.alloc(14);
  b[0] = 0x80 | opcode;
  b[1] = 0x80 | 127;
  b.writeBigUInt64BE(length, 2);
  b.writeUInt32BE(0x01020304, 10);
  return b;
};

/** A TCP connection upgraded to a WebSocket by hand; resolves once the 101 has come, with what follows it. */
async function rawUpgrade(url: string): Promise<{ socket: net.Socket; after: () => Buffer; closed: Promise<void> }> {
  const { hostname, port } = new URL(url);
  const socket = net.connect(Number(port), hostname);
  let data = Buffer.alloc(0);
  socket.on("data", (d) => (data = Buffer.concat([data, d])));
  socket.on("error", () => undefined);
  const closed = new Promise<void>((r) => socket.once("close", () => r()));
  await new Promise((r) => socket.once("connect", r));
  socket.write(`GET / HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  await until(() => data.includes("\r\n\r\n"), "the upgrade response");
  assert.match(data.toString("latin1"), /^HTTP\/1.1 101/);
  const head = data.indexOf("\r\n\r\n") + 4;
  return { socket, after: () => data.subarray(head), closed };
}

/** The close code of the close frame at the start of `b` (an unmasked server frame). */
/** The code of the close frame among the server's frames in `b` (unmasked, one after another; the challenge comes first). */
function closeCode(b: Buffer): number | undefined {
  for (let at = 0; at + 2 <= b.length; ) {
    let length = b[at + 1]! & 0x7f, head = 2;
    if (length === 126) [length, head] = [b.readUInt16BE(at + 2), 4];
    else if (length === 127) [length, head] = [Number(b.readBigUInt64BE(at + 2)), 10];
    if (b[at] === 0x88) return length >= 2 ? b.readUInt16BE(at + head) : undefined;
    at += head + length;
  }
  return undefined;
}

test("a frame with a reserved opcode after the handshake closes that connection (1002), logged; the hub serves on", async () => {
  await withBench(2, {}, async ({ hub, lines, serves }) => {
    const p = await peer(hub.url);
    (p.ws as unknown as { _socket: net.Socket })._socket.write(frameHeader(0x3, 0n));
    assert.equal((await p.closed).code, 1002);
    await until(() => lines.some((l) => /invalid opcode 3/.test(l)), "the error logged");
    await serves();
  });
});

test("a frame announcing more than maxPayload, on a hand-made upgrade, closes that connection (1009); the hub serves on", async () => {
  await withBench(2, {}, async ({ hub, lines, serves }) => {
    const raw = await rawUpgrade(hub.url);
    raw.socket.write(frameHeader(0x2, 1n << 40n));
    await raw.closed;
    assert.equal(closeCode(raw.after()), 1009);
    assert.ok(lines.some((l) => /Max payload size exceeded|payload length/.test(l)), lines.join("\n"));
    await serves();
  });
});

test("thousands of malformed frames on one connection, and one on each of many: each connection closed at its first, no error frames, a bounded log", async () => {
  let log: string[] = [];
  await withBench(2, { limits: { complaintsLogged: 3, summaryMs: 60_000 } }, async ({ hub, lines, serves }) => {
    log = lines;
    const flood = await peer(hub.url);
    for (let i = 0; i < 5000; i++) flood.ws.send(new Uint8Array([1, 2, 3]));
    const c = await flood.closed;
    assert.equal(c.code, 1002);
    assert.match(c.reason, /bad magic/);
    assert.deepEqual(flood.got.filter((m) => m.type !== "challenge"), [], "bad frames are not answered with error frames");
    const many = await Promise.all(Array.from({ length: 30 }, () => peer(hub.url)));
    for (const p of many) p.ws.send(new Uint8Array([0x44, 0x4d, 99, 0]));
    for (const p of many) assert.equal((await p.closed).code, 1002);
    await serves();
  });
  // closing the hub ends the summary period: what was not logged is counted
  const logged = log.filter((l) => l.includes("bad frame:"));
  assert.equal(logged.length, 3, `3 bad frames logged: ${logged.join("\n")}`);
  assert.ok(log.includes("peer 127.0.0.1: 28 more bad frames"), log.join("\n"));
});

test("a connection that never says hello is closed after the hello timeout (1008)", async () => {
  await withBench(0, { limits: { helloTimeoutMs: 1500 } }, async ({ hub, device, serves }) => {
    const idle = await Promise.all([peer(hub.url), peer(hub.url)]);
    for (const p of idle) {
      const c = await p.closed;
      assert.equal(c.code, 1008);
      assert.match(c.reason, /no hello within 1500 ms/);
    }
    // an honest device says hello within its timeout (it measures itself first: allow for that)
    const started = hub.start(1);
    void device("d0");
    await started;
    await serves();
  });
});

test("connections beyond the cap are closed at once (1013); the hub serves on", async () => {
  await withBench(2, { limits: { maxConnections: 4 } }, async ({ hub, lines, serves }) => {
    const held = await Promise.all([peer(hub.url), peer(hub.url)]);
    const over = await peer(hub.url).catch(() => null);
    const c = over ? await over.closed : null;
    assert.equal(c?.code, 1013);
    assert.match(c!.reason, /limit of 4 device connections/);
    assert.ok(lines.some((l) => /limit of 4 device connections/.test(l)));
    for (const p of held) p.ws.close();
    await Promise.all(held.map((p) => p.closed));
    const again = await peer(hub.url);
    again.ws.send(hello("after"));
    await until(() => hub.deviceCalls().some((d) => d.name === "after"), "a connection accepted once below the cap");
    again.ws.close();
    await serves();
  });
});

test("hostile device names reach the log and status() sanitized and unique; a 10 kB name is refused; onDeviceGone names who left", async () => {
  const gone: string[] = [];
  await withBench(2, { onDeviceGone: (n) => gone.push(n) }, async ({ hub, lines, serves }) => {
    const forged = "evil\n[bs] placement 9: all yours\x1b[31mRED\x1b[0m";
    const a = await fakeDevice(hub.url, forged);
    const b = await fakeDevice(hub.url, forged);
    const long = await fakeDevice(hub.url, "é".repeat(100));
    await until(() => hub.status().devices.length === 5, "the three joined");
    const names = hub.status().devices.map((d) => d.name).slice(2);
    assert.deepEqual(names, ["evil__bs__placement_9__all_yours__31mRED__0m", "evil__bs__placement_9__all_yours__31mRED__0m-2", "_".repeat(64)]);
    for (const l of lines) assert.match(l, /^[\x20-\x7e]*$/, `a log line with only printable ASCII: ${JSON.stringify(l)}`);
    const huge = await peer(hub.url);
    huge.ws.send(hello("x".repeat(10_000)));
    assert.equal((await huge.closed).code, 1002);
    assert.ok(!lines.some((l) => l.includes("xxxxxxxxxx")), "the name is not logged");
    for (const p of [a, b, long]) p.ws.close();
    await until(() => gone.length === 3, "the three gone");
    assert.deepEqual(gone.sort(), [...names].sort());
    await serves();
  });
});

test("a device that keeps answering requests never made gets a few error frames, then is closed (1008); the hub serves on", async () => {
  await withBench(2, { limits: { complaintsLogged: 2, strikeBurst: 20, strikesPerSecond: 1 } }, async ({ hub, lines, serves }) => {
    const p = await fakeDevice(hub.url, "liar");
    await until(() => hub.status().devices.some((d) => d.name === "liar"), "the liar joined");
    const bogus = encodeFrame({ type: "result", id: 1e9, experts: [[0, 1]], hidden: 64, dtype: "f32", computeMs: 0, payload: new Uint8Array(256) });
    for (let i = 0; i < 500; i++) p.ws.send(bogus);
    const c = await p.closed;
    assert.equal(c.code, 1008);
    assert.match(c.reason, /too many refused frames/);
    assert.equal(p.got.filter((m) => m.type === "error" && /no call 1000000000 is pending/.test(m.message)).length, 2, "two answered, the rest counted");
    assert.ok(lines.filter((l) => l.startsWith("liar:")).length <= 4, lines.join("\n"));
    await serves();
  });
});

test("a device that says it is extremely slow gets a deadline a timer can hold: its answer after 50 ms is taken", async () => {
  await withBench(0, {}, async ({ hub, lines }) => {
    // 1e-12 GFLOP/s: 20 × the expected time is beyond what setTimeout holds (Node would fire it after 1 ms)
    const p = await fakeDevice(hub.url, "sloth", { capabilities: { ...CAPS, memoryBytes: 1e9, gflops: 1e-12 } });
    p.ws.on("message", (d: Buffer) => {
      const m = decodeFrame(new Uint8Array(d));
      if (m.type === "call") setTimeout(() => p.ws.send(encodeFrame({ type: "result", id: m.id, experts: m.experts, hidden: m.hidden, dtype: m.dtype, computeMs: 0, payload: new Uint8Array(m.payload.length) })), 50);
    });
    await hub.start(1);
    const [r] = hub.executor.dispatch([{ layer: 0, expert: 0, rows: 1, input: new Float32Array(64) }]);
    assert.equal((await r!).output.length, 64, "answered within its deadline");
    assert.ok(!lines.some((l) => /deadline/.test(l)), lines.join("\n"));
    p.ws.terminate();
  });
});

test("a device over its frame rate is paused, not served faster; the hub serves on", async () => {
  await withBench(2, { limits: { framesPerSecond: 50, frameBurst: 10 } }, async ({ hub, lines, serves }) => {
    const p = await fakeDevice(hub.url, "chatty");
    for (let i = 0; i < 200; i++) p.ws.send(encodeFrame({ type: "error", message: `report ${i}` }));
    await until(() => lines.some((l) => /^chatty: over its frame or byte rate: not read for \d+ ms$/.test(l)), "the pause logged");
    assert.ok(lines.filter((l) => l.startsWith("chatty: reports:")).length <= 3, "reports are rate-limited in the log");
    await serves();
    p.ws.terminate();
  });
});

test("a device that says hello and never loads its share is left out after the load deadline; placement goes on without it", async () => {
  await withBench(0, { loadDeadline: { baseMs: 300 } }, async ({ hub, lines, device, serves }) => {
    const sloth = await peer(hub.url);
    sloth.ws.send(hello("sloth", { capabilities: { ...CAPS, memoryBytes: 1e9 } }));
    const started = hub.start(2);
    void device("d0");
    await started;
    assert.deepEqual(hub.placed, ["d0"]);
    await until(() => sloth.got.some((m) => m.type === "error" && /left out of placement \d+: did not load its experts within 3\d\d ms/.test(m.message)), "the sloth told why");
    assert.ok(lines.some((l) => /left out sloth/.test(l)), lines.join("\n"));
    assert.equal(hub.status().state, "ok");
    await serves();
    sloth.ws.close();
  });
});

/** The acceptance: a device joining a 2-device base station late is placed and used (the real case waits 30 s). */
async function lateJoin(delayMs: number): Promise<void> {
  await withBench(0, { waitLogMs: 100 }, async ({ hub, lines, device, serves }) => {
    let started = false;
    const start = hub.start(2).then(() => (started = true));
    void device("early");
    await sleep(delayMs);
    await until(() => lines.some((l) => l === "waiting for devices: 1 of 2 connected"), "the wait logged");
    assert.equal(started, false, "start() waits for the second device, without a time limit");
    const status = hub.status();
    assert.equal(status.state, "unavailable");
    assert.deepEqual(status.reasons, ["waiting for devices: 1 of 2 connected"]);
    void device("late");
    await start;
    assert.deepEqual([...hub.placed].sort(), ["early", "late"]);
    await serves();
    assert.ok(hub.deviceCalls().every((d) => d.calls > 0), `both serve calls: ${JSON.stringify(hub.deviceCalls())}`);
  });
}

test("start() waits without a time limit, saying so; a device that joins late is placed and used", () => lateJoin(1000));

test("with every device gone, dispatch rejects with ExpertsUnavailable, a generation fails with it, and status() says unavailable", async () => {
  const gone: string[] = [];
  const lines: string[] = [];
  const token = newJoinToken();
  const hub = await DeviceHub.listen({ model: dir, weightDType: "f32", wireDType: "f32", log: (l) => lines.push(l), onDeviceGone: (n) => gone.push(n), joinTokens: [token] });
  const before = hub.status();
  assert.equal(before.state, "unavailable");
  assert.deepEqual(before.reasons, ["waiting for devices: 0 connected"]);
  const devices = spawnLocalDevices(hub.url, token, 2);
  try {
    await hub.start(2);
    devices.settled();
    assert.equal(hub.status().state, "ok");
    for (const c of devices.children) c.kill("SIGKILL");
    await until(() => gone.length === 2, "both gone");
    const [call] = hub.executor.dispatch([{ layer: 0, expert: 1, rows: 1, input: new Float32Array(64) }]);
    await assert.rejects(call!, (e: Error) => e instanceof ExpertsUnavailable && /^no live device holds expert 1 of layer 0 \(its host: local-\d gone\)$/.test(e.message));
    const e = Engine.load(dir, { dtype: "f32", executor: hub.executor });
    try {
      await assert.rejects(e.generate(e.tokenizer.encode(PROMPT), { temperature: 0, maxTokens: 4 }), ExpertsUnavailable);
      
    } finally {
      e.close();
    }
    const status = hub.status();
    assert.equal(status.state, "unavailable");
    assert.deepEqual(status.reasons, ["8 experts (on layers 0, 1) have no ready device"]);
    assert.deepEqual(status.devices, []);
  } finally {
    for (const c of devices.children) c.kill("SIGKILL");
    await hub.close();
    await devices.exited();
  }
});

test("hello.holds: placement keeps the experts a device still holds (pairs not of the model ignored)", async () => {
  await withBench(0, {}, async ({ hub }) => {
    const holds: Array<[number, number]> = [[0, 0], [0, 1], [1, 0], [1, 1]];
    const capabilities = { ...CAPS, memoryBytes: 1e9 };
    const a = await fakeDevice(hub.url, "a", { capabilities, holds: [...holds, [7, 0], [0, 99], [0, 0]] });
    const b = await fakeDevice(hub.url, "b", { capabilities, holds: [[0, 2], [0, 3], [1, 2], [1, 3]] });
    await hub.start(2);
    const assigned = (p: Peer) => p.got.filter((m) => m.type === "assign").at(-1)!;
    assert.deepEqual(assigned(a).type === "assign" && assigned(a).experts, holds);
    assert.deepEqual(a.got.filter((m) => m.type === "release"), [], "nothing it holds is released");
    assert.equal(hub.hostOf(0, 0), "a");
    assert.equal(hub.hostOf(1, 3), "b");
    for (const p of [a, b]) p.ws.close();
  });
});

test("replica choice spares a device on low battery: with replicas 2, a phone running down is no expert's first host and gets no call; charging, it serves again", async () => {
  await withBench(1, { replicas: 2, browserDevices: true }, async ({ hub, serves }) => {
    const phone = await peer(hub.url);
    let battery = { level: 0.1, charging: false };
    phone.ws.on("message", (d: Buffer) => {
      const m = decodeFrame(new Uint8Array(d));
      if (m.type !== "assign") return;
      phone.ws.send(encodeFrame({ type: "heartbeat", battery }));
      phone.ws.send(encodeFrame({ type: "ready", experts: m.experts }));
    });
    phone.ws.send(hello("phone", { capabilities: { ...CAPS, memoryBytes: 1e9, kind: "browser", userAgent: "Mozilla/5.0 (Linux; Android 14)" }, nonce: "01".repeat(32), unbound: true }));
    await until(() => hub.placed.length === 2 && hub.status().state === "ok", "the phone placed beside d0");
    const experts = [0, 1].flatMap((l) => [0, 1, 2, 3].map((e) => [l, e] as const));
    const firstHosts = () => experts.map(([l, e]) => hub.hostOf(l, e));
    assert.deepEqual(firstHosts(), experts.map(() => "d0"), "on low battery, d0 is every expert's first host");
    await serves();
    assert.deepEqual(phone.got.filter((m) => m.type === "call"), [], "and the phone is sent no call");
    const status = hub.status().devices.find((d) => d.name === "phone")!;
    assert.deepEqual([status.kind, status.userAgent, status.battery], ["browser", "Mozilla/5.0 (Linux; Android 14)", battery], "status says what it is and its battery");
    const metrics = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => ({ calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 }));
    metrics.describeDevices(() => hub.status().devices);
    const text = await metrics.text();
    assert.match(text, /^distmoe_device_info\{device="d0",kind="node",user_agent=""\} 1$/m);
    assert.match(text, /^distmoe_device_info\{device="phone",kind="browser",user_agent="Mozilla\/5.0 \(Linux; Android 14\)"\} 1$/m);
    assert.match(text, /^distmoe_device_battery_level\{device="phone",charging="false"\} 0.1$/m);
    assert.doesNotMatch(text, /distmoe_device_battery_level\{device="d0"/, "a device without a battery has no battery series");

    battery = { level: 0.1, charging: true };
    phone.ws.send(encodeFrame({ type: "heartbeat", battery }));
    await until(() => firstHosts().includes("phone"), "charging, the phone is some experts' first host again");
    phone.ws.close();
  });
});

test("a call that fails on a replica whose battery fell meanwhile (the hosts' order changed) goes on to the replica not yet tried, not to the same one again", async () => {
  await withBench(1, { replicas: 2, deadlineMs: 2000, browserDevices: true }, async ({ hub }) => {
    const tab = await fakeDevice(hub.url, "tab", { capabilities: { ...CAPS, memoryBytes: 1e9, kind: "browser" }, nonce: "01".repeat(32), unbound: true });
    await until(() => hub.placed.length === 2 && hub.status().state === "ok", "the tab placed beside d0");
    const [layer, expert] = [0, 1].flatMap((l) => [0, 1, 2, 3].map((e) => [l, e] as const)).find(([l, e]) => hub.hostOf(l, e) === "tab")!;
    const [call] = hub.executor.dispatch([{ layer, expert, rows: 1, input: new Float32Array(64).fill(0.5) }]);
    await until(() => tab.got.find((m) => m.type === "call"), "the call sent to the tab, its first host");
    const asked = tab.got.find((m) => m.type === "call")!;
    assert.ok(asked.type === "call");
    tab.ws.send(encodeFrame({ type: "heartbeat", battery: { level: 0.05, charging: false } }));
    await until(() => hub.hostOf(layer, expert) === "d0", "on low battery the tab is its expert's last host");
    tab.ws.send(encodeFrame({ type: "error", id: asked.id, message: "cannot" }));
    const result = await call!.then((r) => r.output.length, (e: Error) => e.message);
    assert.equal(result, 64, "d0 answers it");
    assert.equal(tab.got.filter((m) => m.type === "call").length, 1, "the tab is not asked again");
    assert.equal(hub.executor.retries, 1, "one retry");
  });
});

test("a device that says it is leaving keeps its share until the others hold it, then is routed nothing, and is closed once its call in flight is answered (replicas 1: no call lost)", async () => {
  await withBench(1, {}, async ({ hub, serves }) => {
    const phone = await fakeDevice(hub.url, "phone", { capabilities: { ...CAPS, memoryBytes: 1e9 } });
    await until(() => hub.placed.length === 2 && hub.status().state === "ok", "the phone placed beside d0");
    const [layer, expert] = [0, 1].flatMap((l) => [0, 1, 2, 3].map((e) => [l, e] as const)).find(([l, e]) => hub.hostOf(l, e) === "phone")!;
    const [call] = hub.executor.dispatch([{ layer, expert, rows: 1, input: new Float32Array(64).fill(0.5) }]);
    await until(() => phone.got.find((m) => m.type === "call"), "a call in flight on the phone");
    phone.ws.send(encodeFrame({ type: "leave", reason: "the page was hidden" }));
    await until(() => hub.placed.length === 1, "its experts placed on d0 alone");
    assert.equal(hub.hostOf(layer, expert), "d0", "and routed there");
    await until(() => hub.status().devices.find((d) => d.name === "phone")?.ready === false, "the phone routed nothing more");
    await sleep(200); // ten looks at the leaving device: it must stay connected while its call is in flight
    assert.equal(phone.ws.readyState, WebSocket.OPEN, "still connected: its call is in flight");
    assert.ok(hub.status().devices.find((d) => d.name === "phone")?.leaving, "and leaving");
    const asked = phone.got.find((m) => m.type === "call")!;
    assert.ok(asked.type === "call");
    const output = Float32Array.from({ length: 64 }, (_, i) => 0.01 * (i + 1));
    phone.ws.send(encodeFrame({ type: "result", id: asked.id, experts: asked.experts, hidden: 64, dtype: "f32", computeMs: 1, payload: new Uint8Array(output.buffer) }));
    assert.deepEqual([...(await call!).output], [...output], "its answer is taken");
    assert.deepEqual(await phone.closed, { code: 1000, reason: "goodbye" }, "then it is let go");
    assert.equal(phone.got.filter((m) => m.type === "call").length, 1, "and was sent no other call");
    await serves();
  });
});

test("a leaving device that says leave twice, hello again and floods heartbeats with a battery flipping each frame, and never answers its call: one re-placement, its call goes to d0 at its deadline, then it is let go; the hub serves on", async () => {
  await withBench(1, { deadlineMs: 300, browserDevices: true }, async ({ hub, lines, serves }) => {
    const tab = await fakeDevice(hub.url, "tab", { capabilities: { ...CAPS, memoryBytes: 1e9, kind: "browser", userAgent: "Mozilla/5.0" }, nonce: "01".repeat(32), unbound: true });
    await until(() => hub.placed.length === 2 && hub.status().state === "ok", "the tab placed beside d0");
    const [layer, expert] = [0, 1].flatMap((l) => [0, 1, 2, 3].map((e) => [l, e] as const)).find(([l, e]) => hub.hostOf(l, e) === "tab")!;
    const [call] = hub.executor.dispatch([{ layer, expert, rows: 1, input: new Float32Array(64).fill(0.5) }]);
    await until(() => tab.got.find((m) => m.type === "call"), "a call in flight on the tab");
    const placements = () => lines.filter((l) => /^placement \d+:/.test(l)).length;
    const before = placements();
    tab.ws.send(encodeFrame({ type: "leave", reason: "hidden" }));
    tab.ws.send(encodeFrame({ type: "leave", reason: "hidden again" }));
    tab.ws.send(hello("tab"));
    for (let i = 0; i < 200; i++) tab.ws.send(encodeFrame({ type: "heartbeat", battery: { level: i % 2 ? 0.05 : 0.95, charging: false } }));
    await until(() => tab.got.some((m) => m.type === "error" && /does not accept hello messages/.test(m.message)), "the second hello refused");
    await until(() => hub.placed.length === 1, "its experts placed on d0 alone");
    assert.equal(await call!.then((r) => r.output.length, (e: Error) => e.message), 64, "the call it never answers goes on to d0, which holds its expert by then");
    assert.deepEqual(await tab.closed, { code: 1000, reason: "goodbye" }, "then it is let go, not before");
    assert.equal(placements() - before, 1, "one re-placement for the two leaves, none for the battery");
    await serves();
  });
});

test("a peer that reconnects in a loop costs a bounded log and few placements; the placed device is not sent its share again", async () => {
  await withBench(0, {}, async (b) => {
    const assigns: number[] = [];
    const d0 = await fakeDevice(b.hub.url, "d0", { capabilities: { ...CAPS, memoryBytes: 1e9 } });
    d0.ws.on("message", (d: Buffer) => decodeFrame(new Uint8Array(d)).type === "assign" && assigns.push(performance.now()));
    await b.hub.start(1);
    const placements = () => b.lines.filter((l) => /^placement \d+:/.test(l)).length;
    const before = { placements: placements(), assigns: assigns.length, lines: b.lines.length };
    for (let i = 0; i < 200; i++) {
      const p = await peer(b.hub.url);
      p.ws.send(hello("loop"));
      await until(() => b.hub.status().devices.some((d) => d.name === "loop"), "the looping peer's hello");
      p.ws.close();
      await p.closed;
    }
    await sleep(300);
    assert.ok(placements() - before.placements <= 100, `${placements() - before.placements} placements for 200 joins and 200 leaves`);
    // and a re-plan that changed nothing (the peer gone before it) writes no line
    const logged = b.lines.filter((l) => /^placement \d+:/.test(l)).map((l) => l.replace(/^placement \d+/, ""));
    assert.ok(logged.every((l, i) => i === 0 || l !== logged[i - 1]), `the same placement logged twice in a row:\n${logged.join("\n")}`);
    assert.equal(assigns.length, before.assigns, "d0's share never changed, so it was not sent again");
    const joins = b.lines.slice(before.lines).filter((l) => /loop(-\d+)? (joined|left)/.test(l)).length;
    assert.ok(joins <= 32, `${joins} join and leave lines logged`);
    assert.equal(b.hub.status().state, "ok");
    d0.ws.close();
  });
});
