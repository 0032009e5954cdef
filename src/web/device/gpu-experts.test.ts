// A page's experts on WebGPU, with the GPU replaced by a stand-in (the real one is tested in a browser,
// kernels/webgpu/webgpu-ffn.test.ts): experts of the dtypes it takes go to it and their calls are its
// batch, the others stay on the wasm kernels; a failed batch and a lost device compute on the kernels;
// released experts leave the GPU; a batch that fails after its experts were released is refused, not
// computed on the kernels from freed weights.
import { test } from "node:test";
import assert from "node:assert/strict";
import { WasmBackend } from "../../kernels/wasm/wasm-backend.js";
import type { WeightDType } from "../../kernels/backend.js";
import type { GpuFfnCall, GpuFfnWeights, GpuWeightData, GpuWeightShape, WebGpuFfn } from "../../kernels/webgpu/webgpu-ffn.js";
import type { FfnWeights } from "../../model/weights.js";
import type { ExpertCall } from "../../moe/executor.js";
import { LocalExpertExecutor } from "../../moe/local-executor.js";
import { Random } from "../../util/random.js";
import { GpuExperts } from "./gpu-experts.js";

const H = 32, F = 64;

/** A GPU that takes f32 weights only and answers each call with its rows filled with `mark` (or fails, or is lost). */
class StandInGpu {
  lost: string | null = null;
  readonly adapter = "stand-in";
  fail = false;
  held: GpuFfnWeights[] = [];
  batches: GpuFfnCall[][] = [];
  refuses(gate: GpuWeightShape): string | null {
    return gate.dtype === "f32" ? null : `no ${gate.dtype} here`;
  }
  hold(gate: GpuWeightData): GpuFfnWeights {
    assert.equal(gate.data.byteLength, gate.bytes, "the weights' bytes as held");
    const w = { hidden: gate.cols, ff: gate.rows } as GpuFfnWeights;
    this.held.push(w);
    return w;
  }
  free(w: GpuFfnWeights): void {
    this.held = this.held.filter((h) => h !== w);
  }
  /** set: the next batch waits for it (a readback in flight) */
  pending: Promise<void> | null = null;
  async run(calls: readonly GpuFfnCall[]): Promise<Float32Array[]> {
    this.batches.push([...calls]);
    await this.pending;
    if (this.fail) throw new Error("readback failed");
    return calls.map((c) => new Float32Array(c.rows * c.w.hidden).fill(7));
  }
  close(): void {}
}

function expert(be: WasmBackend, rng: Random, dtype: WeightDType): FfnWeights {
  const make = (rows: number, cols: number) => {
    const w = be.allocWeight(dtype, rows, cols);
    be.setWeight(w, rng.fillNormal(new Float32Array(rows * cols), 0.2));
    return w;
  };
  return { gate: make(F, H), up: make(F, H), down: make(H, F) };
}

test("experts the GPU takes compute there as one batch, the others on the kernels; a failed batch or a lost GPU computes on the kernels; released experts leave the GPU", async () => {
  const be = new WasmBackend({ threads: 1 });
  const rng = new Random(3);
  const gpu = new StandInGpu();
  const lines: string[] = [];
  const experts = new GpuExperts(gpu as unknown as WebGpuFfn, be, 1, (l) => lines.push(l));
  try {
    const table = [[expert(be, rng, "f32"), expert(be, rng, "q8"), expert(be, rng, "f32")]];
    const kernels = new LocalExpertExecutor(be, table, H);
    const executor = experts.serve(table, kernels);
    assert.equal(gpu.held.length, 2, "the two f32 experts are on the GPU");
    assert.ok(lines.some((l) => /experts stay on the wasm kernels: no q8 here/.test(l)), lines.join("\n"));
    const calls: ExpertCall[] = [
      { layer: 0, expert: 0, rows: 2, input: rng.fillNormal(new Float32Array(2 * H), 1) },
      { layer: 0, expert: 1, rows: 1, input: rng.fillNormal(new Float32Array(H), 1) },
      { layer: 0, expert: 2, rows: 3, input: rng.fillNormal(new Float32Array(3 * H), 1) },
    ];
    const onKernels = await Promise.all(new LocalExpertExecutor(be, table, H).dispatch(calls));
    const rs = await Promise.all(executor.dispatch(calls));
    assert.equal(gpu.batches.length, 1, "one batch for the layer's GPU calls");
    assert.deepEqual(gpu.batches[0]!.map((c) => c.rows), [2, 3]);
    assert.deepEqual(rs.map((r) => r.output.every((v) => v === 7)), [true, false, true], "GPU calls answered from its batch, in order");
    assert.deepEqual(rs[1]!.output, onKernels[1]!.output, "the q8 expert on the kernels");

    gpu.fail = true;
    const fallback = await Promise.all(executor.dispatch(calls));
    assert.deepEqual(fallback.map((r) => r.output), onKernels.map((r) => r.output), "a failed batch is computed on the kernels");
    assert.ok(lines.some((l) => /computing on the wasm kernels after WebGPU failed: readback failed/.test(l)));

    gpu.fail = false;
    gpu.lost = "gone";
    const batches = gpu.batches.length;
    const afterLoss = await Promise.all(executor.dispatch(calls));
    assert.equal(gpu.batches.length, batches, "a lost GPU is not asked");
    assert.deepEqual(afterLoss.map((r) => r.output), onKernels.map((r) => r.output));

    gpu.lost = null;
    await assert.rejects(Promise.all(executor.dispatch([{ layer: 0, expert: 0, rows: 2, input: new Float32Array(H) }])), /2 rows of 32/, "a call of the wrong size is refused as the kernels refuse it");
    experts.serve([[table[0]![0]!, null, null]], new LocalExpertExecutor(be, [[table[0]![0]!, null, null]], H));
    assert.equal(gpu.held.length, 1, "released experts leave the GPU");
  } finally {
    be.close();
  }
});

test("a batch that fails after its experts were released is refused, not computed on the kernels from the freed weights", async () => {
  const be = new WasmBackend({ threads: 1 });
  const rng = new Random(4);
  const gpu = new StandInGpu();
  const experts = new GpuExperts(gpu as unknown as WebGpuFfn, be, 1, () => {});
  try {
    const held = expert(be, rng, "f32");
    const table = [[held]];
    const executor = experts.serve(table, new LocalExpertExecutor(be, table, H));
    let readback!: () => void;
    gpu.pending = new Promise((r) => (readback = r));
    gpu.fail = true;
    const call: ExpertCall = { layer: 0, expert: 0, rows: 1, input: rng.fillNormal(new Float32Array(H), 1) };
    const [inFlight] = executor.dispatch([call]);
    // released while its batch is on the GPU, as the device host releases: weights freed, then the executor of what is left
    for (const w of [held.gate, held.up, held.down]) be.freeWeight(w);
    experts.serve([[null]], new LocalExpertExecutor(be, [[null]], H));
    executor.close?.();
    // the freed memory holds another expert now
    const other = expert(be, rng, "f32");
    readback();
    await assert.rejects(inFlight!, /WebGPU failed \(readback failed\) after the experts held changed \(an assignment or a release\): not computed on the kernels/);
    for (const w of [other.gate, other.up, other.down]) be.freeWeight(w);
  } finally {
    be.close();
  }
});
