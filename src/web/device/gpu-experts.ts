// A page's experts on WebGPU (kernels/webgpu): each expert held in a dtype the WebGPU kernels read (f32,
// f16, bf16) is copied to the GPU when it is loaded and computed there; the others (q8, q4, which the
// kernels hold quantized) stay on the wasm kernels, which also keep every expert's weights, for pulls and
// for calls the GPU fails (a lost device, a refused batch, a failed readback): those compute on the
// kernels instead, so a call is answered either way.
import type { Backend, WeightTensor } from "../../kernels/backend.js";
import type { GpuFfnWeights, WebGpuFfn } from "../../kernels/webgpu/webgpu-ffn.js";
import type { ExpertTable, FfnWeights } from "../../model/weights.js";
import type { ExpertCall, ExpertExecutor, ExpertResult } from "../../moe/executor.js";
import type { LocalExpertExecutor } from "../../moe/local-executor.js";
import type { ExpertCompute } from "../../runtime/device-core.js";

export class GpuExperts implements ExpertCompute {
  readonly kind = "webgpu" as const;
  readonly adapter: string;
  /** the held experts' copies on the GPU */
  private readonly onGpu = new Map<FfnWeights, GpuFfnWeights>();
  /** why experts stay on the kernels, each said once */
  private readonly said = new Set<string>();

  constructor(private readonly ffn: WebGpuFfn, private readonly backend: Backend, readonly gflops: number, private readonly log: (line: string) => void) {
    this.adapter = ffn.adapter;
  }

  serve(experts: ExpertTable, kernels: LocalExpertExecutor): ExpertExecutor {
    const held = new Set(experts.flatMap((row) => row.filter((w): w is FfnWeights => w !== null)));
    for (const [w, g] of this.onGpu) {
      if (held.has(w)) continue;
      this.ffn.free(g);
      this.onGpu.delete(w);
    }
    for (const w of held) {
      if (this.onGpu.has(w) || this.ffn.lost !== null) continue;
      const why = this.ffn.refuses(w.gate, w.up, w.down);
      if (why === null) this.onGpu.set(w, this.ffn.hold(this.data(w.gate), this.data(w.up), this.data(w.down)));
      else this.once(`experts stay on the wasm kernels: ${why}`);
    }
    return new GpuExecutor(this.ffn, (c) => this.onGpu.get(experts[c.layer]?.[c.expert] as FfnWeights), kernels, (why) => this.once(why));
  }

  private data(w: WeightTensor) {
    return { dtype: w.dtype, rows: w.rows, cols: w.cols, bytes: w.bytes, data: this.backend.weightData(w) };
  }

  private once(line: string): void {
    if (this.said.has(line)) return;
    this.said.add(line);
    this.log(line);
  }

  close(): void {
    this.ffn.close();
  }
}

/** A layer's calls: those whose experts are on the GPU as one batch there, the rest on the kernels. */
class GpuExecutor implements ExpertExecutor {
  /** a newer executor serves the experts held now: this one's may have been released, their kernel weights freed */
  private closed = false;

  constructor(private readonly ffn: WebGpuFfn, private readonly onGpu: (c: ExpertCall) => GpuFfnWeights | undefined, private readonly kernels: LocalExpertExecutor, private readonly log: (line: string) => void) {}

  dispatch(calls: readonly ExpertCall[]): Array<Promise<ExpertResult>> {
    const weights = calls.map((c) => {
      const w = this.ffn.lost === null ? this.onGpu(c) : undefined;
      // a call of the wrong size goes to the kernels, which refuse it in their words
      return w && c.input.length === c.rows * w.hidden ? w : undefined;
    });
    const gpu = calls.filter((_, i) => weights[i]);
    const rest = calls.filter((_, i) => !weights[i]);
    const onKernels = this.kernels.dispatch(rest);
    const t0 = performance.now();
    const batch: Promise<ExpertResult[]> =
      gpu.length === 0
        ? Promise.resolve([])
        : this.ffn.run(calls.flatMap((c, i) => (weights[i] ? [{ w: weights[i], rows: c.rows, input: c.input }] : []))).then(
            (outputs) => {
              // the batch ran as one job: each call's time is the job's
              const ms = performance.now() - t0;
              return outputs.map((output) => ({ output, computeMs: ms, roundTripMs: ms }));
            },
            (e: Error) => {
              // a release meanwhile may have freed the kernels' weights of these experts: the calls fail, and the base station asks another replica
              if (this.closed) throw new Error(`WebGPU failed (${e.message}) after the experts held changed (an assignment or a release): not computed on the kernels, whose weights of them may be freed`);
              this.log(`computing on the wasm kernels after WebGPU failed: ${e.message}`);
              return Promise.all(this.kernels.dispatch(gpu));
            },
          );
    let g = 0, r = 0;
    return weights.map((w) => {
      if (!w) return onKernels[r++]!;
      const at = g++;
      return batch.then((rs) => rs[at]!);
    });
  }

  close(): void {
    this.closed = true;
    this.kernels.close();
  }
}
