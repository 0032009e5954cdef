// The in-process executor: experts whose weights this process holds, computed with the local backend.
import type { Backend, Tensor } from "../kernels/backend.js";
import type { ExpertTable } from "../model/weights.js";
import type { ExpertCall, ExpertExecutor, ExpertResult } from "./executor.js";

export class LocalExpertExecutor implements ExpertExecutor {
  private io: { x: Tensor; y: Tensor } | null = null;

  constructor(private readonly backend: Backend, private readonly experts: ExpertTable, private readonly hidden: number) {}

  dispatch(calls: readonly ExpertCall[]): Array<Promise<ExpertResult>> {
    return calls.map((c) => {
      try {
        return Promise.resolve(this.compute(c));
      } catch (e) {
        return Promise.reject(e as Error);
      }
    });
  }

  /** One call, computed now. */
  compute(call: ExpertCall): ExpertResult {
    const t0 = performance.now();
    const w = this.experts[call.layer]?.[call.expert];
    if (!w) throw new Error(`expert ${call.expert} of layer ${call.layer} is not held by this process`);
    const n = call.rows * this.hidden;
    if (call.input.length !== n) throw new Error(`expert call: ${call.input.length} values for ${call.rows} rows of ${this.hidden}`);
    if (!this.io || this.io.x.bytes < n * 4) {
      this.close();
      this.io = { x: this.backend.alloc(n * 4), y: this.backend.alloc(n * 4) };
    }
    this.backend.f32(this.io.x, 0, n).set(call.input);
    this.backend.ffn(this.io.y, this.io.x, w, call.rows);
    const output = this.backend.f32(this.io.y, 0, n).slice();
    const ms = performance.now() - t0;
    return { output, computeMs: ms, roundTripMs: ms };
  }

  close(): void {
    if (this.io) {
      this.backend.free(this.io.x);
      this.backend.free(this.io.y);
      this.io = null;
    }
  }
}
