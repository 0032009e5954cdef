// The WebAssembly SIMD backend: weights and activations in shared memories (arenas), kernels from
// src/kernels/assembly run on the calling thread plus a worker pool.
import os from "node:os";
import type { Backend, FfnWeightSet, RopeTable, Tensor, WeightDType, WeightSource, WeightTensor } from "../backend.js";
import { dequantizeBlocks, f16ToF32, GGML_BLOCK_TYPES, isGgmlBlockType, type GgmlBlockType } from "../ggml-blocks.js";
import { Arena, MAX_PAGES } from "./arena.js";
import { readRows } from "../read-rows.js";
import { align64, isBlockDType, layoutBytes, quantBytes } from "../weight-layout.js";
import { ThreadPool } from "./pool.js";
import { loadKernelModule, type KernelModule, type SimdVariant } from "./module.js";
import { FFN_TABLE, MATMUL_TABLE, MAX_MATMULS, type KernelName } from "./abi.js";

export interface WasmBackendOptions {
  /** Threads including the caller; defaults to the cores available. */
  threads?: number;
  simd?: SimdVariant | "auto";
  /** The compiled kernels (a browser device compiles the file its base station serves); default: dist/kernels' build, per `simd`. */
  kernels?: KernelModule;
  /** Pages per arena (64 KiB each); at most 65536 (4 GiB). Smaller values exist for tests. */
  arenaPages?: number;
  /** Bytes kept free for activations and KV caches in arena 0 when placing weights. */
  activationReserve?: number;
  /** How long idle workers spin before sleeping, in ms (see ThreadPool). */
  spinMs?: number;
  /** A started pool of `kernels`' module to compute with instead of one made here (a browser page starts its Web Workers first); `threads` and `spinMs` are then its own. */
  pool?: ThreadPool;
}

// Kernels of at least PARALLEL_MIN_WORK multiply-adds (~4 MiB of f32 weights, ~150 µs on one thread) are
// split over the threads. Smaller ones, down to a brown-moe expert FFN (128 K, ~20 µs), were measured
// split too on this 2-vCPU VM, which another session always shared (load 4–8): brown-moe f32 decode at
// 2 threads took 1.6–2.8 ms/token against 1.1–2.1 with them on the caller, q8 1.1–2.5 against 0.9–1.6.
// When other processes keep the workers from running (pool.crowded) even a big split job loses (the
// LM head: 0.5–1.0 ms split, 0.16 alone): then only every CROWDED_PROBE-th is split, to see when the
// machine is free again, and the rest run on the caller.
const PARALLEL_MIN_WORK = 1 << 20;
const CROWDED_PROBE = 2;
// Conversions of weights go through a staging buffer of this many bytes (f32).
const STAGING_BYTES = 16 << 20;

/** matmulGroup's staging slots for outputs in another arena, one per product. */
const OUT_SLOTS = Array.from({ length: MAX_MATMULS }, (_, i) => `y${i}`);

/** The dtypes these kernels compute, and their codes in the kernels; f16 and the K-quants are converted at load (see weights.ts). */
const DTYPE_CODE: Partial<Record<WeightDType, number>> = { f32: 0, bf16: 1, q8: 2, q4: 3 };

/** The wasm kernels' rotary table: each position's angles' cos and sin, [positions][headDim / 2]. */
interface WasmRopeTable extends RopeTable {
  readonly cos: Tensor;
  readonly sin: Tensor;
}

export class WasmBackend implements Backend {
  readonly name: string;
  readonly threads: number;
  readonly variant: SimdVariant;
  private readonly arenas: Arena[] = [];
  private readonly pool: ThreadPool;
  private readonly arenaPages: number;
  private readonly reserve: number;
  private readonly q8ActBytes: number;
  private weightBytes = 0;
  /** Jobs that a crowded pool ran on the caller or probed with, counted (see split). */
  private probes = 0;
  /** Per arena: reusable buffers by slot name (see scratchBuf). */
  private readonly scratch: Array<Map<string, Tensor>> = [];
  /** Per arena: the matmul kernel's table of products (see abi.ts). */
  private readonly tables: Uint32Array[] = [];
  /** Per arena: the ffn kernel's operands (see abi.ts). */
  private readonly ffnTables: Uint32Array[] = [];

  constructor(opts: WasmBackendOptions = {}) {
    const { module, variant } = opts.kernels ?? loadKernelModule(opts.simd ?? "auto");
    this.variant = variant;
    this.pool = opts.pool ?? new ThreadPool(module, { threads: opts.threads ?? os.availableParallelism(), spinMs: opts.spinMs });
    this.threads = this.pool.threads;
    this.arenaPages = Math.min(MAX_PAGES, opts.arenaPages ?? MAX_PAGES);
    this.reserve = opts.activationReserve ?? Math.min(1 << 30, (this.arenaPages * 65536) / 4);
    this.name = `wasm-${variant}`;
    // q8 activations: int8 for the relaxed build's i8×i7 dot, int16 for the plain build (Q8_ACT_BYTES).
    this.q8ActBytes = variant === "relaxed" ? 1 : 2;
    this.newArena();
  }

  /** Shares of split kernels that the worker threads computed so far (see ThreadPool). */
  get workerShares(): number {
    return this.pool.workerShares;
  }

  private newArena(): Arena {
    const arena = new Arena(this.arenaPages);
    this.arenas.push(arena);
    this.pool.addArena(arena.memory);
    this.tables.push(new Uint32Array(arena.memory.buffer, MATMUL_TABLE, 4 * MAX_MATMULS));
    this.ffnTables.push(new Uint32Array(arena.memory.buffer, FFN_TABLE, 11));
    return arena;
  }

  private allocIn(arenaIndex: number, bytes: number): Tensor {
    const ptr = this.arenas[arenaIndex]!.alloc(bytes);
    if (ptr < 0) throw new Error(`out of memory: arena ${arenaIndex} cannot hold ${bytes} more bytes (${this.arenas[arenaIndex]!.used} in use)`);
    return { arena: arenaIndex, ptr, bytes };
  }

  // ---------------------------------------------------------------- memory

  alloc(bytes: number): Tensor {
    return this.allocIn(0, bytes);
  }

  free(t: Tensor): void {
    this.arenas[t.arena]!.free(t.ptr, t.bytes);
  }

  weightData(w: WeightTensor): Uint8Array {
    return this.u8(w).slice();
  }

  setWeightData(w: WeightTensor, data: Uint8Array): void {
    if (data.length !== w.bytes) throw new Error(`setWeightData: ${data.length} bytes for a ${w.rows}×${w.cols} ${w.dtype} weight of ${w.bytes}`);
    this.u8(w).set(data);
  }

  freeWeight(w: WeightTensor): void {
    this.free(w);
    this.weightBytes -= w.bytes;
  }

  f32(t: Tensor, offset = 0, length?: number): Float32Array {
    return new Float32Array(this.arenas[t.arena]!.memory.buffer, t.ptr + offset * 4, length ?? t.bytes / 4 - offset);
  }

  i32(t: Tensor, offset = 0, length?: number): Int32Array {
    return new Int32Array(this.arenas[t.arena]!.memory.buffer, t.ptr + offset * 4, length ?? t.bytes / 4 - offset);
  }

  private u8(t: Tensor): Uint8Array {
    return new Uint8Array(this.arenas[t.arena]!.memory.buffer, t.ptr, t.bytes);
  }

  /** A per-arena buffer reused across calls, grown as needed. */
  private scratchBuf(arena: number, slot: string, bytes: number): Tensor {
    const slots = this.scratch[arena] ?? (this.scratch[arena] = new Map());
    const have = slots.get(slot);
    if (have && have.bytes >= bytes) return have;
    if (have) this.free(have);
    const t = this.allocIn(arena, Math.max(bytes, (have?.bytes ?? 0) * 2));
    slots.set(slot, t);
    return t;
  }

  /** Weight bytes in memory for a dtype, or null where the kernels cannot hold that shape. */
  static weightBytes(dtype: WeightDType, rows: number, cols: number): number | null {
    // the kernels hold weights in the exchange layout itself
    return layoutBytes(dtype, rows, cols);
  }

  supportsWeight(dtype: WeightDType, cols: number): boolean {
    return DTYPE_CODE[dtype] !== undefined && WasmBackend.weightBytes(dtype, 1, cols) !== null;
  }

  allocWeight(dtype: WeightDType, rows: number, cols: number): WeightTensor {
    if (DTYPE_CODE[dtype] === undefined) throw new Error(`the wasm kernels cannot hold ${dtype} weights (the loader converts them to f32 or q8)`);
    const bytes = WasmBackend.weightBytes(dtype, rows, cols);
    if (bytes === null) throw new Error(`a ${rows}×${cols} weight cannot be held as ${dtype}: its rows must be a multiple of ${isBlockDType(dtype) ? 32 : 8}`);
    let arenaIndex = 0;
    if (rows > 1) {
      // the first arena with room, so that space freed by dropped weights is used again
      const fits = (i: number) => this.arenas[i]!.available - (i === 0 ? this.reserve : 0) >= bytes;
      arenaIndex = this.arenas.findIndex((_, i) => fits(i));
      if (arenaIndex < 0) {
        if (bytes > this.arenaPages * 65536 - 65536) throw new Error(`a ${rows}×${cols} ${dtype} weight (${bytes} bytes) exceeds one arena`);
        this.newArena();
        arenaIndex = this.arenas.length - 1;
      }
    }
    const t = this.allocIn(arenaIndex, bytes);
    this.weightBytes += bytes;
    const scales = isBlockDType(dtype) ? t.ptr + align64(quantBytes(dtype, rows * cols)) : 0;
    return { ...t, dtype, rows, cols, scales };
  }

  loadWeight(w: WeightTensor, src: WeightSource): void {
    const n = w.rows * w.cols;
    const arena = this.arenas[w.arena]!;
    if (isGgmlBlockType(src.dtype)) return this.loadBlocks(w, src as WeightSource & { dtype: GgmlBlockType });
    const srcBytes = src.dtype === "F32" ? 4 : 2;
    if ((w.dtype === "f32" && src.dtype === "F32") || (w.dtype === "bf16" && src.dtype === "BF16")) {
      readRows(src, w.cols * srcBytes, 0, w.rows, arena.bytes(w.ptr, n * srcBytes));
      return;
    }
    if (w.dtype === "f32") {
      // 16-bit source read into the upper half of the f32 region, then widened in place front to back.
      readRows(src, w.cols * 2, 0, w.rows, arena.bytes(w.ptr + 2 * n, 2 * n));
      this.pool.direct(w.arena, src.dtype === "BF16" ? "bf16_to_f32" : "f16_to_f32", w.ptr, w.ptr + 2 * n, n);
      return;
    }
    this.convertRows(w, (staging, r0, rows) => {
      const count = rows * w.cols;
      if (srcBytes === 4) readRows(src, w.cols * 4, r0, rows, this.u8({ ...staging, bytes: count * 4 }));
      else {
        const hi = { arena: staging.arena, ptr: staging.ptr + 2 * count, bytes: 2 * count };
        readRows(src, w.cols * 2, r0, rows, this.u8(hi));
        this.pool.direct(staging.arena, src.dtype === "BF16" ? "bf16_to_f32" : "f16_to_f32", staging.ptr, hi.ptr, count);
      }
    });
  }

  /**
   * ggml blocks into a weight. Q8_0 into q8 and Q4_0 into q4 keep their quants and scales as they are
   * (ours are ggml's quantize_row_q8_0 and q4_0 too, and a q4 block's nibbles are Q4_0's), only laid out
   * apart (quants [rows][K or K/2], f32 scales [rows][K/32]); everything else goes through the f32 values
   * that ggml's dequantize_row_* gives.
   */
  private loadBlocks(w: WeightTensor, src: WeightSource & { dtype: GgmlBlockType }): void {
    const { values, bytes } = GGML_BLOCK_TYPES[src.dtype];
    if (w.cols % values !== 0) throw new Error(`${src.file}: a ${src.dtype} tensor's rows hold ${w.cols} values, not a multiple of ${values}`);
    const nb = w.cols / values, rowBytes = nb * bytes;
    const chunkRows = Math.max(1, Math.min(w.rows, Math.floor(STAGING_BYTES / 4 / w.cols)));
    const blocks = new Uint8Array(chunkRows * rowBytes);
    if ((src.dtype === "Q8_0" && w.dtype === "q8") || (src.dtype === "Q4_0" && w.dtype === "q4")) {
      const mem = this.arenas[w.arena]!.memory.buffer;
      const qBytes = bytes - 2;
      for (let r0 = 0; r0 < w.rows; r0 += chunkRows) {
        const rows = Math.min(chunkRows, w.rows - r0);
        readRows(src, rowBytes, r0, rows, blocks.subarray(0, rows * rowBytes));
        const quants = new Uint8Array(mem, w.ptr + r0 * nb * qBytes, rows * nb * qBytes);
        const scales = new Float32Array(mem, w.scales + r0 * nb * 4, rows * nb);
        for (let b = 0; b < rows * nb; b++) {
          scales[b] = f16ToF32(blocks[b * bytes]! | (blocks[b * bytes + 1]! << 8));
          quants.set(blocks.subarray(b * bytes + 2, (b + 1) * bytes), b * qBytes);
        }
      }
      return;
    }
    this.convertRows(w, (staging, r0, rows) => {
      readRows(src, rowBytes, r0, rows, blocks.subarray(0, rows * rowBytes));
      dequantizeBlocks(src.dtype, blocks, this.f32(staging, 0, rows * w.cols));
    });
  }

  setWeight(w: WeightTensor, values: Float32Array): void {
    if (values.length !== w.rows * w.cols) throw new Error(`setWeight: ${values.length} values for a ${w.rows}×${w.cols} weight`);
    this.convertRows(w, (staging, r0, rows) => {
      this.f32(staging, 0, rows * w.cols).set(values.subarray(r0 * w.cols, (r0 + rows) * w.cols));
    });
  }

  /** Fills w chunk by chunk: `fill` writes f32 rows into a staging buffer, then they are stored as w's dtype. */
  private convertRows(w: WeightTensor, fill: (staging: Tensor, r0: number, rows: number) => void): void {
    const chunkRows = Math.max(1, Math.min(w.rows, Math.floor(STAGING_BYTES / (w.cols * 4))));
    const staging = this.scratchBuf(w.arena, "staging", chunkRows * w.cols * 4);
    for (let r0 = 0; r0 < w.rows; r0 += chunkRows) {
      const rows = Math.min(chunkRows, w.rows - r0);
      fill(staging, r0, rows);
      const count = rows * w.cols;
      if (w.dtype === "f32") this.f32(w, r0 * w.cols, count).set(this.f32(staging, 0, count));
      else if (w.dtype === "bf16") this.pool.direct(w.arena, "f32_to_bf16", w.ptr + r0 * w.cols * 2, staging.ptr, count);
      else {
        const kernel = w.dtype === "q8" ? "quantize_q8" : "quantize_q4";
        this.run(w.arena, kernel, count, w.ptr + quantBytes(w.dtype, r0 * w.cols), w.scales + (r0 * w.cols) / 8, staging.ptr, rows, w.cols);
      }
    }
  }

  memoryUsage() {
    let total = 0;
    for (const a of this.arenas) total += a.used;
    return { weights: this.weightBytes, activations: total - this.weightBytes, arenas: this.arenas.length };
  }

  // ---------------------------------------------------------------- kernels

  private run(arena: number, kernel: KernelName, work: number, ...args: number[]): void {
    if (this.split(work)) this.pool.parallel(arena, kernel, ...args);
    else this.pool.single(arena, kernel, ...args);
  }

  private split(work: number): boolean {
    if (this.threads === 1 || work < PARALLEL_MIN_WORK) return false;
    return !this.pool.crowded || ++this.probes % CROWDED_PROBE === 0;
  }

  /** t's contents, copied into `arena` when they live elsewhere. */
  private stage(t: Tensor, bytes: number, arena: number, slot: string): Tensor {
    if (t.arena === arena) return t;
    const s = this.scratchBuf(arena, slot, bytes);
    new Uint8Array(this.arenas[arena]!.memory.buffer, s.ptr, bytes).set(new Uint8Array(this.arenas[t.arena]!.memory.buffer, t.ptr, bytes));
    return s;
  }

  matmul(y: Tensor, x: Tensor, w: WeightTensor, rows: number): void {
    this.matmulMany(x, [[y, w]], rows);
  }

  matmulMany(x: Tensor, products: ReadonlyArray<readonly [Tensor, WeightTensor]>, rows: number): void {
    // one job per (arena, dtype) group of at most MAX_MATMULS products
    const groups = new Map<string, Array<readonly [Tensor, WeightTensor]>>();
    for (const p of products) {
      const key = `${p[1].arena}:${p[1].dtype}`;
      const g = groups.get(key) ?? [];
      if (g.length === MAX_MATMULS) throw new Error(`matmulMany: more than ${MAX_MATMULS} products in one group`);
      g.push(p);
      groups.set(key, g);
    }
    for (const g of groups.values()) this.matmulGroup(x, g, rows);
  }

  /** x (rows × K f32, any arena) in arena a, laid out as the matmul kernel takes it for dtype: its (xa, xb) addresses. */
  private prepareInput(x: Tensor, a: number, dtype: WeightDType, rows: number, K: number): [number, number] {
    checkSize(x, rows * K * 4, "matmul input");
    const xa = this.stage(x, rows * K * 4, a, "x");
    if (dtype === "bf16") {
      const xd = this.scratchBuf(a, "xd", rows * K * 4);
      this.run(a, "deinterleave8", rows * K, xd.ptr, xa.ptr, rows * K);
      return [xd.ptr, 0];
    }
    if (isBlockDType(dtype)) {
      const xq = this.scratchBuf(a, "xq", rows * K * this.q8ActBytes);
      const xs = this.scratchBuf(a, "xs", (rows * K) / 8);
      this.run(a, "quantize_act_q8", rows * K, xq.ptr, xs.ptr, xa.ptr, rows, K);
      return [xq.ptr, xs.ptr];
    }
    return [xa.ptr, 0];
  }

  private matmulGroup(x: Tensor, products: ReadonlyArray<readonly [Tensor, WeightTensor]>, rows: number): void {
    const w0 = products[0]![1];
    const K = w0.cols, a = w0.arena;
    const [xA, xB] = this.prepareInput(x, a, w0.dtype, rows, K);
    const table = this.tables[a]!;
    const outs = products.map(([y, w], i) => {
      if (w.cols !== K) throw new Error(`matmulMany: weights of widths ${K} and ${w.cols} cannot share an input`);
      checkSize(y, rows * w.rows * 4, "matmul output");
      const ya = y.arena === a ? y : this.scratchBuf(a, OUT_SLOTS[i]!, rows * w.rows * 4);
      table.set([ya.ptr, w.ptr, w.scales, w.rows], 4 * i);
      return ya;
    });
    const work = rows * K * products.reduce((n, [, w]) => n + w.rows, 0);
    this.run(a, "matmul", work, DTYPE_CODE[w0.dtype]!, products.length, xA, xB, rows, K);
    products.forEach(([y, w], i) => {
      if (outs[i] !== y) this.f32(y, 0, rows * w.rows).set(this.f32(outs[i]!, 0, rows * w.rows));
    });
  }

  ffn(out: Tensor, x: Tensor, w: FfnWeightSet, rows: number): void {
    const { gate, up, down } = w;
    const F = gate.rows, K = gate.cols, a = gate.arena;
    if (up.rows !== F || up.cols !== K || down.rows !== K || down.cols !== F) {
      throw new Error(`ffn: gate ${gate.rows}×${gate.cols}, up ${up.rows}×${up.cols} and down ${down.rows}×${down.cols} do not make one feed-forward block`);
    }
    checkSize(out, rows * K * 4, "ffn output");
    // the fused kernel takes one dtype in one arena
    if (up.arena !== a || down.arena !== a || up.dtype !== gate.dtype || down.dtype !== gate.dtype) return this.ffnByParts(out, x, w, rows);
    const [xA, xB] = this.prepareInput(x, a, gate.dtype, rows, K);
    const g = this.scratchBuf(a, "ffn.g", rows * F * 4), u = this.scratchBuf(a, "ffn.u", rows * F * 4);
    // down's input: deinterleaved (bf16) or quantized (q8, q4) hidden activations; f32 reads g itself
    let ha = 0, hb = 0;
    if (gate.dtype === "bf16") ha = this.scratchBuf(a, "ffn.hd", rows * F * 4).ptr;
    else if (isBlockDType(gate.dtype)) {
      ha = this.scratchBuf(a, "ffn.hq", rows * F * this.q8ActBytes).ptr;
      hb = this.scratchBuf(a, "ffn.hs", (rows * F) / 8).ptr;
    }
    const y = out.arena === a ? out : this.scratchBuf(a, "ffn.y", rows * K * 4);
    const t = this.ffnTables[a]!;
    t[0] = gate.ptr; t[1] = gate.scales; t[2] = up.ptr; t[3] = up.scales; t[4] = down.ptr; t[5] = down.scales;
    t[6] = g.ptr; t[7] = u.ptr; t[8] = ha; t[9] = hb; t[10] = y.ptr;
    this.run(a, "ffn", 3 * rows * K * F, DTYPE_CODE[gate.dtype]!, xA, xB, rows, K, F);
    if (y !== out) this.f32(out, 0, rows * K).set(this.f32(y, 0, rows * K));
  }

  /** The same block as three jobs, for weights that landed in different arenas or differ in dtype. */
  private ffnByParts(out: Tensor, x: Tensor, w: FfnWeightSet, rows: number): void {
    const n = rows * w.gate.rows;
    const g = this.scratchBuf(0, "ffn.g", n * 4), u = this.scratchBuf(0, "ffn.u", n * 4);
    this.matmulMany(x, [[g, w.gate], [u, w.up]], rows);
    this.siluMul(g, g, u, n);
    this.matmul(out, g, w.down, rows);
  }

  embed(out: Tensor, table: WeightTensor, ids: ArrayLike<number>): void {
    const n = ids.length, K = table.cols;
    checkSize(out, n * K * 4, "embedding output");
    for (let i = 0; i < n; i++) {
      const id = ids[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= table.rows) throw new Error(`token id ${id} is outside the vocabulary (0..${table.rows - 1})`);
    }
    const a = table.arena;
    const idBuf = this.scratchBuf(a, "ids", n * 4);
    this.i32(idBuf, 0, n).set(ids);
    const o = out.arena === a ? out : this.scratchBuf(a, "y", n * K * 4);
    this.pool.direct(a, "get_rows", o.ptr, table.ptr, table.scales, DTYPE_CODE[table.dtype]!, idBuf.ptr, n, K);
    if (o !== out) this.f32(out, 0, n * K).set(this.f32(o, 0, n * K));
  }

  rmsnorm(y: Tensor, x: Tensor, w: WeightTensor, rows: number, n: number, eps: number): void {
    sameArena(y, x, w);
    checkSize(x, rows * n * 4, "rmsnorm input");
    this.run(y.arena, "rmsnorm", rows * n, y.ptr, x.ptr, w.ptr, rows, n, eps);
  }

  ropeTable(positions: number, headDim: number, theta: number): WasmRopeTable {
    const half = headDim / 2;
    const cos = this.alloc(positions * half * 4);
    const sin = this.alloc(positions * half * 4);
    const c = this.f32(cos), s = this.f32(sin);
    for (let i = 0; i < half; i++) {
      const invFreq = 1 / Math.pow(theta, (2 * i) / headDim);
      for (let p = 0; p < positions; p++) {
        c[p * half + i] = Math.cos(p * invFreq);
        s[p * half + i] = Math.sin(p * invFreq);
      }
    }
    return { cos, sin, positions, headDim, theta };
  }

  rope(x: Tensor, rows: number, heads: number, headDim: number, positions: Tensor, rotary: RopeTable): void {
    const table = rotary as Partial<WasmRopeTable> & RopeTable;
    if (!table.cos || !table.sin) throw new Error("rope: a rotary table from another backend");
    if (table.headDim !== headDim) throw new Error(`rope: a table for head size ${table.headDim} used with ${headDim}`);
    sameArena(x, positions, table.cos);
    const pos = this.i32(positions, 0, rows);
    for (let i = 0; i < rows; i++) {
      if (pos[i]! < 0 || pos[i]! >= table.positions) throw new Error(`position ${pos[i]} is beyond the rotary table (${table.positions} positions)`);
    }
    this.run(x.arena, "rope", rows * heads * headDim, x.ptr, rows, heads, headDim, positions.ptr, table.cos.ptr, table.sin.ptr);
  }

  setRows(dst: Tensor, src: Tensor, rows: number, width: number, at: Tensor): void {
    for (const [n, what] of [[rows, "rows"], [width, "width"]] as const) if (!Number.isInteger(n) || n < 0) throw new Error(`setRows ${what}: ${n} is not a count`);
    if (rows === 0 || width === 0) return;
    checkSize(src, rows * width * 4, "setRows source");
    checkSize(at, rows * 4, "setRows indices");
    const capacity = Math.floor(dst.bytes / (width * 4)), idx = this.i32(at, 0, rows), s = this.f32(src, 0, rows * width), d = this.f32(dst, 0, capacity * width);
    // every index checked before any row is written, as the native backend does: a refused call changes nothing
    for (let i = 0; i < rows; i++) if (!(idx[i]! >= 0 && idx[i]! < capacity)) throw new Error(`setRows: row ${idx[i]} of a tensor of ${capacity} rows`);
    for (let i = 0; i < rows; i++) d.set(s.subarray(i * width, (i + 1) * width), idx[i]! * width);
  }

  attention(out: Tensor, q: Tensor, k: Tensor, v: Tensor, rows: number, start: number, heads: number, kvHeads: number, headDim: number): void {
    sameArena(out, q, k, v);
    const len = start + rows;
    checkSize(k, len * kvHeads * headDim * 4, "key cache");
    checkSize(v, len * kvHeads * headDim * 4, "value cache");
    const stride = Math.ceil(len / 16) * 16;
    const scores = this.scratchBuf(out.arena, "scores", stride * 4 * this.threads);
    const work = rows * heads * len * headDim * 2;
    this.run(out.arena, "attention", work, out.ptr, q.ptr, k.ptr, v.ptr, rows, start, heads, kvHeads, headDim, 1 / Math.sqrt(headDim), scores.ptr, stride);
  }

  siluMul(h: Tensor, g: Tensor, u: Tensor, n: number): void {
    sameArena(h, g, u);
    this.run(h.arena, "silu_mul", n * 8, h.ptr, g.ptr, u.ptr, n);
  }

  add(y: Tensor, a: Tensor, b: Tensor, n: number): void {
    sameArena(y, a, b);
    this.run(y.arena, "add", n, y.ptr, a.ptr, b.ptr, n);
  }

  addBias(y: Tensor, bias: WeightTensor, rows: number): void {
    sameArena(y, bias);
    this.run(y.arena, "add_bias", rows * bias.cols, y.ptr, bias.ptr, rows, bias.cols);
  }

  clamp(x: Tensor, n: number, c: number): void {
    this.pool.direct(x.arena, "clamp", x.ptr, n, c);
  }

  measureReadBandwidth(bytes: number): number {
    const buf = this.alloc(bytes);
    const out = this.alloc(16 * this.threads);
    try {
      // distinct contents per page: identical pages may be merged by the host (KSM) and then read from cache
      const words = this.i32(buf);
      for (let i = 0; i < words.length; i++) words[i] = Math.imul(i, 2654435761);
      let best = Infinity;
      for (let rep = 0; rep < 5; rep++) {
        const t0 = performance.now();
        this.pool.parallel(0, "read_probe", buf.ptr, bytes, out.ptr);
        best = Math.min(best, (performance.now() - t0) * 1e6);
      }
      return bytes / best;
    } finally {
      this.free(out);
      this.free(buf);
    }
  }

  measureComputeRate(): number {
    const out = this.alloc(16 * this.threads);
    const iters = 1 << 22;
    try {
      let best = Infinity;
      for (let rep = 0; rep < 5; rep++) {
        const t0 = performance.now();
        this.pool.parallel(0, "compute_probe", iters, out.ptr);
        best = Math.min(best, (performance.now() - t0) * 1e6);
      }
      return (iters * 96 * this.threads) / best;
    } finally {
      this.free(out);
    }
  }

  close(): void {
    this.pool.close();
  }
}

function checkSize(t: Tensor, bytes: number, what: string): void {
  if (t.bytes < bytes) throw new Error(`${what}: buffer of ${t.bytes} bytes, ${bytes} needed`);
}

function sameArena(...ts: Tensor[]): void {
  for (const t of ts) if (t.arena !== ts[0]!.arena) throw new Error("operands live in different arenas");
}
