// Step buffers: decode-sized sets kept per bucket; of prefill-sized ones the largest is kept and reused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { WasmBackend } from "../kernels/wasm/wasm-backend.js";
import { StepBuffers } from "./step-buffers.js";

test("a prefill's set is kept and handed to any later step it holds; a larger one replaces it", () => {
  const be = new WasmBackend({ threads: 1 });
  try {
    const bufs = new StepBuffers(be, [8, 0, 4], 16);
    const used = () => be.memoryUsage().activations;
    const a = bufs.take(100);
    assert.ok(a[0]!.bytes >= 100 * 8 * 4 && a[2]!.bytes >= 100 * 4 * 4);
    bufs.give(100, a);
    const b = bufs.take(60);
    assert.deepEqual(b, a, "the kept set, for fewer rows");
    const c = bufs.take(80);
    assert.notDeepEqual(c, a, "the kept set is leased: a second step gets its own");
    bufs.give(60, b);
    bufs.give(80, c);
    assert.deepEqual(bufs.take(100), a, "the larger set stays kept");
    bufs.give(100, a);
    const before = used();
    const d = bufs.take(300);
    bufs.give(300, d);
    assert.equal(used(), before - a.reduce((s, t) => s + t.bytes, 0) + d.reduce((s, t) => s + t.bytes, 0), "the smaller one is freed");
    assert.deepEqual(bufs.take(200), d);
    // decode sizes: one set per power-of-two bucket
    const e = bufs.take(3);
    bufs.give(3, e);
    assert.deepEqual(bufs.take(4), e);
    const f = bufs.take(4);
    assert.notDeepEqual(f, e, "a second step of the bucket gets its own set");
    bufs.give(4, e);
    const held = used();
    bufs.give(4, f);
    assert.ok(used() < held, "a bucket keeps one set: the second given back is freed");
    assert.deepEqual(bufs.take(4), e);
    assert.notDeepEqual(bufs.take(4), e, "and the kept one is leased");
    bufs.close();
  } finally {
    be.close();
  }
});
