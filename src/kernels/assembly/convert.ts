// Weight and activation format conversions: load-time dtype changes and per-row q8 quantization.
import { shareStart, f16ToF32, f32ToF16 } from "./common";
import { Q8_ACT_BYTES } from "./matmul";

/** bf16 → f32. May run in place when dst = src - 2n (the f32 result overlays the bf16 input's region). */
export function bf16_to_f32(dst: usize, src: usize, n: i32): void {
  for (let i = 0; i < n; i++) store<u32>(dst + (<usize>i << 2), (<u32>load<u16>(src + (<usize>i << 1))) << 16);
}

/** f16 → f32; same in-place rule as bf16_to_f32. */
export function f16_to_f32(dst: usize, src: usize, n: i32): void {
  for (let i = 0; i < n; i++) store<f32>(dst + (<usize>i << 2), f16ToF32(load<u16>(src + (<usize>i << 1))));
}

/** f32 → bf16 with round-to-nearest-even; may run in place (dst = src). */
export function f32_to_bf16(dst: usize, src: usize, n: i32): void {
  for (let i = 0; i < n; i++) {
    const x = load<u32>(src + (<usize>i << 2));
    const r = (x & 0x7fffffff) > 0x7f800000 ? (x >> 16) | 0x40 : (x + 0x7fff + ((x >> 16) & 1)) >> 16;
    store<u16>(dst + (<usize>i << 1), <u16>r);
  }
}

/** One block of 32 as ggml's quantize_row_q8_0: d = amax/127 rounded to f16, q = round(x·127/amax). */
@inline export function quantizeBlock(src: usize, dq: usize, qbytes: i32): f32 {
  let amax: f32 = 0;
  for (let j = 0; j < 32; j++) amax = max(amax, abs(load<f32>(src + (<usize>j << 2))));
  const d: f32 = amax / 127;
  const id: f32 = d != 0 ? 1 / d : 0;
  for (let j = 0; j < 32; j++) {
    const v = load<f32>(src + (<usize>j << 2)) * id;
    const q = <i32>(v >= 0 ? floor<f32>(v + 0.5) : -floor<f32>(-v + 0.5));
    if (qbytes == 1) store<i8>(dq + <usize>j, <i8>q);
    else store<i16>(dq + (<usize>j << 1), <i16>q);
  }
  return f16ToF32(f32ToF16(d));
}

/** Weight rows (f32, K % 32 == 0) → int8 quants [rows][K] and f32 scales [rows][K/32]. */
export function quantize_q8(dq: usize, ds: usize, src: usize, rows: i32, K: i32, tid: i32, nt: i32): void {
  const nb = K >> 5;
  const total = rows * nb;
  const s = shareStart(total, tid, nt, 1), e = shareStart(total, tid + 1, nt, 1);
  for (let b = s; b < e; b++) {
    store<f32>(ds + (<usize>b << 2), quantizeBlock(src + (<usize>b << 7), dq + (<usize>b << 5), 1));
  }
}

/**
 * Weight rows (f32, K % 32 == 0) → q4 blocks as ggml's quantize_row_q4_0: d = (the value of largest
 * magnitude) / -8 rounded to f16, q = min(15, trunc(x/d + 8.5)); byte j of a block holds weight j in
 * its low nibble and weight 16+j in its high nibble. Quants [rows][K/2], scales [rows][K/32].
 */
export function quantize_q4(dq: usize, ds: usize, src: usize, rows: i32, K: i32, tid: i32, nt: i32): void {
  const nb = K >> 5;
  const total = rows * nb;
  const s = shareStart(total, tid, nt, 1), e = shareStart(total, tid + 1, nt, 1);
  for (let b = s; b < e; b++) {
    const x = src + (<usize>b << 7);
    let amax: f32 = 0, mx: f32 = 0;
    for (let j = 0; j < 32; j++) {
      const v = load<f32>(x + (<usize>j << 2));
      if (abs(v) > amax) { amax = abs(v); mx = v; }
    }
    const d: f32 = mx / -8;
    const id: f32 = d != 0 ? 1 / d : 0;
    const q = dq + (<usize>b << 4);
    for (let j = 0; j < 16; j++) {
      const lo = min(15, <i32>(load<f32>(x + (<usize>j << 2)) * id + 8.5));
      const hi = min(15, <i32>(load<f32>(x + (<usize>(j + 16) << 2)) * id + 8.5));
      store<u8>(q + <usize>j, <u8>(lo | (hi << 4)));
    }
    store<f32>(ds + (<usize>b << 2), f16ToF32(f32ToF16(d)));
  }
}

/** Activation rows → this build's q8 activation layout (see Q8_ACT_BYTES) and f32 scales. */
export function quantize_act_q8(dq: usize, ds: usize, src: usize, rows: i32, K: i32, tid: i32, nt: i32): void {
  const nb = K >> 5;
  const total = rows * nb;
  const s = shareStart(total, tid, nt, 1), e = shareStart(total, tid + 1, nt, 1);
  for (let b = s; b < e; b++) {
    store<f32>(ds + (<usize>b << 2), quantizeBlock(src + (<usize>b << 7), dq + <usize>b * <usize>(32 * Q8_ACT_BYTES), Q8_ACT_BYTES));
  }
}

/** Dequantized rows of a table (embedding lookup): dst[i] = table[ids[i]] as f32. dtype 0 f32, 1 bf16, 2 q8, 3 q4. */
export function get_rows(dst: usize, table: usize, scales: usize, dtype: i32, ids: usize, n: i32, K: i32): void {
  for (let i = 0; i < n; i++) {
    const r = <usize>load<i32>(ids + (<usize>i << 2));
    const out = dst + <usize>i * (<usize>K << 2);
    if (dtype == 0) memory.copy(out, table + r * (<usize>K << 2), <usize>K << 2);
    else if (dtype == 1) bf16_to_f32(out, table + r * (<usize>K << 1), K);
    else if (dtype == 2) {
      const q = table + r * <usize>K;
      const sc = scales + r * (<usize>(K >> 5) << 2);
      for (let k = 0; k < K; k++) store<f32>(out + (<usize>k << 2), <f32>load<i8>(q + <usize>k) * load<f32>(sc + (<usize>(k >> 5) << 2)));
    } else {
      const q = table + r * (<usize>K >> 1);
      const sc = scales + r * (<usize>(K >> 5) << 2);
      for (let k = 0; k < K; k++) {
        const byte = <i32>load<u8>(q + (<usize>(k >> 5) << 4) + <usize>(k & 15));
        const nib = (k & 31) < 16 ? byte & 15 : byte >> 4;
        store<f32>(out + (<usize>k << 2), <f32>(nib - 8) * load<f32>(sc + (<usize>(k >> 5) << 2)));
      }
    }
  }
}
