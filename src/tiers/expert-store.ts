// The store tier: experts' weights read from the checkpoint on disk when the fast tier copies them in,
// instead of from the near tier's memory. Each read is a positioned read of the expert's three tensor
// ranges, asynchronous (libuv's thread pool), so the base station keeps serving while one is under way,
// and it goes through the OS page cache as a memory-mapped read on demand would (Node has no mmap).
// Weights come as the checkpoint holds them, so the fast tier must hold experts in that dtype.
import { read } from "node:fs";
import { promisify } from "node:util";
import type { WeightDType } from "../kernels/backend.js";
import { tensorName } from "../model/arch.js";
import { Checkpoint } from "../model/checkpoint.js";
import { isGgufPath } from "../model/gguf-model.js";
import type { ModelConfig } from "../model/config.js";
import type { TensorInfo } from "../model/safetensors.js";
import type { HeldExpert } from "../runtime/device-hub.js";

const readAt = promisify(read);

/** The checkpoint's dtypes the fast tier can hold as they are. */
const HELD_AS: Record<string, WeightDType | undefined> = { BF16: "bf16", F32: "f32" };

export class ExpertStore {
  private constructor(private readonly ck: Checkpoint, private readonly cfg: ModelConfig, readonly dtype: WeightDType) {}

  /** The store of the checkpoint in `dir`; throws unless its experts are in `want`, the fast tier's dtype. */
  static open(dir: string, cfg: ModelConfig, want: WeightDType): ExpertStore {
    // a GGUF file's blocks are not the layout the fast tier holds q8/q4 in
    if (isGgufPath(dir)) throw new Error(`${dir}: copies from the store read a model directory's safetensors; with a GGUF file the fast tier copies from the near tier (--copy-from near)`);
    const ck = Checkpoint.open(dir);
    try {
      const layer = cfg.sparseLayers.indexOf(true);
      const first = ck.get(tensorName(cfg.arch.tensors.expertGate, layer, 0));
      if (!first) throw new Error(`${dir}: no expert tensors to read (${tensorName(cfg.arch.tensors.expertGate, layer, 0)})`);
      const dtype = HELD_AS[first.dtype];
      if (dtype !== want) throw new Error(`${dir} stores its experts as ${first.dtype}; copies from the store need the fast tier to hold them so (--dtype ${dtype ?? "bf16 or f32 with such a checkpoint"})`);
      return new ExpertStore(ck, cfg, dtype);
    } catch (e) {
      ck.close();
      throw e;
    }
  }

  /** The expert's gate, up and down weights, read from disk. */
  async read(layer: number, expert: number): Promise<HeldExpert> {
    const { tensors } = this.cfg.arch;
    const infos = [tensors.expertGate, tensors.expertUp, tensors.expertDown].map((t) => this.tensor(tensorName(t, layer, expert)));
    const payload = new Uint8Array(infos.reduce((n, t) => n + t.bytes, 0));
    let at = 0;
    await Promise.all(
      infos.map((t) => {
        const into = at;
        at += t.bytes;
        return readAt(t.file.fd, payload, into, t.bytes, t.offset).then(({ bytesRead }) => {
          if (bytesRead !== t.bytes) throw new Error(`${t.file.path}: tensor ${t.name}: short read (${bytesRead} of ${t.bytes} bytes)`);
        });
      }),
    );
    return { dtype: this.dtype, shapes: infos.map((t) => [t.shape[0]!, t.shape[1]!]), payload };
  }

  private tensor(name: string): TensorInfo {
    const t = this.ck.get(name);
    if (!t) throw new Error(`${this.ck.dir}: tensor ${name} is missing`);
    if (HELD_AS[t.dtype] !== this.dtype || t.shape.length !== 2) throw new Error(`${t.file.path}: tensor ${name} is ${t.dtype} [${t.shape.join(", ")}], not a ${this.dtype} matrix like the other experts`);
    return t;
  }

  close(): void {
    this.ck.close();
  }
}
