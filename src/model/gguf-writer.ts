// Writer for GGUF (what gguf.ts reads), laid out as gguf-py's GGUFWriter lays it out: magic, version 3,
// tensor and metadata counts, the metadata in the order given, the tensor infos with offsets relative
// to the data section (each tensor padded to the alignment), zero padding to the alignment, then the
// tensors' data, each followed by zero padding. The data is streamed: a tensor's bytes may come in any
// number of pieces, and nothing but the header is held.
import { closeSync, openSync, writeSync } from "node:fs";

/** GGUF metadata value types, as the format numbers them. */
export const GGUF_TYPE = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12 } as const;

/** [value type, value]; an array is [9, [item type, items]]. */
export type GgufEntry = [type: number, value: unknown];

export interface GgufTensorEntry {
  name: string;
  /** ggml order: dims[0] is a row's length. */
  dims: readonly number[];
  /** ggml type id (0 F32, 1 F16, 8 Q8_0, 30 BF16 …). */
  type: number;
  bytes: number;
}

const SIZE: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

/** A value type the format does not define has no encoding: it is written as the bare type (tests write such files to check the reader). */
function scalar(type: number, v: unknown): Buffer {
  if (!(type in SIZE)) return Buffer.alloc(0);
  const b = Buffer.alloc(SIZE[type]!);
  switch (type) {
    case 0: b.writeUInt8(v as number); break;
    case 1: b.writeInt8(v as number); break;
    case 2: b.writeUInt16LE(v as number); break;
    case 3: b.writeInt16LE(v as number); break;
    case 4: b.writeUInt32LE(v as number); break;
    case 5: b.writeInt32LE(v as number); break;
    case 6: b.writeFloatLE(v as number); break;
    case 7: b.writeUInt8(v ? 1 : 0); break;
    case 10: b.writeBigUInt64LE(typeof v === "bigint" ? v : BigInt(v as number)); break;
    case 11: b.writeBigInt64LE(typeof v === "bigint" ? v : BigInt(v as number)); break;
    default: b.writeDoubleLE(v as number);
  }
  return b;
}

const str = (s: string): Buffer => {
  const b = Buffer.from(s, "utf8");
  return Buffer.concat([scalar(10, BigInt(b.length)), b]);
};

function value(type: number, v: unknown): Buffer {
  if (type === GGUF_TYPE.string) return str(v as string);
  if (type === GGUF_TYPE.array) {
    const [item, items] = v as [number, ArrayLike<unknown>];
    const parts: Buffer[] = [scalar(4, item), scalar(10, BigInt(items.length))];
    for (let i = 0; i < items.length; i++) parts.push(value(item, items[i]));
    return Buffer.concat(parts);
  }
  return scalar(type, v);
}

export const alignUp = (n: number, alignment: number): number => Math.ceil(n / alignment) * alignment;

/** The header (up to the start of the data section, padding included) and where each tensor's data goes, relative to the data section. */
export function ggufHeader(metadata: ReadonlyArray<readonly [string, GgufEntry]>, tensors: readonly GgufTensorEntry[], alignment = 32, version = 3): { head: Buffer; offsets: number[]; dataBytes: number } {
  const parts: Buffer[] = [Buffer.from("GGUF"), scalar(4, version), scalar(10, BigInt(tensors.length)), scalar(10, BigInt(metadata.length))];
  for (const [k, [t, v]] of metadata) parts.push(str(k), scalar(4, t), value(t, v));
  let off = 0;
  const offsets = tensors.map((t) => {
    const o = off;
    off = alignUp(off + t.bytes, alignment);
    return o;
  });
  tensors.forEach((t, i) => {
    parts.push(str(t.name), scalar(4, t.dims.length));
    for (let d = 0; d < t.dims.length; d++) parts.push(scalar(10, BigInt(t.dims[d]!)));
    parts.push(scalar(4, t.type), scalar(10, BigInt(offsets[i]!)));
  });
  const head = Buffer.concat(parts);
  return { head: Buffer.concat([head, Buffer.alloc(alignUp(head.length, alignment) - head.length)]), offsets, dataBytes: off };
}

/** A GGUF file written front to back: the header at once, then each tensor's bytes in the order of `tensors`. */
export class GgufStreamWriter {
  private fd: number | null;
  private tensor = 0;
  private written = 0;
  readonly dataOffset: number;

  constructor(readonly path: string, metadata: ReadonlyArray<readonly [string, GgufEntry]>, private readonly tensors: readonly GgufTensorEntry[], private readonly alignment = 32) {
    const { head } = ggufHeader(metadata, tensors, alignment);
    this.fd = openSync(path, "w");
    this.dataOffset = head.length;
    this.put(head);
    this.skipEmpty();
  }

  /** The next bytes of the current tensor (never past its end). */
  write(bytes: Uint8Array): void {
    const t = this.tensors[this.tensor];
    if (!t) throw new Error(`${this.path}: more tensor data than the header announced`);
    if (this.written + bytes.length > t.bytes) throw new Error(`${this.path}: tensor ${t.name} is ${t.bytes} bytes, ${this.written + bytes.length} were written`);
    this.put(bytes);
    this.written += bytes.length;
    if (this.written === t.bytes) {
      this.put(Buffer.alloc(alignUp(t.bytes, this.alignment) - t.bytes));
      this.tensor++;
      this.written = 0;
      this.skipEmpty();
    }
  }

  /** Closes the file; throws if a tensor's data is missing. */
  finish(): void {
    const missing = this.tensors[this.tensor];
    this.close();
    if (missing) throw new Error(`${this.path}: tensor ${missing.name} got ${this.written} of its ${missing.bytes} bytes`);
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  private skipEmpty(): void {
    while (this.tensors[this.tensor]?.bytes === 0) this.tensor++;
  }

  private put(b: Uint8Array): void {
    if (this.fd === null) throw new Error(`${this.path}: already closed`);
    let done = 0;
    while (done < b.length) done += writeSync(this.fd, b, done, b.length - done);
  }
}
