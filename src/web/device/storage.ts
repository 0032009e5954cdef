// What a device page keeps across reloads, in its origin's storage: streamed weights per model (the Origin
// Private File System where the browser has it, IndexedDB otherwise) and its identity (IndexedDB, which
// keeps a non-extractable CryptoKey as it is: the private key never leaves WebCrypto). Names come from the
// base station; the protocol admits only plain file names, and OPFS refuses any other.
import { identityOf, type DeviceIdentity } from "../../protocol/handshake.js";
import { cacheEvictions, type CachedTensor } from "../../policies/cache-eviction.js";
import type { Entries } from "./browser-weights.js";

const DB = "distmoe-device", WEIGHTS = "weights", IDENTITY = "identity";

function done<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error("IndexedDB request failed"));
  });
}

let db: Promise<IDBDatabase> | null = null;
function openDb(): Promise<IDBDatabase> {
  db ??= new Promise((resolve, reject) => {
    const r = indexedDB.open(DB, 1);
    r.onupgradeneeded = () => {
      r.result.createObjectStore(WEIGHTS);
      r.result.createObjectStore(IDENTITY);
    };
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error("cannot open IndexedDB"));
  });
  return db;
}

async function inStore<T>(store: string, mode: IDBTransactionMode, f: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  return done(f((await openDb()).transaction(store, mode).objectStore(store)));
}

/** One model's weights in IndexedDB, keyed "model/tensor". */
function idbEntries(modelId: string): Entries {
  const key = (name: string) => `${modelId}/${name}`;
  return {
    read: async (name) => {
      const v = (await inStore(WEIGHTS, "readonly", (s) => s.get(key(name)))) as { header?: unknown; data?: unknown } | undefined;
      if (v === undefined) return null;
      if (typeof v.header !== "string" || !(v.data instanceof Uint8Array)) throw new Error("not an entry of this store");
      return { header: v.header, data: v.data };
    },
    write: async (name, header, data) => void (await inStore(WEIGHTS, "readwrite", (s) => s.put({ header, data, writtenAt: Date.now() }, key(name)))),
    remove: async (name) => void (await inStore(WEIGHTS, "readwrite", (s) => s.delete(key(name)))),
    has: async (name) => (await inStore(WEIGHTS, "readonly", (s) => s.count(key(name)))) > 0,
  };
}

/** One model's weights as OPFS files weights/<model>/<tensor>: a 4-byte little-endian header length, the header, the bytes. */
function opfsEntries(root: FileSystemDirectoryHandle, modelId: string): Entries {
  // looked up at each use, not kept: a handle to a folder removed meanwhile (a trim that left it empty,
  // another tab's, the user clearing the site's data) fails every later write
  const dir = () => root.getDirectoryHandle(WEIGHTS, { create: true }).then((w) => w.getDirectoryHandle(modelId, { create: true }));
  const file = async (name: string, create = false): Promise<FileSystemFileHandle | null> => {
    try {
      return await (await dir()).getFileHandle(name, { create });
    } catch (e) {
      if ((e as DOMException).name === "NotFoundError") return null;
      throw e;
    }
  };
  return {
    read: async (name) => {
      const f = await file(name);
      if (!f) return null;
      const buf = await (await f.getFile()).arrayBuffer();
      const length = buf.byteLength >= 4 ? new DataView(buf).getUint32(0, true) : -1;
      if (length < 0 || 4 + length > buf.byteLength) throw new Error("truncated");
      return { header: new TextDecoder().decode(new Uint8Array(buf, 4, length)), data: new Uint8Array(buf, 4 + length) };
    },
    write: async (name, header, data) => {
      const head = new TextEncoder().encode(header);
      const length = new Uint8Array(4);
      new DataView(length.buffer).setUint32(0, head.length, true);
      // the file takes its new content whole when the stream closes (the browser writes a swap file until then)
      const w = await (await file(name, true))!.createWritable();
      try {
        for (const part of [length, head, data]) await w.write(part as Uint8Array<ArrayBuffer>);
        await w.close();
      } catch (e) {
        await w.abort().catch(() => undefined);
        throw e;
      }
    },
    remove: async (name) => (await dir()).removeEntry(name).catch(() => undefined),
    has: async (name) => (await file(name)) !== null,
  };
}

/** Every model's entries as the cache's listing, and how to remove one. */
interface Listing {
  list(): Promise<CachedTensor[]>;
  remove(e: CachedTensor): Promise<void>;
}

/** Entries as the directory async iterator yields them (not in every TypeScript DOM library yet). */
const children = (dir: FileSystemDirectoryHandle) => (dir as unknown as { entries(): AsyncIterable<[string, FileSystemHandle]> }).entries();

function opfsListing(root: FileSystemDirectoryHandle): Listing {
  const weights = () => root.getDirectoryHandle(WEIGHTS, { create: true });
  return {
    list: async () => {
      const out: CachedTensor[] = [];
      for await (const [model, dir] of children(await weights())) {
        if (dir.kind !== "directory") continue;
        for await (const [name, f] of children(dir as FileSystemDirectoryHandle)) {
          if (f.kind !== "file") continue;
          const file = await (f as FileSystemFileHandle).getFile();
          out.push({ model, name, bytes: file.size, writtenAt: file.lastModified });
        }
      }
      return out;
    },
    remove: async (e) => {
      const w = await weights();
      await (await w.getDirectoryHandle(e.model)).removeEntry(e.name);
      // the model's folder goes with its last entry (removing a folder that is not empty fails)
      await w.removeEntry(e.model).catch(() => undefined);
    },
  };
}

const idbListing: Listing = {
  list: async () => {
    const out: CachedTensor[] = [];
    const store = (await openDb()).transaction(WEIGHTS, "readonly").objectStore(WEIGHTS);
    // one value at a time (an entry's bytes are read to size it; entries written before the time was kept count as oldest)
    await new Promise<void>((resolve, reject) => {
      const r = store.openCursor();
      r.onerror = () => reject(r.error ?? new Error("IndexedDB cursor failed"));
      r.onsuccess = () => {
        const c = r.result;
        if (!c) return resolve();
        const key = String(c.key), slash = key.indexOf("/");
        const v = c.value as { data?: unknown; writtenAt?: unknown };
        if (slash > 0 && v.data instanceof Uint8Array) out.push({ model: key.slice(0, slash), name: key.slice(slash + 1), bytes: v.data.length, writtenAt: typeof v.writtenAt === "number" ? v.writtenAt : 0 });
        c.continue();
      };
    });
    return out;
  },
  remove: async (e) => void (await inStore(WEIGHTS, "readwrite", (s) => s.delete(`${e.model}/${e.name}`))),
};

/** Where streamed weights are kept: OPFS, or IndexedDB where this browser has no OPFS. */
export interface WeightEntries {
  kind: string;
  of(modelId: string): Entries;
  /**
   * Keeps every model's weights within `budget` bytes (policies/cache-eviction.ts), never removing
   * `keep` (the tensors of the experts held now) of `modelId`; returns what it removed.
   */
  trim(modelId: string, keep: readonly string[], budget: number): Promise<CachedTensor[]>;
}

export async function weightEntries(): Promise<WeightEntries> {
  // asks the browser not to evict the origin's storage under pressure (it may decline: the cache is then best effort)
  await navigator.storage?.persist?.().catch(() => false);
  let kind: string, of: (modelId: string) => Entries, listing: Listing;
  try {
    const root = await navigator.storage.getDirectory();
    [kind, of, listing] = ["the Origin Private File System", (id) => opfsEntries(root, id), opfsListing(root)];
  } catch {
    [kind, of, listing] = ["IndexedDB", idbEntries, idbListing];
  }
  // every trim lists what is kept: the origin's usage estimate would be cheaper to ask, but it lags behind
  // IndexedDB's writes (seen in CI: another model's 136 MiB, written just before the tab joined, not yet
  // counted, so nothing was trimmed)
  const trim = async (modelId: string, keep: readonly string[], budget: number): Promise<CachedTensor[]> => {
    const kept = new Set(keep);
    const gone = cacheEvictions(await listing.list(), (e) => e.model === modelId && kept.has(e.name), budget);
    for (const e of gone) await listing.remove(e);
    return gone;
  };
  return { kind, of, trim };
}

/**
 * The identity kept in IndexedDB under `slot`, made (and kept) on its first use; `made`: it is new. One
 * browser is one device per slot: a page opened with another name (/device#name=…) is another device.
 */
export async function keptIdentity(slot: string): Promise<{ identity: DeviceIdentity; made: boolean }> {
  const kept = (await inStore(IDENTITY, "readonly", (s) => s.get(slot))) as { privateKey?: unknown; publicKey?: unknown } | undefined;
  if (kept?.privateKey instanceof CryptoKey && kept.publicKey instanceof CryptoKey) return { identity: await identityOf(kept.privateKey, kept.publicKey), made: false };
  const pair = (await crypto.subtle.generateKey("Ed25519", false, ["sign", "verify"])) as CryptoKeyPair;
  await inStore(IDENTITY, "readwrite", (s) => s.put({ privateKey: pair.privateKey, publicKey: pair.publicKey }, slot));
  return { identity: await identityOf(pair.privateKey, pair.publicKey), made: true };
}
