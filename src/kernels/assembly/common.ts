// Shared helpers for the kernels. Every exported kernel takes (tid, nt) and computes its own share of
// the work, so the same export runs single-threaded (0, 1) or split across the worker pool.

/** First index of thread `tid`'s share of `n` items, in multiples of `align`. */
@inline
export function shareStart(n: i32, tid: i32, nt: i32, align: i32): i32 {
  if (tid >= nt) return n;
  const units = (n + align - 1) / align;
  const s = <i32>((<i64>units * tid) / nt) * align;
  return s < n ? s : n;
}

/** a*b + c, fused when relaxed SIMD is available (the relaxed build), plain mul+add otherwise. */
@inline
export function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

@inline
export function hsum(v: v128): f32 {
  return f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1) + f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3);
}

/** Dot product of two f32 vectors of length n (any n). */
export function dotF32(a: usize, b: usize, n: i32): f32 {
  let acc0 = f32x4.splat(0);
  let acc1 = f32x4.splat(0);
  let k = 0;
  for (; k + 8 <= n; k += 8) {
    const o = <usize>k << 2;
    acc0 = madd(v128.load(a + o), v128.load(b + o), acc0);
    acc1 = madd(v128.load(a + o + 16), v128.load(b + o + 16), acc1);
  }
  let s = hsum(f32x4.add(acc0, acc1));
  for (; k < n; k++) s += load<f32>(a + (<usize>k << 2)) * load<f32>(b + (<usize>k << 2));
  return s;
}

/** IEEE half → single, exact. */
export function f16ToF32(h: u32): f32 {
  const sign = (h & 0x8000) << 16;
  const exp = (h >> 10) & 0x1f;
  const man = h & 0x3ff;
  if (exp == 0) {
    // zero or subnormal: man * 2^-24
    const v = <f32>man * reinterpret<f32>(<u32>0x33800000);
    return reinterpret<f32>(reinterpret<u32>(v) | sign);
  }
  if (exp == 31) return reinterpret<f32>(sign | 0x7f800000 | (man << 13));
  return reinterpret<f32>(sign | ((exp + 112) << 23) | (man << 13));
}

/** Single → half with round-to-nearest-even (as GGML_FP32_TO_FP16 on x86). */
export function f32ToF16(f: f32): u32 {
  const x = reinterpret<u32>(f);
  const sign = (x >> 16) & 0x8000;
  const ax = x & 0x7fffffff;
  if (ax >= 0x7f800000) return sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 : 0);
  if (ax >= 0x477ff000) return sign | 0x7c00; // rounds to infinity
  if (ax < 0x38800000) {
    // subnormal half: round(|f| * 2^24)
    const v = reinterpret<f32>(ax) * reinterpret<f32>(<u32>0x4b800000);
    return sign | <u32>nearest<f32>(v);
  }
  const e = (ax >> 23) - 112;
  const m = ax & 0x7fffff;
  let h = (e << 10) | (m >> 13);
  const rest = m & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
  return sign | h;
}
