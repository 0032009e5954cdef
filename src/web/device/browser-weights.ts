// A browser device's store of streamed weights, kept where the page's origin keeps files (storage.ts:
// the Origin Private File System, or IndexedDB) so a reopened tab rejoins without downloading them again.
// Each tensor is one entry, its bytes beside a header with its dtype, shape and SHA-256; what is read back
// is hashed again (WebCrypto) and a damaged or unreadable entry counts as missing, so it is fetched again.
// Nothing is kept in memory beyond a load: the page holds the loaded experts, not a second copy.
import type { SourceDType } from "../../kernels/backend.js";
import type { StoredTensor, TensorStore } from "../../model/checkpoint.js";
import { isSourceDType, sourceBytes } from "../../model/weights.js";
import { sha256Hex } from "../../protocol/handshake.js";
import type { WeightStore } from "../../runtime/device-core.js";

/** One model's entries: a header (text) and bytes, by name; where they live is the implementation's. */
export interface Entries {
  read(name: string): Promise<{ header: string; data: Uint8Array } | null>;
  write(name: string, header: string, data: Uint8Array): Promise<void>;
  remove(name: string): Promise<void>;
  has(name: string): Promise<boolean>;
}

interface Header {
  dtype: SourceDType;
  shape: [number, number];
  sha256: string;
}

/** The header of an entry, refused unless it is one this store wrote for bytes of this length. */
function parseHeader(text: string, bytes: number): Header {
  const h = JSON.parse(text) as Partial<Header>;
  const shape = h.shape;
  if (!isSourceDType(h.dtype)) throw new Error(`dtype ${JSON.stringify(h.dtype)}`);
  if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => Number.isSafeInteger(d) && d > 0)) throw new Error("not a [rows, cols] shape");
  if (sourceBytes(h.dtype, shape[0]!, shape[1]!) !== bytes) throw new Error(`[${shape.join(", ")}] ${h.dtype} is not ${bytes} bytes`);
  if (typeof h.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(h.sha256)) throw new Error("no SHA-256");
  return h as Header;
}

export class BrowserWeights implements WeightStore {
  /** Bytes of streamed tensors kept since this store was made: what the base station sent. */
  received = 0;

  constructor(private readonly entries: Entries, private readonly log: (line: string) => void) {}

  /** An entry's tensor, its bytes hashed again; null (and the entry removed) where it is missing or damaged. */
  private async verified(name: string): Promise<(Header & { data: Uint8Array }) | null> {
    let entry: Awaited<ReturnType<Entries["read"]>>;
    try {
      entry = await this.entries.read(name);
    } catch (e) {
      this.log(`cannot read the cached ${name} (${(e as Error).message}): fetching it again`);
      return null;
    }
    if (!entry) return null;
    try {
      const h = parseHeader(entry.header, entry.data.length);
      const sum = await sha256Hex(entry.data);
      if (sum !== h.sha256) throw new Error(`checksum ${sum}, kept as ${h.sha256}`);
      return { ...h, data: entry.data };
    } catch (e) {
      this.log(`the cached ${name} is damaged (${(e as Error).message}): fetching it again`);
      await this.entries.remove(name).catch(() => undefined);
      return null;
    }
  }

  async checksums(names: readonly string[]): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    // one at a time: each entry's bytes are read into memory only while they are hashed
    for (const name of names) {
      const t = await this.verified(name);
      if (t) out[name] = t.sha256;
    }
    return out;
  }

  async put(name: string, dtype: SourceDType, shape: readonly [number, number], data: Uint8Array, sha256: string): Promise<void> {
    await this.entries.write(name, JSON.stringify({ dtype, shape, sha256 }), data);
    this.received += data.length;
  }

  has(name: string): Promise<boolean> {
    return this.entries.has(name);
  }

  async open(names: readonly string[]): Promise<TensorStore> {
    const index = new Map<string, StoredTensor>();
    for (const name of names) {
      const t = await this.verified(name);
      if (!t) throw new Error(`the weights of ${name} are not held intact`);
      index.set(name, { name, dtype: t.dtype, shape: t.shape, offset: 0, bytes: t.data.length, file: { path: `cache:${name}`, fd: -1, data: t.data } });
    }
    const types = (): Record<string, number> => {
      const out: Record<string, number> = {};
      for (const t of index.values()) out[t.dtype] = (out[t.dtype] ?? 0) + 1;
      return out;
    };
    // closing drops the bytes read: the loaded experts are the one copy kept in memory
    return { dir: "cache:", get: (name) => index.get(name), names: () => index.keys(), tensorTypes: types, close: () => index.clear() };
  }
}
