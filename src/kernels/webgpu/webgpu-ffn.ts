// Expert FFNs on WebGPU: an expert's gate, up and down held in GPU buffers as f32, f16 or bf16 (the bytes
// of the weight exchange layout, weight-layout.ts), and a batch of calls computed as one command
// encoder's chain of dispatches (per call: gate_up, then down; ffn-shader.ts) whose outputs are read
// back once. Batches run one after another (they share the activation and readback buffers). A batch
// that fails (the device lost, a pipeline or buffer refused, the readback failed) rejects: the caller
// decides what then computes it.
import { BUFFER, MAP_READ, type Gpu, type GpuBuffer, type GpuComputePipeline, type GpuDevice } from "./gpu-api.js";
import { ffnShader, GPU_WEIGHT_DTYPES, PARAMS_BYTES, PARAMS_STRIDE, TN, TR, type GpuWeightDType } from "./ffn-shader.js";

/** A weight matrix [rows][cols] of `bytes` (a backend's WeightTensor is one). */
export interface GpuWeightShape {
  readonly dtype: string;
  readonly rows: number;
  readonly cols: number;
  readonly bytes: number;
}

/** A weight matrix with its values as the exchange layout holds them (plain row-major values). */
export interface GpuWeightData extends GpuWeightShape {
  readonly data: Uint8Array;
}

/** An expert's FFN held on the GPU. */
export interface GpuFfnWeights {
  readonly gate: GpuBuffer;
  readonly up: GpuBuffer;
  readonly down: GpuBuffer;
  readonly gateUpDType: GpuWeightDType;
  readonly downDType: GpuWeightDType;
  readonly hidden: number;
  readonly ff: number;
}

/** One expert applied to `rows` rows of `input` (rows × hidden f32). */
export interface GpuFfnCall {
  readonly w: GpuFfnWeights;
  readonly rows: number;
  readonly input: Float32Array;
}

type Product = "gate_up" | "down";

const isGpuDType = (d: string): d is GpuWeightDType => GPU_WEIGHT_DTYPES.includes(d as GpuWeightDType);

export class WebGpuFfn {
  /** Why the device is gone (null while it serves). */
  lost: string | null = null;
  /** activations in, the hidden [rows][ff] between the products, activations out, their readback copy, dispatch parameters */
  private io: { x: GpuBuffer; h: GpuBuffer; y: GpuBuffer; read: GpuBuffer; params: GpuBuffer } | null = null;
  /** batches run in turn */
  private tail: Promise<unknown> = Promise.resolve();
  /** fails the batch waiting for its readback (the device was lost) */
  private abort: ((e: Error) => void) | null = null;
  /** the shaders' pipelines, built when weights of their dtype are first held (only those a device's experts need) */
  private readonly pipelines = new Map<string, Promise<GpuComputePipeline>>();

  private constructor(private readonly device: GpuDevice, readonly adapter: string, private readonly log: (line: string) => void) {
    device.onuncapturederror = (e) => log(`WebGPU: ${e.error.message}`);
    void device.lost.then((info) => {
      this.lost = info.message || info.reason || "no reason given";
      // closed (destroyed) on purpose: nothing to tell
      if (info.reason !== "destroyed") log(`WebGPU device lost: ${this.lost}`);
      // a lost device may leave a readback pending for ever
      this.abort?.(new Error(`the WebGPU device was lost (${this.lost})`));
    });
  }

  /** The adapter's device, or null where the browser offers no adapter. */
  static async open(gpu: Gpu, log: (line: string) => void): Promise<WebGpuFfn | null> {
    const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
    if (!adapter) return null;
    const { vendor, architecture, device: id, description } = adapter.info;
    const name = [vendor, architecture, description || id].filter((s) => s).join(" ") || "unnamed adapter";
    // an expert's matrix is one buffer: as large as the adapter allows
    const { maxStorageBufferBindingSize, maxBufferSize } = adapter.limits;
    return new WebGpuFfn(await adapter.requestDevice({ requiredLimits: { maxStorageBufferBindingSize, maxBufferSize } }), name, log);
  }

  /** The pipeline of one product for weights of `dtype`, built once; a pipeline that failed to build fails every batch that needs it. */
  private pipeline(kind: Product, dtype: GpuWeightDType): Promise<GpuComputePipeline> {
    const key = `${kind} ${dtype}`;
    let p = this.pipelines.get(key);
    if (!p) {
      const module = this.device.createShaderModule({ code: ffnShader(kind, dtype), label: key });
      p = this.device.createComputePipelineAsync({ layout: "auto", label: key, compute: { module, entryPoint: "main" } }).catch((e: Error) => {
        throw new Error(`the WebGPU ${key} pipeline failed to build: ${e.message}`);
      });
      // held here until a batch awaits it
      p.catch(() => undefined);
      this.pipelines.set(key, p);
    }
    return p;
  }

  /** Why an FFN of these weights cannot be held here, or null where it can. */
  refuses(gate: GpuWeightShape, up: GpuWeightShape, down: GpuWeightShape): string | null {
    if (!isGpuDType(gate.dtype) || !isGpuDType(down.dtype) || gate.dtype !== up.dtype) return `the WebGPU kernels compute f32, f16 and bf16 weights (gate and up of one), not ${gate.dtype}/${up.dtype}/${down.dtype}`;
    if (up.rows !== gate.rows || up.cols !== gate.cols || down.rows !== gate.cols || down.cols !== gate.rows) return "gate, up and down do not make an FFN";
    // the shaders read rows four values at a time
    const odd = [gate, up, down].find((w) => w.bytes !== w.rows * w.cols * (w.dtype === "f32" ? 4 : 2) || w.cols % 4 !== 0 || w.bytes === 0);
    if (odd) return `a ${odd.rows}×${odd.cols} ${odd.dtype} matrix of ${odd.bytes} bytes (the WebGPU kernels read rows of a multiple of 4 values)`;
    const limit = Math.min(this.device.limits.maxStorageBufferBindingSize, this.device.limits.maxBufferSize);
    const big = [gate, up, down].find((w) => w.bytes > limit);
    return big ? `a ${big.rows}×${big.cols} ${big.dtype} matrix exceeds the adapter's largest buffer (${limit} bytes)` : null;
  }

  /** Copies an FFN's weights to the GPU (refuses(…) must have said it can). */
  hold(gate: GpuWeightData, up: GpuWeightData, down: GpuWeightData): GpuFfnWeights {
    const why = this.refuses(gate, up, down) ?? [gate, up, down].map((w) => (w.data.byteLength === w.bytes ? null : `${w.data.byteLength} bytes for a ${w.bytes}-byte matrix`)).find((e) => e);
    if (why) throw new Error(why);
    const upload = (w: GpuWeightData) => {
      const buffer = this.device.createBuffer({ size: w.data.byteLength, usage: BUFFER.STORAGE | BUFFER.COPY_DST, label: `${w.rows}×${w.cols} ${w.dtype}` });
      this.device.queue.writeBuffer(buffer, 0, w.data);
      return buffer;
    };
    const w = { gate: upload(gate), up: upload(up), down: upload(down), gateUpDType: gate.dtype as GpuWeightDType, downDType: down.dtype as GpuWeightDType, hidden: gate.cols, ff: gate.rows };
    // built now, ready when the first call comes
    void this.pipeline("gate_up", w.gateUpDType);
    void this.pipeline("down", w.downDType);
    return w;
  }

  /** Gives an FFN's buffers back, once the batches queued before have run. */
  free(w: GpuFfnWeights): void {
    this.tail = this.tail.then(() => [w.gate, w.up, w.down].forEach((b) => b.destroy()));
  }

  /** Each call's rows × hidden outputs: the batch as one chain of dispatches, read back once. */
  run(calls: readonly GpuFfnCall[]): Promise<Float32Array[]> {
    const done = this.tail.then(() => this.execute(calls));
    this.tail = done.catch(() => undefined);
    return done;
  }

  private async execute(calls: readonly GpuFfnCall[]): Promise<Float32Array[]> {
    if (this.lost !== null) throw new Error(`the WebGPU device was lost (${this.lost})`);
    const { device } = this;
    const at = { x: 0, h: 0 };
    const spans = calls.map(({ w, rows, input }) => {
      if (input.length !== rows * w.hidden) throw new Error(`WebGPU FFN: ${input.length} values for ${rows} rows of ${w.hidden}`);
      const s = { x: at.x, h: at.h };
      at.x += rows * w.hidden;
      at.h += rows * w.ff;
      return s;
    });
    if (at.x === 0) return calls.map(() => new Float32Array(0));
    const pipelines = new Map<string, GpuComputePipeline>();
    for (const { w } of calls) {
      for (const [kind, dtype] of [["gate_up", w.gateUpDType], ["down", w.downDType]] as const) pipelines.set(`${kind} ${dtype}`, await this.pipeline(kind, dtype));
    }
    const io = this.buffers(at.x * 4, at.h * 4, calls.length * 2 * PARAMS_STRIDE);
    const params = new Uint32Array((calls.length * 2 * PARAMS_STRIDE) / 4);
    device.pushErrorScope("validation");
    device.pushErrorScope("out-of-memory");
    calls.forEach(({ input }, i) => device.queue.writeBuffer(io.x, spans[i]!.x * 4, input));
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    calls.forEach(({ w, rows }, i) => {
      const { x, h } = spans[i]!;
      const steps = [
        { pipeline: pipelines.get(`gate_up ${w.gateUpDType}`)!, from: io.x, to: io.h, weights: [w.gate, w.up], k: w.hidden, n: w.ff, xAt: x, yAt: h },
        { pipeline: pipelines.get(`down ${w.downDType}`)!, from: io.h, to: io.y, weights: [w.down], k: w.ff, n: w.hidden, xAt: h, yAt: x },
      ];
      steps.forEach((s, j) => {
        const slot = (2 * i + j) * PARAMS_STRIDE;
        params.set([rows, s.k, s.n, s.xAt, s.yAt], slot / 4);
        const group = device.createBindGroup({
          layout: s.pipeline.getBindGroupLayout(0),
          entries: [{ binding: 0, resource: { buffer: io.params, offset: slot, size: PARAMS_BYTES } }, { binding: 1, resource: { buffer: s.from } }, { binding: 2, resource: { buffer: s.to } }, ...s.weights.map((b, k) => ({ binding: 3 + k, resource: { buffer: b } }))],
        });
        pass.setPipeline(s.pipeline);
        pass.setBindGroup(0, group);
        pass.dispatchWorkgroups(Math.ceil(s.n / TN), Math.ceil(rows / TR));
      });
    });
    pass.end();
    const bytes = at.x * 4;
    encoder.copyBufferToBuffer(io.y, 0, io.read, 0, bytes);
    device.queue.writeBuffer(io.params, 0, params);
    device.queue.submit([encoder.finish()]);
    const errors = Promise.all([device.popErrorScope(), device.popErrorScope()]);
    const stopped = new Promise<never>((_, reject) => (this.abort = reject));
    // lost while the batch was encoded (its pipelines awaited): no readback to wait for
    if (this.lost !== null) this.abort!(new Error(`the WebGPU device was lost (${this.lost})`));
    let readable = false;
    try {
      await Promise.race([io.read.mapAsync(MAP_READ, 0, bytes).then(() => (readable = true)), stopped]);
      const error = (await Promise.race([errors, stopped])).find((e) => e !== null);
      if (error) throw new Error(`WebGPU refused the FFN batch: ${error.message}`);
      const ys = new Float32Array(io.read.getMappedRange(0, bytes));
      return calls.map(({ rows, w }, i) => ys.slice(spans[i]!.x, spans[i]!.x + rows * w.hidden));
    } finally {
      this.abort = null;
      if (readable) io.read.unmap();
    }
  }

  /** The activation buffers, grown (to the next power of two) where a batch needs more. */
  private buffers(xBytes: number, hBytes: number, paramBytes: number): NonNullable<WebGpuFfn["io"]> {
    const io = this.io;
    if (io && io.x.size >= xBytes && io.h.size >= hBytes && io.params.size >= paramBytes) return io;
    const size = (want: number, had = 0) => Math.max(had, 2 ** Math.ceil(Math.log2(Math.max(want, 256))));
    const make = (bytes: number, usage: number, label: string) => this.device.createBuffer({ size: bytes, usage, label });
    const x = size(xBytes, io?.x.size), h = size(hBytes, io?.h.size), p = size(paramBytes, io?.params.size);
    if (io) for (const b of [io.x, io.h, io.y, io.read, io.params]) b.destroy();
    this.io = {
      x: make(x, BUFFER.STORAGE | BUFFER.COPY_DST, "x"),
      h: make(h, BUFFER.STORAGE, "h"),
      y: make(x, BUFFER.STORAGE | BUFFER.COPY_SRC, "y"),
      read: make(x, BUFFER.MAP_READ | BUFFER.COPY_DST, "readback"),
      params: make(p, BUFFER.UNIFORM | BUFFER.COPY_DST, "params"),
    };
    return this.io;
  }

  /**
   * Measured rate in GFLOP/s of FFN calls of `rows` rows on size × size f32 matrices, batched until one
   * batch takes at least `minMs` (or holds 64 calls): what the GPU gives a device's calls, overheads included.
   */
  async measureGflops(size = 1024, rows = 32, minMs = 60): Promise<number> {
    const data = new Uint8Array(size * size * 4);
    new Float32Array(data.buffer).fill(1 / size);
    const m = { dtype: "f32", rows: size, cols: size, bytes: data.byteLength, data };
    const w = this.hold(m, m, m);
    const input = new Float32Array(rows * size).fill(1);
    try {
      await this.run([{ w, rows, input }]);
      for (let calls = 1; ; calls *= 4) {
        const batch = Array.from({ length: calls }, () => ({ w, rows, input }));
        const t0 = performance.now();
        await this.run(batch);
        const ms = performance.now() - t0;
        // an FFN call is three products of rows × size × size
        if (ms >= minMs || calls >= 64) return (calls * 3 * 2 * rows * size * size) / (ms * 1e6);
      }
    } finally {
      this.free(w);
    }
  }

  close(): void {
    this.tail = this.tail.then(() => this.device.destroy());
  }
}
