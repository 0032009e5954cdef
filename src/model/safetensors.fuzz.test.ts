// Fuzz tests of the safetensors header reader, which reads files a user or a peer supplied: whatever a
// file holds, it yields tensors that lie within the file, or an Error naming the file; never another error.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import { DTYPE_BYTES, parseSafetensorsHeader, SafetensorsFile, safetensorsHeader, type TensorEntry } from "./safetensors.js";
import { byteDamage, cleanlyRefused, damage, fuzzParams, isByteDamage, type ByteDamage } from "../testing/fuzz.js";

const FILE = "fuzz.safetensors";

const entries: fc.Arbitrary<TensorEntry[]> = fc.uniqueArray(
  fc.record({
    name: fc.string({ unit: "binary", maxLength: 24 }).filter((n) => n !== "__metadata__"),
    dtype: fc.constantFrom("F32" as const, "BF16" as const, "F16" as const, "I32" as const),
    shape: fc.array(fc.integer({ min: 0, max: 6 }), { maxLength: 3 }),
  }),
  { selector: (t) => t.name, maxLength: 5 },
);
const metadata = fc.dictionary(fc.string({ maxLength: 12 }), fc.string({ maxLength: 12 }), { maxKeys: 3, noNullPrototype: true });

/** A valid file: the header safetensorsHeader writes, then each tensor's bytes. */
const validFile = fc.tuple(entries, metadata).map(([tensors, meta]) => {
  const header = safetensorsHeader(tensors, meta);
  const data = tensors.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype]!, 0);
  return { tensors, meta, bytes: new Uint8Array(Buffer.concat([header, Buffer.alloc(data, 0xab)])) };
});

/** Raw JSON tokens that a hand-made or hostile file may hold ("<deep>": arrays nested past what JSON.stringify writes). */
const oddToken = fc.constantFrom("1e400", "-1", "-0", "0.5", "9007199254740993", '"F32"', '"toString"', '"__proto__"', '"constructor"', "null", "true", "{}", "[]", "[1e400]", "[-1,4]", "[4,0]", "[0,1e20]", '{"__proto__":{"a":"b"}}', '{"a":1}', "[[[[1]]]]", "<deep>", "[0]", '[0,"4"]');
const anyJson = fc.oneof(fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)), oddToken);
const deep = (json: string) => json.replaceAll("<deep>", `${"[".repeat(20000)}${"]".repeat(20000)}`);

/** Ways a file may be damaged or forged, as data (so a counterexample reads well). */
type Mutation =
  | ByteDamage
  | { headerLength: bigint }
  | { header: string }
  | { entry: number; field: number; json: string };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  byteDamage,
  fc.record({ headerLength: fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 0n, max: 600n }), fc.constantFrom(2n ** 63n, 2n ** 53n + 1n, BigInt(100 << 20) + 1n)) }),
  fc.record({ header: anyJson }),
  fc.record({ entry: fc.nat(), field: fc.nat(), json: anyJson }),
);

/** The header text with one field of one entry (dtype, shape, data_offsets, a metadata value …) replaced by a raw token; null if it has none. */
function withField(header: Uint8Array, m: { entry: number; field: number; json: string }): string | null {
  let h: unknown;
  try {
    h = JSON.parse(new TextDecoder().decode(header));
  } catch {
    return null;
  }
  const objects = Object.values(h ?? {}).filter((v): v is Record<string, unknown> => !!v && typeof v === "object" && !Array.isArray(v));
  const o = objects[m.entry % Math.max(1, objects.length)];
  const keys = o ? Object.keys(o) : [];
  if (!o || keys.length === 0) return null;
  o[keys[m.field % keys.length]!] = "\u0000MARK\u0000";
  try {
    return JSON.stringify(h).replace('"\\u0000MARK\\u0000"', deep(m.json));
  } catch {
    return null; // an earlier mutation nested it too deep to write
  }
}

function mutate(f: Uint8Array, m: Mutation): Uint8Array {
  if (isByteDamage(m)) return damage(f, m);
  if (f.length < 8) return f;
  const dv = new DataView(f.buffer, f.byteOffset, f.byteLength);
  if ("headerLength" in m) {
    const out = f.slice();
    new DataView(out.buffer).setBigUint64(0, m.headerLength, true);
    return out;
  }
  const len = Number(dv.getBigUint64(0, true));
  if (8 + len > f.length) return f;
  const json = "header" in m ? deep(m.header) : withField(f.subarray(8, 8 + len), m);
  if (json === null) return f;
  const header = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + header.length + f.length - 8 - len);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  out.set(f.subarray(8 + len), 8 + header.length);
  return out;
}

/** parseSafetensorsHeader's answer to a whole file: tensors inside it that do not overlap, or an Error naming it. */
function parsesCleanly(bytes: Uint8Array, fileSize = bytes.length): void {
  const r = cleanlyRefused(() => parseSafetensorsHeader(FILE, bytes, fileSize), Error);
  if (r instanceof Error) {
    assert.equal(r.constructor, Error, `a plain Error, not ${r.constructor.name}: ${r.message}`);
    assert.ok(r.message.startsWith(`${FILE}: `) && r.message.length < 600, `names the file, briefly: ${r.message.slice(0, 200)}`);
    return;
  }
  const dataStart = 8 + Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  let end = dataStart;
  for (const t of [...r.tensors].sort((a, b) => a.offset - b.offset)) {
    assert.ok(Object.hasOwn(DTYPE_BYTES, t.dtype) && t.shape.every((d) => Number.isSafeInteger(d) && d >= 0));
    assert.equal(t.bytes, t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype]!);
    assert.ok(t.offset >= end && t.offset + t.bytes <= fileSize, `${t.name} lies within the data section, apart from the others`);
    end = t.offset + t.bytes;
  }
  assert.equal(Object.getPrototypeOf(r.metadata), Object.prototype);
  assert.ok(Object.values(r.metadata).every((v) => typeof v === "string"));
}

test("fuzz: arbitrary bytes parse to tensors within the file or an Error naming it", () => {
  const plausible = fc.tuple(fc.bigInt({ min: 0n, max: 80n }), fc.uint8Array({ maxLength: 96 })).map(([len, rest]) => {
    const out = new Uint8Array(8 + rest.length);
    new DataView(out.buffer).setBigUint64(0, len, true);
    out.set(rest, 8);
    return out;
  });
  fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 64 }), plausible), (b) => parsesCleanly(b)), fuzzParams(3000));
});

test("fuzz: a header safetensorsHeader writes parses back to its tensors and metadata", () => {
  fc.assert(
    fc.property(validFile, ({ tensors, meta, bytes }) => {
      assert.equal(safetensorsHeader(tensors, meta).length % 8, 0, "the data starts 8-aligned");
      const r = parseSafetensorsHeader(FILE, bytes, bytes.length);
      assert.deepEqual(r.metadata, meta);
      assert.deepEqual(r.tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })), tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })));
      parsesCleanly(bytes);
    }),
    fuzzParams(2000),
  );
});

test("fuzz: damaged or forged files parse to tensors within the file or an Error naming it", () => {
  fc.assert(
    fc.property(validFile, fc.array(mutation, { minLength: 1, maxLength: 3 }), fc.integer({ min: -16, max: 16 }), ({ bytes }, ms, sizeLie) => {
      const f = ms.reduce(mutate, bytes);
      parsesCleanly(f);
      parsesCleanly(f, Math.max(0, f.length + sizeLie)); // a file that changed size after it was measured
    }),
    fuzzParams(4000),
  );
});

test("fuzz: SafetensorsFile.open refuses damaged files with an Error naming them", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-fuzz-"));
  const file = path.join(dir, "x.safetensors");
  try {
    fc.assert(
      fc.property(validFile, fc.array(mutation, { maxLength: 2 }), ({ tensors, bytes }, ms) => {
        writeFileSync(file, ms.reduce(mutate, bytes));
        const f = cleanlyRefused(() => SafetensorsFile.open(file), Error);
        if (f instanceof Error) return assert.ok(f.constructor === Error && f.message.startsWith(`${file}: `), f.message);
        try {
          if (ms.length === 0) assert.equal(f.tensors.size, tensors.length);
          for (const t of f.tensors.values()) assert.equal(f.read(t.name).length, t.bytes);
        } finally {
          f.close();
        }
      }),
      fuzzParams(300),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
