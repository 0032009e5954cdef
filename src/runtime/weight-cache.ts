// A device's cache of streamed expert weights: one safetensors file per tensor, named after it, in the
// checkpoint's dtype. Files are written whole and renamed into place, and there is no shared index,
// so several device processes on one machine can share the cache. The SHA-256 of a cached tensor
// tells the base station what needs no resending. The model id and tensor names come from the base
// station: the protocol admits only plain file names, and every path built from one is checked again here.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { safetensorsHeader, SafetensorsFile } from "../model/safetensors.js";

/** `parent`/`name`, refused unless that is an entry directly in `parent`: no separator, not `.` or `..`, no NUL. */
function entry(parent: string, name: string): string {
  const p = path.resolve(parent, name);
  if (name.includes("\0") || path.dirname(p) !== path.resolve(parent)) throw new Error(`refusing the name ${JSON.stringify(name.slice(0, 200))}: it is not one entry of ${parent}`);
  return p;
}

export class WeightCache {
  readonly dir: string;

  /** The cache of model `modelId` under `root` (one folder per model). */
  constructor(root: string, modelId: string) {
    this.dir = entry(root, modelId);
    mkdirSync(this.dir, { recursive: true });
  }

  file(name: string): string {
    return entry(this.dir, `${name}.safetensors`);
  }

  /** SHA-256 of each of these tensors that the cache holds intact. */
  checksums(names: readonly string[]): Record<string, string> {
    const out: Record<string, string> = {};
    for (const name of names) {
      if (!existsSync(this.file(name))) continue;
      try {
        const f = SafetensorsFile.open(this.file(name));
        try {
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

  put(name: string, dtype: "F32" | "BF16" | "F16", shape: readonly number[], data: Uint8Array): void {
    const tmp = `${this.file(name)}.${process.pid}.tmp`;
    writeFileSync(tmp, Buffer.concat([safetensorsHeader([{ name, dtype, shape }]), data]));
    renameSync(tmp, this.file(name));
  }
}
