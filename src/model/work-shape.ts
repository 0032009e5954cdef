// How much work a model's parts are, for the latency model: the weight bytes a part reads (as held in
// `dtype`) and its multiply-adds per token row. Read from the config alone, so the simulator can cost a
// model no machine here holds. Attention's score and value products grow with the context; at the
// contexts the evaluation uses they are small beside the projections and are left out.
import type { WeightDType } from "../kernels/backend.js";
import { layoutBytes } from "../kernels/weight-layout.js";
import type { ModelConfig } from "./config.js";

export interface WorkShape {
  weightBytes: number;
  macsPerRow: number;
}

type Dims = Pick<ModelConfig, "hidden" | "heads" | "kvHeads" | "headDim" | "experts" | "expertFfn" | "sharedExpertFfn" | "denseFfn" | "vocabSize" | "sparseLayers">;

/** A matrix of rows × cols as the kernels hold it (f32 where `dtype` cannot hold that shape): Q4_K 4.5 bits a weight, Q5_K 5.5, Q6_K 6.5625. */
function matrix(dtype: WeightDType, rows: number, cols: number): WorkShape {
  return { weightBytes: layoutBytes(dtype, rows, cols) ?? rows * cols * 4, macsPerRow: rows * cols };
}

function sum(parts: WorkShape[]): WorkShape {
  return parts.reduce((a, b) => ({ weightBytes: a.weightBytes + b.weightBytes, macsPerRow: a.macsPerRow + b.macsPerRow }), { weightBytes: 0, macsPerRow: 0 });
}

/** A SwiGLU FFN of width `ffn`: gate and up (ffn × hidden), down (hidden × ffn). */
function swiglu(c: Dims, dtype: WeightDType, ffn: number): WorkShape {
  return sum([matrix(dtype, ffn, c.hidden), matrix(dtype, ffn, c.hidden), matrix(dtype, c.hidden, ffn)]);
}

/** One routed expert: what a device reads and computes per call. */
export function expertWork(c: Dims, dtype: WeightDType): WorkShape {
  return swiglu(c, dtype, c.expertFfn);
}

/** What the BS does in layer `layer` besides the routed experts: attention projections, the router, a shared expert or a dense MLP. */
export function bsLayerWork(c: Dims, dtype: WeightDType, layer: number): WorkShape {
  const q = c.heads * c.headDim, kv = c.kvHeads * c.headDim;
  const parts = [matrix(dtype, q, c.hidden), matrix(dtype, kv, c.hidden), matrix(dtype, kv, c.hidden), matrix(dtype, c.hidden, q)];
  if (c.sparseLayers[layer]) {
    parts.push(matrix("f32", c.experts, c.hidden));
    if (c.sharedExpertFfn > 0) parts.push(swiglu(c, dtype, c.sharedExpertFfn));
  } else parts.push(swiglu(c, dtype, c.denseFfn));
  return sum(parts);
}

/** The LM head, once per token. */
export function headWork(c: Dims, dtype: WeightDType): WorkShape {
  return matrix(dtype, c.vocabSize, c.hidden);
}
