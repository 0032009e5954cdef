// ggml's block-quantized tensor types as GGUF stores them, and their values as f32, computed as ggml's
// dequantize_row_* computes them (each float operation rounded to f32, in ggml's order).

/** The block types a weight may be stored in: values per block and bytes per block. */
export const GGML_BLOCK_TYPES = {
  Q8_0: { values: 32, bytes: 34 }, // f16 d, 32 int8: d·q
  Q4_0: { values: 32, bytes: 18 }, // f16 d, 16 bytes of nibbles (value j low, value 16+j high): d·(q−8)
  Q4_K: { values: 256, bytes: 144 }, // f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles
  Q5_K: { values: 256, bytes: 176 }, // as Q4_K, then 32 bytes of fifth bits before the nibbles
  Q6_K: { values: 256, bytes: 210 }, // 128 bytes of low nibbles, 64 of high 2 bits, 16 int8 scales, f16 d
} as const;
export type GgmlBlockType = keyof typeof GGML_BLOCK_TYPES;

export function isGgmlBlockType(t: string): t is GgmlBlockType {
  return Object.hasOwn(GGML_BLOCK_TYPES, t);
}

/** An IEEE half-precision bit pattern as a number. */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

const f32 = Math.fround;

/** The f32 values of whole blocks of `type` in `src` (out.length values). */
export function dequantizeBlocks(type: GgmlBlockType, src: Uint8Array, out: Float32Array): void {
  const { values, bytes } = GGML_BLOCK_TYPES[type];
  const half = (o: number) => f16ToF32(src[o]! | (src[o + 1]! << 8));
  for (let b = 0; b < out.length / values; b++) {
    const x = b * bytes, y = b * values;
    switch (type) {
      case "Q8_0": {
        const d = half(x);
        for (let j = 0; j < 32; j++) out[y + j] = d * ((src[x + 2 + j]! << 24) >> 24);
        break;
      }
      case "Q4_0": {
        const d = half(x);
        for (let j = 0; j < 16; j++) {
          out[y + j] = d * ((src[x + 2 + j]! & 15) - 8);
          out[y + 16 + j] = d * ((src[x + 2 + j]! >> 4) - 8);
        }
        break;
      }
      case "Q4_K":
      case "Q5_K": {
        const d = half(x), min = half(x + 2), scales = x + 4;
        const qh = x + 16, qs = type === "Q4_K" ? x + 16 : x + 48;
        for (let g = 0; g < 4; g++) {
          // 64 values per g: 32 from the low nibbles of 32 bytes (sub-block 2g), 32 from their high nibbles (2g+1)
          for (let h = 0; h < 2; h++) {
            const [sc, m] = scaleMinK4(2 * g + h, src, scales);
            const d1 = f32(d * sc), m1 = f32(min * m);
            for (let l = 0; l < 32; l++) {
              const byte = src[qs + 32 * g + l]!;
              let q = h === 0 ? byte & 15 : byte >> 4;
              if (type === "Q5_K" && src[qh + l]! & (1 << (2 * g + h))) q += 16;
              out[y + 64 * g + 32 * h + l] = f32(d1 * q) - m1;
            }
          }
        }
        break;
      }
      case "Q6_K": {
        const ql = x, qh = x + 128, sc = x + 192, d = half(x + 208);
        for (let n = 0; n < 2; n++) {
          for (let l = 0; l < 32; l++) {
            const hi = src[qh + 32 * n + l]!;
            for (let k = 0; k < 4; k++) {
              // quarter k: low 4 bits from ql[l] (k 0 low nibble, k 2 high) or ql[32 + l] (k 1, k 3), high 2 bits from qh bits 2k
              const lo = src[ql + 64 * n + 32 * (k & 1) + l]!;
              const q = ((k < 2 ? lo & 15 : lo >> 4) | (((hi >> (2 * k)) & 3) << 4)) - 32;
              const scale = (src[sc + 8 * n + (l >> 4) + 2 * k]! << 24) >> 24;
              out[y + 128 * n + 32 * k + l] = f32(d * scale) * q;
            }
          }
        }
        break;
      }
    }
  }
}

/** Sub-block j's 6-bit scale and min of a Q4_K/Q5_K block (ggml's get_scale_min_k4). */
function scaleMinK4(j: number, src: Uint8Array, at: number): [number, number] {
  const q = (i: number) => src[at + i]!;
  if (j < 4) return [q(j) & 63, q(j + 4) & 63];
  return [(q(j + 4) & 15) | ((q(j - 4) >> 6) << 4), (q(j + 4) >> 4) | ((q(j) >> 6) << 4)];
}
