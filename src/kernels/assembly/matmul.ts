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

/** X's layout per weight dtype: 0 f32 (x), 1 bf16 (x deinterleaved, see deinterleave8), 2 q8 (quants xa, scales xb). */
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
      if (n0 < n1) {
        if (dtype == 0) {
          if (M == 1) gemvF32(y, xa, w, n0, n1, K);
          else gemmF32(y, xa, w, M, N, K, n0, n1);
        } else if (dtype == 1) {
          if (M == 1) gemvBf16(y, xa, w, n0, n1, K);
          else gemmBf16(y, xa, w, M, N, K, n0, n1);
        } else rowsQ8(y, xa, xb, w, scales, M, N, K, n0, n1);
      }
      base += N;
    }
  }
}

@inline function chunkRows(N: i32, nt: i32): i32 {
  if (nt == 1) return N;
  const c = (N + nt * 8 - 1) / (nt * 8);
  return max(16, (c + 3) & ~3);
}

@inline function claim(nt: i32, prev: i32): i32 {
  return nt == 1 ? prev + 1 : atomic.add<i32>(CHUNK_COUNTER, 1);
}

// ---------------------------------------------------------------- f32

function gemvF32(y: usize, x: usize, w: usize, n0: i32, n1: i32, K: i32): void {
  const rs = <usize>K << 2;
  const kb = <usize>(K & ~3) << 2;
  const q = (K & 3) == 0 ? (n1 - n0) >> 2 : 0;
  for (let i = 0; i < q; i++) {
    const r0 = n0 + i, r1 = r0 + q, r2 = r1 + q, r3 = r2 + q;
    const w0 = w + <usize>r0 * rs, w1 = w + <usize>r1 * rs, w2 = w + <usize>r2 * rs, w3 = w + <usize>r3 * rs;
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    for (let k: usize = 0; k < kb; k += 16) {
      const xv = v128.load(x + k);
      a0 = madd(v128.load(w0 + k), xv, a0);
      a1 = madd(v128.load(w1 + k), xv, a1);
      a2 = madd(v128.load(w2 + k), xv, a2);
      a3 = madd(v128.load(w3 + k), xv, a3);
    }
    store<f32>(y + (<usize>r0 << 2), hsum(a0));
    store<f32>(y + (<usize>r1 << 2), hsum(a1));
    store<f32>(y + (<usize>r2 << 2), hsum(a2));
    store<f32>(y + (<usize>r3 << 2), hsum(a3));
  }
  for (let n = n0 + 4 * q; n < n1; n++) store<f32>(y + (<usize>n << 2), dotF32(w + <usize>n * rs, x, K));
}

function gemmF32(y: usize, x: usize, w: usize, M: i32, N: i32, K: i32, n0: i32, n1: i32): void {
  const rs = <usize>K << 2;
  const ys = <usize>N << 2;
  const kb = <usize>K << 2;
  const simd = (K & 3) == 0;
  for (let nb = n0; nb < n1; nb += NB) {
    const ne = min(nb + NB, n1);
    let m = 0;
    if (simd) {
      for (; m + 4 <= M; m += 4) {
        const x0 = x + <usize>m * rs;
        const x1 = x0 + rs, x2 = x1 + rs, x3 = x2 + rs;
        let n = nb;
        for (; n + 2 <= ne; n += 2) {
          const w0 = w + <usize>n * rs;
          const w1 = w0 + rs;
          let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c10 = f32x4.splat(0), c11 = f32x4.splat(0);
          let c20 = f32x4.splat(0), c21 = f32x4.splat(0), c30 = f32x4.splat(0), c31 = f32x4.splat(0);
          for (let k: usize = 0; k < kb; k += 16) {
            const b0 = v128.load(w0 + k);
            const b1 = v128.load(w1 + k);
            let a = v128.load(x0 + k);
            c00 = madd(a, b0, c00); c01 = madd(a, b1, c01);
            a = v128.load(x1 + k);
            c10 = madd(a, b0, c10); c11 = madd(a, b1, c11);
            a = v128.load(x2 + k);
            c20 = madd(a, b0, c20); c21 = madd(a, b1, c21);
            a = v128.load(x3 + k);
            c30 = madd(a, b0, c30); c31 = madd(a, b1, c31);
          }
          const o = y + <usize>m * ys + (<usize>n << 2);
          store<f32>(o, hsum(c00)); store<f32>(o + 4, hsum(c01));
          store<f32>(o + ys, hsum(c10)); store<f32>(o + ys + 4, hsum(c11));
          store<f32>(o + 2 * ys, hsum(c20)); store<f32>(o + 2 * ys + 4, hsum(c21));
          store<f32>(o + 3 * ys, hsum(c30)); store<f32>(o + 3 * ys + 4, hsum(c31));
        }
        for (; n < ne; n++) {
          const wr = w + <usize>n * rs;
          for (let r = 0; r < 4; r++) store<f32>(y + <usize>(m + r) * ys + (<usize>n << 2), dotF32(wr, x0 + <usize>r * rs, K));
        }
      }
    }
    for (; m < M; m++) {
      const xr = x + <usize>m * rs;
      for (let n = nb; n < ne; n++) store<f32>(y + <usize>m * ys + (<usize>n << 2), dotF32(w + <usize>n * rs, xr, K));
    }
  }
}

// ---------------------------------------------------------------- bf16
// A v128 of 8 bf16 weights is 4 u32 lanes (odd<<16 | even): lane<<16 is the even elements as f32 and
// lane & 0xffff0000 the odd ones, so converting costs one op per 4 weights. The activations are passed
// pre-arranged to match (see deinterleave8): per group of 8, the 4 even then the 4 odd elements.

const HI_MASK: v128 = i32x4(0xffff0000, 0xffff0000, 0xffff0000, 0xffff0000);

@inline function dotBf16(wr: usize, xd: usize, K: i32): f32 {
  let a = f32x4.splat(0), b = f32x4.splat(0);
  for (let k: usize = 0; k < <usize>K; k += 8) {
    const wv = v128.load(wr + (k << 1));
    a = madd(i32x4.shl(wv, 16), v128.load(xd + (k << 2)), a);
    b = madd(v128.and(wv, HI_MASK), v128.load(xd + (k << 2) + 16), b);
  }
  return hsum(f32x4.add(a, b));
}

function gemvBf16(y: usize, xd: usize, w: usize, n0: i32, n1: i32, K: i32): void {
  const rs = <usize>K << 1;
  const q = (n1 - n0) >> 2;
  for (let i = 0; i < q; i++) {
    const r0 = n0 + i, r1 = r0 + q, r2 = r1 + q, r3 = r2 + q;
    const w0 = w + <usize>r0 * rs, w1 = w + <usize>r1 * rs, w2 = w + <usize>r2 * rs, w3 = w + <usize>r3 * rs;
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    for (let k: usize = 0; k < <usize>K; k += 8) {
      const xe = v128.load(xd + (k << 2));
      const xo = v128.load(xd + (k << 2) + 16);
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
    store<f32>(y + (<usize>r0 << 2), hsum(a0));
    store<f32>(y + (<usize>r1 << 2), hsum(a1));
    store<f32>(y + (<usize>r2 << 2), hsum(a2));
    store<f32>(y + (<usize>r3 << 2), hsum(a3));
  }
  for (let n = n0 + 4 * q; n < n1; n++) store<f32>(y + (<usize>n << 2), dotBf16(w + <usize>n * rs, xd, K));
}

function gemmBf16(y: usize, xd: usize, w: usize, M: i32, N: i32, K: i32, n0: i32, n1: i32): void {
  const rs = <usize>K << 1;
  const xs = <usize>K << 2;
  const ys = <usize>N << 2;
  for (let nb = n0; nb < n1; nb += NB) {
    const ne = min(nb + NB, n1);
    let m = 0;
    for (; m + 4 <= M; m += 4) {
      const x0 = xd + <usize>m * xs;
      const x1 = x0 + xs, x2 = x1 + xs, x3 = x2 + xs;
      let n = nb;
      for (; n + 2 <= ne; n += 2) {
        const w0 = w + <usize>n * rs;
        const w1 = w0 + rs;
        let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c10 = f32x4.splat(0), c11 = f32x4.splat(0);
        let c20 = f32x4.splat(0), c21 = f32x4.splat(0), c30 = f32x4.splat(0), c31 = f32x4.splat(0);
        for (let k: usize = 0; k < <usize>K; k += 8) {
          const v0 = v128.load(w0 + (k << 1));
          const v1 = v128.load(w1 + (k << 1));
          const ko = k << 2;
          // even half
          let b0 = i32x4.shl(v0, 16), b1 = i32x4.shl(v1, 16);
          let a = v128.load(x0 + ko); c00 = madd(a, b0, c00); c01 = madd(a, b1, c01);
          a = v128.load(x1 + ko); c10 = madd(a, b0, c10); c11 = madd(a, b1, c11);
          a = v128.load(x2 + ko); c20 = madd(a, b0, c20); c21 = madd(a, b1, c21);
          a = v128.load(x3 + ko); c30 = madd(a, b0, c30); c31 = madd(a, b1, c31);
          // odd half
          b0 = v128.and(v0, HI_MASK); b1 = v128.and(v1, HI_MASK);
          a = v128.load(x0 + ko + 16); c00 = madd(a, b0, c00); c01 = madd(a, b1, c01);
          a = v128.load(x1 + ko + 16); c10 = madd(a, b0, c10); c11 = madd(a, b1, c11);
          a = v128.load(x2 + ko + 16); c20 = madd(a, b0, c20); c21 = madd(a, b1, c21);
          a = v128.load(x3 + ko + 16); c30 = madd(a, b0, c30); c31 = madd(a, b1, c31);
        }
        const o = y + <usize>m * ys + (<usize>n << 2);
        store<f32>(o, hsum(c00)); store<f32>(o + 4, hsum(c01));
        store<f32>(o + ys, hsum(c10)); store<f32>(o + ys + 4, hsum(c11));
        store<f32>(o + 2 * ys, hsum(c20)); store<f32>(o + 2 * ys + 4, hsum(c21));
        store<f32>(o + 3 * ys, hsum(c30)); store<f32>(o + 3 * ys + 4, hsum(c31));
      }
      for (; n < ne; n++) {
        const wr = w + <usize>n * rs;
        for (let r = 0; r < 4; r++) store<f32>(y + <usize>(m + r) * ys + (<usize>n << 2), dotBf16(wr, x0 + <usize>r * xs, K));
      }
    }
    for (; m < M; m++) {
      const xr = xd + <usize>m * xs;
      for (let n = nb; n < ne; n++) store<f32>(y + <usize>m * ys + (<usize>n << 2), dotBf16(w + <usize>n * rs, xr, K));
    }
  }
}

/** Rearranges each group of 8 floats as its 4 even then its 4 odd elements (the bf16 kernels' x layout). */
export function deinterleave8(dst: usize, src: usize, n: i32, tid: i32, nt: i32): void {
  const s = shareStart(n >> 3, tid, nt, 1), e = shareStart(n >> 3, tid + 1, nt, 1);
  for (let g = s; g < e; g++) {
    const o = <usize>g << 5;
    const a = v128.load(src + o), b = v128.load(src + o + 16);
    v128.store(dst + o, v128.shuffle<f32>(a, b, 0, 2, 4, 6));
    v128.store(dst + o + 16, v128.shuffle<f32>(a, b, 1, 3, 5, 7));
  }
}

// ---------------------------------------------------------------- q8 (blocks of 32, one f32 scale each)
// Weights: int8 quants [N][K] and scales [N][K/32]. Activations are quantized per row the same way
// (quantize_act_q8); the plain build keeps them sign-extended to int16 so that each block is four
// i32x4.dot_i16x8_s, the relaxed build keeps int8 and uses i16x8.relaxed_dot_i8x16_i7x16_s (pmaddubsw)
// on |x| against w carrying x's sign. Not the fused i32x4.relaxed_dot_i8x16_i7x16_add_s: Node 20's V8
// drops its accumulator and doubles the dot product (checked in wasm-backend.test.ts through matmul_q8).

/** Bytes per activation element in this build's q8 activation layout. */
export const Q8_ACT_BYTES: i32 = ASC_FEATURE_RELAXED_SIMD ? 1 : 2;

@inline function blockDot(wq: usize, xq: usize): v128 {
  const w0 = v128.load(wq), w1 = v128.load(wq + 16);
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

@inline function dotQ8(wq: usize, ws: usize, xq: usize, xs: usize, nb: i32): f32 {
  let acc = f32x4.splat(0);
  const xb = <usize>(32 * Q8_ACT_BYTES);
  for (let b = 0; b < nb; b++) {
    const d = load<f32>(ws + (<usize>b << 2)) * load<f32>(xs + (<usize>b << 2));
    acc = madd(f32x4.convert_i32x4_s(blockDot(wq + (<usize>b << 5), xq + <usize>b * xb)), f32x4.splat(d), acc);
  }
  return hsum(acc);
}

function rowsQ8(y: usize, xq: usize, xs: usize, wq: usize, ws: usize, M: i32, N: i32, K: i32, n0: i32, n1: i32): void {
  const nb = K >> 5;
  const ys = <usize>N << 2;
  const xrs = <usize>K * Q8_ACT_BYTES;
  const srs = <usize>nb << 2;
  if (M == 1) {
    const q = (n1 - n0) >> 2;
    const xb = <usize>(32 * Q8_ACT_BYTES);
    for (let i = 0; i < q; i++) {
      const r0 = n0 + i, r1 = r0 + q, r2 = r1 + q, r3 = r2 + q;
      const q0 = wq + <usize>r0 * <usize>K, q1 = wq + <usize>r1 * <usize>K, q2 = wq + <usize>r2 * <usize>K, q3 = wq + <usize>r3 * <usize>K;
      const s0 = ws + <usize>r0 * srs, s1 = ws + <usize>r1 * srs, s2 = ws + <usize>r2 * srs, s3 = ws + <usize>r3 * srs;
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      for (let b = 0; b < nb; b++) {
        const bo = <usize>b << 5, so = <usize>b << 2;
        const xqb = xq + <usize>b * xb;
        const dx = load<f32>(xs + so);
        a0 = madd(f32x4.convert_i32x4_s(blockDot(q0 + bo, xqb)), f32x4.splat(dx * load<f32>(s0 + so)), a0);
        a1 = madd(f32x4.convert_i32x4_s(blockDot(q1 + bo, xqb)), f32x4.splat(dx * load<f32>(s1 + so)), a1);
        a2 = madd(f32x4.convert_i32x4_s(blockDot(q2 + bo, xqb)), f32x4.splat(dx * load<f32>(s2 + so)), a2);
        a3 = madd(f32x4.convert_i32x4_s(blockDot(q3 + bo, xqb)), f32x4.splat(dx * load<f32>(s3 + so)), a3);
      }
      store<f32>(y + (<usize>r0 << 2), hsum(a0));
      store<f32>(y + (<usize>r1 << 2), hsum(a1));
      store<f32>(y + (<usize>r2 << 2), hsum(a2));
      store<f32>(y + (<usize>r3 << 2), hsum(a3));
    }
    for (let n = n0 + 4 * q; n < n1; n++) store<f32>(y + (<usize>n << 2), dotQ8(wq + <usize>n * <usize>K, ws + <usize>n * srs, xq, xs, nb));
    return;
  }
  for (let nbk = n0; nbk < n1; nbk += NB) {
    const ne = min(nbk + NB, n1);
    for (let m = 0; m < M; m++) {
      const xr = xq + <usize>m * xrs, sr = xs + <usize>m * srs;
      let n = nbk;
      for (; n + 2 <= ne; n += 2) {
        const q0 = wq + <usize>n * <usize>K, s0 = ws + <usize>n * srs;
        const q1 = q0 + <usize>K, s1 = s0 + srs;
        let a0 = f32x4.splat(0), a1 = f32x4.splat(0);
        const xb = <usize>(32 * Q8_ACT_BYTES);
        for (let b = 0; b < nb; b++) {
          const bo = <usize>b << 5, so = <usize>b << 2;
          const dx = load<f32>(sr + so);
          const xqb = xr + <usize>b * xb;
          a0 = madd(f32x4.convert_i32x4_s(blockDot(q0 + bo, xqb)), f32x4.splat(dx * load<f32>(s0 + so)), a0);
          a1 = madd(f32x4.convert_i32x4_s(blockDot(q1 + bo, xqb)), f32x4.splat(dx * load<f32>(s1 + so)), a1);
        }
        store<f32>(y + <usize>m * ys + (<usize>n << 2), hsum(a0));
        store<f32>(y + <usize>m * ys + (<usize>(n + 1) << 2), hsum(a1));
      }
      for (; n < ne; n++) store<f32>(y + <usize>m * ys + (<usize>n << 2), dotQ8(wq + <usize>n * <usize>K, ws + <usize>n * srs, xr, sr, nb));
    }
  }
}
