// Fuzz tests of the frame decoder, which reads bytes from any peer: whatever arrives, decodeFrame returns
// a message that keeps the invariants its consumers rely on, or throws ProtocolError; never another error.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { ADAPTER_CHARS, COMPUTE_KINDS, decodeFrame, DEVICE_KINDS, encodeFrame, LIMITS, ProtocolError, USER_AGENT_CHARS, type Message } from "./frames.js";
import { decodeActivations, encodeActivations, WIRE_DTYPES, wireBytes, type WireDType } from "./activations.js";
import { GGML_BLOCK_TYPES, isGgmlBlockType } from "../kernels/ggml-blocks.js";
import { sourceBytes, SOURCE_DTYPES } from "../model/weights.js";
import { byteDamage, cleanlyRefused, damage, fuzzParams, isByteDamage, type ByteDamage } from "../testing/fuzz.js";

/** fc.record making objects as JSON.parse does (fast-check may otherwise give them no prototype). */
const record = ((model: never, constraints?: object) => fc.record(model, { ...constraints, noNullPrototype: true })) as typeof fc.record;
const u16 = fc.integer({ min: 0, max: 1 << 16 });
const pairs = fc.array(fc.tuple(u16, u16), { maxLength: 8 });
const id = fc.maxSafeNat();
const wire = fc.constantFrom(...WIRE_DTYPES);
/** Any text of up to `maxLength` UTF-16 units (the unit of the protocol's limits), lone surrogates included. */
const text = (maxLength: number) => fc.string({ unit: "binary", maxLength }).map((s) => s.slice(0, maxLength));
const amount = fc.double({ min: 0, max: 1e18, noNaN: true }).map((v) => v + 0); // JSON has no -0
/** Lowercase hex of exactly `n` digits: a nonce or a proof. */
const hex = (n: number) => fc.stringMatching(new RegExp(`^[0-9a-f]{${n}}$`));
const tensorName = fc.stringMatching(/^[\w-][\w.-]{0,63}$/);
const dict = <T>(value: fc.Arbitrary<T>) => fc.dictionary(text(32), value, { maxKeys: 6, noNullPrototype: true });
/** [expert, rows] lists with the payload they need: rows × hidden values of the wire dtype. */
const activations = fc
  .record({ experts: fc.array(fc.tuple(u16, fc.integer({ min: 1, max: 4 })), { minLength: 1, maxLength: 4 }), hidden: fc.integer({ min: 1, max: 16 }), dtype: wire })
  .chain((a) => {
    const n = a.experts.reduce((s, [, r]) => s + r, 0) * a.hidden * wireBytes(a.dtype);
    return fc.uint8Array({ minLength: n, maxLength: n }).map((payload) => ({ ...a, payload }));
  });

/** What a device says it is: nothing (a Node device before kinds), a Node process, or a browser with its user agent (printable ASCII). */
const kind = fc.oneof(
  fc.constant({}),
  record({ kind: fc.constant("node" as const) }),
  record({ kind: fc.constant("browser" as const), userAgent: fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: USER_AGENT_CHARS }) }, { requiredKeys: ["kind"] }),
);

/** What computes its experts: nothing said, the kernels, or WebGPU with its adapter's name (printable ASCII). */
const compute = fc.oneof(
  fc.constant({}),
  record({ compute: fc.constantFrom("wasm" as const, "native" as const) }),
  record({ compute: fc.constant("webgpu" as const), adapter: fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: ADAPTER_CHARS }) }, { requiredKeys: ["compute"] }),
);

/** Every message type, with the full range of values the protocol allows. */
const message: fc.Arbitrary<Message> = fc.oneof(
  fc
    .tuple(
      record(
        {
          type: fc.constant("hello" as const),
          name: text(128),
          capabilities: fc
            .tuple(record({ memoryBytes: amount, gflops: amount, readGbps: amount, weightDTypes: fc.array(text(16), { maxLength: 4 }), wireDTypes: fc.subarray([...WIRE_DTYPES]) }), kind, compute)
            .map(([c, k, g]) => ({ ...c, ...k, ...g })),
          holds: pairs,
          nonce: hex(64),
          proof: hex(64),
        },
        { requiredKeys: ["type", "name", "capabilities", "nonce"] },
      ),
      fc.option(fc.tuple(hex(64), hex(128)), { nil: undefined }),
    )
    // a browser's hello is unbound, and only a browser's (frames.ts)
    .map(([hello, identity]) => ({ ...hello, ...(identity ? { key: identity[0], signature: identity[1] } : {}), ...("kind" in hello.capabilities && hello.capabilities.kind === "browser" ? { unbound: true as const } : {}) })),
  record({ type: fc.constant("challenge" as const), nonce: hex(64) }),
  record({ type: fc.constant("welcome" as const), proof: hex(64) }, { requiredKeys: ["type"] }),
  record({
    type: fc.constant("assign" as const),
    model: text(256),
    modelId: fc.stringMatching(/^[\w-]{1,128}$/),
    config: dict(fc.jsonValue({ maxDepth: 3 })).map((c) => JSON.parse(JSON.stringify(c)) as Record<string, unknown>), // as JSON holds it (no -0)
    weightDType: text(16),
    wireDType: wire,
    experts: pairs,
  }),
  record({ type: fc.constant("fetch" as const), experts: pairs, have: dict(fc.string({ maxLength: 64 })) }),
  fc
    .record({ name: tensorName, dtype: fc.constantFrom(...SOURCE_DTYPES), shape: fc.tuple(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 8 })), sha256: fc.string({ unit: fc.constantFrom(..."0123456789abcdef"), maxLength: 64 }) })
    .map((w) => ({ ...w, shape: [w.shape[0], w.shape[1] * (isGgmlBlockType(w.dtype) ? GGML_BLOCK_TYPES[w.dtype].values : 1)] as [number, number] }))
    .chain((w) => {
      const n = sourceBytes(w.dtype, w.shape[0], w.shape[1])!;
      return fc.uint8Array({ minLength: n, maxLength: n }).map((payload) => ({ type: "weights" as const, ...w, payload }));
    }),
  record({ type: fc.constant("fetched" as const), sent: id, bytes: id }),
  record({ type: fc.constantFrom("ready" as const, "release" as const), experts: pairs }),
  fc.tuple(id, u16, activations).map(([i, layer, a]) => ({ type: "call" as const, id: i, layer, ...a })),
  fc.tuple(id, amount, activations).map(([i, computeMs, a]) => ({ type: "result" as const, id: i, ...a, computeMs })),
  record({ type: fc.constant("pull" as const), id, layer: u16, expert: u16 }),
  record({
    type: fc.constant("expert" as const),
    id,
    layer: u16,
    expert: u16,
    dtype: text(16),
    shapes: fc.array(fc.tuple(fc.integer({ min: 1, max: 1 << 16 }), fc.integer({ min: 1, max: 1 << 16 })), { minLength: 3, maxLength: 3 }),
    payload: fc.uint8Array({ minLength: 1, maxLength: 64 }),
  }),
  record({ type: fc.constant("error" as const), id, message: text(4096) }, { requiredKeys: ["type", "message"] }),
  record({ type: fc.constant("leave" as const), reason: text(4096) }),
  record({ type: fc.constant("heartbeat" as const), battery: record({ level: fc.double({ min: 0, max: 1, noNaN: true }).map((v) => v + 0), charging: fc.boolean() }) }, { requiredKeys: ["type"] }),
);

/** Raw JSON tokens that JSON.stringify never writes but a peer may. */
const oddToken = fc.constantFrom("1e400", "-1e400", "-0", "1e-400", "9007199254740993", "-1", "0.5", "1e20", '"NaN"', '"Infinity"', '"1"', "null", "true", "{}", "[]", '{"__proto__":{"a":1}}', "[[[[[[[[[[1]]]]]]]]]]", "<deep>", '"\\ud800"', '"\\u0000\\u001b[31m"');
/** Arrays nested deeper than JSON.stringify can write back (written "<deep>" in the tokens, so a counterexample stays short). */
const deep = (json: string) => json.replaceAll("<deep>", `${"[".repeat(20000)}${"]".repeat(20000)}`);
/** Any JSON value, or a raw odd token. */
const anyJson = fc.oneof(fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)), oddToken);

/** An encoded frame's JSON header object; null once an earlier mutation has broken it. */
function headerOf(frame: Uint8Array): Record<string, unknown> | null {
  try {
    const len = new DataView(frame.buffer, frame.byteOffset).getUint32(4, true);
    const h: unknown = JSON.parse(new TextDecoder().decode(frame.subarray(8, 8 + len)));
    return h && typeof h === "object" && !Array.isArray(h) ? (h as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** `frame` with its header text replaced (the length field follows). */
function withHeader(frame: Uint8Array, header: string): Uint8Array {
  if (frame.length < 8) return frame;
  const old = Math.min(new DataView(frame.buffer, frame.byteOffset).getUint32(4, true), frame.length - 8);
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + frame.length - 8 - old);
  out.set(frame.subarray(0, 8));
  new DataView(out.buffer).setUint32(4, h.length, true);
  out.set(h, 8);
  out.set(frame.subarray(8 + old), 8 + h.length);
  return out;
}

/** Ways a hostile or broken peer may change a valid frame, as data (so a counterexample reads well). */
type Mutation =
  | ByteDamage
  | { payloadOffBy: 1 | -1 }
  | { headerLength: number; relative: boolean }
  | { retype: number }
  | { header: string }
  | { field: number; json: string }
  | { inner: number; field: number; json: string };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  byteDamage,
  record({ payloadOffBy: fc.constantFrom(1 as const, -1 as const) }),
  fc.oneof(record({ headerLength: fc.integer({ min: -2, max: 2 }), relative: fc.constant(true) }), record({ headerLength: fc.nat(), relative: fc.constant(false) })),
  record({ retype: fc.integer({ min: 0, max: 15 }) }),
  record({ header: anyJson }),
  record({ field: fc.nat(), json: anyJson }),
  record({ inner: fc.nat(), field: fc.nat(), json: anyJson }),
);

/** The header with the value at `path` (keys, by index modulo their count) replaced by the raw JSON `json`; null if there is no such value. */
function replaced(h: Record<string, unknown>, path: number[], json: string): string | null {
  let o: Record<string, unknown> = h;
  for (let i = 0; ; i++) {
    const keys = Object.keys(o).filter((k) => i === path.length - 1 || (!!o[k] && typeof o[k] === "object"));
    if (keys.length === 0) return null;
    const key = keys[path[i]! % keys.length]!;
    if (i === path.length - 1) {
      o[key] = "\u0000MARK\u0000";
      try {
        return JSON.stringify(h).replace('"\\u0000MARK\\u0000"', json);
      } catch {
        return null; // a header an earlier mutation nested too deep to write
      }
    }
    o = o[key] as Record<string, unknown>;
  }
}

function mutate(f: Uint8Array, m: Mutation): Uint8Array {
  if (isByteDamage(m)) return damage(f, m);
  if ("payloadOffBy" in m) return m.payloadOffBy > 0 ? Uint8Array.from([...f, 0]) : f.subarray(0, Math.max(0, f.length - 1));
  if (f.length < 8) return f;
  if ("headerLength" in m) {
    const out = f.slice();
    const dv = new DataView(out.buffer);
    dv.setUint32(4, m.relative ? (dv.getUint32(4, true) + m.headerLength) >>> 0 : m.headerLength, true);
    return out;
  }
  if ("retype" in m) {
    const out = f.slice();
    out[3] = m.retype;
    return out;
  }
  if ("header" in m) return withHeader(f, deep(m.header));
  const h = headerOf(f);
  const text = h && replaced(h, "inner" in m ? [m.inner, m.field] : [m.field], deep(m.json));
  return text === null ? f : withHeader(f, text);
}

const isPair = (p: unknown) => Array.isArray(p) && p.length === 2 && p.every((v) => Number.isSafeInteger(v) && v >= 0 && v <= 1 << 16);
const isAmount = (v: unknown) => typeof v === "number" && Number.isFinite(v) && v >= 0;
const isPlain = (o: unknown) => !!o && typeof o === "object" && !Array.isArray(o) && Object.getPrototypeOf(o) === Object.prototype;

/** What consumers of a decoded message rely on, without checking it again. */
function assertInvariants(m: Message): void {
  const pairsOk = (ps: unknown) => Array.isArray(ps) && ps.length <= 1 << 16 && ps.every(isPair);
  switch (m.type) {
    case "hello": {
      const c = m.capabilities;
      assert.ok(typeof m.name === "string" && m.name.length <= 256);
      assert.ok(isPlain(c) && isAmount(c.memoryBytes) && isAmount(c.gflops) && isAmount(c.readGbps));
      const optional = Object.keys(c).filter((k) => !["gflops", "memoryBytes", "readGbps", "weightDTypes", "wireDTypes"].includes(k));
      assert.ok(optional.every((k) => ["kind", "userAgent", "compute", "adapter"].includes(k)) && Object.keys(c).length - optional.length === 5, `capabilities carry only their fields (${Object.keys(c).join(", ")})`);
      if (c.kind !== undefined) assert.ok(DEVICE_KINDS.includes(c.kind), "kind is node or browser");
      if (c.userAgent !== undefined) assert.ok(c.kind === "browser" && c.userAgent.length <= USER_AGENT_CHARS && /^[\x20-\x7e]*$/.test(c.userAgent), "a user agent is a browser's, short and printable");
      if (c.compute !== undefined) assert.ok(COMPUTE_KINDS.includes(c.compute), "compute is wasm, native or webgpu");
      if (c.adapter !== undefined) assert.ok(c.compute === "webgpu" && c.adapter.length <= ADAPTER_CHARS && /^[\x20-\x7e]*$/.test(c.adapter), "an adapter is WebGPU's, short and printable");
      assert.ok(Array.isArray(c.weightDTypes) && c.weightDTypes.every((d) => typeof d === "string" && d.length <= 16), "weightDTypes are short strings");
      assert.ok(Array.isArray(c.wireDTypes) && c.wireDTypes.every((d) => WIRE_DTYPES.includes(d)));
      if (m.holds !== undefined) assert.ok(pairsOk(m.holds));
      for (const h of [m.nonce, m.proof]) if (h !== undefined) assert.match(h, /^[0-9a-f]{64}$/);
      if (m.proof !== undefined) assert.ok(m.nonce !== undefined, "a proof comes with its nonce");
      if (m.key !== undefined) assert.ok(/^[0-9a-f]{64}$/.test(m.key) && /^[0-9a-f]{128}$/.test(m.signature ?? "") && m.nonce !== undefined, "a key comes with its signature and nonce");
      return;
    }
    case "assign":
      assert.ok(isPlain(m.config), "config is a plain object");
      assert.match(m.modelId, /^[\w-][\w.-]{0,127}$/, "modelId is safe as a directory name (not . or ..)");
      assert.ok(pairsOk(m.experts) && WIRE_DTYPES.includes(m.wireDType));
      return;
    case "fetch":
      assert.ok(isPlain(m.have) && Object.values(m.have).every((v) => typeof v === "string" && v.length <= 64));
      assert.ok(pairsOk(m.experts));
      return;
    case "weights":
      assert.match(m.name, /^[\w-][\w.-]{0,511}$/, "a tensor name is safe as a file name (not . or ..)");
      assert.equal(m.payload.length, sourceBytes(m.dtype, m.shape[0], m.shape[1]), "the payload is what the type and shape imply");
      return;
    case "call":
    case "result": {
      const rows = m.experts.reduce((s, [, r]) => s + r, 0);
      assert.ok(m.experts.length >= 1 && m.experts.every(([e, r]) => isPair([e, r]) && r >= 1) && rows <= LIMITS.rows);
      assert.ok(Number.isSafeInteger(m.hidden) && m.hidden >= 1 && m.hidden <= LIMITS.hidden);
      assert.equal(m.payload.length, rows * m.hidden * wireBytes(m.dtype));
      if (m.type === "result") assert.ok(isAmount(m.computeMs), "computeMs is a finite number ≥ 0");
      return;
    }
    case "expert":
      assert.ok(m.shapes.length === 3 && m.shapes.every((p) => isPair(p) && p[0] >= 1 && p[1] >= 1) && m.payload.length > 0);
      return;
    case "challenge":
      assert.match(m.nonce, /^[0-9a-f]{64}$/);
      return;
    case "welcome":
      if (m.proof !== undefined) assert.match(m.proof, /^[0-9a-f]{64}$/);
      return;
    case "error":
      assert.ok(typeof m.message === "string" && (m.id === undefined || Number.isSafeInteger(m.id)));
      return;
    case "heartbeat":
      if (m.battery !== undefined) assert.ok(isPlain(m.battery) && Object.keys(m.battery).length === 2 && m.battery.level >= 0 && m.battery.level <= 1 && typeof m.battery.charging === "boolean", "a battery is {level in 0..1, charging}");
      return;
    default:
      return;
  }
}

/** decodeFrame's answer to `bytes`: a message keeping the invariants (and surviving re-encoding), or a ProtocolError. */
function decodesCleanly(bytes: Uint8Array): void {
  const m = cleanlyRefused(() => decodeFrame(bytes), ProtocolError);
  if (m instanceof Error) {
    assert.ok(m.message.length > 0 && m.message.length < 1000, "a short reason");
    return;
  }
  assertInvariants(m);
  assert.deepEqual(decodeFrame(encodeFrame(m)), m, "a decoded message encodes to the same message");
}

test("fuzz: arbitrary bytes decode to a message or a ProtocolError", () => {
  const prefix = fc.tuple(fc.constantFrom(0x44, 0), fc.constantFrom(0x4d, 0), fc.constantFrom(3, 2), fc.integer({ min: 0, max: 15 }));
  const bytes = fc.oneof(
    fc.uint8Array({ maxLength: 64 }),
    fc.tuple(prefix, fc.nat({ max: 128 }), fc.uint8Array({ maxLength: 128 })).map(([p, len, rest]) => {
      const out = new Uint8Array(8 + rest.length);
      out.set(p);
      new DataView(out.buffer).setUint32(4, len, true);
      out.set(rest, 8);
      return out;
    }),
  );
  fc.assert(fc.property(bytes, decodesCleanly), fuzzParams(3000));
});

test("fuzz: every message survives encode → decode", () => {
  fc.assert(
    fc.property(message, (m) => {
      assert.deepEqual(decodeFrame(encodeFrame(m)), m);
    }),
    fuzzParams(3000),
  );
});

test("fuzz: mutated frames of every type decode to a valid message or a ProtocolError", () => {
  fc.assert(
    fc.property(message, fc.array(mutation, { minLength: 1, maxLength: 3 }), (m, ms) => decodesCleanly(ms.reduce(mutate, encodeFrame(m)))),
    fuzzParams(5000),
  );
});

test("fuzz: activations round-trip exactly in f32 and to the nearest value in f16 and bf16", () => {
  const values = fc.float32Array({ maxLength: 32 });
  const dtypes: WireDType[] = ["f32", "f16", "bf16"];
  fc.assert(
    fc.property(values, fc.constantFrom(...dtypes), fc.nat({ max: 7 }), (v, dtype, offset) => {
      // the bytes may sit at any offset of a larger buffer, as a Node Buffer from a socket does
      const enc = encodeActivations(v, dtype);
      const host = Buffer.alloc(offset + enc.length + 3);
      host.set(enc, offset);
      const back = decodeActivations(host.subarray(offset, offset + enc.length), dtype);
      assert.equal(back.length, v.length);
      for (let i = 0; i < v.length; i++) {
        const x = v[i]!, y = back[i]!;
        if (Number.isNaN(x)) assert.ok(Number.isNaN(y), `NaN stays NaN in ${dtype}`);
        else if (dtype === "f32") assert.ok(Object.is(x, y));
        else {
          const [max, eps, tiny] = dtype === "f16" ? [65520, 2 ** -11, 2 ** -25] : [3.3961775292304e38, 2 ** -8, 2 ** -134];
          if (Math.abs(x) >= max) assert.equal(y, Math.sign(x) * Infinity, `${x} overflows ${dtype}`);
          else assert.ok(Math.abs(y - x) <= Math.max(Math.abs(x) * eps, tiny) && (y === 0 || Math.sign(y) === Math.sign(x)), `${dtype} ${x} → ${y}`);
        }
      }
    }),
    fuzzParams(3000),
  );
});

test("fuzz: every f16 and bf16 value round-trips bit for bit", () => {
  for (const dtype of ["f16", "bf16"] as const) {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = new Uint16Array(encodeActivations(decodeActivations(new Uint8Array(all.buffer), dtype), dtype).buffer);
    for (let i = 0; i < 65536; i++) {
      const nan = dtype === "f16" ? (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0 : (i & 0x7f80) === 0x7f80 && (i & 0x7f) !== 0;
      if (!nan) assert.equal(back[i], i, `${dtype} 0x${i.toString(16)}`);
    }
  }
});

test("fuzz: decodeActivations refuses bytes that are not whole values, cleanly", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 33 }), fc.constantFrom(...WIRE_DTYPES), (b, dtype) => {
      const r = cleanlyRefused(() => decodeActivations(b, dtype), RangeError);
      if (b.length % wireBytes(dtype) === 0) assert.ok(r instanceof Float32Array && r.length === b.length / wireBytes(dtype));
      else assert.ok(r instanceof RangeError && /whole number/.test(r.message));
    }),
    fuzzParams(1000),
  );
});
