// GGUF files built in memory for tests of the reader: metadata of every value type, tensor infos with
// their data at aligned offsets.

/** [value type, value]: value types as GGUF numbers them (9 = array: [9, [item type, values]]). */
export type TestValue = [type: number, value: unknown];

export interface TestTensor {
  name: string;
  dims: number[];
  type: number;
  bytes: number;
  /** The tensor's data (`bytes` long); absent: filled with 0x5a. */
  data?: Uint8Array;
}

const SIZE: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

function scalar(type: number, v: unknown): Buffer {
  if (!(type in SIZE)) return Buffer.alloc(0); // a type no file may name: nothing to write
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
    case 10: b.writeBigUInt64LE(v as bigint); break;
    case 11: b.writeBigInt64LE(v as bigint); break;
    default: b.writeDoubleLE(v as number);
  }
  return b;
}

const str = (s: string) => {
  const b = Buffer.from(s);
  const n = Buffer.alloc(8);
  n.writeBigUInt64LE(BigInt(b.length));
  return Buffer.concat([n, b]);
};
const u32 = (v: number) => scalar(4, v);
const u64 = (v: number) => scalar(10, BigInt(v));

function value(type: number, v: unknown): Buffer {
  if (type === 8) return str(v as string);
  if (type === 9) {
    const [item, items] = v as [number, unknown[]];
    return Buffer.concat([u32(item), u64(items.length), ...items.map((x) => value(item, x))]);
  }
  return scalar(type, v);
}

/** A whole GGUF file; tensor data (each tensor's own, or 0x5a) follows the header at `alignment`. */
export function ggufFile(metadata: Array<[string, TestValue]>, tensors: TestTensor[], alignment = 32, version = 3): Uint8Array {
  const parts: Buffer[] = [Buffer.from("GGUF"), u32(version), u64(tensors.length), u64(metadata.length)];
  for (const [k, [t, v]] of metadata) parts.push(str(k), u32(t), value(t, v));
  let off = 0;
  const offsets = tensors.map((t) => {
    const o = off;
    off = Math.ceil((off + t.bytes) / alignment) * alignment;
    return o;
  });
  tensors.forEach((t, i) => parts.push(str(t.name), u32(t.dims.length), ...t.dims.map(u64), u32(t.type), u64(offsets[i]!)));
  const head = Buffer.concat(parts);
  const dataStart = Math.ceil(head.length / alignment) * alignment;
  const data = Buffer.alloc(off, 0x5a);
  tensors.forEach((t, i) => t.data && data.set(t.data, offsets[i]!));
  return new Uint8Array(Buffer.concat([head, Buffer.alloc(dataStart - head.length), data]));
}
