// Bandwidth allocation for one MoE layer (the journal WDMoE's second decision): split the cell's band
// among the devices a layer calls so that the layer ends as early as possible. The layer ends when its
// slowest device does, and each device's time t_k(β) = fixed_k + bits↓/r↓(β) + bits↑/r↑(β) falls as its
// share β grows, so the optimum of  min_β max_k t_k(β_k)  s.t. Σ β_k ≤ 1  gives every device the same
// finishing time T*. The solver bisects on T: for a candidate T each device needs the least share β_k(T)
// with t_k ≤ T (itself a bisection, t_k being monotone), and T is feasible when those shares fit.
import { linkRates, linkRateSlopes, type RadioLink } from "../channel/radio.js";

export interface BandwidthDemand {
  /** bits to carry to the device and back in this layer */
  downBits: number;
  upBits: number;
  /** the time that does not depend on the share: compute and the links' fixed delays, ms */
  fixedMs: number;
  link: RadioLink;
}

export interface BandwidthAllocation {
  /** share of the cell per device (0 for those without demand); they sum to 1 when any has demand */
  shares: number[];
  /** when the last device finishes, ms */
  finishMs: number;
}

const ITERATIONS = 40;
/** shares closer than this are the same split (a billionth of the band) */
const SHARE_TOLERANCE = 1e-9;

/** A device's time on share `share` of a cell of `cellHz`. */
export function demandMs(d: BandwidthDemand, cellHz: number, share: number): number {
  if (share <= 0) return d.downBits + d.upBits > 0 ? Infinity : d.fixedMs;
  const r = linkRates(d.link, cellHz, share);
  const down = d.downBits > 0 ? (d.downBits * 1000) / r.downBps : 0;
  const up = d.upBits > 0 ? (d.upBits * 1000) / r.upBps : 0;
  return d.fixedMs + down + up;
}

/** d demandMs / d share. */
function demandSlope(d: BandwidthDemand, cellHz: number, share: number): number {
  const r = linkRates(d.link, cellHz, share), dr = linkRateSlopes(d.link, cellHz, share);
  return -1000 * ((d.downBits * dr.downBps) / (r.downBps * r.downBps) + (d.upBits * dr.upBps) / (r.upBps * r.upBps));
}

/**
 * The least share with which `d` is done by `T` (Infinity if even the whole band is too slow). The time
 * falls and is convex in the share, so Newton's method converges fast; a bracket keeps it safe.
 */
function shareFor(d: BandwidthDemand, cellHz: number, T: number): number {
  if (d.downBits + d.upBits === 0) return 0;
  if (demandMs(d, cellHz, 1) > T) return Infinity;
  let lo = 0, hi = 1, x = 1;
  for (let i = 0; i < ITERATIONS && hi - lo > SHARE_TOLERANCE; i++) {
    const g = demandMs(d, cellHz, x) - T;
    if (g <= 0) hi = x;
    else lo = x;
    if (Math.abs(g) <= 1e-12 * T) return x;
    const next = x - g / demandSlope(d, cellHz, x);
    x = next > lo && next < hi ? next : (lo + hi) / 2;
  }
  return hi;
}

/** Equal finishing times for the devices with demand (null: not called in this layer). */
export function allocateBandwidth(demands: ReadonlyArray<BandwidthDemand | null>, cellHz: number): BandwidthAllocation {
  const active = demands.map((d, i) => (d ? i : -1)).filter((i) => i >= 0);
  const shares = demands.map(() => 0);
  if (active.length === 0) return { shares, finishMs: 0 };
  const time = (i: number, share: number) => demandMs(demands[i]!, cellHz, share);
  if (active.length === 1) {
    shares[active[0]!] = 1;
    return { shares, finishMs: time(active[0]!, 1) };
  }
  // an equal split is feasible; nothing can end before the slowest fixed part
  let hi = Math.max(...active.map((i) => time(i, 1 / active.length)));
  let lo = Math.max(...active.map((i) => demands[i]!.fixedMs));
  // Newton on the band needed, Σ β_k(T) − 1, which falls and is convex in T (dβ_k/dT = 1 / t_k'(β_k)); bracketed
  let T = hi;
  for (let it = 0; it < ITERATIONS && hi - lo > 1e-8 * hi; it++) {
    let need = 0, slope = 0;
    for (const i of active) {
      const b = shareFor(demands[i]!, cellHz, T);
      need += b;
      if (Number.isFinite(b) && b > 0) slope += 1 / demandSlope(demands[i]!, cellHz, b);
    }
    if (need <= 1) hi = T;
    else lo = T;
    if (need <= 1 && 1 - need < SHARE_TOLERANCE) break;
    const next = Number.isFinite(need) && slope < 0 ? T - (need - 1) / slope : NaN;
    T = next > lo && next < hi ? next : (lo + hi) / 2;
  }
  const need = active.map((i) => shareFor(demands[i]!, cellHz, hi));
  const total = need.reduce((s, x) => s + x, 0);
  // what the bisection leaves over goes to everyone in proportion, so the whole band is used
  active.forEach((i, j) => (shares[i] = total > 0 ? need[j]! / total : 1 / active.length));
  return { shares, finishMs: Math.max(...active.map((i) => time(i, shares[i]!))) };
}
