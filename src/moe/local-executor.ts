// The in-process executor: experts whose weights this process holds, computed with the local backend.
import type { Backend, Tensor } from "../kernels/backend.js";
import type { ExpertTable, FfnWeights } from "../model/weights.js";
import type { ExpertCall, ExpertExecutor, ExpertResult } from "./executor.js";

export class LocalExpertExecutor implements ExpertExecutor {
  private io: { x: Tensor; y: Tensor } | null = null;

  constructor(private readonly backend: Backend, private readonly experts: ExpertTable, private readonly hidden: number) {}

  /**
   * A layer's calls computed together: every input is written before any expert runs and every output read
   * after the last, so a backend that records ops (the native one) runs the layer's experts as one graph.
   * A call this process cannot serve fails alone.
   */
  dispatch(calls: readonly ExpertCall[]): Array<Promise<ExpertResult>> {
    const weights = calls.map((c) => {
      try {
        return this.weights(c);
      } catch (e) {
        return e as Error;
      }
    });
    const served = calls.filter((_, i) => !(weights[i] instanceof Error));
    let results: ExpertResult[];
    try {
      results = this.computeAll(served, weights.filter((w): w is FfnWeights => !(w instanceof Error)));
    } catch (e) {
      // a call refused on its own keeps its own reason
      return weights.map((w) => Promise.reject(w instanceof Error ? w : (e as Error)));
    }
    let r = 0;
    return weights.map((w) => (w instanceof Error ? Promise.reject(w) : Promise.resolve(results[r++]!)));
  }

  /** One call, computed now. */
  compute(call: ExpertCall): ExpertResult {
    return this.computeAll([call], [this.weights(call)])[0]!;
  }

  /** The call's expert weights, once the call is checked against them. */
  private weights(call: ExpertCall): FfnWeights {
    const w = this.experts[call.layer]?.[call.expert];
    if (!w) throw new Error(`expert ${call.expert} of layer ${call.layer} is not held by this process`);
    if (call.input.length !== call.rows * this.hidden) throw new Error(`expert call: ${call.input.length} values for ${call.rows} rows of ${this.hidden}`);
    return w;
  }

  private computeAll(calls: readonly ExpertCall[], weights: readonly FfnWeights[]): ExpertResult[] {
    if (calls.length === 0) return [];
    const t0 = performance.now();
    const be = this.backend, H = this.hidden;
    const total = calls.reduce((s, c) => s + c.rows, 0) * H;
    if (!this.io || this.io.x.bytes < total * 4) {
      this.close();
      this.io = { x: be.alloc(total * 4), y: be.alloc(total * 4) };
    }
    const { x, y } = this.io;
    const xs = be.f32(x, 0, total);
    let at = 0;
    for (const c of calls) {
      xs.set(c.input, at);
      at += c.rows * H;
    }
    at = 0;
    calls.forEach((c, i) => {
      const bytes = c.rows * H * 4;
      be.ffn({ arena: y.arena, ptr: y.ptr + at * 4, bytes }, { arena: x.arena, ptr: x.ptr + at * 4, bytes }, weights[i]!, c.rows);
      at += c.rows * H;
    });
    const ys = be.f32(y, 0, total);
    // the experts ran as one job: each call's time is the job's
    const ms = performance.now() - t0;
    at = 0;
    return calls.map((c) => {
      const output = ys.slice(at, at + c.rows * H);
      at += c.rows * H;
      return { output, computeMs: ms, roundTripMs: ms };
    });
  }

  close(): void {
    if (this.io) {
      this.backend.free(this.io.x);
      this.backend.free(this.io.y);
      this.io = null;
    }
  }
}
