// Causal grouped-query attention of new query rows against a sequence's KV cache.
import { shareStart, dotF32 } from "./common";

/**
 * out[i][h] = softmax_j(q[i][h]·k[j][g] · scale) · v[j][g] for j ≤ start + i, g = h / (heads / kvHeads).
 * q, out: [rows][heads·hd]; kc, vc: [position][kvHeads·hd], already holding the rows' own keys/values.
 * scratch holds one score row (≥ start + rows floats) per thread, `scratchStride` floats apart.
 */
export function attention(out: usize, q: usize, kc: usize, vc: usize, rows: i32, start: i32, heads: i32, kvHeads: i32, hd: i32, scale: f32, scratch: usize, scratchStride: i32, tid: i32, nt: i32): void {
  const total = rows * heads;
  const s = shareStart(total, tid, nt, 1), e = shareStart(total, tid + 1, nt, 1);
  const group = heads / kvHeads;
  const kvRow = <usize>(kvHeads * hd) << 2;
  const qRow = <usize>(heads * hd) << 2;
  const sc = scratch + (<usize>tid * <usize>scratchStride << 2);
  for (let it = s; it < e; it++) {
    const i = it / heads, h = it % heads, g = h / group;
    const len = start + i + 1;
    const qv = q + <usize>i * qRow + (<usize>(h * hd) << 2);
    const koff = <usize>(g * hd) << 2;
    let mx: f32 = -Infinity;
    for (let j = 0; j < len; j++) {
      const v = dotF32(qv, kc + <usize>j * kvRow + koff, hd) * scale;
      store<f32>(sc + (<usize>j << 2), v);
      mx = max(mx, v);
    }
    let sum: f32 = 0;
    for (let j = 0; j < len; j++) {
      const p = Mathf.exp(load<f32>(sc + (<usize>j << 2)) - mx);
      store<f32>(sc + (<usize>j << 2), p);
      sum += p;
    }
    const inv: f32 = 1 / sum;
    const o = out + <usize>i * qRow + (<usize>(h * hd) << 2);
    memory.fill(o, 0, <usize>hd << 2);
    for (let j = 0; j < len; j++) {
      const pv = f32x4.splat(load<f32>(sc + (<usize>j << 2)) * inv);
      const vr = vc + <usize>j * kvRow + koff;
      let d = 0;
      for (; d + 4 <= hd; d += 4) {
        const od = <usize>d << 2;
        v128.store(o + od, f32x4.add(v128.load(o + od), f32x4.mul(pv, v128.load(vr + od))));
      }
      for (; d < hd; d++) {
        const od = <usize>d << 2;
        store<f32>(o + od, load<f32>(o + od) + f32x4.extract_lane(pv, 0) * load<f32>(vr + od));
      }
    }
  }
}
