// The byte layout in which weights leave a backend and enter another (Backend.weightData / setWeightData):
// the wasm kernels' own layout, so that a device and a base station exchange expert bytes whichever
// kernels each runs. f32 and bf16 are plain row-major values; q8 and q4 are ggml's Q8_0 and Q4_0
// blocks taken apart: the quants of every block in order ([rows][K] int8, or [rows][K/2] bytes of
// nibbles: value j low, value 16+j high), then, 64-byte aligned, every block's scale as f32 (an f16 value).
// f16, which only the native backend holds, is plain row-major half-precision values.
// q4_k, q5_k and q6_k, which only the native backend holds, are ggml's Q4_K, Q5_K and Q6_K blocks as they are
// (as GGUF stores them); a backend that cannot hold them reads their values with dequantizeBlocks.
import type { KQuantDType, WeightDType } from "./backend.js";
import { f16ToF32, GGML_BLOCK_TYPES, type GgmlBlockType } from "./ggml-blocks.js";

/** The ggml block type of each K-quant dtype. */
export const K_QUANT_BLOCKS: Readonly<Record<KQuantDType, GgmlBlockType>> = { q4_k: "Q4_K", q5_k: "Q5_K", q6_k: "Q6_K" };

/** The ggml block type a K-quant dtype is held in, or null for the other dtypes. */
export function kQuantBlocks(dtype: WeightDType): GgmlBlockType | null {
  return Object.hasOwn(K_QUANT_BLOCKS, dtype) ? K_QUANT_BLOCKS[dtype as KQuantDType] : null;
}

/** The weight dtype that holds a ggml block type as it is (Q8_0 → q8, Q4_K → q4_k …). */
export function dtypeOfBlocks(t: GgmlBlockType): WeightDType {
  return t === "Q8_0" ? "q8" : t === "Q4_0" ? "q4" : (t.toLowerCase() as KQuantDType);
}

const BLOCK_DTYPES: ReadonlySet<WeightDType> = new Set(["q8", "q4"]);

/** Bytes of a block dtype's quants for `n` weights (the f32 scales follow, 64-byte aligned). */
export function quantBytes(dtype: WeightDType, n: number): number {
  return dtype === "q4" ? n / 2 : n;
}

export function isBlockDType(dtype: WeightDType): boolean {
  return BLOCK_DTYPES.has(dtype);
}

export function align64(n: number): number {
  return Math.ceil(n / 64) * 64;
}

/** Bytes of a weight in the exchange layout, or null where rows of `cols` values cannot be held as dtype. */
export function layoutBytes(dtype: WeightDType, rows: number, cols: number): number | null {
  if (dtype === "f32") return rows * cols * 4;
  if (dtype === "bf16" || dtype === "f16") return cols % 8 === 0 ? rows * cols * 2 : null;
  const k = kQuantBlocks(dtype);
  if (k) return cols % GGML_BLOCK_TYPES[k].values === 0 ? rows * (cols / GGML_BLOCK_TYPES[k].values) * GGML_BLOCK_TYPES[k].bytes : null;
  return cols % 32 === 0 ? align64(quantBytes(dtype, rows * cols)) + (rows * cols) / 8 : null;
}

/** ggml's Q8_0 / Q4_0 blocks of a q8 / q4 weight in the exchange layout. */
export function blocksFromLayout(dtype: "q8" | "q4", rows: number, cols: number, data: Uint8Array, out: Uint8Array): void {
  const { bytes } = GGML_BLOCK_TYPES[dtype === "q8" ? "Q8_0" : "Q4_0"];
  const qBytes = bytes - 2, nb = (rows * cols) / 32;
  const scales = new DataView(data.buffer, data.byteOffset + align64(quantBytes(dtype, rows * cols)), nb * 4);
  const o = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let b = 0; b < nb; b++) {
    o.setUint16(b * bytes, f32ToF16(scales.getFloat32(b * 4, true)), true);
    out.set(data.subarray(b * qBytes, (b + 1) * qBytes), b * bytes + 2);
  }
}

/** The exchange layout of a q8 / q4 weight held as ggml's Q8_0 / Q4_0 blocks. */
export function layoutFromBlocks(dtype: "q8" | "q4", rows: number, cols: number, blocks: Uint8Array, out: Uint8Array): void {
  const { bytes } = GGML_BLOCK_TYPES[dtype === "q8" ? "Q8_0" : "Q4_0"];
  const qBytes = bytes - 2, nb = (rows * cols) / 32;
  const scales = new DataView(out.buffer, out.byteOffset + align64(quantBytes(dtype, rows * cols)), nb * 4);
  for (let b = 0; b < nb; b++) {
    scales.setFloat32(b * 4, f16ToF32(blocks[b * bytes]! | (blocks[b * bytes + 1]! << 8)), true);
    out.set(blocks.subarray(b * bytes + 2, (b + 1) * bytes), b * qBytes);
  }
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** An f32 as IEEE half-precision bits, rounded to nearest even (exact for values that are halves already). */
export function f32ToF16(v: number): number {
  f32Scratch[0] = v;
  const x = u32Scratch[0]!;
  const sign = (x >>> 16) & 0x8000, exp = (x >>> 23) & 0xff, mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000, shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1), halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}
