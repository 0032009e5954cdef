// What the host and the worker threads agree on: the kernel exports by index and the control block.

export const KERNELS = [
  "matmul", "deinterleave8",
  "bf16_to_f32", "f16_to_f32", "f32_to_bf16", "quantize_q8", "quantize_q4", "quantize_act_q8", "get_rows",
  "rmsnorm", "rope", "silu_mul", "add", "add_bias", "clamp", "read_probe", "compute_probe", "attention", "ffn",
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
  // who takes part in the current job: (GEN & TICKET_GEN) << 8 | TICKET_CLOSED once the host stops
  // waiting for newcomers | the number of workers that joined (each takes the next share, 1, 2, …)
  TICKET: 8,
} as const;
export const OP_ADOPT = -1;
export const TICKET_GEN = 0x7fffff;
export const TICKET_CLOSED = 128;
export const TICKET_JOINED = 127;

/** Address, in every arena, of the row-chunk counter that the matmul and ffn kernels' threads claim from. */
export const CHUNK_COUNTER = 64;
/** Address of the ffn kernel's count of finished feature chunks (zeroed with CHUNK_COUNTER). */
export const FFN_DONE = 68;
/** Kernels that claim row chunks: CHUNK_COUNTER and FFN_DONE must be zero when one starts. */
export const CHUNKED: ReadonlySet<string> = new Set(["matmul", "ffn"]);
/** Address of the matmul kernel's table of products (y, w, scales, rows: 4 u32 each). */
export const MATMUL_TABLE = 128;
export const MAX_MATMULS = 8;
/** Address of the ffn kernel's operands (11 u32, see assembly/ffn.ts), after the matmul table. */
export const FFN_TABLE = MATMUL_TABLE + 16 * MAX_MATMULS;
export const ARGS_OFFSET = 64;
export const MAX_ARGS = 16;
export const CTRL_BYTES = ARGS_OFFSET + 8 * MAX_ARGS;

/** The kernels of `module` over `memory`; `mayBlock` false for a thread that may not block in atomic.wait (a browser page's own), whose kernels then spin. */
export function instantiate(module: WebAssembly.Module, memory: WebAssembly.Memory, mayBlock = true): KernelFn[] {
  const instance = new WebAssembly.Instance(module, {
    env: {
      memory,
      abort: () => {
        throw new Error("wasm kernel aborted");
      },
    },
  });
  if (!mayBlock) (instance.exports.set_blocking as (allowed: number) => void)(0);
  return KERNELS.map((name) => {
    const fn = instance.exports[name];
    if (typeof fn !== "function") throw new Error(`kernel module lacks export ${name}`);
    return fn as KernelFn;
  });
}
