// Reader for GGUF (llama.cpp's model format, versions 2 and 3; ggml/include/gguf.h): magic "GGUF",
// version, tensor and metadata counts, metadata key/values, tensor infos, then the tensor data from an
// aligned offset. Every count, length and offset is weighed against the bytes the file still holds
// before anything is allocated or read, so a hostile header costs one clear error.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";

/** ggml tensor types: id → name, block size (values) and block bytes, after gguf-py's GGML_QUANT_SIZES. */
export const GGML_TYPES: ReadonlyMap<number, { name: string; block: number; bytes: number }> = new Map(
  ([
    [0, "F32", 1, 4], [1, "F16", 1, 2], [2, "Q4_0", 32, 18], [3, "Q4_1", 32, 20], [6, "Q5_0", 32, 22], [7, "Q5_1", 32, 24],
    [8, "Q8_0", 32, 34], [9, "Q8_1", 32, 40], [10, "Q2_K", 256, 84], [11, "Q3_K", 256, 110], [12, "Q4_K", 256, 144],
    [13, "Q5_K", 256, 176], [14, "Q6_K", 256, 210], [15, "Q8_K", 256, 292], [16, "IQ2_XXS", 256, 66], [17, "IQ2_XS", 256, 74],
    [18, "IQ3_XXS", 256, 98], [19, "IQ1_S", 256, 50], [20, "IQ4_NL", 32, 18], [21, "IQ3_S", 256, 110], [22, "IQ2_S", 256, 82],
    [23, "IQ4_XS", 256, 136], [24, "I8", 1, 1], [25, "I16", 1, 2], [26, "I32", 1, 4], [27, "I64", 1, 8], [28, "F64", 1, 8],
    [29, "IQ1_M", 256, 56], [30, "BF16", 1, 2], [34, "TQ1_0", 256, 54], [35, "TQ2_0", 256, 66], [39, "MXFP4", 32, 17],
  ] as const).map(([id, name, block, bytes]) => [id, { name, block, bytes }]),
);

/** A metadata value: numbers (64-bit integers as bigint), booleans, strings, or arrays of one of them. */
export type GgufValue = number | bigint | boolean | string | GgufArray;
export type GgufArray = string[] | boolean[] | bigint[] | Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array | Float32Array | Float64Array;

export interface GgufTensorInfo {
  readonly name: string;
  /** ggml order: dims[0] is the innermost (a row's length). */
  readonly dims: readonly number[];
  readonly type: string;
  /** Absolute byte offset in the file. */
  readonly offset: number;
  readonly bytes: number;
}

export interface GgufHeader {
  readonly version: number;
  readonly metadata: ReadonlyMap<string, GgufValue>;
  readonly tensors: readonly GgufTensorInfo[];
  readonly alignment: number;
  readonly dataOffset: number;
}

/** Random access to a file's bytes: what the parser reads through. */
export interface ByteSource {
  readonly size: number;
  /** Up to `length` bytes from `position` (fewer only where the source ends). */
  read(position: number, length: number): Uint8Array;
}

const MAX_DIMS = 4; // GGML_MAX_DIMS
const MAX_NAME = 64; // GGML_MAX_NAME, terminating NUL included
const CHUNK = 1 << 20;
// fixed-size metadata value types: id → bytes
const SCALAR_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const TYPE_STRING = 8, TYPE_ARRAY = 9;

/** Reads forward through a ByteSource in chunks, never past its end. */
class Cursor {
  private buf: Uint8Array = new Uint8Array(0);
  private bufStart = 0;
  pos = 0;
  constructor(private readonly src: ByteSource, private readonly fail: (msg: string) => never) {}

  get remaining(): number {
    return this.src.size - this.pos;
  }

  /** The next n bytes (a view valid until the next call). */
  take(n: number, what: string): Uint8Array {
    if (n > this.remaining) this.fail(`${what} needs ${n} bytes at offset ${this.pos} but the file ends at ${this.src.size} (truncated or not GGUF)`);
    if (this.pos < this.bufStart || this.pos + n > this.bufStart + this.buf.length) {
      const got = this.src.read(this.pos, Math.min(this.remaining, Math.max(n, CHUNK)));
      if (got.length < n) this.fail(`short read of ${what} at offset ${this.pos}`);
      this.buf = got;
      this.bufStart = this.pos;
    }
    const at = this.pos - this.bufStart;
    this.pos += n;
    return this.buf.subarray(at, at + n);
  }

  private view(n: number, what: string): DataView {
    const b = this.take(n, what);
    return new DataView(b.buffer, b.byteOffset, n);
  }

  u32(what: string): number {
    return this.view(4, what).getUint32(0, true);
  }

  /** A u64 that must fit a safe integer (counts, lengths, offsets, dims). */
  u64(what: string): number {
    const v = this.view(8, what).getBigUint64(0, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} ${v} is beyond any file`);
    return Number(v);
  }

  string(what: string): string {
    const n = this.u64(`length of ${what}`);
    const bytes = this.take(n, what);
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      return this.fail(`${what} at offset ${this.pos - n} is not valid UTF-8`);
    }
  }

  scalar(type: number, what: string): number | bigint | boolean {
    const v = this.view(SCALAR_BYTES[type]!, what);
    switch (type) {
      case 0: return v.getUint8(0);
      case 1: return v.getInt8(0);
      case 2: return v.getUint16(0, true);
      case 3: return v.getInt16(0, true);
      case 4: return v.getUint32(0, true);
      case 5: return v.getInt32(0, true);
      case 6: return v.getFloat32(0, true);
      case 7: {
        const b = v.getUint8(0);
        if (b > 1) this.fail(`${what} is a bool of value ${b}`);
        return b === 1;
      }
      case 10: return v.getBigUint64(0, true);
      case 11: return v.getBigInt64(0, true);
      default: return v.getFloat64(0, true);
    }
  }
}

/** A typed array of n little-endian values of a fixed-size type, copied out of the file's bytes. */
function typedArray(type: number, bytes: Uint8Array, n: number): GgufArray {
  const copy = bytes.slice(); // aligned, owned
  switch (type) {
    case 0: return copy;
    case 1: return new Int8Array(copy.buffer, 0, n);
    case 2: return new Uint16Array(copy.buffer, 0, n);
    case 3: return new Int16Array(copy.buffer, 0, n);
    case 4: return new Uint32Array(copy.buffer, 0, n);
    case 5: return new Int32Array(copy.buffer, 0, n);
    case 6: return new Float32Array(copy.buffer, 0, n);
    case 12: return new Float64Array(copy.buffer, 0, n);
    default: {
      const v = new DataView(copy.buffer);
      if (type === 7) return Array.from(copy, (b) => b !== 0);
      return Array.from({ length: n }, (_, i) => (type === 10 ? v.getBigUint64(8 * i, true) : v.getBigInt64(8 * i, true)));
    }
  }
}

/** The header of a GGUF file read through `src`, every entry checked against the file's size. Throws an Error naming `file`. */
export function parseGgufHeader(file: string, src: ByteSource): GgufHeader {
  const fail = (msg: string): never => {
    throw new Error(`${file}: ${msg}`);
  };
  const c = new Cursor(src, fail);
  const magic = c.take(4, "magic");
  if (String.fromCharCode(...magic) !== "GGUF") fail(`not a GGUF file (magic ${JSON.stringify(String.fromCharCode(...magic))})`);
  const version = c.u32("version");
  if (version !== 2 && version !== 3) fail(`GGUF version ${version} is not supported (only 2 and 3)`);
  const tensorCount = c.u64("tensor count");
  const kvCount = c.u64("metadata count");
  // the smallest key/value is 8 (key length) + 4 (type) + 1 byte; the smallest tensor info 8 + 4 + 4 + 8
  if (kvCount > c.remaining / 13) fail(`metadata count ${kvCount} exceeds what the file can hold`);
  if (tensorCount > c.remaining / 24) fail(`tensor count ${tensorCount} exceeds what the file can hold`);

  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = c.string(`metadata key ${i}`);
    if (metadata.has(key)) fail(`metadata key ${JSON.stringify(key)} appears twice`);
    const type = c.u32(`type of ${key}`);
    if (type === TYPE_STRING) metadata.set(key, c.string(key));
    else if (type === TYPE_ARRAY) {
      const itemType = c.u32(`item type of ${key}`);
      const n = c.u64(`length of ${key}`);
      if (itemType === TYPE_STRING) {
        if (n > c.remaining / 8) fail(`${key}: ${n} strings exceed what the file can hold`);
        const items: string[] = new Array<string>(n);
        for (let j = 0; j < n; j++) items[j] = c.string(`${key}[${j}]`);
        metadata.set(key, items);
      } else if (Object.hasOwn(SCALAR_BYTES, itemType)) {
        const size = SCALAR_BYTES[itemType]!;
        if (n > c.remaining / size) fail(`${key}: ${n} values exceed what the file can hold`);
        const bytes = c.take(n * size, key);
        if (itemType === 7 && bytes.some((b) => b > 1)) fail(`${key}: a bool array holds a value other than 0 or 1`);
        metadata.set(key, typedArray(itemType, bytes, n));
      } else fail(`${key}: arrays of value type ${itemType} are not supported${itemType === TYPE_ARRAY ? " (nested arrays)" : ""}`);
    } else if (Object.hasOwn(SCALAR_BYTES, type)) metadata.set(key, c.scalar(type, key));
    else fail(`${key}: unknown value type ${type}`);
  }

  const alignValue = metadata.get("general.alignment") ?? 32;
  if (typeof alignValue !== "number" || !Number.isInteger(alignValue) || alignValue <= 0 || (alignValue & (alignValue - 1)) !== 0) {
    fail(`general.alignment ${String(alignValue)} is not a power of two`);
  }
  const alignment = alignValue as number;

  const raw: Array<{ name: string; dims: number[]; type: string; rel: number; bytes: number }> = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const name = c.string(`tensor name ${i}`);
    if (Buffer.byteLength(name) >= MAX_NAME) fail(`tensor name ${JSON.stringify(name.slice(0, 80))} is longer than ${MAX_NAME - 1} bytes`);
    if (names.has(name)) fail(`tensor ${JSON.stringify(name)} appears twice`);
    names.add(name);
    const nDims = c.u32(`dimension count of ${name}`);
    if (nDims < 1 || nDims > MAX_DIMS) fail(`tensor ${name}: ${nDims} dimensions (1 to ${MAX_DIMS} allowed)`);
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(c.u64(`dimension ${d} of ${name}`));
    const typeId = c.u32(`type of ${name}`);
    const type = GGML_TYPES.get(typeId);
    if (!type) fail(`tensor ${name}: unknown ggml type ${typeId}`);
    if (dims[0]! % type!.block !== 0) fail(`tensor ${name}: row length ${dims[0]} is not a multiple of ${type!.name}'s block of ${type!.block}`);
    let bytes = (dims[0]! / type!.block) * type!.bytes;
    for (const d of dims.slice(1)) {
      bytes *= d;
      if (bytes > src.size) fail(`tensor ${name}: dimensions [${dims.join(", ")}] of ${type!.name} exceed the file (${src.size} bytes)`);
    }
    if (bytes > src.size) fail(`tensor ${name}: dimensions [${dims.join(", ")}] of ${type!.name} exceed the file (${src.size} bytes)`);
    const rel = c.u64(`offset of ${name}`);
    if (rel % alignment !== 0) fail(`tensor ${name}: offset ${rel} is not a multiple of the alignment ${alignment}`);
    raw.push({ name, dims, type: type!.name, rel, bytes });
  }

  const dataOffset = Math.ceil(c.pos / alignment) * alignment;
  const dataBytes = src.size - dataOffset;
  const tensors = raw.map((t) => {
    if (t.rel + t.bytes > dataBytes) fail(`tensor ${t.name}: data ends at byte ${t.rel + t.bytes} of the data section, which holds only ${Math.max(0, dataBytes)} bytes (file truncated?)`);
    return { name: t.name, dims: t.dims, type: t.type, offset: dataOffset + t.rel, bytes: t.bytes };
  });
  const byOffset = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byOffset.length; i++) {
    if (byOffset[i]!.offset < byOffset[i - 1]!.offset + byOffset[i - 1]!.bytes) fail(`tensors ${byOffset[i - 1]!.name} and ${byOffset[i]!.name} overlap`);
  }
  return { version, metadata, tensors, alignment, dataOffset };
}

/** A GGUF file, open for reading tensors by offset. */
export class GgufFile {
  readonly header: GgufHeader;
  readonly tensors = new Map<string, GgufTensorInfo>();
  private fdOrNull: number | null;

  private constructor(readonly path: string, fd: number) {
    this.fdOrNull = fd;
    const size = fstatSync(fd).size;
    this.header = parseGgufHeader(path, {
      size,
      read: (position, length) => {
        const out = new Uint8Array(length);
        return out.subarray(0, readSync(fd, out, 0, length, position));
      },
    });
    for (const t of this.header.tensors) this.tensors.set(t.name, t);
  }

  static open(path: string): GgufFile {
    const fd = openSync(path, "r");
    try {
      return new GgufFile(path, fd);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  get fd(): number {
    if (this.fdOrNull === null) throw new Error(`${this.path}: file already closed`);
    return this.fdOrNull;
  }

  close(): void {
    if (this.fdOrNull !== null) closeSync(this.fdOrNull);
    this.fdOrNull = null;
  }
}
