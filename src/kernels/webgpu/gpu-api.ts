// The part of the WebGPU API the expert FFN kernels use, typed here: TypeScript's DOM library does not
// declare WebGPU, and these few interfaces spare the project a dependency for it. The names follow the
// specification (https://www.w3.org/TR/webgpu/) with a Gpu prefix, so they never clash with a library's.

export interface Gpu {
  requestAdapter(options?: { powerPreference?: "low-power" | "high-performance" }): Promise<GpuAdapter | null>;
}

export interface GpuAdapterInfo {
  readonly vendor: string;
  readonly architecture: string;
  readonly device: string;
  readonly description: string;
}

export interface GpuLimits {
  readonly maxStorageBufferBindingSize: number;
  readonly maxBufferSize: number;
  readonly maxComputeWorkgroupsPerDimension: number;
}

export interface GpuAdapter {
  readonly info: GpuAdapterInfo;
  readonly limits: GpuLimits;
  requestDevice(descriptor?: { requiredLimits?: Record<string, number> }): Promise<GpuDevice>;
}

export interface GpuError {
  readonly message: string;
}

export interface GpuDevice {
  readonly queue: GpuQueue;
  readonly limits: GpuLimits;
  readonly lost: Promise<{ readonly reason: string; readonly message: string }>;
  onuncapturederror: ((e: { readonly error: GpuError }) => void) | null;
  createBuffer(descriptor: { size: number; usage: number; label?: string }): GpuBuffer;
  createShaderModule(descriptor: { code: string; label?: string }): unknown;
  createComputePipelineAsync(descriptor: { layout: "auto"; compute: { module: unknown; entryPoint: string }; label?: string }): Promise<GpuComputePipeline>;
  createBindGroup(descriptor: { layout: unknown; entries: Array<{ binding: number; resource: { buffer: GpuBuffer; offset?: number; size?: number } }> }): unknown;
  createCommandEncoder(): GpuCommandEncoder;
  pushErrorScope(filter: "validation" | "out-of-memory" | "internal"): void;
  popErrorScope(): Promise<GpuError | null>;
  destroy(): void;
}

export interface GpuQueue {
  /** `data` may be a view of shared memory (a wasm arena's). */
  writeBuffer(buffer: GpuBuffer, offset: number, data: ArrayBufferView): void;
  submit(commands: unknown[]): void;
  onSubmittedWorkDone(): Promise<void>;
}

export interface GpuBuffer {
  readonly size: number;
  mapAsync(mode: number, offset?: number, size?: number): Promise<void>;
  getMappedRange(offset?: number, size?: number): ArrayBuffer;
  unmap(): void;
  destroy(): void;
}

export interface GpuComputePipeline {
  getBindGroupLayout(index: number): unknown;
}

export interface GpuCommandEncoder {
  beginComputePass(): GpuComputePassEncoder;
  copyBufferToBuffer(source: GpuBuffer, sourceOffset: number, destination: GpuBuffer, destinationOffset: number, size: number): void;
  finish(): unknown;
}

export interface GpuComputePassEncoder {
  setPipeline(pipeline: GpuComputePipeline): void;
  setBindGroup(index: number, group: unknown): void;
  dispatchWorkgroups(x: number, y?: number, z?: number): void;
  end(): void;
}

/** GPUBufferUsage's flags (the globals exist only where WebGPU does). */
export const BUFFER = { MAP_READ: 0x0001, COPY_SRC: 0x0004, COPY_DST: 0x0008, UNIFORM: 0x0040, STORAGE: 0x0080 } as const;
/** GPUMapMode.READ */
export const MAP_READ = 0x0001;

/** The browser's WebGPU entry point, or null where it has none (or is not a browser). */
export function navigatorGpu(): Gpu | null {
  return (globalThis.navigator as { gpu?: Gpu } | undefined)?.gpu ?? null;
}
