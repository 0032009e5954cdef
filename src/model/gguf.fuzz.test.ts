// Fuzz tests of the GGUF header reader, which reads files a user supplied: whatever a file holds, it
// yields tensors that lie within the file, or an Error naming the file; never another error.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { GGML_TYPES, parseGgufHeader, type ByteSource } from "./gguf.js";
import { byteDamage, cleanlyRefused, damage, fuzzParams } from "../testing/fuzz.js";
import { ggufFile } from "../testing/gguf-writer.js";

const FILE = "fuzz.gguf";
const source = (b: Uint8Array, size = b.length): ByteSource => ({ size, read: (p, n) => b.slice(p, Math.min(b.length, size, p + n)) });

function parsesCleanly(b: Uint8Array, size = b.length): void {
  const r = cleanlyRefused(() => parseGgufHeader(FILE, source(b, size)), Error);
  if (r instanceof Error) {
    assert.equal(r.constructor, Error, `a plain Error, not ${r.constructor.name}: ${r.message}`);
    return assert.ok(r.message.startsWith(`${FILE}: `) && r.message.length < 600, r.message.slice(0, 200));
  }
  let end = r.dataOffset;
  for (const t of [...r.tensors].sort((a, b) => a.offset - b.offset)) {
    assert.ok(t.offset >= end && t.offset + t.bytes <= size && t.offset % r.alignment === 0, `${t.name} lies within the data section, apart from the others`);
    end = t.offset + t.bytes;
  }
}

const types = [...GGML_TYPES.entries()];
const validFile = fc.tuple(
  fc.uniqueArray(fc.tuple(fc.string({ maxLength: 8 }), fc.oneof(
    fc.tuple(fc.constant(8), fc.string({ maxLength: 8 })),
    fc.tuple(fc.constant(4), fc.nat()),
    fc.tuple(fc.constant(9), fc.tuple(fc.constant(6), fc.array(fc.float({ noNaN: true }), { maxLength: 4 }))),
    fc.tuple(fc.constant(9), fc.tuple(fc.constant(8), fc.array(fc.string({ maxLength: 4 }), { maxLength: 4 }))),
  )), { maxLength: 4, selector: (kv: [string, unknown]) => kv[0] }),
  fc.uniqueArray(fc.record({ name: fc.string({ maxLength: 8 }), t: fc.constantFrom(...types), rows: fc.integer({ min: 1, max: 3 }) }), { maxLength: 4, selector: (t) => t.name }),
).map(([meta, ts]) => ggufFile(meta as Array<[string, [number, unknown]]>, ts.map(({ name, t: [id, info], rows }) => ({ name, dims: [info.block, rows], type: id, bytes: info.bytes * rows }))));

test("fuzz: arbitrary bytes after a GGUF magic parse to tensors within the file or an Error naming it", () => {
  const plausible = fc.uint8Array({ maxLength: 96 }).map((rest) => new Uint8Array([...Buffer.from("GGUF"), 3, 0, 0, 0, ...rest]));
  fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 64 }), plausible), (b) => parsesCleanly(b)), fuzzParams(3000));
});

test("fuzz: damaged built files parse to tensors within the file or an Error naming it", () => {
  fc.assert(
    fc.property(validFile, fc.array(byteDamage, { minLength: 0, maxLength: 3 }), (bytes, ms) => {
      if (ms.length === 0) assert.ok(!(cleanlyRefused(() => parseGgufHeader(FILE, source(bytes)), Error) instanceof Error), "a built file parses");
      const f = ms.reduce(damage, bytes);
      parsesCleanly(f);
    }),
    fuzzParams(3000),
  );
});
