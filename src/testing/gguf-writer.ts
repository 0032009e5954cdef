// GGUF files built in memory for tests of the reader, through the one GGUF writer (model/gguf-writer.ts):
// metadata of every value type, tensor infos with their data at aligned offsets.
import { ggufHeader, type GgufEntry } from "../model/gguf-writer.js";

/** [value type, value]: value types as GGUF numbers them (9 = array: [9, [item type, values]]). */
export type TestValue = GgufEntry;

export interface TestTensor {
  name: string;
  dims: number[];
  type: number;
  bytes: number;
  /** The tensor's data (`bytes` long); absent: filled with 0x5a. */
  data?: Uint8Array;
}

/** A whole GGUF file; tensor data (each tensor's own, or 0x5a) follows the header at `alignment`. */
export function ggufFile(metadata: Array<[string, TestValue]>, tensors: TestTensor[], alignment = 32, version = 3): Uint8Array {
  const { head, offsets, dataBytes } = ggufHeader(metadata, tensors, alignment, version);
  const data = Buffer.alloc(dataBytes, 0x5a);
  tensors.forEach((t, i) => t.data && data.set(t.data, offsets[i]!));
  return new Uint8Array(Buffer.concat([head, data]));
}
