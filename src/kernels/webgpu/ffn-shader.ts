// The WGSL of the expert FFN: two matrix products, each a compute shader.
//   gate_up:  h[r][n] = silu(Σk x[r][k]·gate[n][k]) · Σk x[r][k]·up[n][k]    (n < ff)
//   down:     y[r][n] = Σk h[r][k]·down[n][k]                               (n < hidden)
// A thread computes one output n for TR rows: it walks its weight row along k four values at a time and
// uses each read for all TR rows. No workgroup memory and no barriers: SwiftShader (the adapter headless
// chromium has without a GPU) runs a barrier as a switch between every invocation of the workgroup, and a
// tiled version with them was measured 4–10 times slower there on one row (and 6–20 times slower to build).
// Weights are held as they arrive: f32 values, or 16-bit values two to a u32 (the first in the low half)
// unpacked here, f16 with unpack2x16float and bf16 as the high half of an f32; neither needs the optional
// shader-f16 feature, which many adapters (SwiftShader among them) lack. Rows of k values are read as vec4:
// k (hidden, ff) must be a multiple of 4.

/** The weight dtypes these shaders read. */
export type GpuWeightDType = "f32" | "f16" | "bf16";
export const GPU_WEIGHT_DTYPES: readonly GpuWeightDType[] = ["f32", "f16", "bf16"];

/** Threads per workgroup, each one output column. */
export const TN = 64;
/** Rows per thread. */
export const TR = 4;

/** Bytes of one dispatch's parameters (Params below), and their stride in the parameter buffer (the uniform offset alignment). */
export const PARAMS_BYTES = 32;
export const PARAMS_STRIDE = 256;

/** Four values of a weight held as `dtype`, from its i-th group of four. */
function weightRead(dtype: GpuWeightDType, name: string): string {
  if (dtype === "f32") return `fn ${name}_at(i: u32) -> vec4<f32> { return ${name}[i]; }`;
  const unpack = (w: string) => (dtype === "f16" ? `unpack2x16float(${w})` : `vec2<f32>(bitcast<f32>(${w} << 16u), bitcast<f32>(${w} & 0xffff0000u))`);
  return `fn ${name}_at(i: u32) -> vec4<f32> { let w = ${name}[i]; return vec4<f32>(${unpack("w.x")}, ${unpack("w.y")}); }`;
}

/** The shader of one product for weights of `dtype`: gate_up (two weights, silu(a)·b out) or down (one weight). */
export function ffnShader(kind: "gate_up" | "down", dtype: GpuWeightDType): string {
  const pair = kind === "gate_up";
  const word = dtype === "f32" ? "vec4<f32>" : "vec2<u32>";
  const weights = pair ? ["wa", "wb"] : ["wa"];
  const rows = Array.from({ length: TR }, (_, r) => r);
  return /* wgsl */ `
struct Params { rows: u32, k: u32, n: u32, x_at: u32, y_at: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
${weights.map((w, i) => `@group(0) @binding(${3 + i}) var<storage, read> ${w}: array<${word}>;`).join("\n")}
${weights.map((w) => weightRead(dtype, w)).join("\n")}

@compute @workgroup_size(${TN})
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let n = id.x;
  if (n >= p.n) { return; }
  let k4 = p.k / 4u;
  let r0 = id.y * ${TR}u;
  let last = p.rows - 1u;
  // rows past the last read the last (in bounds) and are not written
  ${rows.map((r) => `let x${r} = p.x_at / 4u + min(r0 + ${r}u, last) * k4;`).join("\n  ")}
  ${weights.flatMap((w) => rows.map((r) => `var ${w}${r} = vec4<f32>(0.0);`)).join(" ")}
  for (var k = 0u; k < k4; k++) {
    ${weights.map((w) => `let ${w}_k = ${w}_at(n * k4 + k);`).join(" ")}
    ${rows.map((r) => `let x${r}_k = x[x${r} + k];`).join(" ")}
    ${weights.flatMap((w) => rows.map((r) => `${w}${r} += x${r}_k * ${w}_k;`)).join(" ")}
  }
  ${rows
    .map((r) => {
      const sum = (w: string) => `dot(${w}${r}, vec4<f32>(1.0))`;
      const out = pair ? `silu(${sum("wa")}) * ${sum("wb")}` : sum("wa");
      return `if (r0 + ${r}u <= last) { y[p.y_at + (r0 + ${r}u) * p.n + n] = ${out}; }`;
    })
    .join("\n  ")}
}
${pair ? "fn silu(g: f32) -> f32 { return g / (1.0 + exp(-g)); }" : ""}
`;
}
