// Element-wise and per-row operators of the transformer block.
import { shareStart, madd, hsum } from "./common";

/** y = x / sqrt(mean(x²) + eps) · w, per row of n (HF LlamaRMSNorm/MixtralRMSNorm in f32). y may be x. */
export function rmsnorm(y: usize, x: usize, w: usize, rows: i32, n: i32, eps: f32, tid: i32, nt: i32): void {
  const s = shareStart(rows, tid, nt, 1), e = shareStart(rows, tid + 1, nt, 1);
  const rb = <usize>n << 2;
  for (let r = s; r < e; r++) {
    const xr = x + <usize>r * rb, yr = y + <usize>r * rb;
    let acc = f32x4.splat(0);
    let k = 0;
    for (; k + 4 <= n; k += 4) {
      const v = v128.load(xr + (<usize>k << 2));
      acc = madd(v, v, acc);
    }
    let ss = hsum(acc);
    for (; k < n; k++) { const v = load<f32>(xr + (<usize>k << 2)); ss += v * v; }
    const inv: f32 = 1 / sqrt<f32>(ss / <f32>n + eps);
    const iv = f32x4.splat(inv);
    k = 0;
    for (; k + 4 <= n; k += 4) {
      const o = <usize>k << 2;
      v128.store(yr + o, f32x4.mul(f32x4.mul(v128.load(xr + o), iv), v128.load(w + o)));
    }
    for (; k < n; k++) { const o = <usize>k << 2; store<f32>(yr + o, load<f32>(xr + o) * inv * load<f32>(w + o)); }
  }
}

/**
 * Rotary embedding, Hugging Face rotate-half convention, in place on rows of `heads` × hd:
 * (x1, x2) → (x1·cos − x2·sin, x2·cos + x1·sin) with x1 the first half of a head, x2 the second.
 * cos/sin tables are [position][hd/2]; positions[i] is row i's position.
 */
export function rope(x: usize, rows: i32, heads: i32, hd: i32, positions: usize, cosT: usize, sinT: usize, tid: i32, nt: i32): void {
  const half = hd >> 1;
  const total = rows * heads;
  const s = shareStart(total, tid, nt, 1), e = shareStart(total, tid + 1, nt, 1);
  for (let it = s; it < e; it++) {
    const r = it / heads;
    const p = <usize>load<i32>(positions + (<usize>r << 2));
    const base = x + (<usize>it * <usize>hd << 2);
    const ct = cosT + p * (<usize>half << 2), st = sinT + p * (<usize>half << 2);
    for (let i = 0; i < half; i++) {
      const o1 = base + (<usize>i << 2), o2 = o1 + (<usize>half << 2);
      const c = load<f32>(ct + (<usize>i << 2)), sn = load<f32>(st + (<usize>i << 2));
      const x1 = load<f32>(o1), x2 = load<f32>(o2);
      store<f32>(o1, x1 * c - x2 * sn);
      store<f32>(o2, x2 * c + x1 * sn);
    }
  }
}

/**
 * e^x for 4 lanes: x = n·ln2 + r with |r| ≤ ln2/2, e^r by Cephes' degree-7 polynomial, 2^n through the
 * exponent bits. Within 2 ulp of Mathf.exp over [-87, 88]; saturates outside.
 */
@inline function expV(x: v128): v128 {
  x = f32x4.min(f32x4.max(x, f32x4.splat(-87.3)), f32x4.splat(88.3));
  const n = f32x4.nearest(f32x4.mul(x, f32x4.splat(1.44269504)));
  let r = f32x4.sub(x, f32x4.mul(n, f32x4.splat(0.693359375)));
  r = f32x4.sub(r, f32x4.mul(n, f32x4.splat(-2.12194440e-4)));
  let p = f32x4.splat(1.9875691500e-4);
  p = madd(p, r, f32x4.splat(1.3981999507e-3));
  p = madd(p, r, f32x4.splat(8.3334519073e-3));
  p = madd(p, r, f32x4.splat(4.1665795894e-2));
  p = madd(p, r, f32x4.splat(1.6666665459e-1));
  p = madd(p, r, f32x4.splat(5.0000001201e-1));
  p = f32x4.add(madd(p, f32x4.mul(r, r), r), f32x4.splat(1));
  return i32x4.add(p, i32x4.shl(i32x4.trunc_sat_f32x4_s(n), 23));
}

/** h = silu(g) · u, with silu(g) = g / (1 + e^-g). h may alias g. */
export function silu_mul(h: usize, g: usize, u: usize, n: i32, tid: i32, nt: i32): void {
  siluMulRange(h, g, u, shareStart(n, tid, nt, 4), shareStart(n, tid + 1, nt, 4));
}

/** h[i] = silu(g[i]) · u[i] for i in [s, e): vectors from s on, so a range's values do not depend on where it starts if s % 4 == 0. */
@inline export function siluMulRange(h: usize, g: usize, u: usize, s: i32, e: i32): void {
  let i = s;
  for (; i + 4 <= e; i += 4) {
    const o = <usize>i << 2;
    const gv = v128.load(g + o);
    const sig = f32x4.div(gv, f32x4.add(f32x4.splat(1), expV(f32x4.neg(gv))));
    v128.store(h + o, f32x4.mul(sig, v128.load(u + o)));
  }
  for (; i < e; i++) {
    const o = <usize>i << 2;
    const gv = load<f32>(g + o);
    store<f32>(h + o, gv / (1 + Mathf.exp(-gv)) * load<f32>(u + o));
  }
}

/** y = a + b (element-wise). y may alias a or b. */
export function add(y: usize, a: usize, b: usize, n: i32, tid: i32, nt: i32): void {
  const s = shareStart(n, tid, nt, 4), e = shareStart(n, tid + 1, nt, 4);
  let i = s;
  for (; i + 4 <= e; i += 4) { const o = <usize>i << 2; v128.store(y + o, f32x4.add(v128.load(a + o), v128.load(b + o))); }
  for (; i < e; i++) { const o = <usize>i << 2; store<f32>(y + o, load<f32>(a + o) + load<f32>(b + o)); }
}

/** Clamp every element to [-c, c] (OLMoE's clip_qkv). */
export function clamp(x: usize, n: i32, c: f32): void {
  for (let i = 0; i < n; i++) { const o = <usize>i << 2; store<f32>(x + o, min(max(load<f32>(x + o), -c), c)); }
}

/**
 * The memory-bandwidth probe: reads `bytes` (a multiple of 4 MiB) from p and writes a checksum at
 * out + 16·tid. Each thread reads its share 4 MiB at a time as 4 concurrent streams, one per quarter:
 * the access pattern of the GEMV (4 streams through nearby rows), which is the fastest one measured
 * here (streams 128 MiB apart read ~20% slower), so the probe is a fair ceiling for the kernels.
 */
export function read_probe(p: usize, bytes: usize, out: usize, tid: i32, nt: i32): void {
  const CHUNK: usize = 4 << 20;
  const Q = CHUNK >> 2;
  const chunks = <i32>(bytes / CHUNK);
  const s = <usize>shareStart(chunks, tid, nt, 1) * CHUNK, e = <usize>shareStart(chunks, tid + 1, nt, 1) * CHUNK;
  let a = i32x4.splat(0), b = i32x4.splat(0), c = i32x4.splat(0), d = i32x4.splat(0);
  for (let base = s; base < e; base += CHUNK) {
    const p0 = p + base, p1 = p0 + Q, p2 = p1 + Q, p3 = p2 + Q;
    for (let o: usize = 0; o < Q; o += 32) {
      a = v128.xor(a, v128.xor(v128.load(p0 + o), v128.load(p0 + o + 16)));
      b = v128.xor(b, v128.xor(v128.load(p1 + o), v128.load(p1 + o + 16)));
      c = v128.xor(c, v128.xor(v128.load(p2 + o), v128.load(p2 + o + 16)));
      d = v128.xor(d, v128.xor(v128.load(p3 + o), v128.load(p3 + o + 16)));
    }
  }
  v128.store(out + (<usize>tid << 4), v128.xor(v128.xor(a, b), v128.xor(c, d)));
}

/** y[r] += b for each of `rows` rows of n. */
export function add_bias(y: usize, b: usize, rows: i32, n: i32, tid: i32, nt: i32): void {
  const s = shareStart(rows, tid, nt, 1), e = shareStart(rows, tid + 1, nt, 1);
  for (let r = s; r < e; r++) {
    const yr = y + (<usize>r * <usize>n << 2);
    let k = 0;
    for (; k + 4 <= n; k += 4) { const o = <usize>k << 2; v128.store(yr + o, f32x4.add(v128.load(yr + o), v128.load(b + o))); }
    for (; k < n; k++) { const o = <usize>k << 2; store<f32>(yr + o, load<f32>(yr + o) + load<f32>(b + o)); }
  }
}

/**
 * The compute probe: `iters` rounds of 12 independent multiply-add chains on 4 lanes (96 FLOPs a
 * round; fused in the relaxed build, a mul then an add otherwise, whose 6-cycle latency needs the 12
 * chains to fill the pipes); writes a checksum at out + 16·tid so the work is kept. Its rate is the
 * ceiling of what the matmul kernels can do.
 */
export function compute_probe(iters: i32, out: usize, tid: i32, nt: i32): void {
  const m = f32x4.splat(0.9999999), c = f32x4.splat(1e-7);
  let a0 = f32x4.splat(<f32>tid), a1 = f32x4.splat(1), a2 = f32x4.splat(2), a3 = f32x4.splat(3);
  let a4 = f32x4.splat(4), a5 = f32x4.splat(5), a6 = f32x4.splat(6), a7 = f32x4.splat(7);
  let a8 = f32x4.splat(8), a9 = f32x4.splat(9), a10 = f32x4.splat(10), a11 = f32x4.splat(11);
  for (let i = 0; i < iters; i++) {
    a0 = madd(a0, m, c); a1 = madd(a1, m, c); a2 = madd(a2, m, c); a3 = madd(a3, m, c);
    a4 = madd(a4, m, c); a5 = madd(a5, m, c); a6 = madd(a6, m, c); a7 = madd(a7, m, c);
    a8 = madd(a8, m, c); a9 = madd(a9, m, c); a10 = madd(a10, m, c); a11 = madd(a11, m, c);
  }
  const s = f32x4.add(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)), f32x4.add(f32x4.add(a4, a5), f32x4.add(a6, a7)));
  v128.store(out + (<usize>tid << 4), f32x4.add(s, f32x4.add(f32x4.add(a8, a9), f32x4.add(a10, a11))));
}
