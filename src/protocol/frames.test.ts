import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeFrame, encodeFrame, LIMITS, ProtocolError, type Message } from "./frames.js";
import { decodeActivations, encodeActivations } from "./activations.js";

test("every message survives encode → decode", () => {
  const payload = encodeActivations(Float32Array.from([1, -2, 3.5, 0]), "f32");
  const messages: Message[] = [
    { type: "hello", name: "phone-1", capabilities: { memoryBytes: 8e9, gflops: 40, readGbps: 20, weightDTypes: ["f32", "q8"], wireDTypes: ["f32", "f16"] } },
    { type: "hello", name: "phone-2", capabilities: { memoryBytes: 8e9, gflops: 40, readGbps: 20, weightDTypes: ["f32"], wireDTypes: ["f32"] }, holds: [[0, 3], [1, 7]] },
    { type: "assign", model: "/models/m", modelId: "abc", config: { hidden_size: 8 }, weightDType: "q8", wireDType: "f16", experts: [[0, 1], [3, 7]] },
    { type: "fetch", experts: [[0, 1]], have: { "model.layers.0.x": "00ff" } },
    { type: "weights", name: "model.layers.0.x", dtype: "BF16", shape: [2, 2], sha256: "00ff", payload: new Uint8Array(8) },
    { type: "fetched", sent: 3, bytes: 1024 },
    { type: "ready", experts: [[0, 1]] },
    { type: "release", experts: [[2, 3]] },
    { type: "call", id: 7, layer: 2, experts: [[5, 1], [6, 1]], hidden: 2, dtype: "f32", payload },
    { type: "result", id: 7, experts: [[3, 1]], hidden: 4, dtype: "f32", computeMs: 0.25, payload },
    { type: "pull", id: 9, layer: 1, expert: 4 },
    { type: "expert", id: 9, layer: 1, expert: 4, dtype: "bf16", shapes: [[4, 2], [4, 2], [2, 4]], payload: new Uint8Array(48) },
    { type: "error", id: 3, message: "nope" },
    { type: "leave", reason: "bye" },
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
    [(() => { const f = encodeFrame({ type: "ready", experts: [] }); f[8] = 0x7b; f[9] = 0x7b; return f; })(), /ready header is not valid JSON/],
    [encodeFrame({ type: "ready", experts: [] }).slice(0, 10), /header length \d+ does not fit the frame/],
    [new Uint8Array(LIMITS.frameBytes + 1), /exceeds the limit/],
    [encodeFrame({ type: "pull", id: 1, layer: -1, expert: 0 }), /pull needs integer id, layer and expert/],
    [encodeFrame({ type: "expert", id: 1, layer: 0, expert: 0, dtype: "bf16", shapes: [[4, 2]], payload: new Uint8Array(16) }), /shapes of its three matrices/],
    [encodeFrame({ type: "expert", id: 1, layer: 0, expert: 0, dtype: "bf16", shapes: [[4, 2], [4, 2], [2, 4]], payload: new Uint8Array(0) }), /carries its weights/],
  ];
  for (const [frame, msg] of cases) assert.throws(() => decodeFrame(frame), (e: Error) => e instanceof ProtocolError && msg.test(e.message), String(msg));
});
