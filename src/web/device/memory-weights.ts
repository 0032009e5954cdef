// A browser device's store of streamed weights: the tensors in memory, each with the SHA-256 it was
// checked against on arrival (what the base station need not resend on a reconnect). Kept for the life of
// the page; a cache that outlives it (OPFS, IndexedDB) is a later step.
import type { SourceDType } from "../../kernels/backend.js";
import type { StoredTensor, TensorStore } from "../../model/checkpoint.js";
import type { WeightStore } from "../../runtime/device-core.js";

interface Held {
  dtype: SourceDType;
  shape: readonly [number, number];
  data: Uint8Array;
  sha256: string;
}

export class MemoryWeights implements WeightStore {
  private readonly tensors = new Map<string, Held>();

  constructor(readonly modelId: string) {}

  checksums(names: readonly string[]): Record<string, string> {
    const out: Record<string, string> = {};
    for (const name of names) {
      const t = this.tensors.get(name);
      if (t) out[name] = t.sha256;
    }
    return out;
  }

  put(name: string, dtype: SourceDType, shape: readonly [number, number], data: Uint8Array, sha256: string): void {
    this.tensors.set(name, { dtype, shape, data, sha256 });
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** Bytes held, over every tensor. */
  get bytes(): number {
    let n = 0;
    for (const t of this.tensors.values()) n += t.data.length;
    return n;
  }

  open(names: readonly string[]): TensorStore {
    const index = new Map<string, StoredTensor>();
    for (const name of names) {
      const t = this.tensors.get(name);
      if (!t) throw new Error(`the weights of ${name} are not held`);
      index.set(name, { name, dtype: t.dtype, shape: t.shape, offset: 0, bytes: t.data.length, file: { path: `memory:${this.modelId}/${name}`, fd: -1, data: t.data } });
    }
    const types = (): Record<string, number> => {
      const out: Record<string, number> = {};
      for (const t of index.values()) out[t.dtype] = (out[t.dtype] ?? 0) + 1;
      return out;
    };
    return { dir: `memory:${this.modelId}`, get: (name) => index.get(name), names: () => index.keys(), tensorTypes: types, close: () => undefined };
  }
}
