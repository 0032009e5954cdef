// What the host and the worker threads agree on: the kernel exports by index and the control block.

export const KERNELS = [
  "matmul", "deinterleave8",
  "bf16_to_f32", "f16_to_f32", "f32_to_bf16", "quantize_q8", "quantize_q4", "quantize_act_q8", "get_rows",
  "rmsnorm", "rope", "silu_mul", "add", "add_bias", "clamp", "read_probe", "compute_probe", "attention",
] as const;
export type KernelName = (typeof KERNELS)[number];
export type KernelFn = (...args: number[]) => void;

/** Int32 slots of the control block, then up to MAX_ARGS f64 arguments at ARGS_OFFSET bytes. */
export const CTRL = {
  GEN: 0, // bumped by the host for every job
  DONE: 1, // workers that finished the current job
  OP: 2, // kernel index, or OP_ADOPT
  ARENA: 3, // which arena's instance runs the job (for OP_ADOPT: the highest arena index to adopt)
  NARGS: 4,
  EXIT: 5,
  SLEEPERS: 6, // workers blocked in Atomics.wait, so the host can skip notify when none is
  ERROR: 7, // set by a worker whose kernel threw
} as const;
export const OP_ADOPT = -1;

/** Address, in every arena, of the row-chunk counter that the matmul kernel's threads claim from. */
export const CHUNK_COUNTER = 64;
/** Kernels that claim row chunks: the counter must be zero when one starts. */
export const CHUNKED: ReadonlySet<string> = new Set(["matmul"]);
/** Address of the matmul kernel's table of products (y, w, scales, rows: 4 u32 each). */
export const MATMUL_TABLE = 128;
export const MAX_MATMULS = 8;
export const ARGS_OFFSET = 64;
export const MAX_ARGS = 16;
export const CTRL_BYTES = ARGS_OFFSET + 8 * MAX_ARGS;

export function instantiate(module: WebAssembly.Module, memory: WebAssembly.Memory): KernelFn[] {
  const instance = new WebAssembly.Instance(module, {
    env: {
      memory,
      abort: () => {
        throw new Error("wasm kernel aborted");
      },
    },
  });
  return KERNELS.map((name) => {
    const fn = instance.exports[name];
    if (typeof fn !== "function") throw new Error(`kernel module lacks export ${name}`);
    return fn as KernelFn;
  });
}
