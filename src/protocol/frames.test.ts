import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeFrame, encodeFrame, LIMITS, PROTOCOL_VERSION, ProtocolError, type Capabilities, type Message } from "./frames.js";
import { decodeActivations, encodeActivations } from "./activations.js";

test("every message survives encode → decode", () => {
  const payload = encodeActivations(Float32Array.from([1, -2, 3.5, 0]), "f32");
  const messages: Message[] = [
    { type: "hello", name: "phone-1", capabilities: { memoryBytes: 8e9, gflops: 40, readGbps: 20, weightDTypes: ["f32", "q8"], wireDTypes: ["f32", "f16"] } },
    { type: "hello", name: "phone-2", capabilities: { memoryBytes: 8e9, gflops: 40, readGbps: 20, weightDTypes: ["f32"], wireDTypes: ["f32"] }, holds: [[0, 3], [1, 7]] },
    { type: "assign", model: "/models/m", modelId: "abc", config: { hidden_size: 8 }, weightDType: "q8", wireDType: "f16", experts: [[0, 1], [3, 7]] },
    { type: "fetch", experts: [[0, 1]], have: { "model.layers.0.x": "00ff" } },
    { type: "weights", name: "model.layers.0.x", dtype: "BF16", shape: [2, 2], sha256: "00ff", payload: new Uint8Array(8) },
    { type: "weights", name: "model.layers.0.x", dtype: "Q8_0", shape: [2, 64], sha256: "00ff", payload: new Uint8Array(2 * 2 * 34) },
    { type: "weights", name: "model.layers.0.x", dtype: "Q6_K", shape: [1, 256], sha256: "00ff", payload: new Uint8Array(210) },
    { type: "fetched", sent: 3, bytes: 1024 },
    { type: "ready", experts: [[0, 1]] },
    { type: "release", experts: [[2, 3]] },
    { type: "call", id: 7, layer: 2, experts: [[5, 1], [6, 1]], hidden: 2, dtype: "f32", payload },
    { type: "result", id: 7, experts: [[3, 1]], hidden: 4, dtype: "f32", computeMs: 0.25, payload },
    { type: "pull", id: 9, layer: 1, expert: 4 },
    { type: "expert", id: 9, layer: 1, expert: 4, dtype: "bf16", shapes: [[4, 2], [4, 2], [2, 4]], payload: new Uint8Array(48) },
    { type: "error", id: 3, message: "nope" },
    { type: "leave", reason: "bye" },
    { type: "challenge", nonce: "ab".repeat(32) },
    { type: "hello", name: "d", capabilities: { memoryBytes: 1, gflops: 1, readGbps: 1, weightDTypes: [], wireDTypes: ["f32"] }, nonce: "01".repeat(32), proof: "ef".repeat(32) },
    { type: "hello", name: "tab", capabilities: { memoryBytes: 1, gflops: 1, readGbps: 1, weightDTypes: [], wireDTypes: ["f32"], kind: "browser" }, nonce: "01".repeat(32), proof: "ef".repeat(32), unbound: true },
    { type: "hello", name: "tab", capabilities: { memoryBytes: 1, gflops: 1, readGbps: 1, weightDTypes: [], wireDTypes: ["f32"], kind: "browser", userAgent: "Mozilla/5.0 (Linux; Android 14)" }, nonce: "01".repeat(32), unbound: true },
    { type: "hello", name: "box", capabilities: { memoryBytes: 1, gflops: 1, readGbps: 1, weightDTypes: [], wireDTypes: ["f32"], kind: "node" } },
    { type: "hello", name: "box", capabilities: { memoryBytes: 1, gflops: 1, readGbps: 1, weightDTypes: [], wireDTypes: ["f32"], kind: "node", compute: "native" } },
    { type: "hello", name: "tab", capabilities: { memoryBytes: 1, gflops: 0.3, readGbps: 1, weightDTypes: [], wireDTypes: ["f32"], kind: "browser", compute: "webgpu", adapter: "google swiftshader" }, nonce: "01".repeat(32), unbound: true },
    { type: "heartbeat" },
    { type: "heartbeat", battery: { level: 0.15, charging: false } },
    { type: "welcome", proof: "cd".repeat(32) },
    { type: "welcome" },
  ];
  for (const m of messages) assert.deepEqual(decodeFrame(encodeFrame(m)), m);
});

test("f16 and bf16 activations round-trip within their precision; f32 exactly", () => {
  const v = Float32Array.from([0, 1, -1, 3.14159, 1e-3, -65504, 6e-8, 1e5]);
  assert.deepEqual(decodeActivations(encodeActivations(v, "f32"), "f32"), v);
  const h = decodeActivations(encodeActivations(v, "f16"), "f16");
  for (let i = 0; i < 6; i++) assert.ok(Math.abs(h[i]! - v[i]!) <= Math.abs(v[i]!) * 2 ** -11, `f16 ${v[i]} → ${h[i]}`);
  assert.ok(Math.abs(h[6]! - 6e-8) < 3e-8, "subnormal");
  assert.equal(h[7], Infinity, "beyond f16 range");
  const b = decodeActivations(encodeActivations(v, "bf16"), "bf16");
  for (let i = 0; i < v.length; i++) assert.ok(Math.abs(b[i]! - v[i]!) <= Math.abs(v[i]!) * 2 ** -8, `bf16 ${v[i]} → ${b[i]}`);
});

test("frames that lie or exceed limits are refused with the reason", () => {
  const call = encodeFrame({ type: "call", id: 1, layer: 0, experts: [[0, 1]], hidden: 4, dtype: "f32", payload: new Uint8Array(16) });
  const callOf = (experts: Array<[number, number]>, dtype = "f32") => encodeFrame({ type: "call", id: 1, layer: 0, experts, hidden: 4, dtype: dtype as "f32", payload: new Uint8Array(0) });
  const CAPS: Capabilities = { memoryBytes: 1, gflops: 1, readGbps: 1, weightDTypes: [], wireDTypes: ["f32"] };
  const cases: Array<[Uint8Array, RegExp]> = [
    [new Uint8Array(4), /bad magic/],
    [(() => { const f = call.slice(); f[3] = 42; return f; })(), /unknown message type 42/],
    [(() => { const f = call.slice(); new DataView(f.buffer).setUint32(4, 1e6, true); return f; })(), /header length 1000000 does not fit/],
    [call.subarray(0, call.length - 4), /needs 16 payload bytes, got 12/],
    [callOf([[0, LIMITS.rows + 1]]), /rows in 1\.\.65536/],
    [callOf([[0, LIMITS.rows], [1, 1]]), /65537 rows in all exceed the limit of 65536/],
    [callOf([]), /experts must be a list of 1\.\.4096/],
    [callOf([[0, 0]]), /each of experts must be \[expert, rows\]/],
    [callOf([[0, 1]], "f64"), /dtype must be one of f32, f16, bf16/],
    [encodeFrame({ type: "assign", model: "m", modelId: "i", config: {}, weightDType: "q8", wireDType: "f32", experts: [[0, -1]] as Array<[number, number]> }), /assign needs/],
    [encodeFrame({ type: "weights", name: "t", dtype: "F32", shape: [2, 2], sha256: "x", payload: new Uint8Array(15) }), /needs 16 payload bytes, got 15/],
    // a GGUF file's blocks: the bytes their type and shape imply, of a type the loader reads, in whole blocks per row
    [encodeFrame({ type: "weights", name: "t", dtype: "Q8_0", shape: [2, 64], sha256: "x", payload: new Uint8Array(2 * 64) }), /weights t: \[2,64\] Q8_0 needs 136 payload bytes, got 128/],
    [encodeFrame({ type: "weights", name: "t", dtype: "Q4_K", shape: [1, 256], sha256: "x", payload: new Uint8Array(145) }), /\[1,256\] Q4_K needs 144 payload bytes, got 145/],
    [encodeFrame({ type: "weights", name: "t", dtype: "Q8_0", shape: [2, 48], sha256: "x", payload: new Uint8Array(102) }), /weights t: rows of 48 values are not whole Q8_0 blocks/],
    [encodeFrame({ type: "weights", name: "t", dtype: "Q2_K" as "Q4_K", shape: [1, 256], sha256: "x", payload: new Uint8Array(84) }), /weights needs .*dtype \(F32, BF16, F16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K\)/],
    [encodeFrame({ type: "weights", name: "t", dtype: "U8" as "F32", shape: [1, 4], sha256: "x", payload: new Uint8Array(4) }), /weights needs .*dtype/],
    [(() => { const f = encodeFrame({ type: "ready", experts: [] }); f[8] = 0x7b; f[9] = 0x7b; return f; })(), /ready header is not valid JSON/],
    [encodeFrame({ type: "ready", experts: [] }).slice(0, 10), /header length \d+ does not fit the frame/],
    [new Uint8Array(LIMITS.frameBytes + 1), /exceeds the limit/],
    [encodeFrame({ type: "pull", id: 1, layer: -1, expert: 0 }), /pull needs integer id, layer and expert/],
    [encodeFrame({ type: "expert", id: 1, layer: 0, expert: 0, dtype: "bf16", shapes: [[4, 2]], payload: new Uint8Array(16) }), /shapes of its three matrices/],
    [encodeFrame({ type: "expert", id: 1, layer: 0, expert: 0, dtype: "bf16", shapes: [[4, 2], [4, 2], [2, 4]], payload: new Uint8Array(0) }), /carries its weights/],
    [encodeFrame({ type: "challenge", nonce: "AB".repeat(32) }), /challenge needs a nonce of 64 hex digits/],
    [encodeFrame({ type: "challenge", nonce: "ab" }), /challenge needs a nonce of 64 hex digits/],
    [encodeFrame({ type: "hello", name: "d", capabilities: CAPS, nonce: "ab".repeat(33) }), /hello: nonce and proof must be 64 and 64 hex digits/],
    [encodeFrame({ type: "hello", name: "d", capabilities: CAPS, proof: "ab".repeat(32) }), /a proof needs the nonce it was made with/],
    [encodeFrame({ type: "welcome", proof: "zz".repeat(32) }), /welcome: a proof is 64 hex digits/],
  ];
  for (const [frame, msg] of cases) assert.throws(() => decodeFrame(frame), (e: Error) => e instanceof ProtocolError && msg.test(e.message), String(msg));
});

// Minimal counterexamples the fuzz tests (frames.fuzz.test.ts) found, kept whatever seed they run with.

/** A frame of message type `type` (its index) with `header` as its raw JSON text, as a peer may write it. */
function rawFrame(type: number, header: string): Uint8Array {
  const h = new TextEncoder().encode(header);
  const f = new Uint8Array(8 + h.length);
  f.set([0x44, 0x4d, PROTOCOL_VERSION, type]);
  new DataView(f.buffer).setUint32(4, h.length, true);
  f.set(h, 8);
  return f;
}

test("a decoded message is exactly what was meant, and re-encodes to itself", () => {
  assert.ok(!("id" in decodeFrame(encodeFrame({ type: "error", message: "x" }))), "an error without an id has no id key");
  assert.ok(Object.is((decodeFrame(rawFrame(5, '{"id":-0,"message":"x"}')) as { id?: number }).id, 0), "-0 reads as 0");
  const hello = decodeFrame(rawFrame(0, '{"name":"d","capabilities":{"memoryBytes":1,"gflops":1,"readGbps":1,"weightDTypes":["f32"],"wireDTypes":["f32"],"junk":{"a":1}}}'));
  assert.deepEqual(hello, { type: "hello", name: "d", capabilities: { memoryBytes: 1, gflops: 1, readGbps: 1, weightDTypes: ["f32"], wireDTypes: ["f32"] } }, "capabilities carry only their fields");
});

test("headers that pass a shallow check but break a consumer are refused", () => {
  const enc = (m: unknown) => encodeFrame(m as Message);
  const assign = { type: "assign", model: "m", modelId: "abc", config: {}, weightDType: "q8", wireDType: "f32", experts: [] };
  const hello = { type: "hello", name: "d", capabilities: { memoryBytes: 1, gflops: 1, readGbps: 1, weightDTypes: ["f32"], wireDTypes: ["f32"] } };
  const cases: Array<[Uint8Array, RegExp]> = [
    // 1e400 parses as Infinity, which passed "computeMs ≥ 0" and is written back as null
    [rawFrame(4, '{"id":1,"experts":[[0,1]],"hidden":1,"dtype":"f32","computeMs":1e400}'), /beyond the range of a double/],
    [enc({ ...assign, config: [1] }), /config \(an object/],
    // a config JSON.stringify cannot write back (RangeError) could be neither logged nor relayed
    [rawFrame(1, `{"model":"m","modelId":"abc","config":{"a":${"[".repeat(20000)}${"]".repeat(20000)}},"weightDType":"q8","wireDType":"f32","experts":[]}`), /assign header is not valid JSON/],
    [rawFrame(1, `{"model":"m","modelId":"abc","config":{"a":${"[".repeat(16)}${"]".repeat(16)}},"weightDType":"q8","wireDType":"f32","experts":[]}`), /nesting ≤ 16 deep/],
    // both name files on the device
    [enc({ ...assign, modelId: "../../.ssh" }), /modelId \(letters, digits/],
    [enc({ ...assign, modelId: ".." }), /modelId \(letters, digits, _ \. -, not a dot first\)/],
    [enc({ type: "weights", name: "../../.bashrc", dtype: "F32", shape: [1, 1], sha256: "x", payload: new Uint8Array(4) }), /weights needs name \(letters, digits/],
    [enc({ type: "fetch", experts: [], have: ["00ff"] }), /fetch needs/],
    [enc({ ...hello, capabilities: { ...hello.capabilities, weightDTypes: [1] } }), /weightDTypes \(names\)/],
    [enc({ ...hello, capabilities: { ...hello.capabilities, wireDTypes: ["f32", "f32", "f32", "f32"] } }), /wireDTypes/],
    // a browser device's hello says it is unbound, or says nothing: no other value, and never without the nonce its proofs are over
    [enc({ ...hello, nonce: "01".repeat(32), unbound: false }), /unbound is true or absent/],
    [enc({ ...hello, nonce: "01".repeat(32), unbound: "yes" }), /unbound is true or absent/],
    [enc({ ...hello, unbound: true }), /unbound is true or absent, and comes with a nonce/],
    // a kind is one of the two; a user agent is a browser's, bounded and printable (it reaches /health and /metrics)
    [enc({ ...hello, capabilities: { ...hello.capabilities, kind: "phone" } }), /kind must be one of node, browser/],
    [enc({ ...hello, capabilities: { ...hello.capabilities, kind: "node", userAgent: "x" } }), /userAgent is a browser's/],
    [enc({ ...hello, capabilities: { ...hello.capabilities, kind: "browser", userAgent: "x".repeat(257) } }), /at most 256 characters/],
    [enc({ ...hello, capabilities: { ...hello.capabilities, kind: "browser", userAgent: "evil\u001b[31m" } }), /printable ASCII/],
    // the kind shown is the one the handshake bears out: a page's hello is unbound (it has no TLS exporter), a Node device's never
    [enc({ ...hello, capabilities: { ...hello.capabilities, kind: "node" }, nonce: "01".repeat(32), unbound: true }), /a browser's hello \(capabilities.kind browser\) is unbound, and only a browser's is/],
    [enc({ ...hello, nonce: "01".repeat(32), unbound: true }), /only a browser's is/],
    [enc({ ...hello, capabilities: { ...hello.capabilities, kind: "browser", userAgent: "Mozilla/5.0" } }), /a browser's hello .* is unbound/],
    // what computes is one of three; an adapter is WebGPU's, bounded and printable (it reaches /health and /metrics)
    [enc({ ...hello, capabilities: { ...hello.capabilities, compute: "cuda" } }), /compute must be one of wasm, native, webgpu/],
    [enc({ ...hello, capabilities: { ...hello.capabilities, compute: "wasm", adapter: "x" } }), /adapter is a WebGPU adapter's name \(compute webgpu\)/],
    [enc({ ...hello, capabilities: { ...hello.capabilities, compute: "webgpu", adapter: "x".repeat(129) } }), /at most 128 characters/],
    [enc({ ...hello, capabilities: { ...hello.capabilities, compute: "webgpu", adapter: "gpu\n0" } }), /adapter .* printable ASCII/],
    [enc({ type: "heartbeat", battery: { level: 1.5, charging: false } }), /battery is \{level in 0..1/],
    [enc({ type: "heartbeat", battery: { level: 0.5, charging: "no" } }), /battery is/],
    [enc({ type: "heartbeat", battery: 1 }), /battery is/],
  ];
  for (const [frame, msg] of cases) assert.throws(() => decodeFrame(frame), (e: Error) => e instanceof ProtocolError && msg.test(e.message), String(msg));
});

test("activations decode from a Buffer at any offset, and refuse a partial value", () => {
  const bytes = encodeActivations(Float32Array.from([1.5, -2]), "f32");
  const host = Buffer.alloc(16);
  host.set(bytes, 3);
  assert.deepEqual(decodeActivations(host.subarray(3, 11), "f32"), Float32Array.from([1.5, -2]));
  assert.throws(() => decodeActivations(new Uint8Array(3), "f16"), /3 bytes are not a whole number of f16 values/);
});
