// The in-process executor: a layer's calls computed together give what each gives alone, on both backends,
// and a call it cannot serve fails alone.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Backend } from "../kernels/backend.js";
import { openBackend } from "../kernels/select-backend.js";
import type { FfnWeights } from "../model/weights.js";
import { testBackends } from "../testing/backends.js";
import { Random } from "../util/random.js";
import { LocalExpertExecutor } from "./local-executor.js";

const H = 64, F = 96;

function expert(be: Backend, rng: Random): FfnWeights {
  const make = (rows: number, cols: number) => {
    const w = be.allocWeight("f32", rows, cols);
    be.setWeight(w, rng.fillNormal(new Float32Array(rows * cols), 0.2));
    return w;
  };
  return { gate: make(F, H), up: make(F, H), down: make(H, F) };
}

for (const { backend, skip } of testBackends()) {
  test(`${backend}: a layer's calls together give what each gives alone; a call for an expert not held fails alone`, { skip }, async () => {
    const be = openBackend({ backend, threads: 2 }).backend;
    const rng = new Random(5);
    const executor = new LocalExpertExecutor(be, [[expert(be, rng), expert(be, rng), null]], H);
    try {
      const calls = [
        { layer: 0, expert: 1, rows: 3, input: rng.fillNormal(new Float32Array(3 * H), 1) },
        { layer: 0, expert: 2, rows: 1, input: rng.fillNormal(new Float32Array(H), 1) },
        { layer: 0, expert: 0, rows: 2, input: rng.fillNormal(new Float32Array(2 * H), 1) },
        { layer: 0, expert: 0, rows: 1, input: new Float32Array(H + 1) },
      ];
      const settled = await Promise.allSettled(executor.dispatch(calls));
      assert.deepEqual(settled.map((s) => s.status), ["fulfilled", "rejected", "fulfilled", "rejected"]);
      assert.match(String((settled[1] as PromiseRejectedResult).reason), /expert 2 of layer 0 is not held/);
      assert.match(String((settled[3] as PromiseRejectedResult).reason), /65 values for 1 rows of 64/);
      for (const i of [0, 2]) {
        const alone = executor.compute(calls[i]!).output;
        assert.deepEqual((settled[i] as PromiseFulfilledResult<{ output: Float32Array }>).value.output, alone, `call ${i}`);
        assert.ok(alone.some((v) => v !== 0));
      }
    } finally {
      executor.close();
      be.close();
    }
  });
}

test("when the layer's job fails, a call refused on its own keeps its own reason and the others get the job's", async () => {
  const be = openBackend({ backend: "wasm", threads: 1 }).backend;
  const executor = new LocalExpertExecutor(be, [[expert(be, new Random(2))]], H);
  const alloc = be.alloc.bind(be);
  be.alloc = () => {
    throw new Error("out of memory: test");
  };
  try {
    const settled = await Promise.allSettled(executor.dispatch([
      { layer: 0, expert: 0, rows: 1, input: new Float32Array(H) },
      { layer: 0, expert: 5, rows: 1, input: new Float32Array(H) },
    ]));
    assert.match(String((settled[0] as PromiseRejectedResult).reason), /out of memory: test/);
    assert.match(String((settled[1] as PromiseRejectedResult).reason), /expert 5 of layer 0 is not held/);
  } finally {
    be.alloc = alloc;
    executor.close();
    be.close();
  }
});
