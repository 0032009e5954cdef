// A Hugging Face checkpoint directory: config.json plus model.safetensors, or shards listed in
// model.safetensors.index.json. Tensors are looked up by name across shards.
import { existsSync, readFileSync, readSync } from "node:fs";
import path from "node:path";
import { SafetensorsFile, type TensorInfo } from "./safetensors.js";

/** Where one tensor's bytes lie, as the weight loader reads them. */
export interface StoredTensor {
  readonly name: string;
  /** File dtype: F32, BF16, F16 (safetensors and GGUF), Q8_0 … (GGUF) */
  readonly dtype: string;
  /** Hugging Face order: [rows, cols] for a matrix. */
  readonly shape: readonly number[];
  /** Absolute byte offset in the file. */
  readonly offset: number;
  readonly bytes: number;
  /** Where its bytes are: an open file, or (fd -1) `data` in memory, as WeightSource has them. */
  readonly file: { readonly path: string; readonly fd: number; readonly data?: Uint8Array };
  /** Row r of the tensor is row rowOrder[r] in the file (GGUF's permuted q/k); absent: in order. */
  readonly rowOrder?: Int32Array;
}

/** A model's tensors by Hugging Face name, whatever the files: what the weight loader reads from. */
export interface TensorStore {
  /** The model directory or file, for messages. */
  readonly dir: string;
  get(name: string): StoredTensor | undefined;
  names(): IterableIterator<string>;
  /** How many tensors of each type the files hold, as they store them (what `inspect` shows). */
  tensorTypes(): Record<string, number>;
  close(): void;
}

export class Checkpoint implements TensorStore {
  private readonly files: SafetensorsFile[] = [];
  private readonly index = new Map<string, TensorInfo>();

  private constructor(readonly dir: string) {}

  static open(dir: string): Checkpoint {
    const ck = new Checkpoint(dir);
    try {
      ck.openFiles();
    } catch (e) {
      ck.close();
      throw e;
    }
    return ck;
  }

  private openFiles(): void {
    const indexPath = path.join(this.dir, "model.safetensors.index.json");
    const single = path.join(this.dir, "model.safetensors");
    if (existsSync(indexPath)) {
      let weightMap: Record<string, string>;
      try {
        const parsed = JSON.parse(readFileSync(indexPath, "utf8")) as { weight_map?: Record<string, string> };
        if (!parsed.weight_map || typeof parsed.weight_map !== "object") throw new Error("it has no weight_map object");
        weightMap = parsed.weight_map;
      } catch (e) {
        throw new Error(`${indexPath}: ${(e as Error).message}`);
      }
      const shards = new Map<string, SafetensorsFile>();
      for (const [name, shard] of Object.entries(weightMap)) {
        if (typeof shard !== "string" || shard.includes("/") || shard.includes("\\")) throw new Error(`${indexPath}: tensor ${name} maps to an invalid shard name ${JSON.stringify(shard)}`);
        let f = shards.get(shard);
        if (!f) {
          const p = path.join(this.dir, shard);
          if (!existsSync(p)) throw new Error(`${indexPath}: shard ${shard} (holding ${name}) does not exist`);
          f = SafetensorsFile.open(p);
          shards.set(shard, f);
          this.files.push(f);
        }
        const info = f.tensors.get(name);
        if (!info) throw new Error(`${indexPath}: tensor ${name} is listed in ${shard} but that file does not hold it`);
        this.index.set(name, info);
      }
    } else if (existsSync(single)) {
      const f = SafetensorsFile.open(single);
      this.files.push(f);
      for (const [name, info] of f.tensors) this.index.set(name, info);
    } else {
      throw new Error(`${this.dir}: no model.safetensors or model.safetensors.index.json`);
    }
  }

  /** Tensors from a list of safetensors files (a device's weight cache), without a model directory. */
  static fromFiles(label: string, files: readonly string[]): Checkpoint {
    const ck = new Checkpoint(label);
    try {
      for (const file of files) {
        const f = SafetensorsFile.open(file);
        ck.files.push(f);
        for (const [name, info] of f.tensors) ck.index.set(name, info);
      }
    } catch (e) {
      ck.close();
      throw e;
    }
    return ck;
  }

  get(name: string): TensorInfo | undefined {
    return this.index.get(name);
  }

  names(): IterableIterator<string> {
    return this.index.keys();
  }

  tensorTypes(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const t of this.index.values()) out[t.dtype] = (out[t.dtype] ?? 0) + 1;
    return out;
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

/** A stored tensor's bytes, as the file holds them. */
export function readStoredTensor(t: StoredTensor): Uint8Array {
  const out = new Uint8Array(t.bytes);
  for (let done = 0; done < out.length; ) {
    const n = readSync(t.file.fd, out, done, out.length - done, t.offset + done);
    if (n === 0) throw new Error(`${t.file.path}: tensor ${t.name}: short read`);
    done += n;
  }
  return out;
}
