// A device's cache of streamed expert weights: one safetensors file per tensor, named after it, in the
// checkpoint's dtype. Files are written whole and renamed into place, and there is no shared index,
// so several device processes on one machine can share the cache. The SHA-256 of a cached tensor
// tells the base station what needs no resending. The model id and tensor names come from the base
// station: the protocol admits only plain file names, and every path built from one is checked again here.
// ggml blocks from a GGUF file (Q8_0 …), which safetensors has no dtype for, are kept as bytes (U8) with
// their type and shape in the file's metadata, and read back as that type.
import { createHash } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, renameSync, rmdirSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { SourceDType } from "../kernels/backend.js";
import { isGgmlBlockType } from "../kernels/ggml-blocks.js";
import { Checkpoint, type StoredTensor, type TensorStore } from "../model/checkpoint.js";
import { safetensorsHeader, SafetensorsFile } from "../model/safetensors.js";
import { sourceBytes } from "../model/weights.js";
import { cacheEvictions, type CachedTensor } from "../policies/cache-eviction.js";
import type { WeightStore } from "./device-core.js";

/** safetensors metadata keys of a cached tensor of ggml blocks */
const BLOCK_TYPE = "ggml_type", BLOCK_SHAPE = "ggml_shape";

/** `parent`/`name`, refused unless that is an entry directly in `parent`: no separator, not `.` or `..`, no NUL. */
function entry(parent: string, name: string): string {
  const p = path.resolve(parent, name);
  if (name.includes("\0") || path.dirname(p) !== path.resolve(parent)) throw new Error(`refusing the name ${JSON.stringify(name.slice(0, 200))}: it is not one entry of ${parent}`);
  return p;
}

export class WeightCache implements WeightStore {
  readonly dir: string;

  /** The cache of model `modelId` under `root` (one folder per model). */
  constructor(root: string, modelId: string) {
    this.dir = entry(root, modelId);
    mkdirSync(this.dir, { recursive: true });
  }

  file(name: string): string {
    return entry(this.dir, `${name}${TENSOR_FILE}`);
  }

  async has(name: string): Promise<boolean> {
    return existsSync(this.file(name));
  }

  /** SHA-256 of each of these tensors that the cache holds intact (ggml blocks: of the type and shape they claim). */
  async checksums(names: readonly string[]): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const name of names) {
      if (!existsSync(this.file(name))) continue;
      try {
        const f = SafetensorsFile.open(this.file(name));
        try {
          const t = f.tensors.get(name);
          if (t?.dtype === "U8") blocksOf(f, t);
          out[name] = createHash("sha256").update(f.read(name)).digest("hex");
        } finally {
          f.close();
        }
      } catch {
        // a damaged entry is simply fetched again
      }
    }
    return out;
  }

  /** Keeps a [rows, cols] tensor whose `data` the caller has checked against `dtype` and `shape`. */
  async put(name: string, dtype: SourceDType, shape: readonly [number, number], data: Uint8Array): Promise<void> {
    const tmp = `${this.file(name)}.${process.pid}.tmp`;
    const head = isGgmlBlockType(dtype)
      ? safetensorsHeader([{ name, dtype: "U8", shape: [data.length] }], { [BLOCK_TYPE]: dtype, [BLOCK_SHAPE]: shape.join(",") })
      : safetensorsHeader([{ name, dtype, shape }]);
    // the folder again: another device process sharing the cache may have trimmed it away, emptied
    mkdirSync(this.dir, { recursive: true });
    // header and bytes written one after the other: no copy of the tensor is made to join them
    const fd = openSync(tmp, "w");
    try {
      writeFileSync(fd, head);
      writeFileSync(fd, data);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.file(name));
  }

  /** The cached tensors `names`, ggml blocks with their own type and shape again; each checked as the loader needs it. */
  async open(names: readonly string[]): Promise<TensorStore> {
    const ck = Checkpoint.fromFiles(this.dir, names.map((n) => this.file(n)));
    const index = new Map<string, StoredTensor>();
    try {
      for (const name of names) {
        const t = ck.get(name);
        if (!t) throw new Error(`${this.file(name)} does not hold ${name}`);
        index.set(name, t.dtype === "U8" ? blocksOf(t.file, t) : t);
      }
    } catch (e) {
      ck.close();
      throw e;
    }
    return { dir: this.dir, get: (name) => index.get(name), names: () => index.keys(), tensorTypes: () => ck.tensorTypes(), close: () => ck.close() };
  }
}

const TENSOR_FILE = ".safetensors";

/**
 * Keeps the cache under `root` within `budget` bytes (policies/cache-eviction.ts): removes the oldest
 * tensor files of any model but `keep`'s tensors of model `modelId`, and model folders left empty. Other
 * device processes sharing the cache may lose a tensor they hold in memory: it is streamed again only if
 * they rejoin. Returns what it removed.
 */
export function trimWeightCache(root: string, modelId: string, keep: readonly string[], budget: number): CachedTensor[] {
  const kept = new Set(keep);
  const listing: CachedTensor[] = [];
  for (const model of readdirSync(root, { withFileTypes: true })) {
    if (!model.isDirectory()) continue;
    const dir = entry(root, model.name);
    for (const f of readdirSync(dir, { withFileTypes: true })) {
      if (!f.isFile() || !f.name.endsWith(TENSOR_FILE)) continue;
      const st = statSync(entry(dir, f.name), { throwIfNoEntry: false });
      if (st) listing.push({ model: model.name, name: f.name.slice(0, -TENSOR_FILE.length), bytes: st.size, writtenAt: st.mtimeMs });
    }
  }
  const gone = cacheEvictions(listing, (e) => e.model === modelId && kept.has(e.name), budget);
  for (const e of gone) unlinkSync(entry(entry(root, e.model), `${e.name}${TENSOR_FILE}`));
  for (const model of new Set(gone.map((e) => e.model))) {
    // a folder another process writes into again meanwhile is not empty: it stays
    if (model !== modelId) {
      try {
        rmdirSync(entry(root, model));
      } catch {}
    }
  }
  return gone;
}

/** A cached tensor of ggml blocks as its type and shape, refused unless its bytes are what they imply. */
function blocksOf(f: SafetensorsFile, t: StoredTensor): StoredTensor {
  const dtype = f.metadata[BLOCK_TYPE] ?? "", shape = (f.metadata[BLOCK_SHAPE] ?? "").split(",").map(Number);
  const fail = (why: string): never => {
    throw new Error(`${f.path}: ${why}`);
  };
  if (!isGgmlBlockType(dtype)) fail(`bytes of type ${JSON.stringify(dtype.slice(0, 20))}, not a ggml block type`);
  if (shape.length !== 2 || !shape.every((d) => Number.isSafeInteger(d) && d > 0)) fail(`shape ${JSON.stringify(f.metadata[BLOCK_SHAPE]?.slice(0, 40))} is not rows,cols`);
  const want = sourceBytes(dtype as SourceDType, shape[0]!, shape[1]!);
  if (want !== t.bytes) fail(`[${shape.join(", ")}] ${dtype} needs ${want ?? "whole blocks, not"} bytes, got ${t.bytes}`);
  return { ...t, dtype, shape };
}
