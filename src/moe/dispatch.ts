// Routing decision → dispatch plan: for every expert that any row chose, the rows it must process and
// the weight each result gets when combined.
import type { ExpertBatch } from "../kernels/backend.js";
import type { RoutingDecision } from "../policies/selection.js";

export function planDispatch(decision: RoutingDecision, experts: number): ExpertBatch[] {
  const n = decision.offsets[decision.rows]!;
  // each expert's rows and weights are a slice of two arrays, ordered by expert
  const start = new Int32Array(experts + 1);
  for (let i = 0; i < n; i++) start[decision.experts[i]! + 1]!++;
  for (let e = 0; e < experts; e++) start[e + 1]! += start[e]!;
  const rows = new Int32Array(n), weights = new Float32Array(n);
  const fill = start.slice(0, experts);
  for (let r = 0; r < decision.rows; r++) {
    for (let i = decision.offsets[r]!; i < decision.offsets[r + 1]!; i++) {
      const at = fill[decision.experts[i]!]!++;
      rows[at] = r;
      weights[at] = decision.weights[i]!;
    }
  }
  const plan: ExpertBatch[] = [];
  for (let e = 0; e < experts; e++) {
    if (start[e + 1]! > start[e]!) plan.push({ expert: e, rows: rows.subarray(start[e]!, start[e + 1]!), weights: weights.subarray(start[e]!, start[e + 1]!) });
  }
  return plan;
}

/** The rows of x (rows × width) that a batch needs, packed: a view of x when they are consecutive (a decode step's one row). */
export function gatherRows(x: Float32Array, width: number, rows: Int32Array): Float32Array {
  const n = rows.length;
  if (n > 0 && rows[n - 1]! - rows[0]! === n - 1) return x.subarray(rows[0]! * width, (rows[0]! + n) * width);
  const out = new Float32Array(n * width);
  for (let i = 0; i < rows.length; i++) out.set(x.subarray(rows[i]! * width, (rows[i]! + 1) * width), i * width);
  return out;
}

/** out[row] += weight · result[i] for every row of a batch; `rowScale` rescales a row's weights. */
export function combineInto(out: Float32Array, width: number, batch: ExpertBatch, result: Float32Array, rowScale?: Float64Array | null): void {
  for (let i = 0; i < batch.rows.length; i++) {
    const w = batch.weights[i]! * (rowScale ? rowScale[batch.rows[i]!]! : 1);
    const o = batch.rows[i]! * width, s = i * width;
    for (let j = 0; j < width; j++) out[o + j]! += w * result[s + j]!;
  }
}
