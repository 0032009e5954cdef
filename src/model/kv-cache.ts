// Per-sequence key/value cache: for every layer, [capacity][kvHeads·headDim] f32 keys and values.
import type { Backend, Tensor } from "../kernels/backend.js";
import type { ModelConfig } from "./config.js";

export class KVCache {
  /** Positions already held. */
  length = 0;
  readonly k: Tensor[] = [];
  readonly v: Tensor[] = [];

  constructor(private readonly backend: Backend, cfg: ModelConfig, readonly capacity: number) {
    const bytes = capacity * cfg.kvHeads * cfg.headDim * 4;
    for (let l = 0; l < cfg.layers; l++) {
      this.k.push(backend.alloc(bytes));
      this.v.push(backend.alloc(bytes));
    }
  }

  /** Forget the sequence (the memory is kept for reuse). */
  clear(): void {
    this.length = 0;
  }

  free(): void {
    for (const t of [...this.k, ...this.v]) this.backend.free(t);
    this.k.length = this.v.length = 0;
  }
}
