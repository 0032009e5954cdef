// The native backend: ggml's own CPU kernels (the ones llama.cpp runs) behind the Backend interface.
// Memory is ggml CPU buffers: activations in growing chunks handed out first-fit, each weight in a buffer
// of its own holding a ggml tensor of its type (f32 F32, bf16 BF16, f16 F16, q8 Q8_0, q4 Q4_0, q4_k Q4_K, q5_k Q5_K, q6_k Q6_K). A Tensor's arena
// names the buffer and ptr is an offset in it; f32()/i32() are views over the native memory, no copies.
// Ops are recorded, not run at once: consecutive ops make one ggml graph over those addresses, run when
// JavaScript next touches memory (f32, i32, a weight read or write) — one launch of the pool for what llama.cpp
// would run as part of its one graph, instead of one per op. A graph is built once per sequence of
// (op, shape, addresses) and reused: a decode step's sequences repeat from step to step.
// ggml aborts the process on a failed GGML_ASSERT, so every precondition it asserts is checked here first.
import { fstatSync } from "node:fs";
import os from "node:os";
import type { Backend, ExpertBatch, FfnWeightSet, OpTape, RopeTable, Tensor, WeightDType, WeightSource, WeightTensor, WeightUse } from "../backend.js";
import { dequantizeBlocks, f16ToF32, GGML_BLOCK_TYPES, isGgmlBlockType } from "../ggml-blocks.js";
import { FirstFit } from "../first-fit.js";
import { readRows } from "../read-rows.js";
import { blocksFromLayout, dtypeOfBlocks, isBlockDType, kQuantBlocks, layoutBytes, layoutFromBlocks } from "../weight-layout.js";
import { GGML_MAX_THREADS, GGML_OP_NONE, GgmlType, loadGgml, type Ggml, type Ptr, type TensorHeader } from "./ggml.js";
import { median } from "../../util/stats.js";

export interface NativeBackendOptions {
  /** Threads of the pool that big ops run on; defaults to the cores available. */
  threads?: number;
  /**
   * How long idle pool workers poll before sleeping, 0 to 100 (ggml's levels; `scripts/native-poll-cost.mjs`
   * measures a level's CPU time after a graph: here 1 to 2 ms at 1, 23 to 36 ms at 10; llama.cpp's default is 50). Default 1: a decode step's graphs follow each other
   * within microseconds, and a worker that has gone to sleep costs tens of microseconds to wake. 0 sleeps at
   * once (see POLL_WHEN_WAITING_ON_PEERS in select-backend.ts).
   */
  poll?: number;
  /** Graphs kept for reuse (least recently used ones are freed beyond this). */
  maxGraphs?: number;
  /**
   * Weights whose file holds them in their own type and layout are mapped from the file (default true), as
   * llama.cpp does: loading costs no copy, pages come from the page cache, and a model larger than RAM loads.
   */
  mmap?: boolean;
}

// See NativeBackendOptions.poll.
const DEFAULT_POLL = 1;
// Below this many multiply-adds an op runs on a single-thread backend: waking the pool's sleeping workers
// costs 15–20 µs per graph here (docs/spikes/native-backend.md), more than half of such an op takes.
const PARALLEL_MIN_WORK = 1 << 20;
// Big graphs run on the pool unless it has lately been slower than one thread on the same graphs. To keep
// that comparison current, EXPLORE_RUNS graphs of a size run the other way after EXPLORE_EVERY of them,
// the first untimed (on the pool it wakes workers that have slept, which the graphs after it do not pay);
// each exploration that leaves the choice as it was doubles the wait, up to EXPLORE_EVERY_MAX, so a
// settled choice costs little (exploring the pool cost brown-moe's decode 15 % at a fixed 64).
const EXPLORE_EVERY = 64;
const EXPLORE_EVERY_MAX = 4096;
const EXPLORE_RUNS = 3;
// One thread takes over when the pool's time ÷ one thread's, on the same graph, is above this in the median
// of the last POOL_SAMPLES comparisons, once there are that many: a class's first exploration (two samples)
// cannot flip it alone. Seen on the 734 M model's decode graphs (an ad-hoc loop over benchEngine printing the
// samples, not a script here): the first exploration found the pool 1.3–2× slower, every later one
// 0.65–0.77×; the moving average this replaced sent them to one thread for the first ~100 tokens.
const POOL_SLOWER = 1.15;
const POOL_SAMPLES = 3;
// Activation memory grows in chunks of at least this size (untouched pages cost nothing on the usual OSes).
const CHUNK_BYTES = 64 << 20;
// Weight conversions go through f32 staging of at most this many bytes.
const STAGING_BYTES = 16 << 20;
// A graph holds the sum of its ops' node counts (MAX_OP_NODES unless an op says more) in nodes, as many leaves
// and twice as many tensors, and ggml aborts when a context runs out of room: an op adds at most that many nodes and leaves
// (matmulMany's product count is bounded to keep it so: its input and weights are leaves). A recorded
// sequence is run once it holds MAX_SEGMENT_OPS ops: enough for a 734 M Mixtral's decode step (8 layers, ~100
// ops) to be one graph, which left ~0.1 ms less JavaScript per token between graphs than two (ad hoc A/B).
const MAX_OP_NODES = 16;
const MAX_PRODUCTS = MAX_OP_NODES - 1;
const MAX_SEGMENT_OPS = 128;
// Starts the name a tape gives a segment of its ops (see NativeTape.cuts); no op's key holds the character.
const TAPE_KEY = "\u0000tape";
// How many of the graphs run last are looked for by key before the cache of all graphs (see recentGraphs).
const RECENT_GRAPHS = 4;
// moeTopK runs a layer as one job for steps of at most this many rows. ggml's mul_mat_id computes each expert's
// rows with dot products, not the tiled products mul_mat uses for many rows. Measured on a 2-vCPU machine
// (scripts/bench-moe-one-job.mjs, 734 M q8_0, 2 threads): one job is faster at 1 row (8.6–11 vs 12.5–16 ms a
// step), even at 8 and slower from 16 (16 rows: 71–92 vs 46–64 ms); a 256-token prefill ran at 0.6× the seam's.
const MOE_ONE_JOB_MAX_ROWS = 4;
// Decode attention covers the cache in steps of this many positions (see attention).
const KV_PAD = 256;
const F16_MINUS_INFINITY = 0xfc00;
const GGML_ROPE_TYPE_NEOX = 2;
const GGML_SORT_ORDER_DESC = 1;
const GGML_BACKEND_BUFFER_USAGE_WEIGHTS = 1;

const WEIGHT_TYPE: Record<WeightDType, number> = {
  f32: GgmlType.F32, bf16: GgmlType.BF16, f16: GgmlType.F16, q8: GgmlType.Q8_0, q4: GgmlType.Q4_0, q4_k: GgmlType.Q4_K, q5_k: GgmlType.Q5_K, q6_k: GgmlType.Q6_K,
};

interface Region {
  readonly buffer: Ptr;
  readonly base: number;
  readonly size: number;
  /** Where the region starts in its buffer: 0 but for weights allocated as a group (allocWeights), which share one. */
  readonly offset: number;
  /** Activation chunks: their allocator. */
  readonly space: FirstFit | null;
  /** Weights: the ggml tensor and the context that owns it. */
  /** mapped: the key of the file mapping it lies in (see NativeBackend.mapped). */
  /** group: the buffer allocWeights made for the weights of a group, given back when none of them holds it. */
  readonly weight: { ctx: Ptr; tensor: Ptr; type: number; repacked: boolean; mapped: boolean; mapKey?: string; group?: WeightGroup } | null;
  view: ArrayBuffer | null;
}

interface WeightGroup {
  readonly buffer: Ptr;
  /** its size: counted in memoryUsage's weights until the buffer goes with its last member */
  readonly bytes: number;
  users: number;
}

interface Graph {
  /** The keys of its ops, joined (see NativeBackend.run). */
  readonly key: string;
  /** When it last ran, in flushes: the least recently run is dropped first (see maxGraphs). */
  lastRun: number;
  readonly ctx: Ptr;
  readonly graph: Ptr;
  readonly buffer: Ptr | null;
  /** Buffers over weights that the graph sees as one tensor (moeTopK's expert stacks). */
  readonly stackBuffers: Ptr[];
  /** What each of its reshaped ops (see NativeBackend.run) handed the builder, in the order of the ops. */
  readonly reshapable: readonly unknown[];
  readonly work: number;
  /** The graph's last compute time (ns) on the pool and on one thread; NaN before it has one. */
  pooledNs: number;
  singleNs: number;
}

/**
 * The cache positions attention covers for `rows` queries ending at position len - 1 of a cache holding `held`:
 * a decode step's, up to a multiple of KV_PAD (see attention); a prefill's, exactly len.
 */
function attentionSpan(rows: number, len: number, held: number): number {
  return rows === 1 ? Math.min(held, Math.ceil(len / KV_PAD) * KV_PAD) : len;
}

/** An expert in a moeExperts graph: its weights, and this call's rows of it (m) from row `start` of the layout. */
interface ExpertMember {
  readonly expert: number;
  readonly w: FfnWeightSet;
  readonly m: number;
  readonly start: number;
}

/** Where moeExperts' parts lie in its scratch (in floats), and the scratch's regions by offset and length. */
interface ExpertLayout {
  readonly H: number;
  readonly n: number;
  readonly at: { readonly results: number; readonly inputs: number; readonly gate: number; readonly up: number };
  readonly route: { readonly rows: number; readonly weights: number };
  readonly part: (offset: number, count: number) => Tensor;
}

/** An expert's nodes in a moeExperts graph, and the ops its products and SiLU·mul were built with (see moeExperts' reshape). */
interface ExpertNodes {
  readonly x: TensorHeader;
  readonly gate: TensorHeader;
  readonly up: TensorHeader;
  readonly act: TensorHeader;
  readonly down: TensorHeader;
  readonly mulMat: number;
  readonly glu: number;
}

/** An op as run() records it; readsMask: attention's, which reads the mask. */
interface TapedOp {
  readonly key: string;
  readonly work: number;
  readonly build: (b: GraphBuilder) => void;
  readonly nodes: number;
  readonly readsMask: boolean;
}

/** Attention's shape in a tape: every attention op of it had these (see beginTape). */
interface TapedAttention {
  readonly rows: number;
  readonly start: number;
  readonly span: number;
  /** positions the cache holds */
  readonly held: number;
}

/** A tape (Backend.endTape): the ops, and the tapeVersion they hold for. */
interface NativeTape extends OpTape {
  readonly owner: NativeBackend;
  readonly taped: readonly TapedOp[];
  readonly version: number;
  readonly attention: TapedAttention | null;
  /** Names the tape's ops: tapes of the same ops (their keys joined) share it, and so their graphs (see tapeNames). */
  readonly serial: number;
  /**
   * Per number of ops pending before a replay, the ops cut where run() would cut them after those, each
   * segment named by the tape (TAPE_KEY, serial, ops before, index) instead of by its ops' keys joined again:
   * a graph's key of thousands of characters, built and compared every step, becomes a short one.
   */
  readonly cuts: Map<number, readonly TapeSegment[]>;
}

interface TapeSegment {
  readonly key: string;
  readonly builds: ReadonlyArray<(b: GraphBuilder) => void>;
  readonly work: number;
  readonly nodes: number;
  readonly readsMask: boolean;
}

/** Builds one op's graph: tensors bound to backend memory, ops, outputs. */
class GraphBuilder {
  readonly outputs: Ptr[] = [];
  constructor(private readonly be: NativeBackend, readonly ctx: Ptr) {}
  /** A tensor of `type` and shape ne over t's memory. */
  bind(t: Tensor, type: number, ...ne: number[]): Ptr {
    return this.be.bindTensor(this.ctx, t, type, ne);
  }
  /** A result tensor written straight into t's memory. */
  into(result: Ptr, t: Tensor): Ptr {
    this.be.bindResult(result, t);
    return result;
  }
  /** Buffers the graph's weight stacks need, freed with the graph. */
  readonly stackBuffers: Ptr[] = [];
  /** Per reshaped op (see NativeBackend.run), in order, the tensors its reshape changes. */
  readonly reshapable: unknown[] = [];
  /** The weights as one 3-D tensor [cols, rows, weights.length] (see NativeBackend.stackOf). */
  stack(weights: readonly WeightTensor[]): Ptr {
    return this.be.stackTensor(this.ctx, weights, this.stackBuffers);
  }
  /** A view (of a bound tensor) made usable: ggml gives views no buffer until initialised. */
  view(v: Ptr): Ptr {
    this.be.viewInit(v);
    return v;
  }
}

/**
 * Backends not yet closed. When the process exits they are closed: a pool worker still polling while Node
 * tears the process down crashes it (measured: every time at poll 10 on a natural exit).
 */
const openBackends = new Set<NativeBackend>();
let closeAtExit = false;

export class NativeBackend implements Backend {
  readonly name: string;
  readonly threads: number;
  readonly poll: number;
  readonly ggml: Ggml;
  private readonly g: Ggml["f"];
  private readonly cpuBuft: Ptr;
  /** One thread: small ops, which must not wake the pool. */
  private readonly single: Ptr;
  /** `threads` threads on a persistent threadpool. */
  private readonly pooled: Ptr;
  private readonly threadpool: Ptr | null;
  /** Whether the pool's workers may be polling (a graph ran on it since it was last paused). */
  private poolAwake = false;
  /** The single-thread backend's pool: no worker threads, but ggml then skips making a throwaway pool per compute. */
  private readonly singlePool: Ptr;
  private readonly regions = new Map<number, Region>();
  private readonly chunks: number[] = [];
  private nextRegion = 1;
  private weightBytes = 0;
  private readonly graphs = new Map<string, Graph>();
  /**
   * The graphs run last, most recent first, found by comparing keys: a decode step runs the same few graphs
   * over and over, and a lookup in graphs hashes the whole key, thousands of characters, every time.
   */
  private readonly recentGraphs: Graph[] = [];
  private flushes = 0;
  readonly graphTime = { graphs: 0, ms: 0 };
  readonly opTime = new Map<string, { graphs: number; ms: number }>();
  /** Each op its own graph, timed into opTime (see profileOps). */
  private profiling = false;
  /** The tape being recorded (beginTape), and whether it still may run again alone. */
  private taping: { ops: TapedOp[]; version: number; attention: TapedAttention | null; valid: boolean } | null = null;
  /** Counts changes that end every tape: a weight freed, a scratch tensor of the backend's replaced (endTapes). */
  private tapeVersion = 0;
  /**
   * Per tape's ops (their keys joined), the serial naming their segments' graphs (NativeTape.cuts): a decode step
   * recorded again (the span grew back, the next request over the same memory) finds its graphs, as the ops'
   * own keys did, instead of building and keeping more until evicted. At most maxGraphs; a serial is never reused.
   */
  private readonly tapeNames = new Map<string, number>();
  /** Serials given so far (tapeNames). */
  private tapes = 0;
  /** Ops recorded and not yet run (see flush), their keys joined, and their multiply-adds. */
  private readonly pending: Array<(b: GraphBuilder) => void> = [];
  /** The reshapes of the reshaped ops among them, in order (see run). */
  private readonly pendingReshapes: Array<(tensors: unknown) => void> = [];
  private pendingKey = "";
  private pendingWork = 0;
  private pendingNodes = 0;
  private readonly maxGraphs: number;
  private scratchIds: Tensor | null = null;
  private mask: Tensor | null = null;
  /** The (rows, start, span) the mask was last written for, and whether an op recorded and not yet run reads it. */
  private maskHolds = "";
  private maskRead = false;
  /** ffn's gate and up activations, reused across calls and grown to the largest seen. */
  private ffnScratch: Tensor | null = null;
  /** moeTopK's intermediate activations, likewise. */
  private moeScratch: Tensor | null = null;
  /**
   * moeExperts' memory: a row of zeros, the experts' results, their inputs, gate and up activations and the
   * results gathered per row's slot (f32), then the routing JavaScript writes (i32 rows and slots, f32 weights);
   * and whether an op recorded and not yet run reads that routing.
   */
  private expertScratch: Tensor | null = null;
  private routeRead = false;
  /**
   * Per experts array moeTopK was given (a layer's, which the engine never changes), what it found: the three
   * stacks (null: not stacked) and the weights' part of the graph key; redone once any weight has changed since.
   */
  private readonly moeLayers = new WeakMap<readonly FfnWeightSet[], { changes: number; stacks: WeightTensor[][] | null; key: string }>();
  /** Counts the changes of weight memory (freed, mapped, detached): see moeLayers. */
  private weightChanges = 0;
  /** Per repackable dtype (q4, q4_k), CPU_REPACK where its layout checked out (see repackBuft), or null; absent until first asked. */
  private readonly repack = new Map<WeightDType, Ptr | null>();
  private closed = false;
  /**
   * Per size class of big graphs (multiply-adds within a factor of 4): the last POOL_SAMPLES logs of pool time ÷
   * one-thread time, each pair on the same graph, and when to explore next (see EXPLORE_EVERY). Classes apart
   * because the pool's cost of waking is a share of small graphs' time and not of large ones'.
   */
  private readonly sizeClasses: Array<{ logPoolOverSingle: number[]; onPool: boolean; untilExplore: number; every: number; exploring: number; wasOnPool: boolean }> = [];
  private readonly mmap: boolean;
  /**
   * Files mapped, by device and inode (not path: a file replaced at its path, as the device's weight cache
   * replaces one, is another file), with the weights lying in each; a mapping goes with its last weight.
   */
  private readonly mapped = new Map<string, { address: number; bytes: number; unmap(): void; users: number }>();

  constructor(opts: NativeBackendOptions = {}) {
    this.ggml = loadGgml();
    this.g = this.ggml.f;
    this.threads = Math.max(1, Math.floor(opts.threads ?? os.availableParallelism()));
    if (this.threads > GGML_MAX_THREADS) throw new Error(`${this.threads} threads: ggml runs at most ${GGML_MAX_THREADS}`);
    this.poll = Math.max(0, Math.min(100, Math.floor(opts.poll ?? DEFAULT_POLL)));
    this.maxGraphs = Math.max(8, opts.maxGraphs ?? 512);
    this.mmap = opts.mmap ?? true;
    this.cpuBuft = this.g.cpuBufferType();
    this.single = this.g.cpuInit();
    this.g.cpuSetThreads(this.single, 1);
    this.singlePool = this.ggml.newThreadpool(1, 0);
    this.g.cpuSetThreadpool(this.single, this.singlePool);
    if (this.threads > 1) {
      this.pooled = this.g.cpuInit();
      this.g.cpuSetThreads(this.pooled, this.threads);
      this.threadpool = this.ggml.newThreadpool(this.threads, this.poll);
      this.g.cpuSetThreadpool(this.pooled, this.threadpool);
    } else {
      this.pooled = this.single;
      this.threadpool = null;
    }
    this.name = `native-ggml-${this.ggml.variant}`;
    openBackends.add(this);
    if (!closeAtExit) {
      closeAtExit = true;
      process.once("exit", () => {
        for (const be of openBackends) {
          try {
            be.close();
          } catch {
            // released all the same (close's finally); the process is ending
          }
        }
      });
    }
  }

  /** How this backend describes itself in the startup log. */
  describe(): string {
    return `ggml ${this.ggml.version} ${this.ggml.origin}, ${this.threads} thread${this.threads === 1 ? "" : "s"}${this.poll === DEFAULT_POLL ? "" : `, poll ${this.poll}`}${this.mmap ? "" : ", no mmap"}`;
  }

  // ---------------------------------------------------------------- memory

  private region(t: Tensor, bytes: number, what: string): Region {
    const r = this.regions.get(t.arena);
    if (!r) throw new Error(`${what}: tensor in arena ${t.arena}, which this backend does not hold (freed?)`);
    if (!Number.isInteger(t.ptr) || t.ptr < 0 || t.ptr + bytes > r.size) throw new Error(`${what}: ${bytes} bytes at offset ${t.ptr} lie outside its buffer of ${r.size}`);
    if (t.bytes < bytes) throw new Error(`${what}: buffer of ${t.bytes} bytes, ${bytes} needed`);
    return r;
  }

  private newRegion(buffer: Ptr, size: number, space: FirstFit | null, weight: Region["weight"]): number {
    const id = this.nextRegion++;
    this.regions.set(id, { buffer, base: this.ggml.address(this.g.bufferGetBase(buffer)), size, offset: 0, space, weight, view: null });
    return id;
  }

  alloc(bytes: number): Tensor {
    if (this.closed) throw new Error("the native backend is closed");
    if (!Number.isInteger(bytes) || bytes < 0) throw new Error(`alloc: ${bytes} bytes`);
    for (const id of this.chunks) {
      const p = this.regions.get(id)!.space!.alloc(bytes);
      if (p >= 0) return { arena: id, ptr: p, bytes };
    }
    const size = Math.max(CHUNK_BYTES, Math.ceil(bytes / CHUNK_BYTES) * CHUNK_BYTES);
    const buffer = this.g.buftAllocBuffer(this.cpuBuft, size);
    if (!buffer) throw new Error(`out of memory: cannot allocate ${size} bytes of activation memory`);
    const id = this.newRegion(buffer, size, new FirstFit(0, size), null);
    this.chunks.push(id);
    return { arena: id, ptr: this.regions.get(id)!.space!.alloc(bytes), bytes };
  }

  free(t: Tensor): void {
    // close gave all memory back: what is freed after it (a KV cache of a request the close cut short) is gone already
    if (this.closed) return;
    // no flush: an op recorded later that writes this memory again runs after the ones recorded before
    const r = this.regions.get(t.arena);
    if (!r?.space) throw new Error(`free: arena ${t.arena} is not activation memory`);
    r.space.free(t.ptr, t.bytes);
  }

  /** The region's buffer from its start to the region's end (a grouped weight's starts at its offset). */
  private viewOf(r: Region): ArrayBuffer {
    r.view ??= this.ggml.koffi.view(this.g.bufferGetBase(r.buffer), r.offset + r.size);
    return r.view;
  }

  /** A weight's bytes as held. */
  private heldBytes(r: Region): Uint8Array {
    return new Uint8Array(this.viewOf(r), r.offset, r.size);
  }

  /**
   * Gives a region's buffer back, or a grouped weight's share of its group's, and the weight bytes that go with
   * it out of memoryUsage's count: a group's when its last member goes (until then the buffer holds them all).
   */
  private releaseBuffer(r: Region): void {
    const group = r.weight?.group;
    if (!group) {
      if (r.weight) this.weightBytes -= r.size;
      return this.g.bufferFree(r.buffer);
    }
    if (--group.users > 0) return;
    this.weightBytes -= group.bytes;
    this.g.bufferFree(group.buffer);
  }

  f32(t: Tensor, offset = 0, length?: number): Float32Array {
    this.flush();
    const n = length ?? t.bytes / 4 - offset;
    return new Float32Array(this.viewAt(t, offset * 4, n * 4), t.ptr + offset * 4, n);
  }

  i32(t: Tensor, offset = 0, length?: number): Int32Array {
    this.flush();
    const n = length ?? t.bytes / 4 - offset;
    return new Int32Array(this.viewAt(t, offset * 4, n * 4), t.ptr + offset * 4, n);
  }

  /** The view over t's buffer, once bytes at t.ptr + offset are checked to lie in it. */
  private viewAt(t: Tensor, offset: number, bytes: number): ArrayBuffer {
    const r = this.regions.get(t.arena);
    const at = t.ptr + offset;
    if (!r || !Number.isInteger(at) || at < 0 || bytes < 0 || at + bytes > r.size) throw new Error(`view of ${bytes} bytes at offset ${at} of arena ${t.arena}: outside the memory this backend holds`);
    return this.viewOf(r);
  }

  private weightRegion(w: WeightTensor): Region & { weight: NonNullable<Region["weight"]> } {
    const r = this.regions.get(w.arena);
    if (!r?.weight) throw new Error(`weight in arena ${w.arena}, which this backend does not hold (freed?)`);
    return r as Region & { weight: NonNullable<Region["weight"]> };
  }

  /** A weight's bytes in ggml's plain layout of its type: its memory itself, or for a repacked weight a copy unpacked. */
  private plain(w: WeightTensor): Uint8Array {
    this.flush();
    const r = this.weightRegion(w);
    const bytes = this.heldBytes(r);
    return r.weight.repacked ? unpackX8(REPACKED[w.dtype]!, bytes, w.rows, w.cols) : bytes;
  }

  /** Writes a whole weight: `fill` gets its bytes in ggml's plain layout (a repacked weight is repacked by ggml after). */
  private write(w: WeightTensor, fill: (dst: Uint8Array) => void): void {
    this.flush();
    let r = this.weightRegion(w);
    if (r.weight.mapped) r = this.detach(w, r);
    if (!r.weight.repacked) return fill(this.heldBytes(r));
    const dst = new Uint8Array(r.size);
    fill(dst);
    // CPU_REPACK takes a tensor's data in one whole write only
    this.g.tensorSet(r.weight.tensor, dst, 0, r.size);
  }

  supportsWeight(dtype: WeightDType, cols: number): boolean {
    return layoutBytes(dtype, 1, cols) !== null;
  }

  allocWeight(dtype: WeightDType, rows: number, cols: number, use: WeightUse = "products"): WeightTensor {
    if (this.closed) throw new Error("the native backend is closed");
    if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 1 || cols < 1) throw new Error(`allocWeight: a ${rows}×${cols} weight`);
    const bytes = layoutBytes(dtype, rows, cols);
    if (bytes === null) throw new Error(`a ${rows}×${cols} weight cannot be held as ${dtype}: its rows must be a multiple of ${dtype === "bf16" || dtype === "f16" ? 8 : kQuantBlocks(dtype) ? 256 : 32}`);
    const type = WEIGHT_TYPE[dtype];
    // q4 and q4_k matrices go where llama.cpp puts them, ggml's repacked layout (much faster products), where ggml takes the shape
    // an embedding table (only looked up by rows) keeps the file's layout: ggml's get_rows reads it in the graph
    const repack = use === "products" && REPACKED[dtype] && rows % 8 === 0 ? this.repackBuft(dtype) : null;
    let placed = this.placeWeight(type, rows, cols, repack);
    if (placed && repack && !this.productSupported(placed.tensor, cols)) {
      this.g.bufferFree(placed.buffer);
      this.g.free(placed.ctx);
      placed = null;
    }
    const where = placed ?? this.placeWeight(type, rows, cols, null);
    if (!where) throw new Error(`out of memory: cannot allocate a ${rows}×${cols} ${dtype} weight`);
    this.g.bufferSetUsage(where.buffer, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    const size = this.g.nbytes(where.tensor);
    const arena = this.newRegion(where.buffer, size, null, { ctx: where.ctx, tensor: where.tensor, type, repacked: where === placed && repack !== null, mapped: false });
    this.weightBytes += size;
    return { arena, ptr: 0, bytes, dtype, rows, cols, scales: 0 };
  }

  /**
   * `count` weights laid one after another in one buffer (repacked where allocWeight would repack them): a
   * layer's experts, which moeTopK then takes as one stack whatever file they came from. Each is freed on its
   * own; the buffer goes with the last. Weights later mapped from a file leave it for their mapping.
   */
  allocWeights(dtype: WeightDType, count: number, rows: number, cols: number): WeightTensor[] {
    if (!Number.isInteger(count) || count < 1) throw new Error(`allocWeights: ${count} weights`);
    const first = this.allocWeight(dtype, rows, cols);
    const r = this.weightRegion(first);
    const size = r.size;
    // one at a time where one buffer cannot hold them back to back (ggml wants tensors at aligned addresses)
    if (count === 1 || size % 64 !== 0) return [first, ...Array.from({ length: count - 1 }, () => this.allocWeight(dtype, rows, cols))];
    const buft = r.weight.repacked ? this.repackBuft(dtype)! : this.cpuBuft;
    this.freeWeight(first);
    const buffer = this.g.buftAllocBuffer(buft, size * count);
    if (!buffer) throw new Error(`out of memory: cannot allocate ${count} ${rows}×${cols} ${dtype} weights`);
    this.g.bufferSetUsage(buffer, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    const group: WeightGroup = { buffer, bytes: size * count, users: 0 };
    this.weightBytes += group.bytes;
    const base = this.ggml.address(this.g.bufferGetBase(buffer));
    const type = WEIGHT_TYPE[dtype], bytes = layoutBytes(dtype, rows, cols)!;
    return Array.from({ length: count }, (_, i) => {
      const placed = this.weightAt(buffer, type, cols, rows, base + i * size);
      if (!placed) throw new Error(`ggml_backend_tensor_alloc refused a ${rows}×${cols} ${dtype} weight in its group`);
      const { ctx, tensor } = placed;
      group.users++;
      const arena = this.nextRegion++;
      this.regions.set(arena, { buffer, base: base + i * size, size, offset: i * size, space: null, weight: { ctx, tensor, type, repacked: r.weight.repacked, mapped: false, group }, view: null });
      return { arena, ptr: 0, bytes, dtype, rows, cols, scales: 0 };
    });
  }

  /** A [cols, rows] weight tensor of `type` in a context of its own, placed at `address` in `buffer`; null where ggml refuses. */
  private weightAt(buffer: Ptr, type: number, cols: number, rows: number, address: number): { ctx: Ptr; tensor: Ptr } | null {
    const ctx = this.g.init({ mem_size: this.g.tensorOverhead() + 256, mem_buffer: null, no_alloc: true });
    const tensor = this.g.newTensor2d(ctx, type, cols, rows);
    if (this.g.tensorAlloc(buffer, tensor, address) === 0) return { ctx, tensor };
    this.g.free(ctx);
    return null;
  }

  /** A weight tensor in its own buffer of buft (the plain CPU one when null); null when it cannot be allocated. */
  private placeWeight(type: number, rows: number, cols: number, buft: Ptr | null): { ctx: Ptr; tensor: Ptr; buffer: Ptr } | null {
    const ctx = this.g.init({ mem_size: this.g.tensorOverhead() + 256, mem_buffer: null, no_alloc: true });
    const tensor = this.g.newTensor2d(ctx, type, cols, rows);
    const buffer = this.g.allocCtxTensorsFromBuft(ctx, buft ?? this.cpuBuft);
    if (!buffer) {
      this.g.free(ctx);
      return null;
    }
    return { ctx, tensor, buffer };
  }

  /** Whether ggml's CPU device computes a product with this weight as placed (asked before any data reaches it). */
  private productSupported(weight: Ptr, cols: number): boolean {
    const ctx = this.g.init({ mem_size: this.g.tensorOverhead() * 4 + 256, mem_buffer: null, no_alloc: true });
    try {
      const x = this.g.newTensor2d(ctx, GgmlType.F32, cols, 1);
      return this.g.devSupportsOp(this.ggml.cpuDevice, this.g.mulMat(ctx, weight, x));
    } finally {
      this.g.free(ctx);
    }
  }

  /**
   * ggml's CPU_REPACK buffer type for dtype, once checked: a probe weight repacked by ggml must unpack (unpackX8)
   * to what went in, or weightData could not give its bytes back, and the repacked layout is not used for dtype.
   */
  private repackBuft(dtype: WeightDType): Ptr | null {
    if (this.repack.has(dtype)) return this.repack.get(dtype)!;
    this.repack.set(dtype, null);
    const layout = REPACKED[dtype]!;
    const buft = this.ggml.extraBufts.find((b) => this.g.buftName(b) === "CPU_REPACK");
    if (!buft) return null;
    const rows = 8, cols = 2 * GGML_BLOCK_TYPES[layout.blocks].values;
    const probe = this.placeWeight(WEIGHT_TYPE[dtype], rows, cols, buft);
    if (!probe) return null;
    try {
      if (!this.productSupported(probe.tensor, cols)) return null;
      const size = this.g.nbytes(probe.tensor), blockBytes = GGML_BLOCK_TYPES[layout.blocks].bytes;
      const blocks = new Uint8Array(size).map((_, i) => (i * 37 + 11) & 0xff);
      // scales (and Q4_K's mins) of 1.0
      for (let b = 0; b < size; b += blockBytes) blocks.set(layout.blocks === "Q4_0" ? [0x00, 0x3c] : [0x00, 0x3c, 0x00, 0x3c], b);
      this.g.tensorSet(probe.tensor, blocks, 0, size);
      const held = new Uint8Array(this.ggml.koffi.view(this.g.getData(probe.tensor), size));
      const back = unpackX8(layout, held, rows, cols);
      if (back.every((v, i) => v === blocks[i])) this.repack.set(dtype, buft);
    } finally {
      this.g.bufferFree(probe.buffer);
      this.g.free(probe.ctx);
    }
    return this.repack.get(dtype)!;
  }

  /** Whether the weight is mapped from its file (see NativeBackendOptions.mmap). */
  isMapped(w: WeightTensor): boolean {
    return this.weightRegion(w).weight.mapped;
  }

  /** Frees the graphs over w, whose ggml tensor is about to go: a cached graph would compute with a freed tensor. */
  private dropWeightGraphs(w: WeightTensor): void {
    this.weightChanges++;
    this.endTapes();
    for (const [key, gr] of this.graphs) if (key.includes(`|w${w.arena}|`)) this.dropGraph(gr);
  }

  /** How many files are mapped now. */
  mappedFiles(): number {
    return this.mapped.size;
  }

  /** A weight's memory is given up: the file mapping it lay in goes when no other weight lies in it. */
  private unmapUser(r: Region): void {
    const key = r.weight?.mapKey, m = key === undefined ? undefined : this.mapped.get(key);
    if (!m || --m.users > 0) return;
    this.mapped.delete(key!);
    m.unmap();
  }

  /** Whether ggml holds the weight in its repacked layout (q4 and q4_k matrices whose shape ggml repacks). */
  isRepacked(w: WeightTensor): boolean {
    return this.weightRegion(w).weight.repacked;
  }

  freeWeight(w: WeightTensor): void {
    if (this.closed) return;
    this.flush();
    const r = this.weightRegion(w);
    this.regions.delete(w.arena);
    this.dropWeightGraphs(w);
    this.releaseBuffer(r);
    this.g.free(r.weight.ctx);
    this.unmapUser(r);
  }

  weightData(w: WeightTensor): Uint8Array {
    const bytes = this.plain(w);
    // f32, bf16, f16 and the K-quants leave as ggml holds them; q8 and q4 in the wasm kernels' layout
    if (!isBlockDType(w.dtype)) return this.weightRegion(w).weight.repacked ? bytes : bytes.slice();
    const out = new Uint8Array(w.bytes);
    layoutFromBlocks(w.dtype as "q8" | "q4", w.rows, w.cols, bytes, out);
    return out;
  }

  setWeightData(w: WeightTensor, data: Uint8Array): void {
    this.weightRegion(w);
    if (data.length !== w.bytes) throw new Error(`setWeightData: ${data.length} bytes for a ${w.rows}×${w.cols} ${w.dtype} weight of ${w.bytes}`);
    this.write(w, (dst) => {
      if (isBlockDType(w.dtype)) blocksFromLayout(w.dtype as "q8" | "q4", w.rows, w.cols, data, dst);
      else dst.set(data);
    });
  }

  setWeight(w: WeightTensor, values: Float32Array): void {
    if (values.length !== w.rows * w.cols) throw new Error(`setWeight: ${values.length} values for a ${w.rows}×${w.cols} weight`);
    this.write(w, (dst) => this.storeRows(w, dst, 0, w.rows, values));
  }

  /** Rows r0.. of w, as plain bytes in dst, from f32 values converted to w's type as ggml converts (ggml_quantize_chunk). */
  private storeRows(w: WeightTensor, dst: Uint8Array, r0: number, rows: number, values: Float32Array): void {
    const type = this.weightRegion(w).weight.type;
    const rowBytes = this.g.rowSize(type, w.cols);
    const part = dst.subarray(r0 * rowBytes, (r0 + rows) * rowBytes);
    if (type === GgmlType.F32) part.set(new Uint8Array(values.buffer, values.byteOffset, rows * rowBytes));
    else this.g.quantizeChunk(type, values.subarray(0, rows * w.cols), part, 0, rows, w.cols, null);
  }

  loadWeight(w: WeightTensor, src: WeightSource): void {
    this.flush();
    const srcBlocks = isGgmlBlockType(src.dtype) ? src.dtype : null;
    if (srcBlocks && w.cols % GGML_BLOCK_TYPES[srcBlocks].values !== 0) throw new Error(`${src.file}: a ${srcBlocks} tensor's rows hold ${w.cols} values, not a multiple of ${GGML_BLOCK_TYPES[srcBlocks].values}`);
    // the file holds the weight's own type: mapped, or read straight into ggml's memory
    if ((w.dtype === "f32" && src.dtype === "F32") || (w.dtype === "bf16" && src.dtype === "BF16") || (w.dtype === "f16" && src.dtype === "F16") || (srcBlocks && dtypeOfBlocks(srcBlocks) === w.dtype)) {
      if (!this.mapWeight(w, src)) this.write(w, (dst) => readRows(src, dst.length / w.rows, 0, w.rows, dst));
      return;
    }
    // anything else: f32 rows, chunk by chunk, then ggml's conversion to the weight's type
    const srcRowBytes = srcBlocks
      ? (w.cols / GGML_BLOCK_TYPES[srcBlocks].values) * GGML_BLOCK_TYPES[srcBlocks].bytes
      : w.cols * (src.dtype === "F32" ? 4 : 2);
    const chunkRows = Math.max(1, Math.min(w.rows, Math.floor(STAGING_BYTES / (w.cols * 4))));
    const raw = new Uint8Array(chunkRows * srcRowBytes);
    const values = new Float32Array(chunkRows * w.cols);
    this.write(w, (dst) => {
      for (let r0 = 0; r0 < w.rows; r0 += chunkRows) {
        const rows = Math.min(chunkRows, w.rows - r0);
        const part = raw.subarray(0, rows * srcRowBytes);
        readRows(src, srcRowBytes, r0, rows, part);
        const vals = values.subarray(0, rows * w.cols);
        if (srcBlocks) dequantizeBlocks(srcBlocks, part, vals);
        else if (src.dtype === "F32") vals.set(new Float32Array(part.buffer, part.byteOffset, rows * w.cols));
        else widen16(src.dtype as "BF16" | "F16", part, vals);
        this.storeRows(w, dst, r0, rows, vals);
      }
    });
  }

  /**
   * Points w at its bytes in the file, mapped: where mapping is on, the rows are in file order, the weight is
   * not repacked and its bytes are aligned as ggml requires. The buffer allocWeight made is given back.
   */
  private mapWeight(w: WeightTensor, src: WeightSource): boolean {
    const r = this.weightRegion(w);
    if (!this.mmap || src.data || src.rowOrder || r.weight.repacked || src.offset % 32 !== 0) return false;
    const st = fstatSync(src.fd), mapKey = `${st.dev}:${st.ino}`;
    let file = this.mapped.get(mapKey);
    const fileBytes = file?.bytes ?? st.size;
    if (src.offset + r.size > fileBytes) throw new Error(`${src.file}: tensor data ends at byte ${src.offset + r.size}, beyond the file's ${fileBytes}`);
    if (!file) {
      const m = this.ggml.mapFile(src.fd, st.size);
      if (m instanceof Error) return false;
      file = { ...m, bytes: st.size, users: 0 };
      this.mapped.set(mapKey, file);
    }
    const address = file.address + src.offset;
    const buffer = this.g.bufferFromPtr(address, r.size);
    const placed = this.weightAt(buffer, r.weight.type, w.cols, w.rows, address);
    if (!placed) {
      this.g.bufferFree(buffer);
      if (file.users === 0) {
        this.mapped.delete(mapKey);
        file.unmap();
      }
      return false;
    }
    // a weight loaded again: graphs over its old tensor would compute with it
    this.dropWeightGraphs(w);
    this.releaseBuffer(r);
    this.g.free(r.weight.ctx);
    file.users++;
    this.unmapUser(r);
    this.regions.set(w.arena, { buffer, base: address, size: r.size, offset: 0, space: null, weight: { ctx: placed.ctx, tensor: placed.tensor, type: r.weight.type, repacked: false, mapped: true, mapKey }, view: null });
    this.weightBytes += r.size;
    return true;
  }

  /** A mapped weight moved to memory of its own before it is written: other weights may map the same bytes. */
  private detach(w: WeightTensor, r: Region & { weight: NonNullable<Region["weight"]> }): Region & { weight: NonNullable<Region["weight"]> } {
    const own = this.placeWeight(r.weight.type, w.rows, w.cols, null);
    if (!own) throw new Error(`out of memory: cannot allocate a ${w.rows}×${w.cols} ${w.dtype} weight`);
    this.g.bufferSetUsage(own.buffer, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    this.dropWeightGraphs(w);
    this.releaseBuffer(r);
    this.g.free(r.weight.ctx);
    this.unmapUser(r);
    const region = { buffer: own.buffer, base: this.ggml.address(this.g.bufferGetBase(own.buffer)), size: r.size, offset: 0, space: null, weight: { ctx: own.ctx, tensor: own.tensor, type: r.weight.type, repacked: false, mapped: false }, view: null };
    this.regions.set(w.arena, region);
    this.weightBytes += r.size;
    return region;
  }

  memoryUsage() {
    let activations = 0;
    for (const id of this.chunks) activations += this.regions.get(id)!.space!.used;
    return { weights: this.weightBytes, activations, arenas: this.regions.size };
  }

  // ---------------------------------------------------------------- graphs

  /** Called by GraphBuilder: a new tensor over t's memory. */
  bindTensor(ctx: Ptr, t: Tensor, type: number, ne: number[]): Ptr {
    const tensor = ne.length === 1 ? this.g.newTensor1d(ctx, type, ne[0]!) : ne.length === 2 ? this.g.newTensor2d(ctx, type, ne[0]!, ne[1]!) : this.g.newTensor3d(ctx, type, ne[0]!, ne[1]!, ne[2]!);
    this.bindResult(tensor, t);
    return tensor;
  }

  /** Called by GraphBuilder: an (unallocated) tensor placed at t's memory. */
  bindResult(tensor: Ptr, t: Tensor): void {
    const r = this.region(t, this.g.nbytes(tensor), "tensor");
    const status = this.g.tensorAlloc(r.buffer, tensor, r.base + t.ptr);
    if (status !== 0) throw new Error(`ggml_backend_tensor_alloc: status ${status}`);
  }

  viewInit(v: Ptr): void {
    const status = this.g.viewInit(v);
    if (status !== 0) throw new Error(`ggml_backend_view_init: status ${status}`);
  }

  /**
   * Where weights of one type and shape lie one after another, each at the previous one's end, in one file
   * mapping (a GGUF file's merged expert tensor, mapped) or in one group's buffer (allocWeights): the first's
   * address and the group (null: mapped); null where they do not.
   */
  private stackOf(weights: readonly WeightTensor[]): { address: number; group: WeightGroup | null } | null {
    const first = this.weightRegion(weights[0]!);
    if (!first.weight.mapped && !first.weight.group) return null;
    for (let i = 0; i < weights.length; i++) {
      const w = weights[i]!, r = this.weightRegion(w);
      if (r.weight.mapped !== first.weight.mapped || r.weight.mapKey !== first.weight.mapKey || r.weight.group !== first.weight.group) return null;
      if (r.weight.type !== first.weight.type || r.size !== first.size || w.rows !== weights[0]!.rows || w.cols !== weights[0]!.cols) return null;
      if (r.base !== first.base + i * first.size) return null;
    }
    return { address: first.base, group: first.weight.group ?? null };
  }

  /**
   * Called by GraphBuilder: weights that stackOf found stacked, as one 3-D tensor: in their group's buffer (a
   * repacked one is then computed repacked), or for a mapping over a buffer of its own kept with the graph.
   */
  stackTensor(ctx: Ptr, weights: readonly WeightTensor[], buffers: Ptr[]): Ptr {
    const stack = this.stackOf(weights);
    if (!stack) throw new Error("stackTensor: the weights are not one stack");
    const w = weights[0]!, r = this.weightRegion(w);
    let buffer = stack.group?.buffer;
    if (!buffer) {
      buffer = this.g.bufferFromPtr(stack.address, r.size * weights.length);
      buffers.push(buffer);
    }
    const tensor = this.g.newTensor3d(ctx, r.weight.type, w.cols, w.rows, weights.length);
    const status = this.g.tensorAlloc(buffer, tensor, stack.address);
    if (status !== 0) throw new Error(`ggml_backend_tensor_alloc: status ${status}`);
    return tensor;
  }

  private weightTensor(w: WeightTensor): Ptr {
    return this.weightRegion(w).weight.tensor;
  }

  /**
   * Records an op: `key` names it (op, shape, addresses, weights), `work` counts its multiply-adds, `build`
   * adds its nodes to a graph. It runs with the ops recorded after it at the next flush. `reshape`: an op whose
   * key leaves out shapes that change from call to call; its build hands the builder the tensors of those
   * (GraphBuilder.reshapable, once), and `reshape` is given them to set this call's shapes before the graph
   * runs, whether it was built for this call or an earlier one.
   */
  private run(key: string, work: number, build: (b: GraphBuilder) => void, nodes = MAX_OP_NODES, readsMask = false, reshape?: (tensors: unknown) => void): void {
    if (this.closed) throw new Error("the native backend is closed");
    // a recording already spoilt (a flush) keeps nothing: the seam's steps try one every step; an op whose
    // shapes come from this call cannot run again alone
    if (reshape && this.taping) this.taping.valid = false;
    if (this.taping?.valid) this.taping.ops.push({ key, work, build, nodes, readsMask });
    if (reshape) this.pendingReshapes.push(reshape);
    this.pending.push(build);
    this.pendingKey += key;
    this.pendingWork += work;
    this.pendingNodes += nodes;
    // a segment's end is the ops' own: a tape recorded across it runs again alike
    if (this.pending.length >= (this.profiling ? 1 : MAX_SEGMENT_OPS)) this.runPending();
  }

  profileOps(on: boolean): void {
    this.flush();
    this.opTime.clear();
    // tapes are kept: replayTape refuses meanwhile (a tape replayed would run its ops as graphs of many)
    this.profiling = on;
  }

  beginTape(): void {
    if (this.taping) throw new Error("beginTape: a tape is being recorded already");
    this.taping = { ops: [], version: this.tapeVersion, attention: null, valid: true };
  }

  endTape(): OpTape | null {
    const t = this.taping;
    if (!t) throw new Error("endTape: no tape is being recorded");
    this.taping = null;
    if (!t.valid || t.version !== this.tapeVersion || t.ops.length === 0 || this.profiling) return null;
    const ops = t.ops.map((o) => o.key).join("");
    let serial = this.tapeNames.get(ops);
    if (serial === undefined) {
      if (this.tapeNames.size >= this.maxGraphs) this.tapeNames.clear();
      this.tapeNames.set(ops, (serial = ++this.tapes));
    }
    const tape: NativeTape = { ops: t.ops.length, owner: this, taped: t.ops, version: t.version, attention: t.attention, serial, cuts: new Map() };
    return tape;
  }

  /** The tape's ops in the segments run() makes of them after `before` pending ops (see NativeTape.cuts). */
  private static cut(t: NativeTape, before: number): readonly TapeSegment[] {
    const segments: TapeSegment[] = [];
    for (let at = 0, end = MAX_SEGMENT_OPS - before; at < t.taped.length; at = end, end += MAX_SEGMENT_OPS) {
      const ops = t.taped.slice(at, end);
      segments.push({ key: `${TAPE_KEY}${t.serial}:${before}/${segments.length}|`, builds: ops.map((o) => o.build), work: ops.reduce((s, o) => s + o.work, 0), nodes: ops.reduce((s, o) => s + o.nodes, 0), readsMask: ops.some((o) => o.readsMask) });
    }
    t.cuts.set(before, segments);
    return segments;
  }

  /** Ends every tape (a weight freed, a scratch tensor replaced), and drops the graphs named by one. */
  private endTapes(): void {
    // a replayed segment still pending would be built under its ended tape's name after the drop, and kept
    this.runPending();
    this.tapeVersion++;
    this.tapeNames.clear();
    for (const [key, gr] of this.graphs) if (key.includes(TAPE_KEY)) this.dropGraph(gr);
  }

  replayTape(tape: OpTape, start: number): boolean {
    const t = tape as NativeTape;
    if (this.closed || this.taping || this.profiling || t.owner !== this || t.version !== this.tapeVersion) return false;
    const a = t.attention;
    if (a) {
      checkCount(start, "replayTape start");
      // the cache must hold the new rows (as attention checks), and the graphs cover the span they were built for
      if (start + a.rows > a.held || attentionSpan(a.rows, start + a.rows, a.held) !== a.span) return false;
      this.prepareMask(a.rows, start, a.span);
    }
    const before = this.pending.length;
    for (const seg of t.cuts.get(before) ?? NativeBackend.cut(t, before)) {
      // as run() would leave them: each segment but the last fills the graph up and runs
      this.pending.push(...seg.builds);
      this.pendingKey += seg.key;
      this.pendingWork += seg.work;
      this.pendingNodes += seg.nodes;
      if (seg.readsMask) this.maskRead = true;
      if (this.pending.length >= MAX_SEGMENT_OPS) this.runPending();
    }
    return true;
  }

  /**
   * Runs the ops recorded so far as one graph, in the order recorded (ggml computes a graph's nodes in the
   * order they were added, each after the one before has finished on every thread, so an op reading memory
   * an earlier one wrote sees its result). Everything that lets JavaScript read or write backend memory
   * flushes first. `pinned`: on the pool whatever the measurements say (the probes).
   */
  private flush(pinned = false): void {
    // JavaScript reads or writes memory here: what a tape being recorded holds would not run again alone
    if (this.taping) this.taping.valid = false;
    this.runPending(pinned);
  }

  private runPending(pinned = false): void {
    const n = this.pending.length;
    if (n === 0) return;
    const key = this.pendingKey, work = this.pendingWork, nodes = this.pendingNodes, builds = this.pending.splice(0, n);
    const reshapes = this.pendingReshapes.splice(0, this.pendingReshapes.length);
    this.pendingNodes = 0;
    this.pendingKey = "";
    this.pendingWork = 0;
    this.maskRead = false;
    this.routeRead = false;
    const gr = this.graphFor(key, work, nodes, builds);
    reshapes.forEach((reshape, i) => reshape(gr.reshapable[i]));
    if (pinned) return this.compute(this.pooled, gr);
    if (gr.work < PARALLEL_MIN_WORK || this.threads === 1) return this.compute(this.single, gr);
    // an op timed alone (profileOps) and big enough runs on the pool, uncompared: its graph of one op would count in
    // the size class by which the steps' segments, ops together, are run once profiling is off
    if (this.profiling) return this.compute(this.pooled, gr);
    // ggml's threads meet at a barrier after every node, spinning: when the machine is busy (other processes, a
    // device beside the base station) a worker that is not scheduled holds the graph up for a time slice, and
    // the pool is slower than one thread (measured here: 10× at load 7 on 2 cores). So big graphs run on the
    // pool unless, compared graph by graph (times of different graphs are not comparable), it has lately been
    // slower than one thread on graphs of the size (see EXPLORE_EVERY).
    const sizeClass = (this.sizeClasses[Math.floor(Math.log2(gr.work) / 2)] ??= { logPoolOverSingle: [], onPool: true, untilExplore: EXPLORE_EVERY, every: EXPLORE_EVERY, exploring: 0, wasOnPool: true });
    const onPool = sizeClass.onPool;
    if (sizeClass.exploring === 0 && --sizeClass.untilExplore === 0) {
      sizeClass.every = onPool === sizeClass.wasOnPool ? Math.min(EXPLORE_EVERY_MAX, sizeClass.every * 2) : EXPLORE_EVERY;
      sizeClass.untilExplore = sizeClass.every;
      sizeClass.wasOnPool = onPool;
      sizeClass.exploring = EXPLORE_RUNS;
    }
    const exploring = sizeClass.exploring > 0, timed = sizeClass.exploring !== EXPLORE_RUNS;
    if (exploring) sizeClass.exploring--;
    const pooled = exploring ? !onPool : onPool;
    const t0 = process.hrtime.bigint();
    this.compute(pooled ? this.pooled : this.single, gr);
    if (!timed) return;
    const ns = Number(process.hrtime.bigint() - t0);
    if (pooled) gr.pooledNs = ns;
    else gr.singleNs = ns;
    // a fresh time of one kind against the graph's last of the other
    if (exploring && gr.pooledNs > 0 && gr.singleNs > 0) {
      const samples = sizeClass.logPoolOverSingle;
      samples.push(Math.log(gr.pooledNs / gr.singleNs));
      if (samples.length > POOL_SAMPLES) samples.shift();
      sizeClass.onPool = samples.length < POOL_SAMPLES || median(samples) <= Math.log(POOL_SLOWER);
    }
  }

  /** The graph of the ops recorded under `key`: one run before, or built now (dropping the least recently run past maxGraphs). */
  private graphFor(key: string, work: number, nodes: number, builds: ReadonlyArray<(b: GraphBuilder) => void>): Graph {
    const recent = this.recentGraphs;
    // a key of another length differs without a look at its characters
    let at = recent.findIndex((g) => g.key.length === key.length && g.key === key);
    let gr = at >= 0 ? recent[at]! : this.graphs.get(key);
    if (!gr) {
      gr = this.build(key, work, nodes, builds);
      this.graphs.set(key, gr);
    }
    gr.lastRun = ++this.flushes;
    if (at !== 0) {
      if (at < 0) at = recent.length < RECENT_GRAPHS ? recent.length : RECENT_GRAPHS - 1;
      recent.splice(at, 1);
      recent.unshift(gr);
    }
    if (this.graphs.size > this.maxGraphs) {
      let oldest = gr;
      for (const g of this.graphs.values()) if (g.lastRun < oldest.lastRun) oldest = g;
      this.dropGraph(oldest);
    }
    return gr;
  }

  private compute(backend: Ptr, gr: Graph): void {
    if (backend === this.pooled) this.poolAwake = this.threadpool !== null;
    else if (this.poolAwake) {
      // workers still polling after a pool graph would take the core this one-thread graph runs on from it
      // (measured on brown-moe's decode, whose small graphs run on one thread: ~1.7× faster paused); the next
      // pool graph wakes them
      this.g.threadpoolPause(this.threadpool!);
      this.poolAwake = false;
    }
    const t0 = performance.now();
    const status = this.g.graphCompute(backend, gr.graph);
    const ms = performance.now() - t0;
    this.graphTime.ms += ms;
    this.graphTime.graphs++;
    if (this.profiling) {
      // one op's graph: its key starts with the op's name
      const name = gr.key.slice(0, gr.key.indexOf("|")), op = this.opTime.get(name);
      if (op) {
        op.graphs++;
        op.ms += ms;
      } else this.opTime.set(name, { graphs: 1, ms });
    }
    if (status !== 0) throw new Error(`ggml_backend_graph_compute: status ${status}`);
  }

  private build(key: string, work: number, nodes: number, builds: ReadonlyArray<(b: GraphBuilder) => void>): Graph {
    const g = this.g;
    const ctx = g.init({ mem_size: g.tensorOverhead() * nodes * 2 + g.graphOverheadCustom(nodes, false) + 4096, mem_buffer: null, no_alloc: true });
    const b = new GraphBuilder(this, ctx);
    try {
      for (const build of builds) build(b);
      const graph = g.newGraphCustom(ctx, nodes, false);
      for (const t of b.outputs) g.buildForward(graph, t);
      // intermediate results get a buffer of their own; null when there are none
      const buffer = g.allocCtxTensorsFromBuft(ctx, this.cpuBuft);
      return { key, lastRun: 0, ctx, graph, buffer, stackBuffers: b.stackBuffers, reshapable: b.reshapable, work, pooledNs: NaN, singleNs: NaN };
    } catch (e) {
      for (const buf of b.stackBuffers) g.bufferFree(buf);
      g.free(ctx);
      throw e;
    }
  }

  private dropGraph(gr: Graph): void {
    this.graphs.delete(gr.key);
    const at = this.recentGraphs.indexOf(gr);
    if (at >= 0) this.recentGraphs.splice(at, 1);
    if (gr.buffer) this.g.bufferFree(gr.buffer);
    for (const buf of gr.stackBuffers) this.g.bufferFree(buf);
    this.g.free(gr.ctx);
  }

  private static key(op: string, ...parts: Array<Tensor | number>): string {
    let k = op;
    for (const p of parts) k += typeof p === "number" ? `|${p}` : `|${p.arena}:${p.ptr}`;
    return k + "|";
  }

  // ---------------------------------------------------------------- ops

  matmul(y: Tensor, x: Tensor, w: WeightTensor, rows: number): void {
    this.matmulMany(x, [[y, w]], rows);
  }

  matmulMany(x: Tensor, products: ReadonlyArray<readonly [Tensor, WeightTensor]>, rows: number): void {
    checkCount(rows, "matmul rows");
    if (products.length > MAX_PRODUCTS) throw new Error(`matmulMany: ${products.length} products, at most ${MAX_PRODUCTS} in one call`);
    if (rows === 0 || products.length === 0) return;
    const K = products[0]![1].cols;
    this.region(x, rows * K * 4, "matmul input");
    let key = NativeBackend.key("mm", x, rows);
    let work = 0;
    for (const [y, w] of products) {
      this.weightTensor(w);
      if (w.cols !== K) throw new Error(`matmulMany: weights of widths ${K} and ${w.cols} cannot share an input`);
      this.region(y, rows * w.rows * 4, "matmul output");
      key += `w${w.arena}|${y.arena}:${y.ptr}|`;
      work += rows * K * w.rows;
    }
    this.run(key, work, (b) => {
      const xt = b.bind(x, GgmlType.F32, K, rows);
      for (const [y, w] of products) b.outputs.push(b.into(this.g.mulMat(b.ctx, this.weightTensor(w), xt), y));
    });
  }

  embed(out: Tensor, table: WeightTensor, ids: ArrayLike<number>): void {
    const n = ids.length, K = table.cols;
    if (n === 0) return;
    this.region(out, n * K * 4, "embedding output");
    const tr = this.weightRegion(table), tt = tr.weight.tensor;
    for (let i = 0; i < n; i++) {
      const id = ids[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= table.rows) throw new Error(`token id ${id} is outside the vocabulary (0..${table.rows - 1})`);
    }
    if (tr.weight.repacked) {
      // ggml has no row lookup in the repacked layout: the rows' blocks unpacked and dequantized here
      const held = this.heldBytes(tr), y = this.f32(out, 0, n * K);
      const layout = REPACKED[table.dtype]!;
      for (let i = 0; i < n; i++) dequantizeBlocks(layout.blocks, layout.unpackRow(held, ids[i]!, K), y.subarray(i * K, (i + 1) * K));
      return;
    }
    if (!this.scratchIds || this.scratchIds.bytes < n * 4) {
      if (this.scratchIds) this.free(this.scratchIds);
      this.scratchIds = this.alloc(Math.max(n * 4, 4096));
      this.endTapes();
    }
    const idBuf = this.scratchIds;
    const view = this.i32(idBuf, 0, n);
    for (let i = 0; i < n; i++) view[i] = ids[i]!;
    this.run(NativeBackend.key("embed", out, idBuf, n) + `w${table.arena}|`, n * K, (b) => {
      b.outputs.push(b.into(this.g.getRows(b.ctx, tt, b.bind(idBuf, GgmlType.I32, n)), out));
    });
  }

  /** A vector weight (norm, bias) of n f32 values. */
  private vector(w: WeightTensor, n: number, what: string): Ptr {
    const t = this.weightTensor(w);
    if (w.dtype !== "f32" || w.rows !== 1 || w.cols !== n) throw new Error(`${what}: a ${w.rows}×${w.cols} ${w.dtype} weight where an f32 vector of ${n} is needed`);
    return t;
  }

  rmsnorm(y: Tensor, x: Tensor, w: WeightTensor, rows: number, n: number, eps: number): void {
    checkCount(rows, "rmsnorm rows");
    checkCount(n, "rmsnorm width");
    if (!(eps >= 0)) throw new Error(`rmsnorm: epsilon ${eps} (ggml aborts on one that is not ≥ 0)`);
    if (rows === 0 || n === 0) return;
    this.region(x, rows * n * 4, "rmsnorm input");
    this.region(y, rows * n * 4, "rmsnorm output");
    const wt = this.vector(w, n, "rmsnorm");
    this.run(NativeBackend.key("rmsnorm", y, x, rows, n, eps) + `w${w.arena}|`, rows * n, (b) => {
      const normed = this.g.rmsNorm(b.ctx, b.bind(x, GgmlType.F32, n, rows), eps);
      b.outputs.push(b.into(this.g.mul(b.ctx, normed, wt), y));
    });
  }

  ropeTable(positions: number, headDim: number, theta: number): RopeTable {
    checkCount(positions, "rotary positions");
    if (!Number.isInteger(headDim) || headDim < 2 || headDim % 2) throw new Error(`rotary table: head size ${headDim} is not even`);
    if (!(theta > 0) || !Number.isFinite(theta)) throw new Error(`rotary table: base ${theta}`);
    // ggml computes the angles itself (rope): nothing to hold but the parameters
    return { positions, headDim, theta };
  }

  rope(x: Tensor, rows: number, heads: number, headDim: number, positions: Tensor, table: RopeTable): void {
    checkCount(rows, "rope rows");
    checkCount(heads, "rope heads");
    if (rows === 0 || heads === 0) return;
    if (table.headDim !== headDim) throw new Error(`rope: a table for head size ${table.headDim} used with ${headDim}`);
    this.region(x, rows * heads * headDim * 4, "rope input");
    // checked here, not when the graph is built at a flush: an error there would reach whoever flushes
    this.region(positions, rows * 4, "rope positions");
    // positions are written by JavaScript, never by an op: read as they are, without running what is recorded
    const pos = new Int32Array(this.viewAt(positions, 0, rows * 4), positions.ptr, rows);
    for (let i = 0; i < rows; i++) {
      if (pos[i]! < 0 || pos[i]! >= table.positions) throw new Error(`position ${pos[i]} is beyond the rotary table (${table.positions} positions)`);
    }
    // ggml's NEOX mode is Hugging Face's rotate-half; it computes the angles itself, as llama.cpp does
    this.run(NativeBackend.key("rope", x, positions, rows, heads, headDim, table.theta), rows * heads * headDim, (b) => {
      const xt = b.bind(x, GgmlType.F32, headDim, heads, rows);
      const pt = b.bind(positions, GgmlType.I32, rows);
      b.outputs.push(b.view(this.g.ropeExtInplace(b.ctx, xt, pt, null, headDim, GGML_ROPE_TYPE_NEOX, 0, table.theta, 1, 0, 1, 0, 0)));
    });
  }

  setRows(dst: Tensor, src: Tensor, rows: number, width: number, at: Tensor): void {
    checkCount(rows, "setRows rows");
    checkCount(width, "setRows width");
    if (rows === 0 || width === 0) return;
    const capacity = Math.floor(dst.bytes / (width * 4));
    this.region(src, rows * width * 4, "setRows source");
    this.region(dst, capacity * width * 4, "setRows destination");
    // checked here, not when the graph is built at a flush (see rope)
    this.region(at, rows * 4, "setRows indices");
    // written by JavaScript, never by an op: read as they are, without running what is recorded (ggml aborts on a row out of range)
    const idx = new Int32Array(this.viewAt(at, 0, rows * 4), at.ptr, rows);
    for (let i = 0; i < rows; i++) if (!(idx[i]! >= 0 && idx[i]! < capacity)) throw new Error(`setRows: row ${idx[i]} of a tensor of ${capacity} rows`);
    this.run(NativeBackend.key("setrows", dst, src, at, rows, width, capacity), rows * width, (b) => {
      b.outputs.push(b.view(this.g.setRows(b.ctx, b.bind(dst, GgmlType.F32, width, capacity), b.bind(src, GgmlType.F32, width, rows), b.bind(at, GgmlType.I32, rows))));
    });
  }

  attention(out: Tensor, q: Tensor, k: Tensor, v: Tensor, rows: number, start: number, heads: number, kvHeads: number, headDim: number): void {
    checkCount(rows, "attention rows");
    checkCount(start, "attention start");
    for (const [val, what] of [[heads, "heads"], [kvHeads, "kv heads"], [headDim, "head size"]] as const) {
      if (!Number.isInteger(val) || val < 1) throw new Error(`attention: ${what} ${val}`);
    }
    if (heads % kvHeads !== 0) throw new Error(`attention: ${heads} heads cannot share ${kvHeads} kv heads`);
    if (rows === 0) return;
    const len = start + rows, qDim = heads * headDim, kvDim = kvHeads * headDim;
    this.region(q, rows * qDim * 4, "attention queries");
    this.region(out, rows * qDim * 4, "attention output");
    this.region(k, len * kvDim * 4, "key cache");
    this.region(v, len * kvDim * 4, "value cache");
    // A decode step's graph covers the cache up to a multiple of KV_PAD positions (what llama.cpp does), so
    // that it is built once per KV_PAD tokens, not per token; the mask hides the positions beyond len, and
    // ggml's flash-attention kernel skips masked positions without reading them (they hold no values yet).
    const held = Math.floor(Math.min(k.bytes, v.bytes) / (kvDim * 4));
    const span = attentionSpan(rows, len, held);
    if (this.taping) {
      const a = this.taping.attention;
      if (!a) this.taping.attention = { rows, start, span, held };
      else if (a.rows !== rows || a.start !== start || a.span !== span || a.held !== held) this.taping.valid = false;
    }
    const mask = this.prepareMask(rows, start, span);
    const g = this.g, scale = 1 / Math.sqrt(headDim);
    this.maskRead = true;
    this.run(NativeBackend.key("attn", out, q, k, v, mask, rows, span, heads, kvHeads, headDim), rows * heads * len * headDim * 2, (b) => {
      // q [hd, rows, heads]; k, v [hd, span, kvHeads]: head h reads kv head h / (heads / kvHeads)
      const qt = b.view(g.permute(b.ctx, b.bind(q, GgmlType.F32, headDim, heads, rows), 0, 2, 1, 3));
      const kt = b.view(g.permute(b.ctx, b.bind(k, GgmlType.F32, headDim, kvHeads, span), 0, 2, 1, 3));
      const vt = b.view(g.permute(b.ctx, b.bind(v, GgmlType.F32, headDim, kvHeads, span), 0, 2, 1, 3));
      const fa = g.flashAttnExt(b.ctx, qt, kt, vt, b.bind(mask, GgmlType.F16, span, rows), scale, 0, 0);
      if (!g.devSupportsOp(this.ggml.cpuDevice, fa)) throw new Error(`attention: ggml's CPU flash attention does not take these shapes (${heads}/${kvHeads} heads of ${headDim})`);
      // the result is [hd, heads, rows]: the output's own layout
      b.outputs.push(b.into(fa, out));
    }, MAX_OP_NODES, true);
  }

  /** The attention mask for `rows` queries at positions start.. over `span` cached positions, written where it holds another. */
  private prepareMask(rows: number, start: number, span: number): Tensor {
    if (!this.mask || this.mask.bytes < rows * span * 2) {
      // new memory may be memory freed that recorded ops still use: they run before JavaScript writes it
      this.flush();
      if (this.mask) this.free(this.mask);
      this.mask = this.alloc(Math.max(rows * span * 2, KV_PAD * 2));
      this.maskHolds = "";
      this.endTapes();
    }
    const mask = this.mask;
    // the mask is written when it changes (the layers of a step share it): a recorded attention op reads it, so
    // what is recorded runs first if it holds one (a step's ops before its first attention do not)
    const holds = `${rows}|${start}|${span}`;
    if (this.maskHolds !== holds) {
      if (this.maskRead) this.flush();
      // F16 mask [rows][span]: 0 where row i may look (positions ≤ start + i), -inf elsewhere
      const m = new Uint16Array(this.viewOf(this.regions.get(mask.arena)!), mask.ptr, rows * span);
      for (let i = 0; i < rows; i++) {
        m.fill(0, i * span, i * span + start + i + 1);
        m.fill(F16_MINUS_INFINITY, i * span + start + i + 1, (i + 1) * span);
      }
      this.maskHolds = holds;
    }
    return mask;
  }

  siluMul(h: Tensor, gt: Tensor, u: Tensor, n: number): void {
    checkCount(n, "siluMul length");
    if (n === 0) return;
    for (const [t, what] of [[h, "siluMul output"], [gt, "siluMul gate"], [u, "siluMul up"]] as const) this.region(t, n * 4, what);
    this.run(NativeBackend.key("silu", h, gt, u, n), n * 8, (b) => {
      b.outputs.push(b.into(this.g.swigluSplit(b.ctx, b.bind(gt, GgmlType.F32, n), b.bind(u, GgmlType.F32, n)), h));
    });
  }

  ffn(out: Tensor, x: Tensor, w: FfnWeightSet, rows: number): void {
    const { gate, up, down } = w;
    const F = gate.rows, K = gate.cols;
    if (up.rows !== F || up.cols !== K || down.rows !== K || down.cols !== F) {
      throw new Error(`ffn: gate ${gate.rows}×${gate.cols}, up ${up.rows}×${up.cols} and down ${down.rows}×${down.cols} do not make one feed-forward block`);
    }
    checkCount(rows, "ffn rows");
    if (rows === 0) return;
    this.region(x, rows * K * 4, "ffn input");
    this.region(out, rows * K * 4, "ffn output");
    const [gt, ut, dt] = [gate, up, down].map((t) => this.weightTensor(t));
    if (!this.ffnScratch || this.ffnScratch.bytes < 2 * rows * F * 4) {
      if (this.ffnScratch) this.free(this.ffnScratch);
      this.ffnScratch = this.alloc(2 * rows * F * 4);
      this.endTapes();
    }
    const scratch = this.ffnScratch;
    const gs = { arena: scratch.arena, ptr: scratch.ptr, bytes: rows * F * 4 }, us = { arena: scratch.arena, ptr: scratch.ptr + rows * F * 4, bytes: rows * F * 4 };
    // one graph, as llama.cpp's: gate and up products, SiLU(gate)·up written over gate's activations, down
    this.run(NativeBackend.key("ffn", out, x, scratch, rows) + `w${gate.arena}|w${up.arena}|w${down.arena}|`, 3 * rows * K * F, (b) => {
      const xt = b.bind(x, GgmlType.F32, K, rows);
      const g = b.into(this.g.mulMat(b.ctx, gt, xt), gs), u = b.into(this.g.mulMat(b.ctx, ut, xt), us);
      const h = b.into(this.g.swigluSplit(b.ctx, g, u), gs);
      b.outputs.push(b.into(this.g.mulMat(b.ctx, dt, h), out));
    });
  }

  moeTopK(out: Tensor, h: Tensor, router: WeightTensor, experts: readonly FfnWeightSet[], rows: number, topK: number, normalize: boolean, chosen: Tensor): boolean {
    checkCount(rows, "moe rows");
    const E = experts.length;
    if (E === 0 || !Number.isInteger(topK) || topK < 1 || topK > E) throw new Error(`moeTopK: top ${topK} of ${E} experts`);
    const H = router.cols, F = experts[0]!.gate.rows;
    if (router.rows !== E) throw new Error(`moeTopK: a router for ${router.rows} experts with ${E} experts`);
    if (rows > MOE_ONE_JOB_MAX_ROWS) return false;
    let layer = this.moeLayers.get(experts);
    if (!layer || layer.changes !== this.weightChanges) {
      for (const x of experts) {
        if (x.gate.rows !== F || x.gate.cols !== H || x.up.rows !== F || x.up.cols !== H || x.down.rows !== H || x.down.cols !== F) throw new Error("moeTopK: experts of different shapes");
      }
      const stacks = [experts.map((x) => x.gate), experts.map((x) => x.up), experts.map((x) => x.down)];
      // mul_mat_id takes a layer's experts as one tensor: where they lie as one (allocWeights, or a GGUF file's mapped), the block is one job
      layer = { changes: this.weightChanges, stacks: stacks.every((ws) => this.stackOf(ws)) ? stacks : null, key: experts.map((x) => `w${x.gate.arena}|w${x.up.arena}|w${x.down.arena}|`).join("") };
      this.moeLayers.set(experts, layer);
    }
    if (!layer.stacks) return false;
    const [gates, ups, downs] = layer.stacks as [WeightTensor[], WeightTensor[], WeightTensor[]];
    if (rows === 0) return true;
    const routerT = this.weightTensor(router);
    this.region(h, rows * H * 4, "moe input");
    this.region(out, rows * H * 4, "moe output");
    this.region(chosen, rows * topK * 4, "moe chosen experts");
    // scratch: logits, probabilities, their order (i32) [rows][E]; weights, normalised weights [rows][k], sums [rows];
    // gate (then SiLU(gate)·up) and up [rows][k][F]; down [rows][k][H]
    const at = { logits: 0, probs: rows * E, order: 2 * rows * E, weights: 3 * rows * E, normed: 3 * rows * E + rows * topK, sums: 3 * rows * E + 2 * rows * topK };
    const big = 3 * rows * E + 2 * rows * topK + rows;
    const floats = { gate: big, up: big + rows * topK * F, down: big + 2 * rows * topK * F, end: big + 2 * rows * topK * F + rows * topK * H };
    if (!this.moeScratch || this.moeScratch.bytes < floats.end * 4) {
      if (this.moeScratch) this.free(this.moeScratch);
      this.moeScratch = this.alloc(floats.end * 4);
      this.endTapes();
    }
    const scratch = this.moeScratch;
    const part = (offset: number, n: number): Tensor => ({ arena: scratch.arena, ptr: scratch.ptr + offset * 4, bytes: n * 4 });
    const key = NativeBackend.key("moe", out, h, chosen, scratch, rows, topK, normalize ? 1 : 0) + `w${router.arena}|` + layer.key;
    const g = this.g, k = topK;
    this.run(key, rows * H * E + 3 * rows * k * H * F, (b) => {
      const hT = b.bind(h, GgmlType.F32, H, rows);
      const logits = b.into(g.mulMat(b.ctx, routerT, hT), part(at.logits, rows * E));
      const probs = b.into(g.softMax(b.ctx, logits), part(at.probs, rows * E));
      // llama.cpp's selection: the probabilities sorted, highest first; the first k
      const order = b.into(g.argsort(b.ctx, probs, GGML_SORT_ORDER_DESC), part(at.order, rows * E));
      const ids = b.into(g.cont(b.ctx, b.view(g.view2d(b.ctx, order, k, rows, E * 4, 0))), chosen);
      b.outputs.push(ids);
      let weights = b.into(g.getRows(b.ctx, b.view(g.reshape3d(b.ctx, probs, 1, E, rows)), ids), part(at.weights, rows * k));
      if (normalize) {
        const flat = b.view(g.reshape2d(b.ctx, weights, k, rows));
        const sums = b.into(g.sumRows(b.ctx, flat), part(at.sums, rows));
        weights = b.view(g.reshape3d(b.ctx, b.into(g.div(b.ctx, flat, sums), part(at.normed, rows * k)), 1, k, rows));
      }
      const x3 = b.view(g.reshape3d(b.ctx, hT, H, 1, rows));
      const gate = b.into(g.mulMatId(b.ctx, b.stack(gates), x3, ids), part(floats.gate, rows * k * F));
      const up = b.into(g.mulMatId(b.ctx, b.stack(ups), x3, ids), part(floats.up, rows * k * F));
      const act = b.into(g.swigluSplit(b.ctx, gate, up), part(floats.gate, rows * k * F));
      const down = b.into(g.mulMatId(b.ctx, b.stack(downs), act, ids), part(floats.down, rows * k * H));
      const weighted = b.into(g.mul(b.ctx, down, weights), part(floats.down, rows * k * H));
      b.outputs.push(this.sumSlots(b, weighted, H, rows, k, out));
      // about 25 + 2k tensors: room for them all as nodes
    }, 32 + 2 * k);
    return true;
  }

  moeExperts(out: Tensor, h: Tensor, experts: ReadonlyArray<FfnWeightSet | null>, plan: readonly ExpertBatch[], rows: number): void {
    checkCount(rows, "moe rows");
    if (rows === 0) return;
    // Everything is checked here, before anything is recorded: ggml aborts the process on a shape that does not
    // multiply or a row out of range. Every expert of the layer, not only the plan's: the graph holds them all.
    const H = experts.find((x) => x)?.gate.cols;
    if (H === undefined) throw new Error("moeExperts: a layer without experts");
    this.region(h, rows * H * 4, "moe input");
    this.region(out, rows * H * 4, "moe output");
    let maxF = 0;
    experts.forEach((w, e) => {
      if (!w) return;
      const { gate, up, down } = w, F = gate.rows;
      if (gate.cols !== H || up.rows !== F || up.cols !== H || down.rows !== H || down.cols !== F) throw new Error(`moeExperts: expert ${e}'s weights do not make a feed-forward block of width ${H}`);
      for (const t of [gate, up, down]) this.weightTensor(t);
      maxF = Math.max(maxF, F);
    });
    // the plan read once, into what is used below (a batch's fields are not read again)
    const rowsOf: Array<Int32Array | null> = experts.map(() => null), weightsOf: Array<Float32Array | null> = experts.map(() => null);
    const slotsOf = new Int32Array(rows);
    let k = 1;
    for (const batch of plan) {
      const e = batch.expert, batchRows = batch.rows, batchWeights = batch.weights;
      if (!Number.isInteger(e) || !experts[e]) throw new Error(`moeExperts: expert ${e} is not among the layer's`);
      if (rowsOf[e]) throw new Error(`moeExperts: expert ${e} twice in one plan`);
      if (!(batchRows instanceof Int32Array) || !(batchWeights instanceof Float32Array)) throw new Error(`moeExperts: expert ${e}'s rows and weights are not an Int32Array and a Float32Array`);
      if (batchWeights.length !== batchRows.length) throw new Error(`moeExperts: expert ${e} has ${batchRows.length} rows and ${batchWeights.length} weights`);
      for (let i = 0; i < batchRows.length; i++) {
        const r = batchRows[i]!;
        if (!(r >= 0 && r < rows) || (i > 0 && r <= batchRows[i - 1]!)) throw new Error(`moeExperts: expert ${e}'s rows are not ascending rows of ${rows}`);
        k = Math.max(k, ++slotsOf[r]!);
      }
      rowsOf[e] = batchRows;
      weightsOf[e] = batchWeights;
    }
    // The graph's experts: where built graphs can be reshaped (ggml.header), every expert of the layer, each on
    // this call's rows (none: its nodes skipped), so that one graph serves every routing of as many rows and
    // slots; else the experts with rows, a graph per routing. Each expert's rows lie together, in the experts' order.
    const header = this.ggml.header;
    const members: ExpertMember[] = [];
    let n = 0;
    experts.forEach((w, e) => {
      const m = rowsOf[e]?.length ?? 0;
      if (!w || !(m > 0 || header)) return;
      members.push({ expert: e, w, m, start: n });
      n += m;
    });
    // floats: the zero row, results [n][H] right after it (looked up as one table with it), inputs [n][H],
    // gate and up [n][maxF] each, slots [rows][k][H]; then rows [n] i32, slots [rows][k] i32, weights [n] f32
    const at = { results: H, inputs: H + n * H, gate: H + 2 * n * H, up: H + 2 * n * H + n * maxF, slots: H + 2 * n * H + 2 * n * maxF };
    const route = { rows: at.slots + rows * k * H, slots: at.slots + rows * k * H + n, weights: at.slots + rows * k * H + n + rows * k };
    const end = route.weights + n;
    // the routing is written by JavaScript below: an op recorded and not yet run that reads it runs first, and
    // a tape being recorded would not run again alone
    if (this.routeRead) this.runPending();
    if (this.taping) this.taping.valid = false;
    if (!this.expertScratch || this.expertScratch.bytes < end * 4) {
      // new memory may be memory freed that recorded ops still use: they run before JavaScript writes it
      this.flush();
      if (this.expertScratch) this.free(this.expertScratch);
      this.expertScratch = this.alloc(end * 4);
      this.endTapes();
    }
    const scratch = this.expertScratch;
    // no op recorded and not yet run touches the zero row or the routing: written without running them
    const f = new Float32Array(this.viewAt(scratch, 0, end * 4), scratch.ptr, end), ints = new Int32Array(f.buffer, f.byteOffset, end);
    f.fill(0, 0, H);
    // each row's results in its slots; a row with fewer than k takes the zero row in the rest
    ints.fill(0, route.slots, route.slots + rows * k);
    const filled = new Int32Array(rows);
    for (const { expert, start } of members) {
      const batchRows = rowsOf[expert], batchWeights = weightsOf[expert]!;
      if (!batchRows) continue;
      for (let j = 0, i = start; j < batchRows.length; j++, i++) {
        const r = batchRows[j]!;
        ints[route.rows + i] = r;
        f[route.weights + i] = batchWeights[j]!;
        ints[route.slots + r * k + filled[r]!++] = 1 + i;
      }
    }
    const part = (offset: number, count: number): Tensor => ({ arena: scratch.arena, ptr: scratch.ptr + offset * 4, bytes: count * 4 });
    let key = NativeBackend.key("moex", out, h, scratch, rows, k, n, maxF, header ? 1 : 0);
    let work = 0;
    for (const x of members) {
      key += `${header ? "" : x.m}w${x.w.gate.arena}|w${x.w.up.arena}|w${x.w.down.arena}|`;
      work += 3 * x.m * H * x.w.gate.rows;
    }
    const g = this.g, base = this.regions.get(scratch.arena)!.base + scratch.ptr;
    const layout: ExpertLayout = { H, n, at, route, part };
    this.routeRead = true;
    this.run(key, work, (b) => {
      const table = b.bind(part(0, (n + 1) * H), GgmlType.F32, H, n + 1), slotIds = b.bind(part(route.slots, rows * k), GgmlType.I32, rows * k);
      if (n > 0) this.expertJobs(b, h, rows, members, layout);
      // the slots of each row looked up beside the zero row, and summed
      if (k === 1) return void b.outputs.push(b.into(g.getRows(b.ctx, table, slotIds), out));
      b.outputs.push(this.sumSlots(b, b.into(g.getRows(b.ctx, table, slotIds), part(at.slots, rows * k * H)), H, rows, k, out));
    }, 16 + 8 * members.length + 3 * k, false, header && n > 0 ? (tensors) => {
      // this call's rows: each expert's products over its rows (views, results and their addresses), or skipped
      (tensors as ExpertNodes[]).forEach((t, i) => {
        const { m, start, w } = members[i]!, F = w.gate.rows;
        for (const [node, op] of [[t.gate, t.mulMat], [t.up, t.mulMat], [t.act, t.glu], [t.down, t.mulMat]] as const) node.op = m > 0 ? op : GGML_OP_NONE;
        if (m === 0) return;
        t.x.setRows(m, base + (at.inputs + start * H) * 4, start * H * 4);
        t.gate.setRows(m, base + (at.gate + start * F) * 4);
        t.up.setRows(m, base + (at.up + start * F) * 4);
        t.act.setRows(m, base + (at.gate + start * F) * 4);
        t.down.setRows(m, base + (at.results + start * H) * 4);
      });
    } : undefined);
  }

  /** out[row] = Σ of the row's k slots of `slots` ([rows][k][H] f32), as llama.cpp sums a row's experts: views of each and adds. */
  private sumSlots(b: GraphBuilder, slots: Ptr, H: number, rows: number, k: number, out: Tensor): Ptr {
    const g = this.g, slot = (i: number) => b.view(g.view2d(b.ctx, slots, H, rows, k * H * 4, i * H * 4));
    let sum = b.into(k === 1 ? g.cont(b.ctx, slot(0)) : g.add(b.ctx, slot(0), slot(1)), out);
    for (let i = 2; i < k; i++) sum = b.into(g.add(b.ctx, sum, slot(i)), out);
    return sum;
  }

  /**
   * moeExperts' products: each expert's rows looked up, its FFN, each result times its weight (in the results'
   * part). Where headers can be reshaped, an expert with no rows is built over one row and skipped (see reshape).
   */
  private expertJobs(b: GraphBuilder, h: Tensor, rows: number, members: readonly ExpertMember[], { H, n, at, route, part }: ExpertLayout): void {
    const g = this.g, header = this.ggml.header;
    const inputs = b.into(g.getRows(b.ctx, b.bind(h, GgmlType.F32, H, rows), b.bind(part(route.rows, n), GgmlType.I32, n)), part(at.inputs, n * H));
    const nodes: ExpertNodes[] = [];
    for (const member of members) {
      // a view must lie within its source: an expert without rows is built over the first
      const { w } = member, F = w.gate.rows, [m, start] = member.m > 0 ? [member.m, member.start] : [1, 0];
      const x = b.view(g.view2d(b.ctx, inputs, H, m, H * 4, start * H * 4));
      const gate = b.into(g.mulMat(b.ctx, this.weightTensor(w.gate), x), part(at.gate + start * F, m * F));
      const up = b.into(g.mulMat(b.ctx, this.weightTensor(w.up), x), part(at.up + start * F, m * F));
      const act = b.into(g.swigluSplit(b.ctx, gate, up), part(at.gate + start * F, m * F));
      const down = b.into(g.mulMat(b.ctx, this.weightTensor(w.down), act), part(at.results + start * H, m * H));
      b.outputs.push(down);
      if (header) {
        const t = { x: header(x), gate: header(gate), up: header(up), act: header(act), down: header(down) };
        nodes.push({ ...t, mulMat: t.gate.op, glu: t.act.op });
      }
    }
    if (header) b.reshapable.push(nodes);
    const results = b.bind(part(at.results, n * H), GgmlType.F32, H, n);
    b.outputs.push(b.into(g.mul(b.ctx, results, b.bind(part(route.weights, n), GgmlType.F32, 1, n)), part(at.results, n * H)));
  }

  add(y: Tensor, a: Tensor, c: Tensor, n: number): void {
    checkCount(n, "add length");
    if (n === 0) return;
    for (const [t, what] of [[y, "add output"], [a, "add input"], [c, "add input"]] as const) this.region(t, n * 4, what);
    this.run(NativeBackend.key("add", y, a, c, n), n, (b) => {
      b.outputs.push(b.into(this.g.add(b.ctx, b.bind(a, GgmlType.F32, n), b.bind(c, GgmlType.F32, n)), y));
    });
  }

  addBias(y: Tensor, bias: WeightTensor, rows: number): void {
    checkCount(rows, "addBias rows");
    if (rows === 0) return;
    const n = bias.cols;
    const bt = this.vector(bias, n, "addBias");
    this.region(y, rows * n * 4, "addBias output");
    this.run(NativeBackend.key("bias", y, rows) + `w${bias.arena}|`, rows * n, (b) => {
      b.outputs.push(b.into(this.g.add(b.ctx, b.bind(y, GgmlType.F32, n, rows), bt), y));
    });
  }

  clamp(x: Tensor, n: number, c: number): void {
    checkCount(n, "clamp length");
    if (n === 0) return;
    this.region(x, n * 4, "clamp input");
    this.run(NativeBackend.key("clamp", x, n, c), n, (b) => {
      b.outputs.push(b.view(this.g.clampInplace(b.ctx, b.bind(x, GgmlType.F32, n), -c, c)));
    });
  }

  // ---------------------------------------------------------------- probes

  measureReadBandwidth(bytes: number): number {
    // the GEMV of an f32 matrix of `bytes` by one vector on every thread: the weight-streaming rate the kernels reach
    const K = 4096, N = Math.max(1, Math.floor(bytes / (K * 4)));
    const best = this.probe(N, K, 1);
    return (N * K * 4) / best;
  }

  measureComputeRate(): number {
    const N = 1024, K = 1024, M = 128;
    return (2 * M * N * K) / this.probe(N, K, M);
  }

  /** Best of 5 times (ns) of an [M×K]·[N×K]ᵀ f32 product on the pool, over distinct weight contents. */
  private probe(N: number, K: number, M: number): number {
    const w = this.allocWeight("f32", N, K);
    const x = this.alloc(M * K * 4), y = this.alloc(M * N * 4);
    try {
      // distinct contents per page: identical pages may be merged by the host (KSM) and then read from cache
      const words = new Int32Array(this.viewOf(this.regions.get(w.arena)!), 0, N * K);
      for (let i = 0; i < words.length; i++) words[i] = Math.imul(i, 2654435761) & 0x3f7fffff;
      this.f32(x).fill(1);
      let best = Infinity;
      for (let rep = 0; rep < 5; rep++) {
        const t0 = process.hrtime.bigint();
        this.run(NativeBackend.key("probe", y, x, M) + `w${w.arena}|`, Infinity, (b) => {
          b.outputs.push(b.into(this.g.mulMat(b.ctx, this.weightTensor(w), b.bind(x, GgmlType.F32, K, M)), y));
        });
        this.flush(true);
        best = Math.min(best, Number(process.hrtime.bigint() - t0));
      }
      return best;
    } finally {
      this.free(x);
      this.free(y);
      this.freeWeight(w);
    }
  }

  close(): void {
    if (this.closed) return;
    try {
      // what was recorded runs: JavaScript may have been told it has run
      this.flush();
    } finally {
      this.release();
    }
  }

  /** Gives back every ggml resource, the pool's threads included. */
  private release(): void {
    this.closed = true;
    openBackends.delete(this);
    for (const gr of [...this.graphs.values()]) this.dropGraph(gr);
    for (const r of this.regions.values()) {
      this.releaseBuffer(r);
      if (r.weight) this.g.free(r.weight.ctx);
    }
    this.regions.clear();
    this.chunks.length = 0;
    if (this.pooled !== this.single) this.g.backendFree(this.pooled);
    this.g.backendFree(this.single);
    if (this.threadpool) this.g.threadpoolFree(this.threadpool);
    this.g.threadpoolFree(this.singlePool);
    for (const m of this.mapped.values()) m.unmap();
    this.mapped.clear();
  }
}

function checkCount(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0) throw new Error(`${what}: ${n} is not a count`);
}

/** bf16 or f16 values (little-endian) as f32. */
function widen16(dtype: "BF16" | "F16", src: Uint8Array, out: Float32Array): void {
  const h = new Uint16Array(src.buffer, src.byteOffset, out.length);
  if (dtype === "BF16") {
    const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
    for (let i = 0; i < out.length; i++) bits[i] = h[i]! << 16;
  } else {
    for (let i = 0; i < out.length; i++) out[i] = f16ToF32(h[i]!);
  }
}

// ggml's CPU_REPACK layouts on x86 (ggml-cpu/repack.cpp): rows in groups of 8; per group and block column, one
// interleaved block of the 8 rows' blocks.
interface RepackedLayout {
  readonly blocks: "Q4_0" | "Q4_K";
  /** One row's blocks out of the repacked layout. */
  readonly unpackRow: (held: Uint8Array, row: number, cols: number) => Uint8Array;
}

const Q4 = GGML_BLOCK_TYPES.Q4_0.bytes, Q4K = GGML_BLOCK_TYPES.Q4_K.bytes;

/**
 * block_q4_0x8 (make_block_q4_0x8): the 8 rows' f16 scales, then 16 runs of 8 quant bytes, run i from row i % 8
 * at byte 8·⌊i/8⌋ of its block, each byte xor 0x88.
 */
function unpackQ4x8Row(held: Uint8Array, row: number, cols: number): Uint8Array {
  const nb = cols / 32, out = new Uint8Array(nb * Q4);
  const group = held.subarray(Math.floor(row / 8) * 8 * nb * Q4), r = row % 8;
  for (let x = 0; x < nb; x++) {
    const blk = x * 8 * Q4, o = x * Q4;
    out[o] = group[blk + 2 * r]!;
    out[o + 1] = group[blk + 2 * r + 1]!;
    for (let half = 0; half < 2; half++) {
      const from = blk + 16 + (half * 8 + r) * 8;
      for (let k = 0; k < 8; k++) out[o + 2 + half * 8 + k] = group[from + k]! ^ 0x88;
    }
  }
  return out;
}

/**
 * block_q4_Kx8 (make_block_q4_Kx8): the 8 rows' f16 d, their f16 dmin, 96 bytes of scales and mins (per
 * sub-block j, 12 bytes: the rows' 6-bit scales, then mins, 0–3 whole with bits 4–5 of rows 4–7 on top, then
 * rows 4–7's low 4 bits of scale and min), then 128 runs of 8 quant bytes, run i from row i % 8 at byte 8·⌊i/8⌋.
 */
function unpackQ4Kx8Row(held: Uint8Array, row: number, cols: number): Uint8Array {
  const nb = cols / 256, out = new Uint8Array(nb * Q4K);
  const group = held.subarray(Math.floor(row / 8) * 8 * nb * Q4K), r = row % 8;
  const sc = new Uint8Array(8), mn = new Uint8Array(8);
  for (let x = 0; x < nb; x++) {
    const blk = x * 8 * Q4K, o = x * Q4K;
    out[o] = group[blk + 2 * r]!;
    out[o + 1] = group[blk + 2 * r + 1]!;
    out[o + 2] = group[blk + 16 + 2 * r]!;
    out[o + 3] = group[blk + 16 + 2 * r + 1]!;
    for (let j = 0; j < 8; j++) {
      const at = blk + 32 + 12 * j, c = r & 3;
      if (r < 4) {
        sc[j] = group[at + c]! & 63;
        mn[j] = group[at + 4 + c]! & 63;
      } else {
        sc[j] = ((group[at + c]! >> 6) << 4) | (group[at + 8 + c]! & 15);
        mn[j] = ((group[at + 4 + c]! >> 6) << 4) | (group[at + 8 + c]! >> 4);
      }
    }
    // Q4_K's 12 bytes of 6-bit scales and mins (get_scale_min_k4 read backwards)
    for (let j = 0; j < 4; j++) {
      out[o + 4 + j] = sc[j]! | ((sc[j + 4]! >> 4) << 6);
      out[o + 8 + j] = mn[j]! | ((mn[j + 4]! >> 4) << 6);
      out[o + 12 + j] = (sc[j + 4]! & 15) | ((mn[j + 4]! & 15) << 4);
    }
    for (let run = 0; run < 16; run++) out.set(group.subarray(blk + 128 + (run * 8 + r) * 8, blk + 128 + (run * 8 + r) * 8 + 8), o + 16 + run * 8);
  }
  return out;
}

const REPACKED: Partial<Record<WeightDType, RepackedLayout>> = {
  q4: { blocks: "Q4_0", unpackRow: unpackQ4x8Row },
  q4_k: { blocks: "Q4_K", unpackRow: unpackQ4Kx8Row },
};

/** A whole weight's blocks out of the repacked layout. */
function unpackX8(layout: RepackedLayout, held: Uint8Array, rows: number, cols: number): Uint8Array {
  const rowBytes = (cols / GGML_BLOCK_TYPES[layout.blocks].values) * GGML_BLOCK_TYPES[layout.blocks].bytes, out = new Uint8Array(rows * rowBytes);
  for (let r = 0; r < rows; r++) out.set(layout.unpackRow(held, r, cols), r * rowBytes);
  return out;
}
