// The WGSL of the expert FFN: two tiled matrix products, each a compute shader.
//   gate_up:  h[r][n] = silu(Σk x[r][k]·gate[n][k]) · Σk x[r][k]·up[n][k]    (n < ff)
//   down:     y[r][n] = Σk h[r][k]·down[n][k]                               (n < hidden)
// A workgroup of TN threads computes TN outputs n for TR rows r, walking k in tiles of TK: it stages the
// rows' inputs and the weights' tiles in workgroup memory (the weights read along k, as they lie), and
// each thread keeps its TR sums in registers. Rows are few (1 for a decoded token, a few hundred for a
// prompt), so a tile of 8 rows wastes little on one row and reads each weight once per 8 rows.
// Weights are held as they arrive: f32 values, or 16-bit values two to a u32 (the first in the low half)
// and unpacked here, f16 with unpack2x16float and bf16 as the high half of an f32; neither needs the
// optional shader-f16 feature, which many adapters (SwiftShader among them) lack.

/** The weight dtypes these shaders read. */
export type GpuWeightDType = "f32" | "f16" | "bf16";
export const GPU_WEIGHT_DTYPES: readonly GpuWeightDType[] = ["f32", "f16", "bf16"];

/** Threads per workgroup, each one output column. */
export const TN = 64;
/** Rows per workgroup. */
export const TR = 8;
/** Inputs per tile along k. */
const TK = 16;

/** Bytes of one dispatch's parameters (Params below), and their stride in the parameter buffer (the uniform offset alignment). */
export const PARAMS_BYTES = 32;
export const PARAMS_STRIDE = 256;

/** The value at element i of a weight held as `dtype`. */
function weightRead(dtype: GpuWeightDType, name: string): string {
  if (dtype === "f32") return `fn ${name}_at(i: u32) -> f32 { return ${name}[i]; }`;
  const half = dtype === "f16" ? "unpack2x16float(word)[i & 1u]" : "bitcast<f32>(select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u))";
  return `fn ${name}_at(i: u32) -> f32 { let word = ${name}[i >> 1u]; return ${half}; }`;
}

/** The shader of one product for weights of `dtype`: gate_up (two weights, silu(a)·b out) or down (one weight). */
export function ffnShader(kind: "gate_up" | "down", dtype: GpuWeightDType): string {
  const pair = kind === "gate_up";
  const word = dtype === "f32" ? "f32" : "u32";
  const weights = pair ? ["wa", "wb"] : ["wa"];
  return /* wgsl */ `
struct Params { rows: u32, k: u32, n: u32, x_at: u32, y_at: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
${weights.map((w, i) => `@group(0) @binding(${3 + i}) var<storage, read> ${w}: array<${word}>;`).join("\n")}
${weights.map((w) => weightRead(dtype, w)).join("\n")}

const TN = ${TN}u;
const TR = ${TR}u;
const TK = ${TK}u;
// weight tiles padded by one column, so the threads' reads down a tile fall in different banks
const TKP = TK + 1u;
var<workgroup> xs: array<f32, ${TR * TK}>;
${weights.map((w) => `var<workgroup> ${w}_tile: array<f32, ${TN * (TK + 1)}>;`).join("\n")}

@compute @workgroup_size(${TN})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let n0 = wg.x * TN;
  let r0 = wg.y * TR;
  var acc_a: array<f32, ${TR}>;
  ${pair ? `var acc_b: array<f32, ${TR}>;` : ""}
  for (var k0 = 0u; k0 < p.k; k0 += TK) {
    for (var i = t; i < TR * TK; i += TN) {
      let r = r0 + i / TK;
      let k = k0 + i % TK;
      var v = 0.0;
      if (r < p.rows && k < p.k) { v = x[p.x_at + r * p.k + k]; }
      xs[i] = v;
    }
    for (var i = t; i < TN * TK; i += TN) {
      let n = n0 + i / TK;
      let k = k0 + i % TK;
      let at = (i / TK) * TKP + i % TK;
      ${weights.map((w) => `var ${w}_v = 0.0;`).join(" ")}
      if (n < p.n && k < p.k) { ${weights.map((w) => `${w}_v = ${w}_at(n * p.k + k);`).join(" ")} }
      ${weights.map((w) => `${w}_tile[at] = ${w}_v;`).join(" ")}
    }
    workgroupBarrier();
    for (var k = 0u; k < TK; k++) {
      let a = wa_tile[t * TKP + k];
      ${pair ? "let b = wb_tile[t * TKP + k];" : ""}
      for (var r = 0u; r < TR; r++) {
        let xv = xs[r * TK + k];
        acc_a[r] += xv * a;
        ${pair ? "acc_b[r] += xv * b;" : ""}
      }
    }
    workgroupBarrier();
  }
  let n = n0 + t;
  if (n >= p.n) { return; }
  for (var r = 0u; r < TR; r++) {
    if (r0 + r >= p.rows) { break; }
    ${pair ? "let g = acc_a[r];\n    y[p.y_at + (r0 + r) * p.n + n] = g / (1.0 + exp(-g)) * acc_b[r];" : "y[p.y_at + (r0 + r) * p.n + n] = acc_a[r];"}
  }
}
`;
}
