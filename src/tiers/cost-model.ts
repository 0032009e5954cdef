// MoNDE's cost model: what an MoE layer's expert calls cost when the fast tier (the memory that runs
// attention) holds only some experts and the rest live in a near tier that can compute them where
// they are. An expert runs fast (its weights copied in first unless resident) or near (its rows cross
// the link, each way). Copies come over the link from the near tier, or from the store (the
// checkpoint on disk) when one serves them. Pure functions of plain numbers: the runtime's tiered
// executor, the tier policies and the simulated `bench tiers` read the same model.
//
//   copy        = delay + S_e / B_copy                             (B_copy: the store's rate, else the link's)
//   fast(n)     = max(S_e / B_fast_mem, 2·n·P_e / F_fast)          (a roofline, as in channel/latency.ts)
//   near(n)     = max(S_e / B_near_mem, 2·n·P_e / F_near)
//   T_fast      = Σ_copied copy + Σ_fast fast(n_e)                 (one executor: calls in turn)
//   T_near      = 2·delay + 2·Σ_near n_e·row / B_link + Σ_near near(n_e)
//   T_link      = (Σ_copied+prefetched S_e + 2·Σ_near n_e·row) / B_link   (weights and rows share the link)
//                 or, with a store, the longer of the rows over the link and the weights from the store
//   layer time  = max(T_fast, T_near, T_link)                        (the tiers run at the same time)
import { callMs, deviceCost, type DeviceCost, type DeviceSpeed } from "../channel/latency.js";
import type { TierPricing } from "../policies/tiers.js";
import type { WorkShape } from "../model/work-shape.js";

/** The link between the fast and the near tier: GB/s each way and a per-transfer latency. */
export interface TierLink {
  gbps: number;
  delayMs: number;
}

export interface TierCosts {
  /** one expert's weights as the fast tier copies and holds them, bytes */
  expertBytes: number;
  /** one row of activations on the link, bytes */
  rowBytes: number;
  /** the link between the tiers: rows cross it, and copies unless a store serves them */
  link: TierLink;
  /** the store tier, when copies are read from disk rather than sent by the near tier */
  store?: TierLink;
  /** an expert call's roofline in each tier */
  fast: DeviceCost;
  near: DeviceCost;
}

export function tierCosts(expert: WorkShape, rowBytes: number, link: TierLink, fast: DeviceSpeed, near: DeviceSpeed, store?: TierLink): TierCosts {
  if (!(link.gbps > 0)) throw new Error(`the link between the tiers needs a rate above 0 GB/s, got ${link.gbps}`);
  if (store && !(store.gbps > 0)) throw new Error(`the store needs a read rate above 0 GB/s, got ${store.gbps}`);
  return { expertBytes: expert.weightBytes, rowBytes, link, ...(store ? { store } : {}), fast: deviceCost(expert, fast, null), near: deviceCost(expert, near, null) };
}

const transferMs = (l: TierLink, bytes: number): number => bytes / (l.gbps * 1e6);
const linkMs = (c: TierCosts, bytes: number): number => transferMs(c.link, bytes);

/** Where copies come from: the store, or the near tier over the link. */
export function copySource(c: TierCosts): TierLink {
  return c.store ?? c.link;
}

/** Copying one expert's weights into the fast tier. */
export function copyMs(c: TierCosts): number {
  const src = copySource(c);
  return src.delayMs + transferMs(src, c.expertBytes);
}

/** Where each called expert of a layer runs this step. */
export interface TierPlan {
  /** experts computed in the fast tier (resident, or copied first), most tokens first */
  fast: number[];
  /** the subset of `fast` whose weights are copied in this step */
  copy: number[];
  /** experts computed in the near tier */
  near: number[];
  /** experts copied in the background for later steps (they run near now): the link carries them, the fast tier does not wait */
  prefetch: number[];
}

export interface TierTime {
  ms: number;
  fastMs: number;
  nearMs: number;
  linkMs: number;
}

/** The modelled time of a layer that carries out `plan`, with `counts[e]` tokens routed to expert e. */
export function planTime(c: TierCosts, plan: TierPlan, counts: ArrayLike<number>): TierTime {
  let fastMs = plan.copy.length * copyMs(c), nearRows = 0, nearCompute = 0;
  for (const e of plan.fast) fastMs += callMs(c.fast, counts[e]!);
  for (const e of plan.near) {
    nearRows += counts[e]!;
    nearCompute += callMs(c.near, counts[e]!);
  }
  const activations = 2 * nearRows * c.rowBytes;
  const nearMs = plan.near.length > 0 ? 2 * c.link.delayMs + linkMs(c, activations) + nearCompute : 0;
  const weights = (plan.copy.length + plan.prefetch.length) * c.expertBytes;
  const link = c.store ? Math.max(linkMs(c, activations), transferMs(c.store, weights)) : linkMs(c, weights + activations);
  return { ms: Math.max(fastMs, nearMs, link), fastMs, nearMs, linkMs: link };
}

/** Fewest tokens for which copying a non-resident expert and computing it fast beats computing it near (Infinity: never). */
export function breakEvenTokens(c: TierCosts, limit = 1 << 20): number {
  const wins = (n: number) => copyMs(c) + callMs(c.fast, n) < 2 * c.link.delayMs + linkMs(c, 2 * n * c.rowBytes) + callMs(c.near, n);
  if (!wins(limit)) return Infinity;
  let lo = 1, hi = limit;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (wins(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * One-token calls after which a copied expert has paid for its copy (Infinity: never): what its
 * windowed load must reach for MoNDE to keep it hot when single tokens never cross the break-even.
 */
export function paybackCalls(c: TierCosts): number {
  const saving = 2 * c.link.delayMs + linkMs(c, 2 * c.rowBytes) + callMs(c.near, 1) - callMs(c.fast, 1);
  return saving > 0 ? Math.ceil(copyMs(c) / saving) : Infinity;
}

/** The tier policies' view of this model for one layer and step with `counts[e]` tokens routed to expert e. */
export function tierPricing(c: TierCosts, counts: ArrayLike<number>): TierPricing {
  const payback = paybackCalls(c);
  return { time: (plan) => planTime(c, plan, counts).ms, payback: () => payback };
}
