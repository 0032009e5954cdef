// Backend memory for a step's activations, kept between steps so that a decode step allocates nothing.
// A set holds one tensor per entry of floatsPerRow, sized for a bucket of rows (the next power of two);
// sets up to keepMaxRows rows are kept per bucket, larger ones (long prefills) are allocated and freed
// per step, which costs nothing next to their compute. A set is leased for one step: a second step in
// flight at the same time gets a set of its own.
import type { Backend, Tensor } from "../kernels/backend.js";

export class StepBuffers {
  private readonly idle = new Map<number, Tensor[]>();

  constructor(
    private readonly backend: Backend,
    private readonly floatsPerRow: readonly number[],
    private readonly keepMaxRows = 64,
  ) {}

  /** Tensors of at least rows × floatsPerRow[i] f32 each; give them back with the same `rows`. */
  take(rows: number): Tensor[] {
    const bucket = this.bucket(rows);
    const set = this.idle.get(bucket);
    if (set) {
      this.idle.delete(bucket);
      return set;
    }
    return this.floatsPerRow.map((n) => this.backend.alloc(Math.max(1, bucket * n) * 4));
  }

  give(rows: number, set: Tensor[]): void {
    const bucket = this.bucket(rows);
    if (bucket > this.keepMaxRows || this.idle.has(bucket)) for (const t of set) this.backend.free(t);
    else this.idle.set(bucket, set);
  }

  private bucket(rows: number): number {
    return rows > this.keepMaxRows ? rows : 2 ** Math.ceil(Math.log2(Math.max(1, rows)));
  }

  close(): void {
    for (const set of this.idle.values()) for (const t of set) this.backend.free(t);
    this.idle.clear();
  }
}
