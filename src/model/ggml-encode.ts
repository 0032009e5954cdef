// float32 values encoded as the ggml types a converter writes, bit for bit as gguf-py's quants.py
// encodes them (numpy semantics): F16 and BF16 round to nearest even (BF16 quiets NaNs as ggml does),
// Q8_0 is blocks of 32 int8 with one f16 scale, rounded half away from zero in float32 arithmetic.

/** ggml type ids (ggml.h) of the types written here. */
export const GGML_TYPE_ID = { F32: 0, F16: 1, Q8_0: 8, BF16: 30 } as const;
export type EncodedType = keyof typeof GGML_TYPE_ID;

/** Bytes a row of n values takes in `type` (n a multiple of the block size for Q8_0). */
export function rowBytes(type: EncodedType, n: number): number {
  return type === "F32" ? 4 * n : type === "Q8_0" ? (n / 32) * 34 : 2 * n;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The bits of the float16 nearest a float32 (ties to even; overflow to infinity, subnormals kept), as numpy's astype(float16). */
export function f16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // subnormal half (or zero): shift the full significand (implicit bit included) into 10 bits
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rest = m & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rest > half || (rest === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++; // a carry into the exponent is the right rounding, up to infinity
  return sign | h;
}

/** The bits of a float32 (given as its bits) rounded to bfloat16, as ggml_compute_fp32_to_bf16. */
export function bf16Bits(x: number): number {
  if ((x & 0x7fffffff) >>> 0 > 0x7f800000) return ((x >>> 16) & 0xffff) | 64; // quiet NaN
  return Math.floor((x + 0x7fff + ((x >>> 16) & 1)) / 65536) & 0xffff;
}

/** The float32 that a float16's bits stand for. */
export function f16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1024 + m) * 2 ** (e - 25);
}

/** `values` (whole rows of `type`'s block size) encoded as `type`, into `out` (rowBytes long per row). */
export function encodeValues(values: Float32Array, type: EncodedType, out: Uint8Array): void {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const n = values.length;
  if (type === "F32") {
    out.set(new Uint8Array(values.buffer, values.byteOffset, 4 * n));
  } else if (type === "F16") {
    for (let i = 0; i < n; i++) view.setUint16(2 * i, f16Bits(values[i]!), true);
  } else if (type === "BF16") {
    const bits = new Uint32Array(values.buffer, values.byteOffset, n);
    for (let i = 0; i < n; i++) view.setUint16(2 * i, bf16Bits(bits[i]!), true);
  } else {
    if (n % 32 !== 0) throw new Error(`Q8_0 needs whole blocks of 32 values, got ${n}`);
    const q = new Int8Array(out.buffer, out.byteOffset, out.byteLength);
    for (let b = 0, base = 0; base < n; b++, base += 32) {
      let amax = 0;
      for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(values[base + i]!));
      const d = Math.fround(amax / 127);
      const id = d === 0 ? 0 : Math.fround(1 / d);
      view.setUint16(34 * b, f16Bits(d), true);
      const o = 34 * b + 2;
      for (let i = 0; i < 32; i++) {
        const v = Math.fround(values[base + i]! * id);
        const a = Math.abs(v), fl = Math.floor(a);
        const r = fl + Math.floor(2 * (a - fl)); // numpy np_roundf: half away from zero
        q[o + i] = v < 0 ? -r : r;
      }
    }
  }
}
