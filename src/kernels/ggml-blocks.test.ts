// ggml block values against hand-built blocks: each expected value is read off the format as
// ggml-common.h lays it out (and worked out by hand for a few), not computed by the code under test.
import { test } from "node:test";
import assert from "node:assert/strict";
import { dequantizeBlocks, GGML_BLOCK_TYPES } from "./ggml-blocks.js";

function values(type: keyof typeof GGML_BLOCK_TYPES, block: number[]): Float32Array {
  assert.equal(block.length, GGML_BLOCK_TYPES[type].bytes);
  const out = new Float32Array(GGML_BLOCK_TYPES[type].values);
  dequantizeBlocks(type, Uint8Array.from(block), out);
  return out;
}

test("Q4_0: value j is d·(low nibble of byte j − 8), value 16+j is d·(high nibble − 8)", () => {
  // d = −0.5 (f16 0xb800), byte j = j | (15 − j) << 4
  const qs = Array.from({ length: 16 }, (_, j) => j | ((15 - j) << 4));
  const v = values("Q4_0", [0x00, 0xb8, ...qs]);
  assert.equal(v[0], 4); // −0.5·(0 − 8)
  assert.equal(v[16], -3.5); // −0.5·(15 − 8)
  for (let j = 0; j < 16; j++) {
    assert.equal(v[j], -0.5 * (j - 8));
    assert.equal(v[16 + j], -0.5 * (15 - j - 8));
  }
});

test("Q8_0: d·q with q signed", () => {
  const q = Array.from({ length: 32 }, (_, j) => (j * 8 - 128) & 255);
  const v = values("Q8_0", [0x00, 0x34, ...q]); // d = 0.25
  assert.equal(v[0], -32);
  assert.equal(v[31], 0.25 * (31 * 8 - 128));
});

// Q4_K and Q5_K share the header: f16 d = 1, f16 dmin = 0.5, then 12 bytes holding eight 6-bit scales
// sc and mins m: for j < 4, sc_j in the low 6 bits of byte j and m_j in those of byte j+4; for j ≥ 4, the
// low 4 bits of sc_j and m_j in byte j+4 (low and high nibble), their top 2 bits in the top 2 bits of
// bytes j−4 (sc) and j (m).
const SC = [1, 2, 3, 4, 17, 33, 50, 63], MIN = [0, 1, 2, 3, 20, 40, 5, 63];
const K_HEADER = [
  0x00, 0x3c, 0x00, 0x38,
  1 | (1 << 6), 2 | (2 << 6), 3 | (3 << 6), 4 | (3 << 6), // sc 0-3, top bits of sc 4-7 (17, 33, 50, 63 >> 4 = 1, 2, 3, 3)
  0 | (1 << 6), 1 | (2 << 6), 2 | (0 << 6), 3 | (3 << 6), // m 0-3, top bits of m 4-7 (20, 40, 5, 63 >> 4 = 1, 2, 0, 3)
  1 | (4 << 4), 1 | (8 << 4), 2 | (5 << 4), 15 | (15 << 4), // low nibbles of (sc, m) 4-7
];
// Values come in four groups g of 64 from 32 bytes of nibbles: value 64g + l (l < 32) is the low nibble of
// byte 32g + l, in sub-block 2g; value 64g + 32 + l its high nibble, in sub-block 2g + 1. Chosen nibbles:
// low l & 15, high (l + g) & 15. Value = d·sc·q − dmin·m.
const QS = Array.from({ length: 128 }, (_, i) => (i & 31 & 15) | ((((i & 31) + (i >> 5)) & 15) << 4));
const nibble = (v: number) => {
  const g = v >> 6, h = (v >> 5) & 1, l = v & 31;
  return { sub: 2 * g + h, q: h === 0 ? l & 15 : (l + g) & 15, g, h, l };
};

test("Q4_K: d·sc·q − dmin·m per 32-value sub-block, with the 6-bit scales and mins unpacked", () => {
  const v = values("Q4_K", [...K_HEADER, ...QS]);
  // by hand: value 100 = group 1, high half, l 4: q (4+1)&15 = 5, sub-block 3 (sc 4, m 3): 4·5 − 1.5
  assert.equal(v[100], 18.5);
  assert.equal(v[140], 194); // group 2, low, l 12: q 12, sub-block 4 (sc 17, m 20): 204 − 10
  assert.equal(v[200], 397.5); // group 3, low, l 8: q 8, sub-block 6 (sc 50, m 5): 400 − 2.5
  assert.equal(v[255], 94.5); // group 3, high, l 31: q 2, sub-block 7 (sc 63, m 63): 126 − 31.5
  for (let i = 0; i < 256; i++) {
    const { sub, q } = nibble(i);
    assert.equal(v[i], SC[sub]! * q - 0.5 * MIN[sub]!, `value ${i}`);
  }
});

test("Q5_K: as Q4_K, with bit 2g+h of qh[l] adding 16 to the quant", () => {
  // qh[l] = 1 << (l & 7): value (g, h, l) gets the fifth bit where l & 7 = 2g + h
  const QH = Array.from({ length: 32 }, (_, l) => 1 << (l & 7));
  const v = values("Q5_K", [...K_HEADER, ...QH, ...QS]);
  assert.equal(v[0], 16); // q 0 + 16, sub-block 0 (sc 1, m 0)
  assert.equal(v[140], 466); // l 12: 12 & 7 = 4 = 2·2 + 0, q 28, sub-block 4: 17·28 − 10
  assert.equal(v[200], 397.5); // l 8: 8 & 7 = 0 ≠ 6, no fifth bit
  assert.equal(v[255], 1102.5); // l 31: 7 = 2·3 + 1, q 18, sub-block 7: 63·18 − 31.5
  for (let i = 0; i < 256; i++) {
    const { sub, q, g, h, l } = nibble(i);
    const q5 = q + ((l & 7) === 2 * g + h ? 16 : 0);
    assert.equal(v[i], SC[sub]! * q5 - 0.5 * MIN[sub]!, `value ${i}`);
  }
});

test("Q6_K: d·sc·(q − 32), 6-bit q from ql nibbles and qh bit pairs, one int8 scale per 16 values", () => {
  // ql[i] = i, qh[i] = 0xe4 (bit pairs 0, 1, 2, 3 for quarters k = 0..3), scale s = s − 8, d = 0.25 (0x3400).
  // Value 128n + 32k + l: low 4 bits from ql[64n + l] (k 0: low nibble, k 2: high) or ql[64n + 32 + l]
  // (k 1: low, k 3: high); high 2 bits from qh[32n + l] >> 2k; scale index (value / 16).
  const ql = Array.from({ length: 128 }, (_, i) => i);
  const qh = new Array<number>(64).fill(0xe4);
  const scales = Array.from({ length: 16 }, (_, s) => (s - 8) & 255);
  const v = values("Q6_K", [...ql, ...qh, ...scales, 0x00, 0x34]);
  assert.equal(v[0], 64); // q 0, scale −8: 0.25·−8·(0 − 32)
  assert.equal(v[100], -9); // n 0, k 3, l 4: ql[36] >> 4 = 2, high 3 → q 50, scale −2: 0.25·−2·18
  assert.equal(v[150], -6.5); // n 1, k 0, l 22: ql[86] & 15 = 6, high 0 → q 6, scale 1: 0.25·(6 − 32)
  assert.equal(v[255], 40.25); // n 1, k 3, l 31: ql[127] >> 4 = 7, high 3 → q 55, scale 7: 0.25·7·23
  for (let i = 0; i < 256; i++) {
    const n = i >> 7, k = (i >> 5) & 3, l = i & 31;
    const byte = ql[64 * n + (k & 1 ? 32 : 0) + l]!;
    const q = (k < 2 ? byte & 15 : byte >> 4) | (k << 4);
    assert.equal(v[i], 0.25 * ((i >> 4) - 8) * (q - 32), `value ${i}`);
  }
});

test("several blocks in a row are each their own", () => {
  const a = [0x00, 0x3c, ...new Array<number>(16).fill(0x99)], b = [0x00, 0x40, ...new Array<number>(16).fill(0x11)];
  const out = new Float32Array(64);
  dequantizeBlocks("Q4_0", Uint8Array.from([...a, ...b]), out);
  assert.equal(out[0], 1); // d 1, q 9
  assert.equal(out[32], -14); // d 2, q 1
});
