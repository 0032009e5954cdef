// The encoders against what numpy / ggml compute: every float16 survives a round trip, ties round to
// even, values beyond the range overflow to infinity and tiny ones become subnormals; bfloat16 quiets
// NaNs; Q8_0 blocks scale by max|x|/127 and round half away from zero.
import { test } from "node:test";
import assert from "node:assert/strict";
import { bf16Bits, encodeValues, f16Bits, f16Value, rowBytes } from "./ggml-encode.js";

test("float16: every half round-trips; ties to even; overflow and subnormals as numpy's astype(float16)", () => {
  for (let h = 0; h < 0x10000; h++) {
    const v = f16Value(h);
    if (Number.isNaN(v)) assert.ok((f16Bits(v) & 0x7c00) === 0x7c00 && (f16Bits(v) & 0x3ff) !== 0);
    else assert.equal(f16Bits(v), h, `half 0x${h.toString(16)}`);
  }
  assert.equal(f16Bits(1 + 2 ** -11), 0x3c00); // halfway between 1 and the next half: to even (1)
  assert.equal(f16Bits(1 + 3 * 2 ** -11), 0x3c02); // halfway, odd below: up
  assert.equal(f16Bits(65520), 0x7c00); // rounds past the largest half
  assert.equal(f16Bits(65519), 0x7bff);
  assert.equal(f16Bits(2 ** -25), 0); // half the smallest subnormal: to even (0)
  assert.equal(f16Bits(1.5 * 2 ** -25), 1);
  assert.equal(f16Bits(-3 * 2 ** -24), 0x8003);
});

test("bfloat16: round to nearest even, NaN quieted as ggml_compute_fp32_to_bf16", () => {
  assert.equal(bf16Bits(0x3f808000), 0x3f80); // tie, even below
  assert.equal(bf16Bits(0x3f818000), 0x3f82); // tie, odd below
  assert.equal(bf16Bits(0x3f808001), 0x3f81);
  assert.equal(bf16Bits(0x7f800001), 0x7fc0); // signalling NaN → quiet
  assert.equal(bf16Bits(0xff7fffff), 0xff80); // the largest negative float rounds to -infinity
});

test("Q8_0: one f16 scale max|x|/127 and 32 int8 rounded half away from zero", () => {
  const x = new Float32Array(32).map((_, i) => (i - 16) / 8); // max |x| = 2
  x[31] = 0.5 * (2 / 127) * 3; // exactly 1.5 steps: rounds away from zero to 2
  const out = new Uint8Array(rowBytes("Q8_0", 32));
  encodeValues(x, "Q8_0", out);
  const d = f16Value(out[0]! | (out[1]! << 8));
  assert.equal(d, f16Value(f16Bits(Math.fround(2 / 127))));
  const q = new Int8Array(out.buffer, 2, 32);
  assert.equal(q[0], -127);
  assert.equal(q[16], 0);
  assert.equal(q[31], 2);
  const zeros = new Uint8Array(34);
  encodeValues(new Float32Array(32), "Q8_0", zeros);
  assert.deepEqual([...zeros], new Array(34).fill(0));
});
