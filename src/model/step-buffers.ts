// Backend memory for a step's activations, kept between steps so that a decode step allocates nothing.
// A set holds one tensor per entry of floatsPerRow, sized for a bucket of rows (the next power of two);
// sets up to keepMaxRows rows are kept per bucket, and of larger ones (prefills) the largest so far is kept
// for any step it holds: the same addresses from prefill to prefill, so a backend that builds its graphs
// over addresses (the native one) reuses them. A set is leased for one step: a second step in flight at
// the same time gets a set of its own.
import type { Backend, Tensor } from "../kernels/backend.js";

export class StepBuffers {
  /**
   * Per bucket of rows, the set given back and not taken since, or null. Sets come and go every step: a Map
   * that deleted and added them would rebuild its table every few steps (measured: ~0.6 µs a take).
   */
  private readonly idle = new Map<number, { set: Tensor[] | null }>();
  /** The largest set of more than keepMaxRows rows given back, and its rows, while no step holds it. */
  private large: { rows: number; set: Tensor[] } | null = null;

  constructor(
    private readonly backend: Backend,
    private readonly floatsPerRow: readonly number[],
    private readonly keepMaxRows = 64,
  ) {}

  /** Tensors of at least rows × floatsPerRow[i] f32 each; give them back with the same `rows`. */
  take(rows: number): Tensor[] {
    const kept = this.peek(rows);
    if (!kept) return this.floatsPerRow.map((n) => this.backend.alloc(Math.max(1, this.bucket(rows) * n) * 4));
    if (rows > this.keepMaxRows) this.large = null;
    else this.idle.get(this.bucket(rows))!.set = null;
    return kept;
  }

  /** The set take(rows) would hand out now, or null where it would allocate one. */
  peek(rows: number): Tensor[] | null {
    if (rows > this.keepMaxRows) return this.large && this.large.rows >= rows ? this.large.set : null;
    return this.idle.get(this.bucket(rows))?.set ?? null;
  }

  give(rows: number, set: Tensor[]): void {
    if (rows > this.keepMaxRows) {
      // the set may be larger than rows asked for (the kept one): its size is in its tensors
      const held = Math.min(...this.floatsPerRow.map((n, i) => (n > 0 ? Math.floor(set[i]!.bytes / 4 / n) : Infinity)));
      if (this.large && this.large.rows >= held) return this.release(set);
      if (this.large) this.release(this.large.set);
      this.large = { rows: held, set };
      return;
    }
    const bucket = this.bucket(rows);
    const slot = this.idle.get(bucket);
    if (!slot) this.idle.set(bucket, { set });
    else if (slot.set) this.release(set);
    else slot.set = set;
  }

  private release(set: Tensor[]): void {
    for (const t of set) this.backend.free(t);
  }

  private bucket(rows: number): number {
    return rows > this.keepMaxRows ? rows : 2 ** Math.ceil(Math.log2(Math.max(1, rows)));
  }

  close(): void {
    for (const { set } of this.idle.values()) if (set) this.release(set);
    this.idle.clear();
    if (this.large) this.release(this.large.set);
    this.large = null;
  }
}
