// Activations on the wire: f32, or f16 / bf16 (half the bytes) as negotiated per link.

export type WireDType = "f32" | "f16" | "bf16";
export const WIRE_DTYPES: readonly WireDType[] = ["f32", "f16", "bf16"];

export function wireBytes(dtype: WireDType): number {
  return dtype === "f32" ? 4 : 2;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function toF16(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const ax = x & 0x7fffffff;
  if (ax >= 0x7f800000) return sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 : 0);
  if (ax >= 0x477ff000) return sign | 0x7c00;
  if (ax < 0x38800000) {
    f32[0] = Math.abs(v) * 16777216; // 2^24: subnormal halves count units of 2^-24
    return sign | Math.round(f32[0]);
  }
  const e = (ax >>> 23) - 112;
  const m = ax & 0x7fffff;
  let h = (e << 10) | (m >>> 13);
  const rest = m & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++;
  return sign | h;
}

function fromF16(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** Values as bytes of the wire dtype (little-endian). */
export function encodeActivations(values: Float32Array, dtype: WireDType): Uint8Array {
  if (dtype === "f32") return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  const out = new Uint16Array(values.length);
  if (dtype === "f16") for (let i = 0; i < values.length; i++) out[i] = toF16(values[i]!);
  else {
    const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
    for (let i = 0; i < values.length; i++) {
      const x = bits[i]!;
      out[i] = (x & 0x7fffffff) > 0x7f800000 ? (x >>> 16) | 0x40 : ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
    }
  }
  return new Uint8Array(out.buffer);
}

export function decodeActivations(bytes: Uint8Array, dtype: WireDType): Float32Array {
  const n = bytes.byteLength / wireBytes(dtype);
  if (!Number.isInteger(n)) throw new RangeError(`${bytes.byteLength} bytes are not a whole number of ${dtype} values`);
  const copy = new Uint8Array(bytes); // aligned and owned (a Buffer's slice() would share its pool, at an offset)
  if (dtype === "f32") return new Float32Array(copy.buffer, 0, n);
  const src = new Uint16Array(copy.buffer, 0, n);
  const out = new Float32Array(n);
  if (dtype === "f16") for (let i = 0; i < n; i++) out[i] = fromF16(src[i]!);
  else {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = src[i]! << 16;
  }
  return out;
}

/** The rows of several calls back to back, as one frame carries them. */
export function concatRows(parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The inverse of concatRows: views of `rows[i]` rows of `hidden` values each. */
export function splitRows(values: Float32Array, hidden: number, rows: readonly number[]): Float32Array[] {
  let at = 0;
  return rows.map((r) => values.subarray(at, (at += r * hidden)));
}
