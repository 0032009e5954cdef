// Fuzz test of the device port: whatever bytes a peer writes after a real WebSocket handshake — raw
// bytes, or WebSocket frames (masked or not) with any opcode, bits and lengths, fragmented or not,
// carrying any or a mutated distmoe frame — the hub neither throws nor keeps the connection, and serves on.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import { DeviceHub } from "./device-hub.js";
import { runDevice } from "./device.js";
import { Engine } from "./engine.js";
import { initModel } from "../model/init-model.js";
import type { WireDType } from "../protocol/activations.js";
import { decodeFrame, encodeFrame, LIMITS, type Message } from "../protocol/frames.js";
import { fuzzParams } from "../testing/fuzz.js";
import { until } from "../testing/until.js";

const PROMPT = "hostile bytes";
const LAYERS = 2, EXPERTS = 4;

/** One WebSocket frame as a peer may write it (RFC 6455 §5.2), lies included. */
interface WsFrame {
  fin: boolean;
  /** the three RSV bits; no extension is negotiated, so any set is a protocol error */
  rsv: number;
  opcode: number;
  /** clients must mask; an unmasked frame is a protocol error */
  masked: boolean;
  /** how the length is written: the shortest form, or 16 or 64 bits whatever it is */
  form: "short" | "16" | "64";
  /** added to the true payload length in the header (a lie, unless 0) */
  lie: number;
  payload: Uint8Array;
}

/** The length a frame's header announces (as far as its form holds it), and that form. */
function lengthOf(f: WsFrame): { declared: number; form: "7" | "16" | "64" } {
  const meant = Math.max(0, f.payload.length + f.lie);
  const form = f.form === "short" ? (meant < 126 ? "7" : meant < 65536 ? "16" : "64") : f.form;
  return { declared: form === "16" ? meant % 65536 : meant, form };
}

function encodeWs(f: WsFrame): Buffer {
  const { declared, form } = lengthOf(f);
  const head = Buffer.alloc(2 + (form === "16" ? 2 : form === "64" ? 8 : 0) + (f.masked ? 4 : 0));
  head[0] = (f.fin ? 0x80 : 0) | ((f.rsv & 7) << 4) | (f.opcode & 15);
  head[1] = (f.masked ? 0x80 : 0) | (form === "7" ? declared : form === "16" ? 126 : 127);
  if (form === "16") head.writeUInt16BE(declared, 2);
  if (form === "64") head.writeBigUInt64BE(BigInt(declared), 2);
  const key = [0x37, 0xfa, 0x21, 0x3d];
  if (f.masked) head.set(key, head.length - 4);
  const body = Buffer.from(f.payload.map((b, i) => (f.masked ? b ^ key[i & 3]! : b)));
  return Buffer.concat([head, body]);
}

const pair = fc.tuple(fc.integer({ min: -1, max: LAYERS + 1 }), fc.integer({ min: -1, max: EXPERTS + 1 }));
const pairs = fc.array(pair, { maxLength: 6 });
/** Every expert of the model: a ready that covers whatever a fuzz peer was assigned. */
const ALL: Array<[number, number]> = Array.from({ length: LAYERS * EXPERTS }, (_, i) => [Math.floor(i / EXPERTS), i % EXPERTS]);
const amount = fc.constantFrom(0, 1, 1e3, 1e9, 1e12, 1e18);
const hello = fc.record(
  {
    type: fc.constant("hello" as const),
    name: fc.string({ unit: "binary", maxLength: 80 }),
    capabilities: fc.record(
      { memoryBytes: amount, gflops: amount, readGbps: amount, weightDTypes: fc.constantFrom<string[]>(["f32"], [], ["bf16"]), wireDTypes: fc.constantFrom<WireDType[]>(["f32"], ["f16"], []), kind: fc.constantFrom("node" as const, "browser" as const), userAgent: fc.string({ maxLength: 300 }) },
      { requiredKeys: ["memoryBytes", "gflops", "readGbps", "weightDTypes", "wireDTypes"] },
    ),
    holds: fc.oneof(pairs, fc.constant(ALL)),
  },
  { requiredKeys: ["type", "name", "capabilities"] },
);
const rows = fc.array(fc.tuple(fc.integer({ min: 0, max: EXPERTS }), fc.integer({ min: 1, max: 2 })), { minLength: 1, maxLength: 2 });
/** The messages a device sends (and some it must not), with values a hostile one may choose. */
const message: fc.Arbitrary<Message> = fc.oneof(
  hello,
  fc.record({ type: fc.constant("ready" as const), experts: fc.oneof(pairs, fc.constant(ALL)) }),
  fc.tuple(fc.nat(100), rows, fc.constantFrom(1, 64)).map(([id, experts, hidden]) => ({
    type: "result" as const, id, experts, hidden, dtype: "f32" as const, computeMs: 1, payload: new Uint8Array(experts.reduce((s, [, r]) => s + r, 0) * hidden * 4),
  })),
  fc.record({ type: fc.constant("expert" as const), id: fc.nat(100), layer: fc.nat(LAYERS), expert: fc.nat(EXPERTS), dtype: fc.constantFrom("f32", "x"), shapes: fc.constant<Array<[number, number]>>([[1, 1], [1, 1], [1, 1]]), payload: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  fc.record({ type: fc.constant("fetch" as const), experts: fc.oneof(pairs, fc.constant(ALL)), have: fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 2, noNullPrototype: true }) }),
  fc.record({ type: fc.constant("error" as const), id: fc.nat(100), message: fc.string({ unit: "binary", maxLength: 40 }) }, { requiredKeys: ["type", "message"] }),
  fc.record({ type: fc.constant("leave" as const), reason: fc.string({ maxLength: 20 }) }),
  fc.record({ type: fc.constant("heartbeat" as const), battery: fc.record({ level: fc.double({ min: -1, max: 2 }), charging: fc.boolean() }) }, { requiredKeys: ["type"] }),
  fc.record({ type: fc.constantFrom("release" as const), experts: pairs }),
  fc.record({ type: fc.constant("fetched" as const), sent: fc.nat(), bytes: fc.nat() }),
  fc.record({ type: fc.constant("pull" as const), id: fc.nat(), layer: fc.nat(LAYERS), expert: fc.nat(EXPERTS) }),
);
/** A distmoe frame, intact or damaged (bytes changed, then maybe cut short). */
const distmoe = fc.oneof(
  { weight: 3, arbitrary: message.map(encodeFrame) },
  {
    weight: 2,
    arbitrary: fc.tuple(message.map(encodeFrame), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 3 }), fc.option(fc.nat())).map(([f, flips, cut]) => {
      const out = f.slice();
      for (const [at, v] of flips) out[at % out.length] = v;
      return cut === null ? out : out.subarray(0, cut % out.length);
    }),
  },
);

/** `bytes` cut at each of `cuts` (taken modulo its length). */
function split(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const at = [0, ...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  return at.map((start, i) => bytes.subarray(start, at[i + 1] ?? bytes.length));
}
/** A close frame's payload: any code (valid or not), any reason (UTF-8 or not), or the lone byte RFC 6455 forbids. */
const closePayload = fc.oneof(
  fc.tuple(fc.constantFrom(1000, 1001, 1002, 1005, 1006, 1015, 1016, 2999, 3000, 4999, 5000, 0, 65535), fc.uint8Array({ maxLength: 8 })).map(([code, reason]) => Uint8Array.from([code >> 8, code & 0xff, ...reason])),
  fc.uint8Array({ minLength: 1, maxLength: 1 }),
);
const plain = { fin: true, rsv: 0, opcode: 2, masked: true, form: "short" as const, lie: 0 };
/** Frames: mostly well formed and binary, with any field changed sometimes. */
const wsFrame: fc.Arbitrary<WsFrame> = fc.record({
  fin: fc.oneof({ weight: 5, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  rsv: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 7 }) }),
  opcode: fc.oneof({ weight: 6, arbitrary: fc.constant(2) }, { weight: 3, arbitrary: fc.constantFrom(0, 1, 8, 9, 10) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 15 }) }),
  masked: fc.oneof({ weight: 8, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  form: fc.constantFrom("short" as const, "short" as const, "short" as const, "16" as const, "64" as const),
  lie: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -8, max: 8 }) }, { weight: 1, arbitrary: fc.constantFrom(1 << 16, 1 << 30, 2 ** 53, 2 ** 63) }),
  payload: fc.oneof(distmoe, fc.uint8Array({ maxLength: 140 }), closePayload),
});
/** One binary message split into fragments (control frames may come between them, as the RFC allows). */
const fragmented = fc.tuple(distmoe, fc.array(fc.nat(), { minLength: 1, maxLength: 3 }), fc.option(fc.tuple(fc.constantFrom(9, 10, 8), fc.uint8Array({ maxLength: 130 })))).map(([payload, cuts, control]) => {
  const parts = split(payload, cuts);
  const frames: WsFrame[] = parts.map((p, i) => ({ ...plain, fin: i === parts.length - 1, opcode: i === 0 ? 2 : 0, payload: p }));
  if (control) frames.splice(1, 0, { ...plain, opcode: control[0], payload: control[1] });
  return frames;
});

/** What a case writes after the handshake, as data (so a counterexample reads well). */
type Case = { raw: Uint8Array } | { frames: WsFrame[]; tail: Uint8Array; chunks: number[]; lingerMs: number };
const fuzzCase: fc.Arbitrary<Case> = fc.oneof(
  { weight: 1, arbitrary: fc.record({ raw: fc.uint8Array({ minLength: 1, maxLength: 64 }) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      frames: fc.oneof(
        fc.array(wsFrame, { minLength: 1, maxLength: 4 }),
        fragmented,
        // a valid hello first, then anything
        fc.tuple(hello, fc.array(fc.oneof(wsFrame, fc.uint8Array({ minLength: 1, maxLength: 32 }).map((p) => ({ ...plain, payload: p }))), { maxLength: 3 })).map(([h, rest]) => [{ ...plain, payload: encodeFrame(h) }, ...rest]),
      ),
      tail: fc.oneof({ weight: 4, arbitrary: fc.constant(new Uint8Array(0)) }, { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
      // where the bytes are split into separate writes
      chunks: fc.array(fc.nat(), { maxLength: 2 }),
      lingerMs: fc.constantFrom(0, 0, 0, 2),
    }),
  },
);

function bytesOf(c: Case): { writes: Buffer[]; lingerMs: number } {
  if ("raw" in c) return { writes: [Buffer.from(c.raw)], lingerMs: 0 };
  const all = Buffer.concat([...c.frames.map(encodeWs), Buffer.from(c.tail)]);
  return { writes: split(all, c.chunks).filter((b) => b.length > 0) as Buffer[], lingerMs: c.lingerMs };
}

/**
 * Whether the case's first frame breaks the protocol so plainly that the hub must close the connection
 * at once (a close frame), whatever follows: a WebSocket rule broken, a length over any limit, a text
 * frame, or a whole binary message that is not a distmoe frame or not a hello. (Raw bytes: not judged.)
 */
function mustClose(c: Case): boolean {
  if ("raw" in c) return false;
  const f = c.frames[0]!;
  const { declared, form } = lengthOf(f);
  if (f.rsv !== 0 || !f.masked || f.opcode === 0 || (f.opcode > 2 && f.opcode < 8) || f.opcode > 10 || declared > LIMITS.frameBytes) return true;
  const whole = declared <= f.payload.length;
  if (f.opcode >= 8) return !f.fin || form !== "7" || (whole && f.opcode === 8);
  if (!f.fin || declared !== f.payload.length) return false;
  if (f.opcode === 1) return true;
  try {
    return decodeFrame(f.payload).type !== "hello";
  } catch {
    return true;
  }
}

/** The opcodes of the (unmasked) frames a server sent, as far as they are whole. */
function serverOpcodes(b: Buffer): number[] {
  const ops: number[] = [];
  for (let at = 0; at + 2 <= b.length; ) {
    const short = b[at + 1]! & 0x7f;
    const [len, head] = short === 126 ? [b.length >= at + 4 ? b.readUInt16BE(at + 2) : Infinity, 4] : short === 127 ? [b.length >= at + 10 ? Number(b.readBigUInt64BE(at + 2)) : Infinity, 10] : [short, 2];
    if (at + head + len > b.length) break;
    ops.push(b[at]! & 0x0f);
    at += head + len;
  }
  return ops;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Upgrades a TCP connection by hand, writes the case's bytes after the 101, waits `lingerMs` (or, when
 * the hub must close the connection, for its close frame), then ends its side; resolves once the
 * connection has closed (the hub must close its side then, if not before).
 */
async function play(port: number, c: Case): Promise<void> {
  const socket = net.connect(port, "127.0.0.1");
  socket.setNoDelay(true); // each write goes out at once, split where the case splits it
  socket.on("error", () => undefined); // the hub may cut it while it writes
  const closed = new Promise<void>((r) => socket.once("close", () => r()));
  let timer: NodeJS.Timeout | undefined;
  try {
    const head = await new Promise<string>((resolve, reject) => {
      let got = "";
      const onData = (d: Buffer) => {
        got += d.toString("latin1");
        if (!got.includes("\r\n\r\n")) return;
        socket.off("data", onData);
        resolve(got);
      };
      socket.on("data", onData);
      socket.once("close", () => reject(new Error(`closed before the upgrade completed: ${JSON.stringify(got)}`)));
      socket.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    assert.match(head, /^HTTP\/1.1 101 /, "upgraded");
    let answer = Buffer.from(head.slice(head.indexOf("\r\n\r\n") + 4), "latin1");
    const { writes, lingerMs } = bytesOf(c);
    const hubClosed = new Promise<void>((resolve) => {
      const onData = (d: Buffer) => {
        if (answer.length < 1 << 16) answer = Buffer.concat([answer, d]);
        if (serverOpcodes(answer).includes(8)) resolve();
      };
      socket.on("data", onData);
      onData(Buffer.alloc(0));
      closed.then(resolve);
    });
    for (const w of writes) socket.write(w);
    const bound = (what: string) => new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), 10_000)));
    if (mustClose(c)) await Promise.race([hubClosed, bound("the hub did not close a connection that broke the protocol")]);
    else if (lingerMs > 0) await sleep(lingerMs);
    clearTimeout(timer);
    socket.end();
    await Promise.race([closed, bound("the hub kept a connection the peer had ended")]);
  } finally {
    clearTimeout(timer);
    socket.destroy();
  }
}

test("fuzz: whatever a peer writes after the WebSocket handshake, the hub neither throws nor keeps the connection, and serves on", async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-hub-fuzz-"));
  initModel({ arch: "MixtralForCausalLM", layers: LAYERS, hidden: 64, experts: EXPERTS, topK: 2, seed: 21, out: dir });
  const crashes: unknown[] = [];
  const crashed = (e: unknown) => crashes.push(e);
  process.on("uncaughtException", crashed);
  process.on("unhandledRejection", crashed);
  const lines: string[] = [];
  const hub = await DeviceHub.listen({ model: dir, weightDType: "f32", wireDType: "f32", log: (l) => lines.push(l) });
  const devices: Array<Promise<void>> = [];
  const device = (name: string) => devices.push(runDevice({ bs: hub.url, name, threads: 1, spinMs: 0, retryForMs: 0, log: () => undefined }).catch((e: unknown) => void crashes.push(e)));
  const port = Number(new URL(hub.url).port);
  try {
    const reference = Engine.load(dir, { dtype: "f32" });
    const want = (await reference.generate(reference.tokenizer.encode(PROMPT), { temperature: 0, maxTokens: 6 })).tokens;
    reference.close();
    const serves = async () => {
      const e = Engine.load(dir, { dtype: "f32", executor: hub.executor });
      try {
        assert.deepEqual((await e.generate(e.tokenizer.encode(PROMPT), { temperature: 0, maxTokens: 6 })).tokens, want, "the hub serves, with the same output");
      } finally {
        e.close();
      }
    };
    device("d0");
    await hub.start(1);

    const t0 = performance.now();
    let cases = 0;
    await fc.assert(
      fc.asyncProperty(fuzzCase, async (c) => {
        cases++;
        await play(port, c);
        assert.deepEqual(crashes, [], "nothing thrown");
      }),
      fuzzParams(3000),
    );
    t.diagnostic(`${cases} connections in ${Math.round(performance.now() - t0)} ms`);

    // every fuzz peer has gone: the hub is back to its one device, serves, and places a device that joins now
    await until(() => hub.status().devices.length === 1 && hub.status().state === "ok", `the hub back to d0 alone (${JSON.stringify(hub.status())})`);
    await serves();
    device("d1");
    await until(() => hub.status().devices.length === 2 && hub.status().placed.length === 2 && hub.status().state === "ok", "d1 placed");
    await serves();
    assert.ok(hub.deviceCalls().every((d) => d.calls > 0), "both devices serve");
    assert.deepEqual(crashes, [], "nothing thrown");
  } finally {
    await hub.close();
    await Promise.all(devices);
    process.off("uncaughtException", crashed);
    process.off("unhandledRejection", crashed);
    rmSync(dir, { recursive: true, force: true });
  }
});
