// The GGUF reader: every metadata value type, tensor infos and alignment, on built files and on the
// shipped llama.cpp-written brown-moe files; hostile headers refused with one clear Error.
import { test } from "node:test";
import assert from "node:assert/strict";
import { GgufFile, parseGgufHeader, type ByteSource } from "./gguf.js";
import { ggufFile } from "../testing/gguf-writer.js";
import path from "node:path";
import { SHARED_DIR } from "../testing/shared.js";

const SHIPPED = path.join(SHARED_DIR, "models/brown-moe-gguf");
export const bytesSource = (b: Uint8Array): ByteSource => ({ size: b.length, read: (p, n) => b.slice(p, Math.min(b.length, p + n)) });
const parse = (b: Uint8Array) => parseGgufHeader("t.gguf", bytesSource(b));

test("reads metadata of every value type, arrays included", () => {
  const f = ggufFile(
    [
      ["u8", [0, 200]], ["i8", [1, -5]], ["u16", [2, 60000]], ["i16", [3, -300]], ["u32", [4, 4e9]], ["i32", [5, -7]], ["f32", [6, 0.5]],
      ["bool", [7, true]], ["str", [8, "héllo"]], ["u64", [10, 2n ** 63n]], ["i64", [11, -3n]], ["f64", [12, 1e-300]],
      ["strs", [9, [8, ["a", "", "▁b"]]]], ["f32s", [9, [6, [1.5, -2]]]], ["i32s", [9, [5, [3, -1]]]], ["bools", [9, [7, [true, false]]]], ["u64s", [9, [10, [5n]]]],
    ],
    [],
  );
  const m = parse(f).metadata;
  assert.deepEqual([m.get("u8"), m.get("i8"), m.get("u16"), m.get("i16"), m.get("u32"), m.get("i32"), m.get("f32"), m.get("bool"), m.get("str"), m.get("u64"), m.get("i64"), m.get("f64")],
    [200, -5, 60000, -300, 4e9, -7, 0.5, true, "héllo", 2n ** 63n, -3n, 1e-300]);
  assert.deepEqual(m.get("strs"), ["a", "", "▁b"]);
  assert.deepEqual(m.get("f32s"), new Float32Array([1.5, -2]));
  assert.deepEqual(m.get("i32s"), new Int32Array([3, -1]));
  assert.deepEqual(m.get("bools"), [true, false]);
  assert.deepEqual(m.get("u64s"), [5n]);
});

test("tensor infos: dims, types, absolute offsets after the aligned data start; general.alignment honoured", () => {
  for (const alignment of [32, 64]) {
    const meta: Array<[string, [number, unknown]]> = alignment === 32 ? [] : [["general.alignment", [4, 64]]];
    const f = ggufFile(meta, [{ name: "a", dims: [64, 2], type: 8, bytes: 2 * 2 * 34 }, { name: "b", dims: [3], type: 0, bytes: 12 }], alignment, 2);
    const h = parse(f);
    assert.equal(h.version, 2);
    assert.equal(h.alignment, alignment);
    assert.equal(h.dataOffset % alignment, 0);
    assert.deepEqual(h.tensors.map((t) => [t.name, t.dims, t.type, t.offset - h.dataOffset, t.bytes]), [["a", [64, 2], "Q8_0", 0, 136], ["b", [3], "F32", Math.ceil(136 / alignment) * alignment, 12]]);
  }
});

test("refuses what no file may say: bad magic or version, counts beyond the file, misaligned or overlapping data, unknown types, nested arrays", () => {
  const ok = ggufFile([["k", [8, "v"]]], [{ name: "a", dims: [4], type: 0, bytes: 16 }]);
  const refuse = (b: Uint8Array, re: RegExp) => assert.throws(() => parse(b), (e: Error) => e.constructor === Error && e.message.startsWith("t.gguf: ") && re.test(e.message));
  const poke = (at: number, put: (v: DataView) => void) => {
    const b = ok.slice();
    put(new DataView(b.buffer, at));
    return b;
  };
  refuse(poke(0, (v) => v.setUint8(0, 0x47 + 1)), /not a GGUF file/);
  refuse(poke(4, (v) => v.setUint32(0, 4, true)), /version 4/);
  refuse(poke(8, (v) => v.setBigUint64(0, 2n ** 40n, true)), /tensor count/);
  refuse(poke(16, (v) => v.setBigUint64(0, 2n ** 62n, true)), /beyond any file|metadata count/);
  refuse(poke(24, (v) => v.setBigUint64(0, 2n ** 50n, true)), /needs \d+ bytes|file ends|beyond/);
  refuse(ok.subarray(0, ok.length - 17), /data ends at byte 16/); // the data section is padded to 32
  refuse(ggufFile([["k", [9, [9, []]]]], []), /nested arrays/);
  refuse(ggufFile([["k", [13, 0]]], []), /unknown value type 13/);
  refuse(ggufFile([], [{ name: "a", dims: [4], type: 99, bytes: 16 }]), /unknown ggml type 99/);
  refuse(ggufFile([], [{ name: "a", dims: [40], type: 8, bytes: 34 }]), /not a multiple of Q8_0's block/);
  refuse(ggufFile([], [{ name: "a", dims: [1, 1, 1, 1, 1], type: 0, bytes: 4 }]), /5 dimensions/);
  refuse(ggufFile([["general.alignment", [4, 48]]], []), /not a power of two/);
  refuse(ggufFile([], [{ name: "a", dims: [2 ** 40, 2 ** 20], type: 0, bytes: 0 }]), /exceed the file/);
  refuse(ggufFile([["k", [8, "v"]], ["k", [8, "w"]]], []), /appears twice/);
});

test("the shipped llama.cpp-written files: version 3, llama metadata, 43 tensors with the converter's names and types", () => {
  for (const [name, type] of [["bf16", "BF16"], ["q8_0", "Q8_0"]]) {
    const f = GgufFile.open(`${SHIPPED}/brown-moe-${name}.gguf`);
    try {
      assert.equal(f.header.version, 3);
      assert.equal(f.header.metadata.get("general.architecture"), "llama");
      assert.equal(f.header.metadata.get("llama.expert_count"), 8);
      assert.equal((f.header.metadata.get("tokenizer.ggml.tokens") as string[]).length, 4096);
      assert.equal(f.tensors.size, 43);
      assert.deepEqual(f.tensors.get("blk.0.ffn_gate_exps.weight")?.dims, [256, 512, 8]);
      assert.equal(f.tensors.get("blk.0.ffn_gate_exps.weight")?.type, type);
      assert.equal(f.tensors.get("blk.0.ffn_gate_inp.weight")?.type, "F32");
      assert.equal(f.tensors.get("output_norm.weight")?.type, "F32");
    } finally {
      f.close();
    }
  }
});
