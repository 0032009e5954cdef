// A whole SwiGLU feed-forward block as one job: y = down(silu(gate·x) · up·x), so an expert costs one
// handoff instead of three jobs with JavaScript between them.
//
// Threads claim chunks from one counter (CHUNK_COUNTER, zeroed by the host): first the chunks of the
// hidden features (for each, the gate and up rows, SiLU·mul, and the down product's input prepared for
// its dtype: deinterleaved for bf16, quantized for q8/q4; all local to the chunk), then the chunks of
// the down product's output rows. The down product needs every hidden feature, so a thread that claims
// a down chunk first waits until all feature chunks are done (FFN_DONE counts them). Nobody waits on a
// thread that has not started: a late thread finds the feature chunks taken and only helps with down.
import { claim, chunkRows, productRows, deinterleaveGroups, Q8_ACT_BYTES } from "./matmul";
import { quantizeBlock } from "./convert";
import { siluMulRange } from "./ops";

// Addresses in the arena's reserved first page (see ../wasm/abi.ts).
const FFN_DONE: usize = 68;
// The job's operands, written by the host: u32 each, in this order.
const FFN_TABLE: usize = 256;

const F32 = 0, BF16 = 1;

/** Whether this instance's thread may block in atomic.wait; a browser page's own thread may not, and only spins. */
let blocking = true;

/** Set once per instance by the host (see ../wasm/abi.ts instantiate). */
export function set_blocking(allowed: i32): void {
  blocking = allowed != 0;
}

/**
 * y[M][K] = FFN(x[M][K]) with weights gate, up [F][K] and down [K][F] of one dtype; x is prepared for
 * that dtype as matmul's (xa, xb). Table: gate, gate scales, up, up scales, down, down scales, g and u
 * ([M][F] f32 scratch), ha and hb (down's prepared input: bf16 [M][F] f32, q8/q4 quants [M][F] and
 * scales [M][F/32]), y.
 */
export function ffn(dtype: i32, xa: usize, xb: usize, M: i32, K: i32, F: i32, tid: i32, nt: i32): void {
  const t = FFN_TABLE;
  const gw = <usize>load<u32>(t), gs = <usize>load<u32>(t + 4), uw = <usize>load<u32>(t + 8), us = <usize>load<u32>(t + 12);
  const dw = <usize>load<u32>(t + 16), ds = <usize>load<u32>(t + 20), g = <usize>load<u32>(t + 24), u = <usize>load<u32>(t + 28);
  const ha = <usize>load<u32>(t + 32), hb = <usize>load<u32>(t + 36), y = <usize>load<u32>(t + 40);
  // feature chunks: whole q8 blocks (32) so that each chunk quantizes its own part of the hidden row
  const ch1 = nt == 1 ? F : max(32, ((F + nt * 8 - 1) / (nt * 8) + 31) & ~31);
  const c1 = (F + ch1 - 1) / ch1;
  const ch2 = chunkRows(K, nt);
  const c2 = (K + ch2 - 1) / ch2;
  const rb = <usize>F << 2;
  for (let c = claim(nt, -1); c < c1 + c2; c = claim(nt, c)) {
    if (c < c1) {
      const n0 = c * ch1, n1 = min(F, n0 + ch1);
      productRows(dtype, g, xa, xb, gw, gs, M, F, K, n0, n1);
      productRows(dtype, u, xa, xb, uw, us, M, F, K, n0, n1);
      for (let m = 0; m < M; m++) {
        const gr = g + <usize>m * rb;
        siluMulRange(gr, gr, u + <usize>m * rb, n0, n1);
        if (dtype == BF16) deinterleaveGroups(ha + <usize>m * rb, gr, n0 >> 3, n1 >> 3);
        else if (dtype != F32) {
          const nb = F >> 5;
          for (let b = n0 >> 5; b < n1 >> 5; b++) {
            const i = <usize>(m * nb + b);
            store<f32>(hb + (i << 2), quantizeBlock(gr + (<usize>b << 7), ha + i * <usize>(32 * Q8_ACT_BYTES), Q8_ACT_BYTES));
          }
        }
      }
      if (nt > 1 && atomic.add<i32>(FFN_DONE, 1) + 1 == c1) atomic.notify(FFN_DONE);
    } else {
      if (nt > 1) waitUntil(FFN_DONE, c1);
      const n0 = (c - c1) * ch2, n1 = min(K, n0 + ch2);
      productRows(dtype, y, dtype == F32 ? g : ha, hb, dw, ds, M, K, F, n0, n1);
    }
  }
}

/** Waits until the counter at p reaches n: spins for a few µs (the other thread is inside a chunk), then blocks. */
function waitUntil(p: usize, n: i32): void {
  let spins = 0;
  for (let v = atomic.load<i32>(p); v < n; v = atomic.load<i32>(p)) {
    if (++spins > 2000 && blocking) atomic.wait<i32>(p, v, 50_000);
  }
}
