// The native backend against the wasm one, op by op and dtype by dtype, on the same inputs; the weight
// bytes the two exchange; and the inputs ggml would abort the process on, refused with an Error instead.
import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, mkdtempSync, openSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import os from "node:os";
import path from "node:path";
import type { Backend, SourceDType, Tensor, WeightDType } from "../backend.js";
import { WEIGHT_DTYPES } from "../backend.js";
import { kQuantBlocks } from "../weight-layout.js";
import { WasmBackend } from "../wasm/wasm-backend.js";
import { NativeBackend } from "./native-backend.js";
import { nativeSkip } from "../../testing/backends.js";
import { Random } from "../../util/random.js";
import { blocksFromLayout, f32ToF16 } from "../weight-layout.js";
import { relErr } from "../../testing/rel-err.js";

const skip = nativeSkip();
/** Relative L2 error allowed per weight dtype between the two backends (bf16: ggml rounds activations to bf16 too). */
const TOLERANCE: Partial<Record<WeightDType, number>> = { f32: 1e-6, bf16: 1e-2, q8: 1e-5, q4: 1e-5 };
/** The dtypes both backends hold (f16 and the K-quants are native only: model/gguf-kquants.test.ts). */
const SHARED_DTYPES = WEIGHT_DTYPES.filter((d) => d !== "f16" && !kQuantBlocks(d));

function pair(threads = 2): { native: NativeBackend; wasm: WasmBackend; both: Backend[]; close(): void } {
  const native = new NativeBackend({ threads }), wasm = new WasmBackend({ threads });
  return { native, wasm, both: [native, wasm], close: () => (native.close(), wasm.close()) };
}

/** Watches the graphs `be` builds from now on (each one's key and ops), and holds its graph cache. */
function watchBuilds(be: NativeBackend): { keys: string[]; sizes: number[]; graphs: Map<string, unknown> } {
  const internals = be as unknown as { build(...args: unknown[]): unknown; graphs: Map<string, unknown> };
  const build = internals.build.bind(be);
  const seen = { keys: [] as string[], sizes: [] as number[], graphs: internals.graphs };
  internals.build = (...args: unknown[]) => (seen.keys.push(args[0] as string), seen.sizes.push((args[3] as unknown[]).length), build(...args));
  return seen;
}

function put(be: Backend, values: Float32Array): Tensor {
  const t = be.alloc(values.length * 4);
  be.f32(t).set(values);
  return t;
}

test("ops recorded in one graph see each other's results: reads after writes, writes after reads, chains longer than a graph", { skip }, () => {
  const { both, close } = pair();
  const rng = new Random(11);
  try {
    const N = 256, K = 256, M = 4;
    const W = rng.fillNormal(new Float32Array(N * K), 0.1), X = rng.fillNormal(new Float32Array(M * K), 1), C = rng.fillNormal(new Float32Array(M * N), 1);
    // readEach: JavaScript reads after every op, so the native backend runs each op alone
    const sequence = (be: Backend, readEach: boolean): Float32Array => {
      const w = be.allocWeight("f32", N, K), norm = be.allocWeight("f32", 1, N);
      be.setWeight(w, W);
      be.setWeight(norm, new Float32Array(N).fill(1.5));
      const x = put(be, X), c = put(be, C), y = be.alloc(M * N * 4), z = be.alloc(M * N * 4);
      const read = (t: Tensor) => readEach && be.f32(t);
      be.matmul(y, x, w, M); // y = W·x
      read(y);
      be.add(z, y, c, M * N); // reads y after it is written
      read(z);
      be.rmsnorm(y, z, norm, M, N, 1e-5); // writes y after add read it
      read(y);
      be.matmul(z, y, w, M); // z = W·norm(W·x + c): reads y, overwrites its own earlier input
      // 140 in-place adds in a row: more ops than one graph holds
      for (let i = 0; i < 140; i++) {
        read(z);
        be.add(z, z, c, M * N);
      }
      return be.f32(z).slice();
    };
    const [recorded, wasm] = both.map((be) => sequence(be, false));
    assert.ok(relErr(recorded!, wasm!) <= 1e-5, `native vs wasm: ${relErr(recorded!, wasm!)}`);
    assert.deepEqual(sequence(both[0]!, true), recorded, "native, one op at a time: recording changes no result");
  } finally {
    close();
  }
});

test("what is recorded runs before a weight is rewritten, and before an op that writes memory freed and handed out again", { skip }, () => {
  const native = new NativeBackend({ threads: 2 });
  try {
    const K = 64, w = native.allocWeight("f32", K, K);
    native.setWeight(w, new Float32Array(K * K).map((_, i) => (i % (K + 1) === 0 ? 2 : 0))); // 2·I
    const x = put(native, new Float32Array(K).fill(1)), y = native.alloc(K * 4);
    native.matmul(y, x, w, 1);
    // rewritten before anything read y: the product was computed with the weight as it was
    native.setWeight(w, new Float32Array(K * K));
    assert.deepEqual([...native.f32(y)], new Array(K).fill(2));
    native.setWeight(w, new Float32Array(K * K).map((_, i) => (i % (K + 1) === 0 ? 3 : 0)));
    native.matmul(y, x, w, 1);
    native.free(x);
    const again = native.alloc(K * 4);
    assert.equal(again.ptr, x.ptr, "the freed memory is handed out again");
    native.add(again, y, y, K);
    assert.deepEqual([...native.f32(y)], new Array(K).fill(3), "the product read x before the add overwrote it");
    assert.deepEqual([...native.f32(again)], new Array(K).fill(6));
  } finally {
    native.close();
  }
});

test("random programs give the same bits recorded (graphs evicted, mask rewritten mid-graph, a weight freed while recorded) as one op at a time", { skip }, () => {
  // slots of N floats in one buffer, so that ops alias each other's memory; attention: 2 heads of N / 2 sharing one kv head
  const N = 64, SLOTS = 10, D = N / 2, CAP = 8;
  for (let seed = 1; seed <= 30; seed++) {
    const rng = new Random(seed);
    const init = rng.fillNormal(new Float32Array(SLOTS * N), 1), cache = rng.fillNormal(new Float32Array(2 * CAP * D), 1);
    const W = rng.fillNormal(new Float32Array(N * N), 0.1), NORM = rng.fillNormal(new Float32Array(N), 1);
    const program = Array.from({ length: 60 }, () => [0, 0, 0, 0].map(() => Math.floor(rng.next() * SLOTS)).concat(rng.next()) as [number, number, number, number, number]);
    program.forEach((p) => (p[0] = p[4] < 0.05 ? -1 : p[0]));
    const run = (be: NativeBackend, oneAtATime: boolean): Float32Array[] => {
      const reads: Float32Array[] = [];
      const buf = put(be, init), kv = put(be, cache), at = be.alloc(8);
      be.i32(at).set([0, 1]);
      const s = (i: number): Tensor => ({ arena: buf.arena, ptr: buf.ptr + i * N * 4, bytes: N * 4 });
      const k = { ...kv, bytes: CAP * D * 4 }, v = { ...kv, ptr: kv.ptr + CAP * D * 4, bytes: CAP * D * 4 };
      const norm = be.allocWeight("f32", 1, N);
      be.setWeight(norm, NORM);
      let w = be.allocWeight("f32", N, N);
      be.setWeight(w, W);
      for (const [op, a, b, c, r] of program) {
        if (op === -1) {
          // the weight freed with a product that reads it recorded: the product runs first
          be.matmul(s(a), s((a + 1) % SLOTS), w, 1);
          be.freeWeight(w);
          w = be.allocWeight("f32", N, N);
          be.setWeight(w, W);
        } else if (op === 0) be.add(s(a), s(b), s(c), N);
        else if (op === 1) be.clamp(s(a), N, 0.5 + r);
        else if (op === 2) be.siluMul(s(a), s(b), s(c), N);
        else if (op === 3 && a !== b) be.matmul(s(a), s(b), w, 1);
        else if (op === 4) be.rmsnorm(s(a), s(b), norm, 1, N, 1e-5);
        else if (op === 5) be.f32(s(a)).fill(r);
        else if (op === 6) reads.push(be.f32(s(a)).slice());
        else if (op === 7) {
          be.i32(at).set([b % CAP, (b + 1) % CAP]);
          be.setRows(r < 0.5 ? k : v, s(c), 2, D, at);
        } else if (op === 8 && a !== b) be.attention(s(a), s(b), k, v, 1, c % CAP, 2, 1, D);
        else if (op === 9) be.rope(s(a), 1, 2, D, at, table(be));
        if (oneAtATime) be.f32(s(0));
      }
      reads.push(be.f32(buf).slice(), be.f32(kv).slice());
      return reads;
    };
    const tables = new Map<NativeBackend, ReturnType<NativeBackend["ropeTable"]>>();
    const table = (be: NativeBackend) => tables.get(be) ?? tables.set(be, be.ropeTable(CAP, D, 10000)).get(be)!;
    const recorded = new NativeBackend({ threads: 2, maxGraphs: 8 }), alone = new NativeBackend({ threads: 2 });
    try {
      assert.deepEqual(run(recorded, false), run(alone, true), `seed ${seed}`);
    } finally {
      recorded.close();
      alone.close();
    }
  }
});

test("graphTime counts each graph run and the time in it", { skip }, () => {
  const be = new NativeBackend({ threads: 1 });
  try {
    const N = 64, x = put(be, new Float32Array(N).fill(1)), y = be.alloc(N * 4);
    const before = { ...be.graphTime };
    for (let i = 0; i < 3; i++) {
      be.add(y, x, x, N);
      be.add(y, y, x, N);
      assert.equal(be.f32(y, 0, 1)[0], 3);
    }
    assert.equal(be.graphTime.graphs - before.graphs, 3, "two ops recorded, one graph, per read");
    assert.ok(be.graphTime.ms > before.ms);
  } finally {
    be.close();
  }
});

/** profileOps' tests: a two-thread backend, x = N ones, y, and w (N × N, all 0.5): y = x + x + x, then w · y, is 96 everywhere. */
function profiledSums() {
  const be = new NativeBackend({ threads: 2 }), N = 64;
  const x = put(be, new Float32Array(N).fill(1)), y = be.alloc(N * 4), w = be.allocWeight("f32", N, N);
  be.setWeight(w, new Float32Array(N * N).fill(0.5));
  return { be, N, x, y, w };
}

test("profileOps runs each op as a graph of its own, timed under its name; no tape records or replays meanwhile; off, ops share graphs and tapes replay again", { skip }, () => {
  const { be, N, x, y, w } = profiledSums();
  try {
    const ops = () => {
      be.add(y, x, x, N);
      be.add(y, y, x, N);
      be.matmul(y, y, w, 1);
    };
    const step = () => (ops(), be.f32(y, 0, 1)[0]);
    assert.equal(step(), 96);
    be.beginTape();
    ops();
    const tape = be.endTape();
    assert.ok(tape, "recorded before profiling");
    assert.equal(be.f32(y, 0, 1)[0], 96);
    const graphs = be.graphTime.graphs;
    be.profileOps(true);
    assert.equal(be.opTime.size, 0, "turned on: nothing counted yet");
    assert.equal(step(), 96, "the same results");
    assert.equal(be.graphTime.graphs - graphs, 3, "three ops, three graphs");
    assert.deepEqual([...be.opTime].map(([op, t]) => [op, t.graphs]), [["add", 2], ["mm", 1]]);
    assert.ok([...be.opTime.values()].every((t) => t.ms > 0));
    assert.equal(be.replayTape(tape!, 0), false, "a tape would run its ops as one graph");
    be.beginTape();
    ops();
    assert.equal(be.endTape(), null, "nor is one recorded");
    assert.equal(be.f32(y, 0, 1)[0], 96);
    be.profileOps(false);
    assert.equal(be.opTime.size, 0);
    const before = be.graphTime.graphs;
    assert.equal(step(), 96);
    assert.equal(be.graphTime.graphs - before, 1, "off: the step's ops in one graph again");
    assert.equal(be.opTime.size, 0, "and not counted");
    assert.equal(be.replayTape(tape!, 0), true, "the tape recorded before profiling holds again");
    assert.equal(be.f32(y, 0, 1)[0], 96);
  } finally {
    be.close();
  }
});

test("profileOps turned on mid-recording runs the ops pending first, in order, as one graph uncounted; the tape is spoilt", { skip }, () => {
  const { be, N, x, y, w } = profiledSums();
  try {
    be.beginTape();
    be.add(y, x, x, N);
    be.add(y, y, x, N);
    const graphs = be.graphTime.graphs;
    be.profileOps(true);
    assert.equal(be.graphTime.graphs - graphs, 1, "the two adds pending, in one graph");
    assert.equal(be.opTime.size, 0, "run before profiling: not counted");
    be.matmul(y, y, w, 1);
    be.add(y, y, x, N);
    assert.deepEqual([...be.opTime].map(([op, t]) => [op, t.graphs]), [["mm", 1], ["add", 1]]);
    be.profileOps(false);
    be.add(y, y, x, N);
    assert.equal(be.endTape(), null);
    assert.equal(be.f32(y, 0, 1)[0], 98, "every op, in the order recorded");
  } finally {
    be.close();
  }
});

test("past maxGraphs the graph run longest ago goes: one run every step stays built", { skip }, () => {
  const be = new NativeBackend({ threads: 1, maxGraphs: 8 });
  const built = watchBuilds(be);
  try {
    const N = 32, x = put(be, new Float32Array(N).fill(1)), y = be.alloc(N * 4);
    const step = () => {
      be.add(y, x, x, N);
      return be.f32(y, 0, 1)[0];
    };
    assert.equal(step(), 2);
    for (let i = 1; i <= 20; i++) {
      // a graph of its own (another length), then the step's again
      be.add(y, x, x, i);
      be.f32(y, 0, 1);
      assert.equal(step(), 2);
    }
    assert.equal(built.keys.length, 21, "the step's graph once, each other graph once");
  } finally {
    be.close();
  }
});

test("a tape records ops again as the calls would, with attention at a new start; it ends where memory was read mid-way, attention moved, a weight went or the span grew", { skip }, () => {
  const be = new NativeBackend({ threads: 1 });
  try {
    const D = 8, CAP = 300, N = 16;
    const kv = put(be, new Float32Array(2 * CAP * D)), k = { ...kv, bytes: CAP * D * 4 }, v = { ...kv, ptr: kv.ptr + CAP * D * 4, bytes: CAP * D * 4 };
    const x = put(be, Float32Array.from({ length: N }, (_, i) => i / N)), y = be.alloc(N * 4), out = be.alloc(D * 4), at = be.alloc(4);
    const w = be.allocWeight("f32", N, N);
    be.setWeight(w, Float32Array.from({ length: N * N }, (_, i) => ((i % 7) - 3) / 10));
    // a step: a product, its first D values as one key and value row at `start`, attention over the cache
    const ops = (start: number) => {
      be.matmul(y, x, w, 1);
      be.setRows(k, { ...y, bytes: D * 4 }, 1, D, at);
      be.setRows(v, { ...y, bytes: D * 4 }, 1, D, at);
      be.attention(out, { ...y, bytes: D * 4 }, k, v, 1, start, 1, 1, D);
    };
    const step = (start: number, tape: ReturnType<NativeBackend["endTape"]> | "calls") => {
      be.i32(at)[0] = start;
      if (tape === "calls") ops(start);
      else assert.ok(be.replayTape(tape!, start), `replayed at ${start}`);
      return be.f32(out).slice();
    };
    be.i32(at)[0] = 0;
    be.beginTape();
    ops(0);
    assert.equal(be.endTape(), null, "the first attention allocates the mask: a tape ends where the backend's memory moves");
    be.i32(at)[0] = 0;
    be.beginTape();
    ops(0);
    const tape = be.endTape();
    assert.ok(tape && tape.ops === 4);
    const replayed = [1, 2, 3, 100].map((s) => step(s, tape));
    be.f32(kv).fill(0);
    be.i32(at)[0] = 0;
    ops(0);
    assert.deepEqual([1, 2, 3, 100].map((s) => step(s, "calls")), replayed, "the calls' results");
    assert.equal(be.replayTape(tape!, 256), false, "at 256 attention covers 512 positions, not 256");
    // a cache of exactly 256 positions: full at 256, where the span would still be 256
    const small = { ...k, bytes: 256 * D * 4 };
    be.beginTape();
    be.attention(out, { ...y, bytes: D * 4 }, small, small, 1, 10, 1, 1, D);
    const full = be.endTape();
    assert.ok(full);
    assert.equal(be.replayTape(full!, 255), true);
    assert.equal(be.replayTape(full!, 256), false, "no room in the cache for a row at 256");
    be.f32(out);
    const other = new NativeBackend({ threads: 1 });
    try {
      assert.equal(other.replayTape(tape!, 7), false, "another backend's tape");
    } finally {
      other.close();
    }

    // a tape longer than a graph holds: replayed, it runs in the same segments as the calls
    const long = (start: number) => {
      ops(start);
      for (let i = 0; i < 140; i++) be.add(y, y, x, N);
    };
    be.i32(at)[0] = 4;
    be.beginTape();
    long(4);
    const longTape = be.endTape();
    assert.ok(longTape && longTape.ops === 144);
    const viaTape = [5, 6].map((s) => {
      be.i32(at)[0] = s;
      assert.ok(be.replayTape(longTape!, s));
      return [...be.f32(out), ...be.f32(y)];
    });
    const viaCalls = [5, 6].map((s) => {
      be.i32(at)[0] = s;
      long(s);
      return [...be.f32(out), ...be.f32(y)];
    });
    assert.deepEqual(viaTape, viaCalls);

    be.beginTape();
    ops(5);
    be.f32(y, 0, 1);
    be.matmul(y, x, w, 1);
    assert.equal(be.endTape(), null, "memory read mid-way: what JavaScript did there would be missing");
    be.beginTape();
    ops(5);
    ops(6);
    assert.equal(be.endTape(), null, "attention at two starts");
    assert.throws(() => be.endTape(), /no tape/);
    be.beginTape();
    assert.throws(() => be.beginTape(), /already/);
    assert.equal(be.replayTape(tape!, 7), false, "not while recording");
    assert.equal(be.endTape(), null, "nothing recorded");

    be.freeWeight(w);
    assert.equal(be.replayTape(tape!, 7), false, "the weight it reads is gone");
  } finally {
    be.close();
  }
});

test("a tape's segments are named by the tape: replayed, their graph is built once; after ops pending, named after those and the tape, in the calls' graphs; a freed weight drops the tape's graphs", { skip }, () => {
  const be = new NativeBackend({ threads: 1 });
  const { keys: built, sizes, graphs } = watchBuilds(be);
  try {
    const N = 16, xs = Float32Array.from({ length: N }, (_, i) => i), x = put(be, xs), y = be.alloc(N * 4), z = be.alloc(N * 4);
    const w = be.allocWeight("f32", N, N);
    be.setWeight(w, Float32Array.from({ length: N * N }, (_, i) => ((i % 5) - 2) / 4));
    const ops = () => {
      be.matmul(y, x, w, 1);
      be.add(y, y, x, N);
    };
    be.beginTape();
    ops();
    const tape = be.endTape()!;
    const expected = [...be.f32(y)];
    built.length = 0;
    for (let i = 0; i < 3; i++) {
      assert.ok(be.replayTape(tape, 0));
      be.add(z, y, x, N); // an op after the tape joins its last segment's graph
      assert.deepEqual([...be.f32(y)], expected);
      assert.deepEqual([...be.f32(z)], expected.map((v, j) => v + xs[j]!));
    }
    assert.equal(built.length, 1, "one graph for three replays");
    assert.ok(built[0]!.startsWith("\u0000tape") && built[0]!.length < 100, `named by the tape: ${JSON.stringify(built[0])}`);
    // replayed after an op still pending, the tape's first graph holds that op and fewer of its own, as the calls'
    be.add(z, x, x, N);
    assert.ok(be.replayTape(tape, 0));
    assert.deepEqual([...be.f32(y)], expected);
    assert.deepEqual([...be.f32(z)], [...xs].map((v) => 2 * v));
    assert.ok(built.at(-1)!.startsWith("add|") && built.at(-1)!.includes("\u0000tape"), JSON.stringify(built.at(-1)));
    const long = () => {
      for (let i = 0; i < 130; i++) be.add(y, y, x, N);
    };
    const runs = (f: () => void) => {
      be.f32(y).set(xs);
      be.add(z, x, x, N);
      sizes.length = 0;
      f();
      return [[...be.f32(y)], [...sizes]];
    };
    be.beginTape();
    long();
    const longTape = be.endTape()!;
    assert.deepEqual(runs(() => be.replayTape(longTape, 0)), runs(long), "graphs of 128 and 3 ops: the one pending and 127 of the tape's, then the rest");
    be.freeWeight(w);
    assert.ok(![...graphs.keys()].some((k) => k.includes("\u0000tape")), "no graph of an ended tape is kept");
  } finally {
    be.close();
  }
});

test("tapes of the same ops share their graphs: recorded again (the next request's decode over the same memory), a replay builds none", { skip }, () => {
  const be = new NativeBackend({ threads: 1 });
  const { keys: built, graphs } = watchBuilds(be);
  try {
    const N = 16, x = put(be, Float32Array.from({ length: N }, (_, i) => i / N)), y = be.alloc(N * 4), z = be.alloc(N * 4);
    const w = be.allocWeight("f32", N, N);
    be.setWeight(w, Float32Array.from({ length: N * N }, (_, i) => ((i % 5) - 2) / 4));
    const record = (out: typeof y) => {
      be.beginTape();
      be.matmul(out, x, w, 1);
      be.add(out, out, x, N);
      const tape = be.endTape()!;
      be.f32(out);
      return tape;
    };
    const replay = (tape: ReturnType<typeof record>, out: typeof y) => {
      assert.ok(be.replayTape(tape, 0));
      return [...be.f32(out)];
    };
    const first = record(y);
    const expected = replay(first, y);
    const again = record(y);
    built.length = 0;
    for (let i = 0; i < 100; i++) assert.deepEqual(replay(record(y), y), expected);
    assert.equal(built.length, 0, "no graph built for a tape of the same ops");
    assert.deepEqual(replay(again, y), expected);
    const tapeGraphs = () => [...graphs.keys()].filter((k) => k.includes("\u0000tape")).length;
    assert.equal(tapeGraphs(), 1, "one graph for them all");
    // other ops (another output): graphs of their own, the calls' and the tape's
    replay(record(z), z);
    assert.equal(built.length, 2);
    assert.equal(tapeGraphs(), 2);
  } finally {
    be.close();
  }
});

test("a tape ended while its replayed ops are still pending (a scratch tensor replaced) leaves no graph named by it", { skip }, () => {
  const be = new NativeBackend({ threads: 1 });
  const { graphs } = watchBuilds(be);
  try {
    const N = 32, F = 32, R = 4;
    const x = put(be, Float32Array.from({ length: R * N }, (_, i) => (i % 9) / 9)), y = be.alloc(R * N * 4);
    const weight = (rows: number, cols: number) => {
      const w = be.allocWeight("f32", rows, cols);
      be.setWeight(w, Float32Array.from({ length: rows * cols }, (_, i) => ((i % 5) - 2) / 50));
      return w;
    };
    const ffn = { gate: weight(F, N), up: weight(F, N), down: weight(N, F) };
    be.ffn(y, x, ffn, 1);
    be.beginTape();
    be.add(y, y, x, N);
    const tape = be.endTape()!;
    assert.ok(tape);
    assert.ok(be.replayTape(tape, 0));
    be.f32(y);
    assert.ok(be.replayTape(tape, 0)); // its segment pending …
    be.ffn(y, x, ffn, R); // … when ffn's scratch grows: every tape ends
    const values = [...be.f32(y)];
    assert.equal(be.replayTape(tape, 0), false);
    assert.deepEqual([...graphs.keys()].filter((k) => k.includes("\u0000tape")), [], "no graph named by an ended tape");
    // the calls' results all the same
    const calls = new NativeBackend({ threads: 1 });
    try {
      const cx = put(calls, Float32Array.from({ length: R * N }, (_, i) => (i % 9) / 9)), cy = calls.alloc(R * N * 4);
      const cw = (w: { rows: number; cols: number }) => {
        const t = calls.allocWeight("f32", w.rows, w.cols);
        calls.setWeight(t, Float32Array.from({ length: w.rows * w.cols }, (_, i) => ((i % 5) - 2) / 50));
        return t;
      };
      const cffn = { gate: cw(ffn.gate), up: cw(ffn.up), down: cw(ffn.down) };
      calls.ffn(cy, cx, cffn, 1);
      for (let i = 0; i < 2; i++) calls.add(cy, cy, cx, N);
      calls.ffn(cy, cx, cffn, R);
      assert.deepEqual(values, [...calls.f32(cy)]);
    } finally {
      calls.close();
    }
  } finally {
    be.close();
  }
});

test("a graph of many wide matmulMany calls: as many products as one call takes, in a row", { skip }, () => {
  const native = new NativeBackend({ threads: 2 });
  try {
    const K = 32, N = 8, P = 15;
    const ws = Array.from({ length: P }, (_, p) => {
      const w = native.allocWeight("f32", N, K);
      native.setWeight(w, new Float32Array(N * K).fill(p));
      return w;
    });
    const x = put(native, new Float32Array(K).fill(1)), ys = ws.map(() => native.alloc(N * 4));
    for (let i = 0; i < 30; i++) native.matmulMany(x, ws.map((w, p) => [ys[p]!, w] as const), 1);
    ws.forEach((_, p) => assert.deepEqual([...native.f32(ys[p]!)], new Array(N).fill(p * K)));
    assert.throws(() => native.matmulMany(x, [...ws, ws[0]!].map((w) => [ys[0]!, w] as const), 1), /16 products, at most 15/);
  } finally {
    native.close();
  }
});

test("setRows writes rows where the indices say, on both backends, and refuses an index beyond the destination", { skip }, () => {
  const { both, close } = pair();
  try {
    const width = 6, capacity = 5;
    const out = both.map((be) => {
      const dst = put(be, new Float32Array(capacity * width).fill(-1)), src = put(be, Float32Array.from({ length: 2 * width }, (_, i) => i));
      const at = be.alloc(8);
      be.i32(at).set([3, 1]);
      be.setRows(dst, src, 2, width, at);
      const got = be.f32(dst).slice();
      // a refused call writes no row, not even the ones before the bad index
      be.i32(at).set([4, 5]);
      assert.throws(() => be.setRows(dst, src, 2, width, at), /row 5 of a tensor of 5 rows/);
      assert.deepEqual(be.f32(dst), got, `${be.name}: rows written by a refused setRows`);
      return got;
    });
    const want = new Float32Array(capacity * width).fill(-1);
    want.set([0, 1, 2, 3, 4, 5], 3 * width);
    want.set([6, 7, 8, 9, 10, 11], 1 * width);
    for (const got of out) assert.deepEqual(got, want);
  } finally {
    close();
  }
});

test("matmul and matmulMany agree with the wasm kernels for every dtype, GEMV and GEMM, small and pooled", { skip }, () => {
  const { both, close } = pair();
  const rng = new Random(3);
  try {
    // 96×64: one thread; 1024×1024 × 8 rows: the pooled backend
    for (const [N, K, M] of [[96, 64, 1], [96, 64, 5], [1024, 1024, 8]] as const) {
      const W = rng.fillNormal(new Float32Array(N * K), 0.1), U = rng.fillNormal(new Float32Array(N * K), 0.1), X = rng.fillNormal(new Float32Array(M * K), 1);
      for (const dtype of SHARED_DTYPES) {
        const out = both.map((be) => {
          const w = be.allocWeight(dtype, N, K), u = be.allocWeight(dtype, N, K);
          be.setWeight(w, W);
          be.setWeight(u, U);
          const x = put(be, X), y = be.alloc(M * N * 4), z = be.alloc(M * N * 4);
          be.matmul(y, x, w, M);
          const single = be.f32(y).slice();
          be.matmulMany(x, [[y, w], [z, u]], M);
          return { single, y: be.f32(y).slice(), z: be.f32(z).slice() };
        });
        const what = `${dtype} ${N}×${K} by ${M}`;
        assert.ok(relErr(out[0]!.single, out[1]!.single) <= TOLERANCE[dtype]!, `${what}: ${relErr(out[0]!.single, out[1]!.single)}`);
        assert.deepEqual(out[0]!.y, out[0]!.single, `${what}: matmulMany's first product is matmul's`);
        assert.ok(relErr(out[0]!.z, out[1]!.z) <= TOLERANCE[dtype]!, `${what}, second product`);
      }
    }
  } finally {
    close();
  }
});

test("ffn (one graph) agrees with the wasm kernels' ffn and with its own matmulMany → siluMul → matmul, for every dtype", { skip }, () => {
  const { both, close } = pair();
  const rng = new Random(9);
  try {
    for (const [H, F, M] of [[64, 96, 1], [64, 96, 7], [256, 1024, 4]] as const) {
      const G = rng.fillNormal(new Float32Array(F * H), 0.1), U = rng.fillNormal(new Float32Array(F * H), 0.1), D = rng.fillNormal(new Float32Array(H * F), 0.1);
      const X = rng.fillNormal(new Float32Array(M * H), 1);
      for (const dtype of SHARED_DTYPES) {
        const out = both.map((be) => {
          const w = { gate: be.allocWeight(dtype, F, H), up: be.allocWeight(dtype, F, H), down: be.allocWeight(dtype, H, F) };
          be.setWeight(w.gate, G);
          be.setWeight(w.up, U);
          be.setWeight(w.down, D);
          const x = put(be, X), y = be.alloc(M * H * 4), g = be.alloc(M * F * 4), u = be.alloc(M * F * 4), parts = be.alloc(M * H * 4);
          be.ffn(y, x, w, M);
          be.matmulMany(x, [[g, w.gate], [u, w.up]], M);
          be.siluMul(g, g, u, M * F);
          be.matmul(parts, g, w.down, M);
          return { fused: be.f32(y).slice(), parts: be.f32(parts).slice(), x: be.f32(x).slice() };
        });
        const what = `${dtype} ${H}→${F}→${H} × ${M}`;
        assert.deepEqual(out[0]!.x, X, `${what}: x unchanged`);
        assert.ok(relErr(out[0]!.fused, out[0]!.parts) <= 1e-6, `${what}: fused = parts`);
        assert.ok(relErr(out[0]!.fused, out[1]!.fused) <= TOLERANCE[dtype]!, `${what}: native vs wasm ${relErr(out[0]!.fused, out[1]!.fused)}`);
      }
    }
  } finally {
    close();
  }
});

test("embed, rmsnorm, rope, siluMul, add, addBias and clamp agree with the wasm kernels", { skip }, () => {
  const { both, close } = pair();
  const rng = new Random(4);
  try {
    const rows = 3, H = 64, heads = 4, hd = 16, V = 40;
    const table = rng.fillNormal(new Float32Array(V * H), 1), X = rng.fillNormal(new Float32Array(rows * H), 1), Y = rng.fillNormal(new Float32Array(rows * H), 1), B = rng.fillNormal(new Float32Array(H), 1);
    const ids = [5, 0, 39];
    for (const dtype of SHARED_DTYPES) {
      const out = both.map((be) => {
        const t = be.allocWeight(dtype, V, H);
        be.setWeight(t, table);
        const y = be.alloc(rows * H * 4);
        be.embed(y, t, ids);
        return be.f32(y).slice();
      });
      assert.ok(relErr(out[0]!, out[1]!) <= 1e-7, `embed ${dtype}`);
    }
    const results = both.map((be) => {
      const r: Record<string, Float32Array> = {};
      const w = be.allocWeight("f32", 1, H);
      be.setWeight(w, B);
      const x = put(be, X), y = put(be, Y), o = be.alloc(rows * H * 4);
      be.rmsnorm(o, x, w, rows, H, 1e-5);
      r.rmsnorm = be.f32(o).slice();
      const table = be.ropeTable(32, hd, 10000);
      const pos = be.alloc(rows * 4);
      be.i32(pos).set([0, 7, 31]);
      const q = put(be, X);
      be.rope(q, rows, heads, hd, pos, table);
      r.rope = be.f32(q).slice();
      be.siluMul(o, x, y, rows * H);
      r.siluMul = be.f32(o).slice();
      be.siluMul(x, x, y, rows * H); // in place, as the FFN runs it
      r.siluMulInPlace = be.f32(x).slice();
      be.add(o, o, y, rows * H);
      r.add = be.f32(o).slice();
      be.addBias(o, w, rows);
      r.addBias = be.f32(o).slice();
      be.clamp(o, rows * H, 0.5);
      r.clamp = be.f32(o).slice();
      return r;
    });
    for (const op of Object.keys(results[0]!)) {
      const e = relErr(results[0]![op]!, results[1]![op]!);
      assert.ok(e <= 2e-6, `${op}: ${e}`);
    }
    assert.ok(results[0]!.clamp!.every((v) => Math.abs(v) <= 0.5));
  } finally {
    close();
  }
});

test("attention agrees with the wasm kernel: prefill from position 0 and on a filled cache, decode steps across the 256-position padding, grouped and plain heads", { skip }, () => {
  const { both, close } = pair();
  const rng = new Random(5);
  try {
    const capacity = 300;
    for (const [heads, kvHeads, hd] of [[4, 2, 16], [4, 4, 8], [8, 1, 32]] as const) {
      const kvDim = kvHeads * hd, qDim = heads * hd;
      const Kc = rng.fillNormal(new Float32Array(capacity * kvDim), 1), Vc = rng.fillNormal(new Float32Array(capacity * kvDim), 1);
      for (const [rows, start] of [[7, 0], [5, 20], [1, 0], [1, 99], [1, 255], [1, 256], [1, 299], [3, 297]] as const) {
        const Q = rng.fillNormal(new Float32Array(rows * qDim), 1);
        const out = both.map((be) => {
          // the cache beyond start + rows holds NaNs: positions the sequence has not reached must never count
          const k = be.alloc(capacity * kvDim * 4), v = be.alloc(capacity * kvDim * 4);
          be.f32(k).fill(NaN);
          be.f32(v).fill(NaN);
          be.f32(k, 0, (start + rows) * kvDim).set(Kc.subarray(0, (start + rows) * kvDim));
          be.f32(v, 0, (start + rows) * kvDim).set(Vc.subarray(0, (start + rows) * kvDim));
          const q = put(be, Q), o = be.alloc(rows * qDim * 4);
          be.attention(o, q, k, v, rows, start, heads, kvHeads, hd);
          const res = be.f32(o).slice();
          for (const t of [k, v, q, o]) be.free(t);
          return res;
        });
        const what = `${heads}/${kvHeads} heads of ${hd}, ${rows} rows from ${start}`;
        assert.ok(out[0]!.every(Number.isFinite), `${what}: finite`);
        assert.ok(relErr(out[0]!, out[1]!) <= 1e-5, `${what}: ${relErr(out[0]!, out[1]!)}`);
      }
    }
  } finally {
    close();
  }
});

test("weight bytes cross between the backends unchanged: wasm → native → wasm and native → wasm give the same weight", { skip }, () => {
  const { native, wasm, close } = pair(1);
  const rng = new Random(6);
  try {
    const N = 48, K = 64, M = 2;
    const W = rng.fillNormal(new Float32Array(N * K), 0.2), X = rng.fillNormal(new Float32Array(M * K), 1);
    for (const dtype of SHARED_DTYPES) {
      const ww = wasm.allocWeight(dtype, N, K);
      wasm.setWeight(ww, W);
      const fromWasm = wasm.weightData(ww);
      const nw = native.allocWeight(dtype, N, K);
      assert.equal(nw.bytes, ww.bytes, `${dtype}: the same size`);
      // q4 in ggml's repacked layout (x86 with AVX2, arm with i8mm): weightData unpacks it
      if (dtype === "q4" && process.arch === "x64" && !["x64", "sse42", "sandybridge", "ivybridge"].includes(native.ggml.variant)) assert.ok(native.isRepacked(nw), "q4 repacked");
      native.setWeightData(nw, fromWasm);
      assert.deepEqual(native.weightData(nw), fromWasm, `${dtype}: wasm → native → bytes`);
      // set natively, read out, into wasm: the same bytes as wasm's own conversion of the same values
      const nw2 = native.allocWeight(dtype, N, K);
      native.setWeight(nw2, W);
      assert.deepEqual(native.weightData(nw2), fromWasm, `${dtype}: native's conversion is wasm's`);
      const ww2 = wasm.allocWeight(dtype, N, K);
      wasm.setWeightData(ww2, native.weightData(nw2));
      // and the products over the exchanged weight are the same on both
      const yn = native.alloc(M * N * 4), yw = wasm.alloc(M * N * 4);
      native.matmul(yn, put(native, X), nw, M);
      wasm.matmul(yw, put(wasm, X), ww2, M);
      assert.ok(relErr(native.f32(yn), wasm.f32(yw)) <= TOLERANCE[dtype]!, `${dtype}: products over the exchanged weight`);
      assert.throws(() => native.setWeightData(nw, fromWasm.subarray(1)), /bytes/);
      native.freeWeight(nw);
      assert.throws(() => native.weightData(nw), /does not hold/);
    }
  } finally {
    close();
  }
});

test("loadWeight reads each file type: Q8_0 / Q4_0 kept as they are, F32, BF16, F16 and Q8_0 converted, rows reordered", { skip }, () => {
  const { native, wasm, close } = pair(1);
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-native-load-"));
  const rng = new Random(7);
  try {
    const N = 8, K = 64;
    const W = rng.fillNormal(new Float32Array(N * K), 0.3);
    // the file's bytes per type, from the wasm backend's conversions (q8 / q4 as ggml's blocks)
    const held = (dtype: WeightDType) => {
      const w = wasm.allocWeight(dtype, N, K);
      wasm.setWeight(w, W);
      return wasm.weightData(w);
    };
    const blocks = (dtype: "q8" | "q4", bytesPerBlock: number) => {
      const out = new Uint8Array(((N * K) / 32) * bytesPerBlock);
      blocksFromLayout(dtype, N, K, held(dtype), out);
      return out;
    };
    const f16 = new Uint16Array(N * K).map((_, i) => f32ToF16(W[i]!));
    const files: Array<[SourceDType, Uint8Array]> = [
      ["F32", new Uint8Array(W.buffer.slice(0))], ["BF16", held("bf16")], ["F16", new Uint8Array(f16.buffer)], ["Q8_0", blocks("q8", 34)], ["Q4_0", blocks("q4", 18)],
    ];
    const rowOrder = Int32Array.from({ length: N }, (_, i) => (i * 3) % N);
    for (const [srcType, bytes] of files) {
      const file = path.join(dir, `w.${srcType}`);
      writeFileSync(file, Buffer.concat([Buffer.alloc(13), bytes]));
      const fd = openSync(file, "r");
      try {
        for (const dtype of SHARED_DTYPES) {
          const got = [native, wasm].map((be) => {
            const w = be.allocWeight(dtype, N, K);
            be.loadWeight(w, { fd, offset: 13, dtype: srcType, file, rowOrder });
            return be.weightData(w);
          });
          assert.deepEqual(got[0], got[1], `${srcType} into ${dtype}: the same bytes as the wasm backend loads`);
        }
      } finally {
        closeSync(fd);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    close();
  }
});

test("weights the file holds as they are kept are mapped from it (aligned, rows in order), copy-on-write; --no-mmap reads them", { skip }, () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-native-mmap-"));
  const wasm = new WasmBackend({ threads: 1 });
  const mapping = new NativeBackend({ threads: 1 }), reading = new NativeBackend({ threads: 1, mmap: false });
  try {
    const N = 16, K = 64;
    const W = new Random(8).fillNormal(new Float32Array(N * K), 0.3);
    const ww = wasm.allocWeight("q8", N, K);
    wasm.setWeight(ww, W);
    const blocks = new Uint8Array(((N * K) / 32) * 34);
    blocksFromLayout("q8", N, K, wasm.weightData(ww), blocks);
    const file = path.join(dir, "w.gguf");
    writeFileSync(file, Buffer.concat([Buffer.alloc(64), blocks, Buffer.alloc(13)]));
    const fd = openSync(file, "r");
    try {
      const load = (be: NativeBackend, offset: number, rowOrder?: Int32Array) => {
        const w = be.allocWeight("q8", N, K);
        be.loadWeight(w, { fd, offset, dtype: "Q8_0", file, rowOrder });
        return w;
      };
      const mapped = load(mapping, 64);
      assert.ok(mapping.isMapped(mapped));
      assert.deepEqual(mapping.weightData(mapped), wasm.weightData(ww));
      assert.ok(!reading.isMapped(load(reading, 64)), "--no-mmap reads");
      assert.ok(!mapping.isMapped(load(mapping, 64, Int32Array.from({ length: N }, (_, i) => N - 1 - i))), "rows reordered: read");
      const x = put(mapping, new Float32Array(K).fill(1)), y = mapping.alloc(N * 4);
      mapping.matmul(y, x, mapped, 1);
      const before = mapping.f32(y).slice();
      // a weight mapped twice, one copy then written: the write reaches neither the other nor the file
      const again = load(mapping, 64);
      mapping.setWeight(mapped, new Float32Array(N * K).fill(0.25));
      assert.ok(!mapping.isMapped(mapped), "a written weight has memory of its own");
      mapping.matmul(y, x, mapped, 1);
      assert.ok(Math.abs(mapping.f32(y)[0]! - 16) < 0.1);
      mapping.matmul(y, x, again, 1);
      // (copies: a view over backend memory must not outlive the backend in a failed assertion's report)
      assert.deepEqual(mapping.f32(y).slice(), before);
      const third = load(mapping, 64);
      mapping.matmul(y, x, third, 1);
      assert.deepEqual(mapping.f32(y).slice(), before);
      mapping.freeWeight(mapped);
      assert.throws(() => load(mapping, 64 + blocks.length - 32), /beyond the file's/);
    } finally {
      closeSync(fd);
    }
  } finally {
    mapping.close();
    reading.close();
    wasm.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a file replaced at its path (written whole and renamed, as the device's weight cache does) is mapped anew, and a mapping goes when its last weight does", { skip }, () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-native-remap-"));
  const be = new NativeBackend({ threads: 1 });
  try {
    const N = 8, K = 32, file = path.join(dir, "w.safetensors");
    const write = (v: number) => {
      writeFileSync(`${file}.tmp`, Buffer.concat([Buffer.alloc(64), Buffer.from(new Float32Array(N * K).fill(v).buffer)]));
      renameSync(`${file}.tmp`, file);
    };
    const load = (w = be.allocWeight("f32", N, K)) => {
      const fd = openSync(file, "r");
      try {
        be.loadWeight(w, { fd, offset: 64, dtype: "F32", file });
        assert.ok(be.isMapped(w));
        return w;
      } finally {
        closeSync(fd);
      }
    };
    write(1);
    const old = load();
    write(2);
    const fresh = load();
    assert.equal(new Float32Array(be.weightData(fresh).buffer)[0], 2, "the new file's bytes, not the old mapping's");
    assert.equal(new Float32Array(be.weightData(old).buffer)[0], 1, "a weight of the old file keeps its bytes");
    assert.equal(be.mappedFiles(), 2);
    be.freeWeight(old);
    assert.equal(be.mappedFiles(), 1, "the old file's mapping went with its last weight");
    be.freeWeight(fresh);
    assert.equal(be.mappedFiles(), 0);
    // a weight computed with, then loaded again (from a newer file): products use the new bytes, not a cached graph over the freed tensor
    const w = load(), x = be.alloc(K * 4), y = be.alloc(N * 4);
    be.f32(x).fill(1);
    be.matmul(y, x, w, 1);
    assert.equal(be.f32(y)[0], 2 * K);
    write(3);
    load(w);
    be.matmul(y, x, w, 1);
    assert.equal(be.f32(y)[0], 3 * K);
    assert.equal(be.mappedFiles(), 1);
  } finally {
    be.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("index tensors too small for the rows (setRows, rope) are refused by the call itself, not by whatever flushes next", { skip }, () => {
  const be = new NativeBackend({ threads: 1 });
  try {
    const width = 4, dst = be.alloc(8 * width * 4), src = be.alloc(2 * width * 4), at = be.alloc(4);
    be.i32(at)[0] = 1;
    const x = put(be, new Float32Array([1, 2, 3, 4])), table = be.ropeTable(8, 2, 10000);
    // recorded before the bad calls: must still run, and be the only thing that runs
    be.add(x, x, x, 4);
    assert.throws(() => be.setRows(dst, src, 2, width, at), /setRows indices: buffer of 4 bytes, 8 needed/);
    assert.throws(() => be.rope(src, 2, 1, 2, at, table), /rope positions: buffer of 4 bytes, 8 needed/);
    assert.deepEqual([...be.f32(x)], [2, 4, 6, 8]);
  } finally {
    be.close();
  }
});

test("inputs ggml would abort on are refused with an Error and the process goes on", { skip }, () => {
  assert.throws(() => new NativeBackend({ threads: 513 }), /513 threads: ggml runs at most 512/);
  const be = new NativeBackend({ threads: 1 });
  try {
    const w = be.allocWeight("q8", 32, 64);
    const x = be.alloc(64 * 4), y = be.alloc(32 * 4);
    assert.throws(() => be.allocWeight("q8", 4, 48), /multiple of 32/);
    assert.throws(() => be.allocWeight("f32", 0, 8), /weight/);
    assert.throws(() => be.matmul(y, x, w, 2), /matmul input: buffer of 256 bytes, 512 needed/);
    assert.throws(() => be.matmul({ ...y, bytes: 8 }, x, w, 1), /matmul output/);
    assert.throws(() => be.matmul(y, x, w, 1.5), /not a count/);
    assert.throws(() => be.matmul(y, { arena: 999, ptr: 0, bytes: 256 }, w, 1), /does not hold/);
    assert.throws(() => be.matmul(y, { ...x, ptr: 2 ** 40 }, w, 1), /outside its buffer/);
    const w2 = be.allocWeight("f32", 32, 32);
    assert.throws(() => be.matmulMany(x, [[y, w], [y, w2]], 1), /widths 64 and 32/);
    be.freeWeight(w2);
    assert.throws(() => be.matmul(y, x, w2, 1), /freed/);
    assert.throws(() => be.embed(be.alloc(2 * 64 * 4), w, [0, 32]), /outside the vocabulary/);
    assert.throws(() => be.rmsnorm(x, x, w, 1, 64, 1e-5), /f32 vector of 64/);
    const norm = be.allocWeight("f32", 1, 64);
    for (const eps of [NaN, -1]) assert.throws(() => be.rmsnorm(x, x, norm, 1, 64, eps), /epsilon/);
    const q = be.alloc(4 * 16 * 4), k = be.alloc(2 * 16 * 4);
    assert.throws(() => be.attention(q, q, k, k, 1, 0, 4, 3, 16), /cannot share/);
    assert.throws(() => be.attention(q, q, k, k, 1, 5, 4, 2, 16), /key cache/);
    const table = be.ropeTable(8, 16, 10000), pos = be.alloc(4);
    be.i32(pos)[0] = 8;
    assert.throws(() => be.rope(q, 1, 4, 16, pos, table), /beyond the rotary table/);
    assert.throws(() => be.rope(q, 1, 2, 32, pos, table), /head size 16 used with 32/);
    assert.throws(() => be.add(x, x, x, 65), /add/);
    assert.throws(() => be.ffn(y, x, { gate: w, up: w, down: w }, 1), /do not make one feed-forward block/);
    assert.throws(() => be.free({ arena: w.arena, ptr: 0, bytes: 4 }), /not activation memory/);
    // still computing after all that
    be.f32(x).fill(1);
    be.setWeight(w, new Float32Array(32 * 64).fill(0.5));
    be.matmul(y, x, w, 1);
    assert.ok(Math.abs(be.f32(y)[0]! - 32) < 0.1);
  } finally {
    be.close();
  }
});

test("a process that ends with a backend open, its pool workers still polling, exits cleanly", { skip }, () => {
  const module = new URL("./native-backend.js", import.meta.url).href;
  const script = `import { NativeBackend } from ${JSON.stringify(module)};
const be = new NativeBackend({ threads: 2, poll: 10 });
const w = be.allocWeight("f32", 1024, 1024), x = be.alloc(4 * 1024 * 8), y = be.alloc(4 * 1024 * 8);
be.f32(x).fill(1);
for (let i = 0; i < 5; i++) { be.matmul(y, x, w, 8); be.f32(y); }`;
  for (let i = 0; i < 3; i++) {
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
    assert.equal(r.status, 0, `exit ${r.status} ${r.signal ?? ""}: ${r.stderr}`);
  }
});

test("rotary tables: the native one holds only its parameters; the wasm kernels refuse a table without their angles, both one of another head size", { skip }, () => {
  const { native, wasm, close } = pair();
  try {
    const t = native.ropeTable(16, 8, 10000);
    assert.deepEqual(t, { positions: 16, headDim: 8, theta: 10000 });
    const x = put(wasm, new Float32Array(16)), pos = wasm.alloc(4);
    wasm.i32(pos).set([0]);
    assert.throws(() => wasm.rope(x, 1, 2, 8, pos, t), /a rotary table from another backend/);
    assert.throws(() => wasm.rope(x, 1, 4, 4, pos, wasm.ropeTable(16, 8, 10000)), /a table for head size 8 used with 4/);
    const nx = put(native, new Float32Array(16)), npos = native.alloc(4);
    native.i32(npos).set([0]);
    assert.throws(() => native.rope(nx, 1, 4, 4, npos, t), /a table for head size 8 used with 4/);
    assert.throws(() => native.ropeTable(16, 8, NaN), /base NaN/);
  } finally {
    close();
  }
});

test("moeTopK: a layer's experts mapped as one stack run as one job and agree with the seam's steps on the wasm kernels; anything else is declined or refused", { skip }, () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-native-moe-"));
  const { native, wasm, close } = pair();
  const rng = new Random(5);
  const E = 4, H = 64, F = 96, K = 2;
  const router = Float32Array.from({ length: E * H }, () => rng.normal() * 0.3);
  const stacks = { gate: [F, H], up: [F, H], down: [H, F] } as const;
  const values = Object.fromEntries(Object.entries(stacks).map(([n, [r, c]]) => [n, Float32Array.from({ length: E * r * c }, () => rng.normal() * 0.1)])) as Record<keyof typeof stacks, Float32Array>;
  // the file: the router, then each stack [E][rows][cols] as a GGUF file's merged expert tensor
  const parts = [router, values.gate, values.up, values.down];
  const offsets: number[] = [];
  let at = 64;
  for (const p of parts) (offsets.push(at), (at += p.byteLength));
  const file = path.join(dir, "experts.bin");
  writeFileSync(file, Buffer.concat([Buffer.alloc(64), ...parts.map((p) => Buffer.from(p.buffer))]));
  const fd = openSync(file, "r");
  try {
    const load = (be: Backend, rows: number, cols: number, offset: number) => {
      const w = be.allocWeight("f32", rows, cols);
      be.loadWeight(w, { fd, offset, dtype: "F32", file });
      return w;
    };
    const layer = (be: Backend) => ({
      router: load(be, E, H, offsets[0]!),
      experts: Array.from({ length: E }, (_, e) => ({
        gate: load(be, F, H, offsets[1]! + e * F * H * 4),
        up: load(be, F, H, offsets[2]! + e * F * H * 4),
        down: load(be, H, F, offsets[3]! + e * H * F * 4),
      })),
    });
    const n = layer(native), w = layer(wasm);
    assert.ok(n.experts.every((x) => native.isMapped(x.gate) && native.isMapped(x.down)), "the experts are mapped");
    for (const rows of [1, 3, 4]) {
      for (const normalize of [true, false]) {
        const x = Float32Array.from({ length: rows * H }, () => rng.normal());
        const h = put(native, x), out = native.alloc(rows * H * 4), chosen = native.alloc(rows * K * 4);
        assert.equal(native.moeTopK(out, h, n.router, n.experts, rows, K, normalize, chosen), true, `${rows} rows: one job`);
        const got = native.f32(out, 0, rows * H).slice(), ids = native.i32(chosen, 0, rows * K).slice();
        // the seam's steps on the wasm kernels: router, softmax, top-k, each expert's FFN, weighted sum
        const hw = put(wasm, x), lg = wasm.alloc(rows * E * 4), y = wasm.alloc(H * 4);
        wasm.matmul(lg, hw, w.router, rows);
        const logits = wasm.f32(lg, 0, rows * E).slice(), want = new Float32Array(rows * H);
        for (let r = 0; r < rows; r++) {
          const l = logits.subarray(r * E, (r + 1) * E), max = Math.max(...l);
          const p = Array.from(l, (v) => Math.exp(v - max)), sum = p.reduce((s, v) => s + v, 0);
          const top = [...p.keys()].sort((a, b) => p[b]! - p[a]!).slice(0, K);
          assert.deepEqual([...ids.subarray(r * K, (r + 1) * K)].sort(), [...top].sort(), `${rows} rows, row ${r}: the experts chosen`);
          const norm = normalize ? top.reduce((s, e) => s + p[e]!, 0) : sum;
          for (const e of top) {
            wasm.ffn(y, { ...hw, ptr: hw.ptr + r * H * 4, bytes: H * 4 }, w.experts[e]!, 1);
            const ye = wasm.f32(y, 0, H);
            for (let j = 0; j < H; j++) want[r * H + j]! += (p[e]! / norm) * ye[j]!;
          }
        }
        assert.ok(relErr(got, want) < 1e-5, `${rows} rows, normalize ${normalize}: rel. error ${relErr(got, want)}`);
        for (const t of [h, out, chosen]) native.free(t);
        for (const t of [hw, lg, y]) wasm.free(t);
      }
    }
    const h = put(native, new Float32Array(8 * H).fill(1)), out = put(native, new Float32Array(8 * H).fill(7)), chosen = native.alloc(8 * K * 4);
    const untouched = () => native.f32(out, 0, 8 * H).every((v) => v === 7);
    // declined, nothing done: more rows than one job is faster for; experts out of file order; weights not mapped
    assert.equal(native.moeTopK(out, h, n.router, n.experts, 8, K, true, chosen), false);
    assert.equal(native.moeTopK(out, h, n.router, [...n.experts].reverse(), 1, K, true, chosen), false);
    const own = n.experts.map((x) => ({ gate: native.allocWeight("f32", F, H), up: native.allocWeight("f32", F, H), down: native.allocWeight("f32", H, F) }));
    assert.equal(native.moeTopK(out, h, n.router, own, 1, K, true, chosen), false);
    assert.ok(untouched(), "a declined call writes nothing");
    // refused: shapes that make no layer
    assert.throws(() => native.moeTopK(out, h, n.router, n.experts, 1, E + 1, true, chosen), /top 5 of 4 experts/);
    assert.throws(() => native.moeTopK(out, h, n.router, n.experts.slice(1), 1, K, true, chosen), /router for 4 experts with 3/);
    assert.throws(() => native.moeTopK(out, h, n.router, [...n.experts.slice(1), { ...n.experts[0]!, down: n.experts[0]!.gate }], 1, K, true, chosen), /router for|different shapes/);
    assert.throws(() => native.moeTopK(out, h, n.router, n.experts, 1, K, true, { ...chosen, bytes: 4 }), /chosen experts/);
    assert.ok(untouched(), "a refused call writes nothing");
  } finally {
    closeSync(fd);
    close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("moeExperts: a routing chosen outside, experts and combine in one job, equal to each row's experts computed alone; the routing read when the op runs; bad plans refused", { skip }, () => {
  const be = new NativeBackend({ threads: 2 });
  const rng = new Random(21);
  const E = 5, H = 64, F = 96, rows = 7;
  const ggml = (be as unknown as { ggml: { header: unknown } }).ggml;
  try {
    // the last time as where ggml's tensor layout does not check out: built graphs are not reshaped, a graph per routing
    for (const [dtype, reshaped] of [["f32", true], ["q8", true], ["f32", false]] as const) {
      if (!reshaped) (be as unknown as { ggml: unknown }).ggml = { ...ggml, header: null };
      const experts = Array.from({ length: E }, () => ({ gate: be.allocWeight(dtype, F, H), up: be.allocWeight(dtype, F, H), down: be.allocWeight(dtype, H, F) }));
      for (const x of experts) for (const w of [x.gate, x.up, x.down]) be.setWeight(w, Float32Array.from({ length: w.rows * w.cols }, () => rng.normal() * 0.1));
      const layer = [...experts.slice(0, 3), null, experts[4]!];
      // per row, its (expert, weight) choices: row 0 none, row 1 three, the rest one or two (expert 3 is not held)
      const choose = (): Array<Array<[number, number]>> => Array.from({ length: rows }, (_, r) => {
        const held = [0, 1, 2, 4].sort(() => rng.next() - 0.5);
        return held.slice(0, r === 0 ? 0 : r === 1 ? 3 : 1 + (r % 2)).map((e) => [e, rng.next()] as [number, number]);
      });
      const planOf = (choices: Array<Array<[number, number]>>) => [0, 1, 2, 4].map((e) => {
        const mine = choices.flatMap((c, r) => c.filter(([x]) => x === e).map(([, w]) => [r, w] as const));
        return { expert: e, rows: Int32Array.from(mine, ([r]) => r), weights: Float32Array.from(mine, ([, w]) => w) };
      });
      const y = be.alloc(H * 4);
      const want = (x: Float32Array, choices: Array<Array<[number, number]>>) => {
        const out = new Float32Array(rows * H), xt = put(be, x);
        choices.forEach((c, r) => {
          for (const [e, w] of c) {
            be.ffn(y, { ...xt, ptr: xt.ptr + r * H * 4, bytes: H * 4 }, experts[e]!, 1);
            const ye = be.f32(y, 0, H);
            for (let j = 0; j < H; j++) out[r * H + j]! += w * ye[j]!;
          }
        });
        be.free(xt);
        return out;
      };
      const tol = dtype === "f32" ? 1e-5 : 1e-3;
      // two layers back to back, no read between, the second reading the first's output: the second's routing
      // overwrites the first's only once the first has run; the second with the first's counts and other rows
      const first = choose(), counts = planOf(first).map((b) => b.rows.length);
      let second = choose();
      while (planOf(second).some((b, i) => b.rows.length !== counts[i])) second = choose();
      const x = Float32Array.from({ length: rows * H }, () => rng.normal());
      const h = put(be, x), mid = be.alloc(rows * H * 4), out = put(be, new Float32Array((rows + 1) * H).fill(7));
      be.moeExperts(mid, h, layer, planOf(first), rows);
      be.moeExperts(out, mid, layer, planOf(second), rows);
      const got = be.f32(out, 0, (rows + 1) * H).slice(), gotMid = be.f32(mid, 0, rows * H).slice();
      const wantMid = want(x, first);
      assert.ok(relErr(gotMid, wantMid) < tol, `${dtype}: first layer, rel. error ${relErr(gotMid, wantMid)}`);
      assert.ok(gotMid.subarray(0, H).every((v) => v === 0), `${dtype}: a row routed nowhere is zeros`);
      const wantOut = want(gotMid, second);
      assert.ok(relErr(got.subarray(0, rows * H), wantOut) < tol, `${dtype}: second layer, rel. error ${relErr(got.subarray(0, rows * H), wantOut)}`);
      assert.ok(got.subarray(rows * H).every((v) => v === 7), `${dtype}: nothing written past the rows`);
      // routings of as many rows and slots share one graph, each run on its own rows: an expert without rows
      // skipped (2 in the first), and with rows again after
      const pairs = (avoid: number) => Array.from({ length: rows }, () => {
        const pick = [0, 1, 2, 4].filter((e) => e !== avoid).sort(() => rng.next() - 0.5);
        return pick.slice(0, 2).map((e) => [e, rng.next()] as [number, number]);
      });
      const built = watchBuilds(be);
      for (const [i, choices] of [pairs(2), pairs(-1), pairs(0), pairs(2)].entries()) {
        be.moeExperts(mid, h, layer, planOf(choices), rows);
        const got = be.f32(mid, 0, rows * H).slice(), want2 = want(x, choices);
        assert.ok(relErr(got, want2) < tol, `${dtype}: routing ${i} of one graph, rel. error ${relErr(got, want2)}`);
      }
      assert.equal(built.keys.filter((k) => k.startsWith("moex")).length, reshaped ? 1 : 4, `${dtype}: graphs for four routings`);
      // refused before anything is recorded: an expert not held or out of range, twice, rows out of order or range, weights short
      const plan = planOf(first), bad = (change: (p: typeof plan) => void, message: RegExp) => {
        const p = planOf(first);
        change(p);
        assert.throws(() => be.moeExperts!(out, h, layer, p, rows), message);
      };
      bad((p) => p.push({ expert: 3, rows: Int32Array.of(0), weights: Float32Array.of(1) }), /expert 3 is not among the layer's/);
      bad((p) => p.push({ expert: 9, rows: Int32Array.of(0), weights: Float32Array.of(1) }), /expert 9 is not among/);
      bad((p) => p.push({ ...p[0]!, rows: Int32Array.of(0), weights: Float32Array.of(1) }), /twice in one plan/);
      bad((p) => (p[1] = { ...p[1]!, rows: Int32Array.of(2, 1), weights: Float32Array.of(1, 1) }), /not ascending rows of 7/);
      bad((p) => (p[1] = { ...p[1]!, rows: Int32Array.of(rows), weights: Float32Array.of(1) }), /not ascending rows of 7/);
      bad((p) => (p[1] = { ...p[1]!, rows: Int32Array.of(-1), weights: Float32Array.of(1) }), /not ascending rows of 7/);
      bad((p) => (p[1] = { ...p[1]!, weights: new Float32Array(0) }), /rows and 0 weights/);
      bad((p) => (p[1] = { ...p[1]!, rows: Float32Array.of(0.5) as unknown as Int32Array<ArrayBuffer>, weights: Float32Array.of(1) }), /not an Int32Array/);
      bad((p) => (p[1] = { ...p[1]!, expert: "1" as unknown as number }), /expert 1 is not among/);
      // the graph holds every expert of the layer: one that does not make a block of the layer's width, or was
      // freed, is refused though no row goes to it (ggml would abort on its product)
      const narrow = { gate: be.allocWeight(dtype, F, 32), up: be.allocWeight(dtype, F, 32), down: be.allocWeight(dtype, 32, F) };
      assert.throws(() => be.moeExperts!(out, h, [...layer.slice(0, 3), narrow, layer[4]!], planOf(first), rows), /expert 3's weights do not make a feed-forward block of width 64/);
      const gone = { gate: be.allocWeight(dtype, F, H), up: be.allocWeight(dtype, F, H), down: be.allocWeight(dtype, H, F) };
      be.freeWeight(gone.up);
      assert.throws(() => be.moeExperts!(out, h, [...layer.slice(0, 3), gone, layer[4]!], planOf(first), rows), /does not hold \(freed\?\)/);
      for (const w of [narrow.gate, narrow.up, narrow.down, gone.gate, gone.down]) be.freeWeight(w);
      // buffers too small for the rows: refused before any work of the rows' size
      assert.throws(() => be.moeExperts!(out, h, layer, [], 1e9), /moe input/);
      // the plan is read once: a batch whose fields would change on a second read runs as first read
      let reads = 0;
      const once = planOf(first).map((b) => (b.expert !== 0 ? b : { get expert() { return reads++ === 0 ? 0 : 3; }, rows: b.rows, weights: b.weights }));
      be.moeExperts(out, h, layer, once, rows);
      assert.ok(relErr(be.f32(out, 0, rows * H), wantMid) < tol && reads === 1, `${dtype}: a plan read once (${reads} reads)`);
      be.f32(out, 0, rows * H).set(got.subarray(0, rows * H));
      assert.ok(plan.length > 0 && be.f32(out, 0, rows * H).every((v, i) => v === got[i]), `${dtype}: a refused plan writes nothing`);
      // JavaScript writes the routing: a tape recorded around the op would not run again alone, even without rows
      be.beginTape!();
      be.moeExperts(out, h, layer, [], rows);
      assert.equal(be.endTape!(), null, `${dtype}: no tape around moeExperts`);
      for (const t of [h, mid, out, y]) be.free(t);
      for (const x of experts) for (const w of [x.gate, x.up, x.down]) be.freeWeight(w);
    }
  } finally {
    be.close();
  }
});

test("allocWeights: weights allocated as a group hold their values (repacked ones too), run as one moeTopK stack equal to the seam's steps, and are freed one by one", { skip }, () => {
  const be = new NativeBackend({ threads: 2 });
  const rng = new Random(9);
  const E = 4, H = 256, F = 256, K = 2, rows = 2;
  try {
    for (const dtype of ["f32", "q8", "q4", "q4_k"] as const) {
      const before = be.memoryUsage().weights;
      const router = be.allocWeight("f32", E, H);
      be.setWeight(router, Float32Array.from({ length: E * H }, () => rng.normal() * 0.3));
      const [gates, ups, downs] = [[F, H], [F, H], [H, F]].map(([r, c]) => be.allocWeights(dtype, E, r!, c!));
      const experts = gates!.map((gate, e) => ({ gate, up: ups![e]!, down: downs![e]! }));
      for (const w of [...gates!, ...ups!, ...downs!]) {
        const values = Float32Array.from({ length: w.rows * w.cols }, () => rng.normal() * 0.1);
        be.setWeight(w, values);
        // what is held is what went in, as the dtype keeps it: a second weight set from the first's bytes is equal
        const copy = be.allocWeight(dtype, w.rows, w.cols);
        be.setWeightData(copy, be.weightData(w));
        assert.deepEqual(be.weightData(copy), be.weightData(w), `${dtype}: a grouped weight's bytes`);
        be.freeWeight(copy);
      }
      if (dtype === "q4" || dtype === "q4_k") assert.ok(be.isRepacked(gates![0]!), `${dtype}: repacked in its group`);
      const x = put(be, Float32Array.from({ length: rows * H }, () => rng.normal()));
      const out = be.alloc(rows * H * 4), chosen = be.alloc(rows * K * 4), lg = be.alloc(rows * E * 4), y = be.alloc(H * 4);
      assert.equal(be.moeTopK(out, x, router, experts, rows, K, true, chosen), true, `${dtype}: a group is a stack`);
      const got = be.f32(out, 0, rows * H).slice(), ids = be.i32(chosen, 0, rows * K).slice();
      be.matmul(lg, x, router, rows);
      const logits = be.f32(lg, 0, rows * E).slice(), want = new Float32Array(rows * H);
      for (let r = 0; r < rows; r++) {
        const p = Array.from(logits.subarray(r * E, (r + 1) * E), Math.exp);
        const top = [...ids.subarray(r * K, (r + 1) * K)], norm = top.reduce((s, e) => s + p[e]!, 0);
        for (const e of top) {
          be.ffn(y, { ...x, ptr: x.ptr + r * H * 4, bytes: H * 4 }, experts[e]!, 1);
          const ye = be.f32(y, 0, H);
          for (let j = 0; j < H; j++) want[r * H + j]! += (p[e]! / norm) * ye[j]!;
        }
      }
      assert.ok(relErr(got, want) < 1e-4, `${dtype}: one job against the seam's products, rel. error ${relErr(got, want)}`);
      // a member freed: an Error to use it, the others keep their values; all freed, the memory is back
      const kept = be.weightData(gates![2]!).slice();
      be.freeWeight(gates![1]!);
      assert.throws(() => be.moeTopK(out, x, router, experts, rows, K, true, chosen), /does not hold/);
      assert.deepEqual(be.weightData(gates![2]!), kept, `${dtype}: a member's bytes after another's free`);
      for (const w of [...gates!.filter((_, e) => e !== 1), ...ups!, ...downs!, router]) be.freeWeight(w);
      assert.equal(be.memoryUsage().weights, before, `${dtype}: weight memory given back`);
      for (const t of [x, out, chosen, lg, y]) be.free(t);
    }
  } finally {
    be.close();
  }
});

test("allocWeights: memoryUsage counts a group's buffer until its last member goes, and a member mapped out of it beside it", { skip }, () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-native-group-"));
  const be = new NativeBackend({ threads: 1 });
  const R = 64, C = 64, size = R * C * 4;
  const file = path.join(dir, "w.bin");
  writeFileSync(file, Buffer.concat([Buffer.alloc(64), Buffer.from(new Float32Array(R * C).fill(0.5).buffer)]));
  const fd = openSync(file, "r");
  try {
    const before = be.memoryUsage().weights;
    const ws = be.allocWeights("f32", 4, R, C);
    assert.equal(be.memoryUsage().weights, before + 4 * size);
    // mapped from the file: its own bytes, and the group's buffer still held for the other three
    be.loadWeight(ws[0]!, { fd, offset: 64, dtype: "F32", file });
    assert.ok(be.isMapped(ws[0]!));
    assert.equal(be.memoryUsage().weights, before + 5 * size);
    // two of the three freed: their bytes stay in the buffer the third holds
    be.freeWeight(ws[1]!);
    be.freeWeight(ws[2]!);
    assert.equal(be.memoryUsage().weights, before + 5 * size);
    be.freeWeight(ws[3]!);
    assert.equal(be.memoryUsage().weights, before + size);
    be.freeWeight(ws[0]!);
    assert.equal(be.memoryUsage().weights, before);
  } finally {
    closeSync(fd);
    be.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
