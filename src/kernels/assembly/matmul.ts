// Y[M][N] = X[M][K] · W[N][K]ᵀ for each weight dtype. Threads split N (output features), so each
// thread streams a disjoint slice of the weight matrix; M = 1 (decode) takes a GEMV path that is bound
// by memory bandwidth, M > 1 (prefill, expert batches) a register-blocked path that reuses each loaded
// weight vector across several activation rows.
//
// The GEMV computes 4 rows at once, taken from the 4 quarters of the thread's rows: row i of each
// quarter. Each of the 4 memory streams then runs through consecutive rows without a break. Adjacent
// rows (n, n+1, n+2, n+3) would make streams that end every row, which for rows of 1–4 KiB (K = 1024)
// starves the prefetcher: measured 13 vs 23 GB/s for bf16 3584×1024 on one thread, 21 vs 30 for f32.
import { shareStart, madd, hsum, dotF32 } from "./common";

// Rows of W kept hot while every activation row passes over them: 16 rows × K floats fits L2 for K ≤ 8192.
const NB: i32 = 16;

// A job multiplies one activation matrix X[M][K] by up to 8 weight matrices that share K (q/k/v, or an
// expert's gate/up), listed in a table that the host writes at MATMUL_TABLE: per product the output y,
// the weight w, its q8 scales and its rows N (4 u32). One job instead of one per matrix halves or
// thirds the handoffs of a decode step and gives the small matrices (k, v) both threads.
// Threads claim chunks of the products' rows, taken together, from a counter that the host zeroes
// before each parallel job, so a thread that starts late or runs slower takes fewer chunks instead of
// holding the others up (~8 chunks per thread). Both live in the arena's reserved first page; their
// addresses are MATMUL_TABLE and CHUNK_COUNTER in ../wasm/abi.ts.
const CHUNK_COUNTER: usize = 64;
const MATMUL_TABLE: usize = 128;

// Weight dtypes, as the host numbers them. X's layout per dtype: f32 x; bf16 x deinterleaved (see
// deinterleave8); q8 and q4 (the block dtypes) quants xa and scales xb (see quantize_act_q8).
const F32 = 0, BF16 = 1, Q8 = 2, Q4 = 3;

export function matmul(dtype: i32, count: i32, xa: usize, xb: usize, M: i32, K: i32, tid: i32, nt: i32): void {
  let total = 0;
  for (let i = 0; i < count; i++) total += load<i32>(MATMUL_TABLE + (<usize>i << 4) + 12);
  const ch = chunkRows(total, nt);
  for (let c = claim(nt, -1); c * ch < total; c = claim(nt, c)) {
    const g1 = min(total, c * ch + ch);
    // the pieces of chunk [c·ch, g1) in each product whose rows it covers
    let base = 0;
    for (let i = 0; i < count; i++) {
      const e = MATMUL_TABLE + (<usize>i << 4);
      const y = <usize>load<u32>(e), w = <usize>load<u32>(e + 4), scales = <usize>load<u32>(e + 8), N = load<i32>(e + 12);
      const n0 = max(c * ch - base, 0), n1 = min(g1 - base, N);
      if (n0 < n1) productRows(dtype, y, xa, xb, w, scales, M, N, K, n0, n1);
      base += N;
    }
  }
}

/** Rows n0..n1 of Y[M][N] = X · Wᵀ for one weight (X prepared for its dtype as above). */
export function productRows(dtype: i32, y: usize, xa: usize, xb: usize, w: usize, scales: usize, M: i32, N: i32, K: i32, n0: i32, n1: i32): void {
  if (M == 1) {
    if (dtype == F32) gemvF32(y, xa, xb, w, scales, K, n0, n1);
    else if (dtype == BF16) gemvBf16(y, xa, xb, w, scales, K, n0, n1);
    else if (dtype == Q8) gemvQ8(y, xa, xb, w, scales, K, n0, n1);
    else gemvQ4(y, xa, xb, w, scales, K, n0, n1);
  } else {
    if (dtype == F32) gemmF32(y, xa, xb, w, scales, M, N, K, n0, n1);
    else if (dtype == BF16) gemmBf16(y, xa, xb, w, scales, M, N, K, n0, n1);
    else if (dtype == Q8) gemmQ8(y, xa, xb, w, scales, M, N, K, n0, n1);
    else gemmQ4(y, xa, xb, w, scales, M, N, K, n0, n1);
  }
}

/** Rows per claimed chunk of an N-row product: all of them on one thread, else ~8 chunks per thread. */
@inline export function chunkRows(N: i32, nt: i32): i32 {
  if (nt == 1) return N;
  const c = (N + nt * 8 - 1) / (nt * 8);
  return max(16, (c + 3) & ~3);
}

/** The next chunk index after `prev` that this thread computes: in order alone, claimed from the shared counter otherwise. */
@inline export function claim(nt: i32, prev: i32): i32 {
  return nt == 1 ? prev + 1 : atomic.add<i32>(CHUNK_COUNTER, 1);
}

// ---------------------------------------------------------------- shared skeletons
// One GEMV and one GEMM skeleton; the per-dtype pieces below (dot: one output, quad: one activation
// row against 4 weight rows, tile: 4 activation rows against 2 weight rows) are picked by a constant
// dtype, so each gemv*/gemm* function is a specialised copy made by the compiler, not by hand.

// Each (shape, dtype) pair is its own function: one body per skeleton keeps V8's register
// allocation as good as hand-written copies (one combined body per dtype measured 6–9% slower).
function gemvF32(y: usize, xa: usize, xb: usize, w: usize, sc: usize, K: i32, n0: i32, n1: i32): void { gemv(F32, y, xa, xb, w, sc, K, n0, n1); }
function gemvBf16(y: usize, xa: usize, xb: usize, w: usize, sc: usize, K: i32, n0: i32, n1: i32): void { gemv(BF16, y, xa, xb, w, sc, K, n0, n1); }
function gemvQ8(y: usize, xa: usize, xb: usize, w: usize, sc: usize, K: i32, n0: i32, n1: i32): void { gemv(Q8, y, xa, xb, w, sc, K, n0, n1); }
function gemvQ4(y: usize, xa: usize, xb: usize, w: usize, sc: usize, K: i32, n0: i32, n1: i32): void { gemv(Q4, y, xa, xb, w, sc, K, n0, n1); }
function gemmF32(y: usize, xa: usize, xb: usize, w: usize, sc: usize, M: i32, N: i32, K: i32, n0: i32, n1: i32): void { gemm(F32, y, xa, xb, w, sc, M, N, K, n0, n1); }
function gemmBf16(y: usize, xa: usize, xb: usize, w: usize, sc: usize, M: i32, N: i32, K: i32, n0: i32, n1: i32): void { gemm(BF16, y, xa, xb, w, sc, M, N, K, n0, n1); }
function gemmQ8(y: usize, xa: usize, xb: usize, w: usize, sc: usize, M: i32, N: i32, K: i32, n0: i32, n1: i32): void { gemm(Q8, y, xa, xb, w, sc, M, N, K, n0, n1); }
function gemmQ4(y: usize, xa: usize, xb: usize, w: usize, sc: usize, M: i32, N: i32, K: i32, n0: i32, n1: i32): void { gemm(Q4, y, xa, xb, w, sc, M, N, K, n0, n1); }

/** Whether the SIMD pieces apply: f32 rows of any length work, through dot's scalar tail only. */
@inline function vectorRows(dtype: i32, K: i32): bool {
  return dtype != F32 || (K & 3) == 0;
}

/**
 * Activation rows per tile: 4 (against 2 weight rows, 8 accumulators), but 1 for the block dtypes,
 * whose block dot products leave no registers for 8 accumulators (4 rows measured 44 against 51
 * GFLOP/s for q8 256×4096×4096 on 2 threads).
 */
@inline function tileRows(dtype: i32): i32 {
  return dtype >= Q8 ? 1 : 4;
}

/** Bytes of one 32-weight block's quants: int8 (q8) or nibbles (q4). */
@inline function blockBytes(dtype: i32): usize {
  return dtype == Q4 ? 16 : 32;
}

@inline function weightRowBytes(dtype: i32, K: i32): usize {
  return dtype == F32 ? <usize>K << 2 : dtype == BF16 ? <usize>K << 1 : <usize>(K >> 5) * blockBytes(dtype);
}

/** Bytes between activation rows: f32 (bf16's deinterleaved x too), or q8 quants for the block dtypes. */
@inline function actRowBytes(dtype: i32, K: i32): usize {
  return dtype >= Q8 ? <usize>K * Q8_ACT_BYTES : <usize>K << 2;
}

@inline function gemv(dtype: i32, y: usize, xa: usize, xb: usize, w: usize, sc: usize, K: i32, n0: i32, n1: i32): void {
  const q = vectorRows(dtype, K) ? (n1 - n0) >> 2 : 0;
  for (let i = 0; i < q; i++) quad(dtype, y, xa, xb, w, sc, K, n0 + i, n0 + i + q, n0 + i + 2 * q, n0 + i + 3 * q);
  for (let n = n0 + 4 * q; n < n1; n++) store<f32>(y + (<usize>n << 2), dot(dtype, xa, xb, w, sc, K, n));
}

@inline function gemm(dtype: i32, y: usize, xa: usize, xb: usize, w: usize, sc: usize, M: i32, N: i32, K: i32, n0: i32, n1: i32): void {
  const ys = <usize>N << 2;
  const xrs = actRowBytes(dtype, K), srs = <usize>K >> 3;
  for (let nb = n0; nb < n1; nb += NB) {
    const ne = min(nb + NB, n1);
    let m = 0;
    const mt = tileRows(dtype);
    if (vectorRows(dtype, K)) {
      for (; m + mt <= M; m += mt) {
        let n = nb;
        for (; n + 2 <= ne; n += 2) tile(dtype, y + <usize>m * ys, ys, xa + <usize>m * xrs, xrs, xb + <usize>m * srs, w, sc, K, n);
        for (; n < ne; n++) {
          for (let r = m; r < m + mt; r++) store<f32>(y + <usize>r * ys + (<usize>n << 2), dot(dtype, xa + <usize>r * xrs, xb + <usize>r * srs, w, sc, K, n));
        }
      }
    }
    for (; m < M; m++) {
      for (let n = nb; n < ne; n++) store<f32>(y + <usize>m * ys + (<usize>n << 2), dot(dtype, xa + <usize>m * xrs, xb + <usize>m * srs, w, sc, K, n));
    }
  }
}

/** y = w[n] · x for one weight row and one activation row. */
@inline function dot(dtype: i32, xa: usize, xb: usize, w: usize, sc: usize, K: i32, n: i32): f32 {
  const wr = w + <usize>n * weightRowBytes(dtype, K);
  if (dtype == F32) return dotF32(wr, xa, K);
  if (dtype == BF16) return dotBf16(wr, xa, K);
  if (dtype == Q8) return dotQ8(wr, sc + <usize>n * (<usize>K >> 3), xa, xb, K >> 5);
  return dotQ4(wr, sc + <usize>n * (<usize>K >> 3), xa, xb, K >> 5);
}

@inline function store4(y: usize, r0: i32, r1: i32, r2: i32, r3: i32, a0: v128, a1: v128, a2: v128, a3: v128): void {
  store<f32>(y + (<usize>r0 << 2), hsum(a0));
  store<f32>(y + (<usize>r1 << 2), hsum(a1));
  store<f32>(y + (<usize>r2 << 2), hsum(a2));
  store<f32>(y + (<usize>r3 << 2), hsum(a3));
}

/** One activation row against weight rows r0..r3 (4 concurrent memory streams). */
@inline function quad(dtype: i32, y: usize, xa: usize, xb: usize, w: usize, sc: usize, K: i32, r0: i32, r1: i32, r2: i32, r3: i32): void {
  const rs = weightRowBytes(dtype, K);
  const w0 = w + <usize>r0 * rs, w1 = w + <usize>r1 * rs, w2 = w + <usize>r2 * rs, w3 = w + <usize>r3 * rs;
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  if (dtype == F32) {
    for (let k: usize = 0; k < (<usize>K << 2); k += 16) {
      const xv = v128.load(xa + k);
      a0 = madd(v128.load(w0 + k), xv, a0);
      a1 = madd(v128.load(w1 + k), xv, a1);
      a2 = madd(v128.load(w2 + k), xv, a2);
      a3 = madd(v128.load(w3 + k), xv, a3);
    }
  } else if (dtype == BF16) {
    for (let k: usize = 0; k < <usize>K; k += 8) {
      const xe = v128.load(xa + (k << 2)), xo = v128.load(xa + (k << 2) + 16);
      const kw = k << 1;
      let v = v128.load(w0 + kw);
      a0 = madd(v128.and(v, HI_MASK), xo, madd(i32x4.shl(v, 16), xe, a0));
      v = v128.load(w1 + kw);
      a1 = madd(v128.and(v, HI_MASK), xo, madd(i32x4.shl(v, 16), xe, a1));
      v = v128.load(w2 + kw);
      a2 = madd(v128.and(v, HI_MASK), xo, madd(i32x4.shl(v, 16), xe, a2));
      v = v128.load(w3 + kw);
      a3 = madd(v128.and(v, HI_MASK), xo, madd(i32x4.shl(v, 16), xe, a3));
    }
  } else {
    const srs = <usize>K >> 3;
    const s0 = sc + <usize>r0 * srs, s1 = sc + <usize>r1 * srs, s2 = sc + <usize>r2 * srs, s3 = sc + <usize>r3 * srs;
    const xbs = <usize>(32 * Q8_ACT_BYTES), nb = K >> 5;
    for (let b = 0; b < nb; b++) {
      const bo = <usize>b * blockBytes(dtype), so = <usize>b << 2;
      const xq = xa + <usize>b * xbs;
      const dx = load<f32>(xb + so);
      a0 = madd(f32x4.convert_i32x4_s(weightBlockDot(dtype, w0 + bo, xq)), f32x4.splat(dx * load<f32>(s0 + so)), a0);
      a1 = madd(f32x4.convert_i32x4_s(weightBlockDot(dtype, w1 + bo, xq)), f32x4.splat(dx * load<f32>(s1 + so)), a1);
      a2 = madd(f32x4.convert_i32x4_s(weightBlockDot(dtype, w2 + bo, xq)), f32x4.splat(dx * load<f32>(s2 + so)), a2);
      a3 = madd(f32x4.convert_i32x4_s(weightBlockDot(dtype, w3 + bo, xq)), f32x4.splat(dx * load<f32>(s3 + so)), a3);
    }
  }
  store4(y, r0, r1, r2, r3, a0, a1, a2, a3);
}

/** tileRows activation rows (x at xa, xrs bytes apart; q8 scales at xb) against weight rows n, n+1; y is the tile's first row. */
@inline function tile(dtype: i32, y: usize, ys: usize, xa: usize, xrs: usize, xb: usize, w: usize, sc: usize, K: i32, n: i32): void {
  const rs = weightRowBytes(dtype, K);
  const w0 = w + <usize>n * rs, w1 = w0 + rs;
  const x0 = xa, x1 = x0 + xrs, x2 = x1 + xrs, x3 = x2 + xrs;
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0), c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  if (dtype == F32) {
    const kb = <usize>K << 2;
    for (let k: usize = 0; k < kb; k += 16) {
      const b0 = v128.load(w0 + k), b1 = v128.load(w1 + k);
      let a = v128.load(x0 + k); c00 = madd(a, b0, c00); c01 = madd(a, b1, c01);
      a = v128.load(x1 + k); c10 = madd(a, b0, c10); c11 = madd(a, b1, c11);
      a = v128.load(x2 + k); c20 = madd(a, b0, c20); c21 = madd(a, b1, c21);
      a = v128.load(x3 + k); c30 = madd(a, b0, c30); c31 = madd(a, b1, c31);
    }
  } else if (dtype == BF16) {
    const kEnd = <usize>K;
    for (let k: usize = 0; k < kEnd; k += 8) {
      const v0 = v128.load(w0 + (k << 1)), v1 = v128.load(w1 + (k << 1));
      const ko = k << 2;
      // even elements, then odd (see deinterleave8)
      let b0 = i32x4.shl(v0, 16), b1 = i32x4.shl(v1, 16);
      let a = v128.load(x0 + ko); c00 = madd(a, b0, c00); c01 = madd(a, b1, c01);
      a = v128.load(x1 + ko); c10 = madd(a, b0, c10); c11 = madd(a, b1, c11);
      a = v128.load(x2 + ko); c20 = madd(a, b0, c20); c21 = madd(a, b1, c21);
      a = v128.load(x3 + ko); c30 = madd(a, b0, c30); c31 = madd(a, b1, c31);
      b0 = v128.and(v0, HI_MASK); b1 = v128.and(v1, HI_MASK);
      a = v128.load(x0 + ko + 16); c00 = madd(a, b0, c00); c01 = madd(a, b1, c01);
      a = v128.load(x1 + ko + 16); c10 = madd(a, b0, c10); c11 = madd(a, b1, c11);
      a = v128.load(x2 + ko + 16); c20 = madd(a, b0, c20); c21 = madd(a, b1, c21);
      a = v128.load(x3 + ko + 16); c30 = madd(a, b0, c30); c31 = madd(a, b1, c31);
    }
  } else {
    // one activation row (tileRows) against weight rows n, n+1
    const srs = <usize>K >> 3;
    const s0 = sc + <usize>n * srs, s1 = s0 + srs;
    const xbs = <usize>(32 * Q8_ACT_BYTES), nb = K >> 5;
    for (let b = 0; b < nb; b++) {
      const bo = <usize>b * blockBytes(dtype), so = <usize>b << 2;
      const dx = load<f32>(xb + so);
      const xq = xa + <usize>b * xbs;
      c00 = madd(f32x4.convert_i32x4_s(weightBlockDot(dtype, w0 + bo, xq)), f32x4.splat(dx * load<f32>(s0 + so)), c00);
      c01 = madd(f32x4.convert_i32x4_s(weightBlockDot(dtype, w1 + bo, xq)), f32x4.splat(dx * load<f32>(s1 + so)), c01);
    }
    store<f32>(y + (<usize>n << 2), hsum(c00));
    store<f32>(y + (<usize>n << 2) + 4, hsum(c01));
    return;
  }
  const o = y + (<usize>n << 2);
  store<f32>(o, hsum(c00)); store<f32>(o + 4, hsum(c01));
  store<f32>(o + ys, hsum(c10)); store<f32>(o + ys + 4, hsum(c11));
  store<f32>(o + 2 * ys, hsum(c20)); store<f32>(o + 2 * ys + 4, hsum(c21));
  store<f32>(o + 3 * ys, hsum(c30)); store<f32>(o + 3 * ys + 4, hsum(c31));
}

// ---------------------------------------------------------------- bf16
// A v128 of 8 bf16 weights is 4 u32 lanes (odd<<16 | even): lane<<16 is the even elements as f32 and
// lane & 0xffff0000 the odd ones, so converting costs one op per 4 weights. The activations are passed
// pre-arranged to match (see deinterleave8): per group of 8, the 4 even then the 4 odd elements.

const HI_MASK: v128 = i32x4(0xffff0000, 0xffff0000, 0xffff0000, 0xffff0000);

function dotBf16(wr: usize, xd: usize, K: i32): f32 {
  let a = f32x4.splat(0), b = f32x4.splat(0);
  for (let k: usize = 0; k < <usize>K; k += 8) {
    const wv = v128.load(wr + (k << 1));
    a = madd(i32x4.shl(wv, 16), v128.load(xd + (k << 2)), a);
    b = madd(v128.and(wv, HI_MASK), v128.load(xd + (k << 2) + 16), b);
  }
  return hsum(f32x4.add(a, b));
}

/** Rearranges each group of 8 floats as its 4 even then its 4 odd elements (the bf16 kernels' x layout). */
export function deinterleave8(dst: usize, src: usize, n: i32, tid: i32, nt: i32): void {
  deinterleaveGroups(dst, src, shareStart(n >> 3, tid, nt, 1), shareStart(n >> 3, tid + 1, nt, 1));
}

/** deinterleave8 of the groups of 8 numbered s..e. */
@inline export function deinterleaveGroups(dst: usize, src: usize, s: i32, e: i32): void {
  for (let g = s; g < e; g++) {
    const o = <usize>g << 5;
    const a = v128.load(src + o), b = v128.load(src + o + 16);
    v128.store(dst + o, v128.shuffle<f32>(a, b, 0, 2, 4, 6));
    v128.store(dst + o + 16, v128.shuffle<f32>(a, b, 1, 3, 5, 7));
  }
}

// ---------------------------------------------------------------- q8 and q4 (blocks of 32, one f32 scale each)
// Weights: int8 quants [N][K] (q4: nibbles [N][K/2], as GGUF's Q4_0 lays a block out) and scales [N][K/32]. Activations are quantized per row the same way
// (quantize_act_q8); the plain build keeps them sign-extended to int16 so that each block is four
// i32x4.dot_i16x8_s, the relaxed build keeps int8 and uses i16x8.relaxed_dot_i8x16_i7x16_s (pmaddubsw)
// on |x| against w carrying x's sign. Not the fused i32x4.relaxed_dot_i8x16_i7x16_add_s: Node 20's V8
// drops its accumulator and doubles the dot product (checked in wasm-backend.test.ts through matmul_q8).

/** Bytes per activation element in this build's q8 activation layout. */
export const Q8_ACT_BYTES: i32 = ASC_FEATURE_RELAXED_SIMD ? 1 : 2;

/** Integer dot products of a block's 32 int8 weights (w0: weights 0–15, w1: 16–31) with its activations, in 4 lanes. */
@inline function blockDotV(w0: v128, w1: v128, xq: usize): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    const x0 = v128.load(xq), x1 = v128.load(xq + 16);
    const s0 = i8x16.shr_s(x0, 7), s1 = i8x16.shr_s(x1, 7);
    const d0 = i16x8.relaxed_dot_i8x16_i7x16_s(i8x16.sub(v128.xor(w0, s0), s0), i8x16.abs(x0));
    const d1 = i16x8.relaxed_dot_i8x16_i7x16_s(i8x16.sub(v128.xor(w1, s1), s1), i8x16.abs(x1));
    return i32x4.add(i32x4.extadd_pairwise_i16x8_s(d0), i32x4.extadd_pairwise_i16x8_s(d1));
  }
  const d0 = i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w0), v128.load(xq));
  const d1 = i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w0), v128.load(xq + 16));
  const d2 = i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w1), v128.load(xq + 32));
  const d3 = i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w1), v128.load(xq + 48));
  return i32x4.add(i32x4.add(d0, d1), i32x4.add(d2, d3));
}

const LOW_NIBBLES: v128 = i8x16(15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15);
const EIGHT: v128 = i8x16(8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8);

/** The block dot of a q8 block (32 int8), or of a q4 block (16 bytes: weight j in the low nibble of byte j, weight 16+j in its high nibble, each stored + 8). */
@inline function weightBlockDot(dtype: i32, wq: usize, xq: usize): v128 {
  if (dtype == Q4) {
    const v = v128.load(wq);
    return blockDotV(i8x16.sub(v128.and(v, LOW_NIBBLES), EIGHT), i8x16.sub(i8x16.shr_u(v, 4), EIGHT), xq);
  }
  return blockDotV(v128.load(wq), v128.load(wq + 16), xq);
}

@inline function dotBlocks(dtype: i32, wq: usize, ws: usize, xq: usize, xs: usize, nb: i32): f32 {
  let acc = f32x4.splat(0);
  const xb = <usize>(32 * Q8_ACT_BYTES);
  for (let b = 0; b < nb; b++) {
    const d = load<f32>(ws + (<usize>b << 2)) * load<f32>(xs + (<usize>b << 2));
    acc = madd(f32x4.convert_i32x4_s(weightBlockDot(dtype, wq + <usize>b * blockBytes(dtype), xq + <usize>b * xb)), f32x4.splat(d), acc);
  }
  return hsum(acc);
}

function dotQ8(wq: usize, ws: usize, xq: usize, xs: usize, nb: i32): f32 {
  return dotBlocks(Q8, wq, ws, xq, xs, nb);
}

function dotQ4(wq: usize, ws: usize, xq: usize, xs: usize, nb: i32): f32 {
  return dotBlocks(Q4, wq, ws, xq, xs, nb);
}
