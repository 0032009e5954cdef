// The kernel module: every export here is callable from the host (see ../wasm/).
export { matmul, deinterleave8 } from "./matmul";
export { bf16_to_f32, f16_to_f32, f32_to_bf16, quantize_q8, quantize_q4, quantize_act_q8, get_rows } from "./convert";
export { rmsnorm, rope, silu_mul, add, add_bias, clamp, read_probe, compute_probe } from "./ops";
export { attention } from "./attention";
export { ffn, set_blocking } from "./ffn";
