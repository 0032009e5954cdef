// The model the hub serves, as devices see it: its config and identity, what a valid [layer, expert]
// is, the largest frame a device needs to send, and its experts' weights streamed to devices that
// fetch them (one fetch streaming per device, a short queue behind it, each frame written before the
// next is read, so a fetch holds one tensor in memory at a time). The model is a Hugging Face directory
// or a GGUF file; a tensor is streamed as the file stores it (a GGUF file's ggml blocks too), its type named.
import { createHash } from "node:crypto";
import path from "node:path";
import type { SourceDType, WeightDType } from "../../kernels/backend.js";
import { tensorName } from "../../model/arch.js";
import { readStoredTensor, type TensorStore } from "../../model/checkpoint.js";
import type { ModelConfig } from "../../model/config.js";
import { openModel } from "../../model/open-model.js";
import { isSourceDType } from "../../model/weights.js";
import { expertWork, type WorkShape } from "../../model/work-shape.js";
import { wireBytes, type WireDType } from "../../protocol/activations.js";
import { LIMITS } from "../../protocol/frames.js";
import { pairKey, type Device } from "./device.js";

export class ServedModel {
  /** The model directory (or GGUF file), absolute: a device reads the files there only at a path that names them wherever it runs. */
  readonly dir: string;
  readonly cfg: ModelConfig;
  /** The model's config.json, for devices without the files. */
  readonly configJson: Record<string, unknown>;
  /** Identifies the checkpoint (config and tensor layout), for devices' weight caches. */
  readonly id: string;
  /** An expert's weight bytes as devices hold them (an upper bound: f32 where the dtype cannot hold a shape) and multiply-adds per row. */
  readonly expertShape: WorkShape;
  /** The checkpoint, open while the hub runs (the base station's own copy of the experts). */
  readonly checkpoint: TensorStore;
  /** each device's fetches, streaming or queued, and the end of its queue */
  private readonly fetches = new WeakMap<Device, { queued: number; tail: Promise<void> }>();

  constructor(dir: string, weightDType: WeightDType, private readonly log: (line: string) => void) {
    this.dir = path.resolve(dir);
    const opened = openModel(dir);
    this.checkpoint = opened.store;
    this.cfg = opened.config;
    this.configJson = opened.configJson;
    const id = createHash("sha256").update(JSON.stringify(this.configJson));
    for (const name of [...this.checkpoint.names()].sort()) {
      const t = this.checkpoint.get(name)!;
      id.update(`${name}:${t.dtype}:${t.shape.join("x")}:${path.basename(t.file.path)}:${t.offset};`);
    }
    this.id = id.digest("hex").slice(0, 32);
    this.expertShape = expertWork(this.cfg, weightDType);
  }

  /**
   * The largest frame a device sends for this model: a result of the most rows the protocol allows, or
   * a pulled expert, with a full header.
   */
  maxFrameBytes(wireDType: WireDType): number {
    const result = LIMITS.rows * this.cfg.hidden * wireBytes(wireDType);
    return Math.min(LIMITS.frameBytes, 8 + LIMITS.headerBytes + Math.max(result, this.expertShape.weightBytes));
  }

  /** The pairs that name an expert of a sparse layer of this model, each once. */
  experts(pairs: ReadonlyArray<readonly [number, number]>): Array<[number, number]> {
    const seen = new Set<string>();
    return pairs.filter(([l, e]) => {
      if (!this.cfg.sparseLayers[l] || e >= this.cfg.experts || seen.has(pairKey([l, e]))) return false;
      seen.add(pairKey([l, e]));
      return true;
    }).map(([l, e]) => [l, e]);
  }

  /**
   * Streams the experts a device fetches, of those assigned to it, except tensors it holds already
   * with the same checksum; a fetch beyond the device's queue, or of experts not assigned to it, is refused.
   */
  fetch(d: Device, experts: ReadonlyArray<[number, number]>, have: Record<string, string>, queueLength: number): void {
    const q = this.fetches.get(d) ?? { queued: 0, tail: Promise.resolve() };
    this.fetches.set(d, q);
    if (q.queued >= queueLength) return d.conn.refuse("fetches beyond the queue", `${q.queued} weight fetches are streaming or queued already`);
    const assigned = new Set(d.assigned.map(pairKey));
    const wanted = this.experts(experts).filter((p) => assigned.has(pairKey(p)));
    if (wanted.length < experts.length) d.conn.refuse("fetches of experts not assigned", `${experts.length - wanted.length} of the ${experts.length} experts fetched are not assigned to this device`);
    q.queued++;
    q.tail = q.tail
      .then(() => this.stream(d, wanted, have))
      .catch((e: Error) => this.log(`streaming weights to ${d.name} failed: ${e.message}`))
      .finally(() => q.queued--);
  }

  private async stream(d: Device, experts: ReadonlyArray<[number, number]>, have: Record<string, string>): Promise<void> {
    const t = this.cfg.arch.tensors;
    let sent = 0, bytes = 0;
    for (const [layer, expert] of experts) {
      for (const tmpl of [t.expertGate, t.expertUp, t.expertDown]) {
        const name = tensorName(tmpl, layer, expert);
        const info = this.checkpoint.get(name);
        if (!info || !isSourceDType(info.dtype) || info.shape.length !== 2 || info.rowOrder) throw new Error(`${this.dir}: tensor ${name} is ${info ? `${info.dtype} [${info.shape.join(", ")}]${info.rowOrder ? " with its rows reordered" : ""}` : "missing"}, not an expert matrix a device can take`);
        const payload = readStoredTensor(info);
        const sha256 = createHash("sha256").update(payload).digest("hex");
        if (have[name] === sha256) continue;
        if (!(await d.conn.sendWritten({ type: "weights", name, dtype: info.dtype as SourceDType, shape: [info.shape[0]!, info.shape[1]!], sha256, payload }))) return;
        sent++;
        bytes += payload.length;
        d.weightBytes += payload.length;
      }
    }
    d.conn.send({ type: "fetched", sent, bytes });
    if (bytes > 0) this.log(`streamed ${sent} tensors (${(bytes / 2 ** 20).toFixed(1)} MiB) to ${d.name}`);
  }

  close(): void {
    this.checkpoint.close();
  }
}
