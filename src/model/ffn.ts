// The SwiGLU feed-forward block shared by experts, shared experts and dense MLPs: down(silu(gate x) · up x).
import type { Backend, Tensor } from "../kernels/backend.js";
import type { FfnWeights } from "./weights.js";

export class FfnRunner {
  private gate: Tensor | null = null;
  private up: Tensor | null = null;

  constructor(private readonly backend: Backend) {}

  private ensure(bytes: number): { gate: Tensor; up: Tensor } {
    if (!this.gate || this.gate.bytes < bytes) {
      this.release();
      this.gate = this.backend.alloc(bytes);
      this.up = this.backend.alloc(bytes);
    }
    return { gate: this.gate, up: this.up! };
  }

  /** out[rows][hidden] = FFN(x[rows][hidden]) */
  run(w: FfnWeights, x: Tensor, out: Tensor, rows: number): void {
    const size = w.gate.rows;
    const { gate, up } = this.ensure(rows * size * 4);
    this.backend.matmulMany(x, [[gate, w.gate], [up, w.up]], rows);
    this.backend.siluMul(gate, gate, up, rows * size);
    this.backend.matmul(out, gate, w.down, rows);
  }

  release(): void {
    if (this.gate) this.backend.free(this.gate);
    if (this.up) this.backend.free(this.up);
    this.gate = this.up = null;
  }
}
