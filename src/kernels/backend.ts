// The seam between model code and kernels. The model only speaks this interface, so a native backend
// (ONNX Runtime, GPU) can be added beside the WebAssembly one without touching src/model.
import type { GgmlBlockType } from "./ggml-blocks.js";

/**
 * How a weight matrix is held in memory. q8 and q4 are ggml's Q8_0 and Q4_0 blocks; f16 and the K-quants
 * q4_k, q5_k and q6_k (ggml's Q4_K, Q5_K, Q6_K blocks) are held as GGUF files hold them, by the native
 * backend only (the wasm kernels hold f16 as f32 and the K-quants as q8).
 */
export type WeightDType = "f32" | "bf16" | "f16" | "q8" | "q4" | KQuantDType;
export type KQuantDType = "q4_k" | "q5_k" | "q6_k";
export const WEIGHT_DTYPES: readonly WeightDType[] = ["f32", "bf16", "q8", "q4", "f16", "q4_k", "q5_k", "q6_k"];

/** How a tensor is stored in a checkpoint file: floats, or ggml's quantized blocks from GGUF (see ggml-blocks.ts). */
export type SourceDType = "F32" | "BF16" | "F16" | GgmlBlockType;

/** Ops a backend recorded (see Backend.endTape): opaque, for replayTape of the backend that made it. */
export interface OpTape {
  readonly ops: number;
}

/** A region of backend memory. Activations are f32 unless a kernel says otherwise. */
export interface Tensor {
  readonly arena: number;
  readonly ptr: number;
  readonly bytes: number;
}

/** A weight matrix [rows][cols] (y = x · Wᵀ), or a vector when rows = 1. */
export interface WeightTensor extends Tensor {
  readonly dtype: WeightDType;
  readonly rows: number;
  readonly cols: number;
  /** q8 and q4: address of the per-block scales. */
  readonly scales: number;
}

/** Where a tensor's bytes lie in a file: the backend reads them straight into its memory. */
export interface WeightSource {
  /** The file's descriptor; -1 where `data` holds the file. */
  readonly fd: number;
  /** The whole file in memory instead of an open file (a browser device's streamed weights). */
  readonly data?: Uint8Array;
  readonly offset: number;
  readonly dtype: SourceDType;
  readonly file: string;
  /** Row r of the weight is row rowOrder[r] of the file's tensor; absent: in order. */
  readonly rowOrder?: Int32Array;
}

/** The three weights of a SwiGLU feed-forward block (an expert, a shared expert, a dense MLP). */
export interface FfnWeightSet {
  /** [ff][hidden] */
  readonly gate: WeightTensor;
  /** [ff][hidden] */
  readonly up: WeightTensor;
  /** [hidden][ff] */
  readonly down: WeightTensor;
}

/** One expert's share of a MoE layer's step: the step's rows routed to it (ascending, distinct) and each result's routing weight. */
export interface ExpertBatch {
  readonly expert: number;
  readonly rows: Int32Array;
  readonly weights: Float32Array;
}

/** A model's rotary embedding as ropeTable prepared it: positions it covers, head size and base; a backend may hold more (wasm: the angles' cos and sin). */
export interface RopeTable {
  readonly positions: number;
  readonly headDim: number;
  readonly theta: number;
}

/** What a weight is read for: products (matmul and the like; the default), or rows looked up (embed). */
export type WeightUse = "products" | "lookup";

export interface Backend {
  readonly name: string;
  readonly threads: number;

  /** Whether the kernels can hold a matrix with rows of `cols` values as dtype. */
  supportsWeight(dtype: WeightDType, cols: number): boolean;
  /**
   * Room for a weight; vectors (norms, biases) always land in the arena that holds activations. `use`: "lookup"
   * for a table only read a row at a time (embed), which a backend need not lay out for products.
   */
  allocWeight(dtype: WeightDType, rows: number, cols: number, use?: WeightUse): WeightTensor;
  /**
   * `count` weights of one dtype and shape, laid out as one (a layer's experts, as a GGUF file's merged expert
   * tensor holds them): a backend may then compute them as one stack (moeTopK). Absent: allocWeight each.
   */
  allocWeights?(dtype: WeightDType, count: number, rows: number, cols: number): WeightTensor[];
  /** Fill a weight from a file region, converting its dtype. */
  loadWeight(w: WeightTensor, src: WeightSource): void;
  /** Fill a weight from f32 values held by the caller (generated or test weights). */
  setWeight(w: WeightTensor, values: Float32Array): void;
  /** Activation memory (f32 unless stated), in the arena that the model computes in. */
  alloc(bytes: number): Tensor;
  free(t: Tensor): void;
  /** A copy of a weight's bytes as held (quants and scales included): what another tier copies. */
  weightData(w: WeightTensor): Uint8Array;
  /** Fills a weight from bytes that weightData gave for a weight of the same dtype and shape. */
  setWeightData(w: WeightTensor, data: Uint8Array): void;
  /** Gives a weight's memory back (a device dropping an expert it no longer serves). */
  freeWeight(w: WeightTensor): void;
  f32(t: Tensor, offset?: number, length?: number): Float32Array;
  i32(t: Tensor, offset?: number, length?: number): Int32Array;

  /** y[rows][w.rows] = x[rows][w.cols] · wᵀ */
  matmul(y: Tensor, x: Tensor, w: WeightTensor, rows: number): void;
  /** The products of one input with several weights of its width (q/k/v, gate/up), as one job where possible. */
  matmulMany(x: Tensor, products: ReadonlyArray<readonly [y: Tensor, w: WeightTensor]>, rows: number): void;
  /** out[i] = table[ids[i]] as f32 */
  embed(out: Tensor, table: WeightTensor, ids: ArrayLike<number>): void;
  rmsnorm(y: Tensor, x: Tensor, w: WeightTensor, rows: number, n: number, eps: number): void;
  ropeTable(positions: number, headDim: number, theta: number): RopeTable;
  rope(x: Tensor, rows: number, heads: number, headDim: number, positions: Tensor, table: RopeTable): void;
  /**
   * dst[at[i]] = src[i] for rows of `width` f32 (a step's keys and values into their cache): `at` holds `rows`
   * distinct row indices of dst, written by JavaScript (not by an op), each below dst's row capacity.
   */
  setRows(dst: Tensor, src: Tensor, rows: number, width: number, at: Tensor): void;
  /** Causal attention of `rows` new queries at positions start.. against a cache holding start + rows keys. */
  attention(out: Tensor, q: Tensor, k: Tensor, v: Tensor, rows: number, start: number, heads: number, kvHeads: number, headDim: number): void;
  siluMul(h: Tensor, g: Tensor, u: Tensor, n: number): void;
  /**
   * A whole SwiGLU feed-forward block, as llama.cpp fuses it:
   *   out[rows][hidden] = (silu(x · gateᵀ) ⊙ (x · upᵀ)) · downᵀ,   x: [rows][hidden] f32.
   * gate and up are [ff][hidden], down is [hidden][ff], each of any WeightDType the backend holds (a GGUF
   * file's experts may mix them, e.g. Q4_K gate and up with a Q6_K down).
   * The result equals matmulMany(x, [[g, gate], [u, up]]) → siluMul(h, g, u) → matmul(out, h, down)
   * within that dtype's tolerance (the hidden activations are prepared for down's dtype as matmul
   * prepares any input: q8/q4 quantize them per block of 32, bf16 keeps them f32).
   * x and out are f32 tensors from alloc (any arena), at least rows·hidden·4 bytes, and must not
   * overlap; x is not modified. The intermediate [rows][ff] activations live in memory the backend owns
   * and reuses across calls (nothing is allocated per call once it has seen the largest `rows`); no
   * other caller memory is touched. Synchronous: out holds the result when the call returns. One job:
   * one handoff to the threads, no JavaScript between the three products.
   */
  ffn(out: Tensor, x: Tensor, w: FfnWeightSet, rows: number): void;
  /**
   * A sparse MoE block with the model's own routing, as one job as llama.cpp runs it (build_moe_ffn):
   *   p = softmax(h · routerᵀ) per row; the row's topK experts by p (their ids into `chosen`, i32 [rows][topK]);
   *   out[rows][hidden] = Σ over them of p_e (÷ their sum when `normalize`) · FFN_e(h).
   * `experts` are every expert of the layer, by number. Returns false, having done nothing, where this
   * backend cannot compute these experts together (the wasm kernels; weights not laid out as one stack):
   * the caller then runs the block's seam (router, policy, executors, combine) step by step. Absent: never.
   */
  moeTopK?(out: Tensor, h: Tensor, router: WeightTensor, experts: readonly FfnWeightSet[], rows: number, topK: number, normalize: boolean, chosen: Tensor): boolean;
  /**
   * A sparse MoE block's experts and combine for a routing chosen outside (the seam's selection policy), as one job:
   *   out[row] = Σ over the batches b that hold row: (b's weight for it) · FFN_experts[b.expert](h[row]),
   * a row in no batch getting zeros. `experts` are the layer's, by number: each batch's expert must be there, and
   * every one there must make a feed-forward block of the same width (a backend may hold them all in its job);
   * h and out are [rows][hidden] f32. The rows are looked up and the results combined in backend memory, so no
   * JavaScript runs between the layer's experts and the next layer's ops (the seam's executor path copies each
   * expert's rows out and its results back). Absent: the caller runs the experts through its executor.
   */
  moeExperts?(out: Tensor, h: Tensor, experts: ReadonlyArray<FfnWeightSet | null>, plan: readonly ExpertBatch[], rows: number): void;
  add(y: Tensor, a: Tensor, b: Tensor, n: number): void;
  /** y[r] += bias for every row */
  addBias(y: Tensor, bias: WeightTensor, rows: number): void;
  clamp(x: Tensor, n: number, c: number): void;

  /** Measured memory read bandwidth in GB/s over a buffer of `bytes`, with every thread. */
  measureReadBandwidth(bytes: number): number;
  /** Measured peak multiply-add rate in GFLOP/s, with every thread. */
  measureComputeRate(): number;
  /** Bytes held in backend memory, per weight dtype and for activations. */
  memoryUsage(): { weights: number; activations: number; arenas: number };
  /**
   * Where the backend runs its ops as graphs of a kernel library (native): the graphs run and the wall time spent
   * in them since it was made. The rest of a step's time is the host's: JavaScript, and reads and writes of memory.
   */
  readonly graphTime?: Readonly<{ graphs: number; ms: number }>;
  /**
   * Where the backend runs graphs (native): with `on`, each op from now on runs as a graph of its own, timed into
   * opTime under the op's name (matmul "mm", attention "attn", an MoE layer's experts "moex" …), so that a step's
   * time can be told apart op by op (bench --ops). Each op then pays a graph's launch, runs on the pool or one thread
   * by its own size, and no recorded step is replayed: for where the time goes, not for how fast. Off: as before.
   */
  profileOps?(on: boolean): void;
  /** Per op name, since profiling was last turned on or off: the graphs run and their wall time (see profileOps). */
  readonly opTime?: ReadonlyMap<string, Readonly<{ graphs: number; ms: number }>>;
  /**
   * Where the backend records ops before it runs them (native): a step's ops kept to be recorded again without
   * the calls that made them (a decode step's layers, token after token). beginTape keeps the ops recorded from
   * now on; endTape stops and returns them, or null where they cannot be recorded again alone: JavaScript read or
   * wrote backend memory between them, or attention ran for more than one (rows, start).
   */
  beginTape?(): void;
  endTape?(): OpTape | null;
  /**
   * Records the ops of `tape` again, as the calls that made it would with the same arguments, with attention at
   * position `start` of the same sequence (its mask is written for it). False, recording nothing, where the
   * tape no longer holds: memory it names was given back or replaced (a weight freed, the backend's scratch
   * grown), or at `start` attention would cover another span of the cache; and while ops are profiled (profileOps),
   * after which it holds again. The caller answers for the rest: the same tensors, not freed, holding what the calls
   * would have found, and the checks the calls made (positions within the cache and the rotary table).
   */
  replayTape?(tape: OpTape, start: number): boolean;
  close(): void;
}
