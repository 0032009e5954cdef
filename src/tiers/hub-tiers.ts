// MoNDE beside a device hub: the base station's fast tier (the engine's backend, within a budget of
// expert weights) with the hub's devices as the near tier. Every setup with a hub builds its
// TieredExecutor here: `serve --bs-budget` and `bench tiers` (tiered-runtime.ts). The cost model's
// inputs: the fast tier's compute rate and memory bandwidth, measured by the engine's backend; the near
// tier's speed, the slowest placed device's capability probe (a layer waits for its slowest device); the
// link, the emulation's where it has a rate, else measured by copying an expert over it and by one-row
// calls; the store's read rate, given or measured by reading one expert. They are taken once, when the
// tiers are set up: devices that come or go later, or links changed live, do not move them (only the
// copy rate follows what copies take, tiered-executor.ts).
import type { DeviceSpeed } from "../channel/latency.js";
import type { LinkParams } from "../channel/link.js";
import type { Backend, WeightDType } from "../kernels/backend.js";
import type { ModelConfig } from "../model/config.js";
import { expertWork } from "../model/work-shape.js";
import type { TierPolicyName } from "../policies/tiers.js";
import { wireBytes, type WireDType } from "../protocol/activations.js";
import { Backoff } from "../runtime/backoff.js";
import type { DeviceHub } from "../runtime/device-hub.js";
import { tierCosts, type TierLink } from "./cost-model.js";
import type { ExpertStore } from "./expert-store.js";
import { TieredExecutor, type TierLayerReport } from "./tiered-executor.js";

export interface HubTierOptions {
  policy: TierPolicyName;
  /** the fast tier's budget for expert weights: a share of all the experts (of their bytes as `weightDType` holds them) */
  budgetFraction: number;
  /** steps of routing statistics */
  window: number;
  weightDType: WeightDType;
  /** activations on the link; f32 keeps every policy's outputs identical */
  wireDType: WireDType;
  /** the devices' emulated link (null: not shaped) */
  link: LinkParams | null;
  /** where copies come from: this store (the checkpoint on the BS's disk), else the devices over their links */
  store: ExpertStore | null;
  /** the store's read rate, GB/s, instead of measuring it */
  storeGbps?: number;
  onLayer?: (r: TierLayerReport) => void;
  log?: (line: string) => void;
  /** the pause before measuring the link again after a failed try, ms (default: backing off from 250 ms) */
  linkPauseMs?: () => number;
}

export interface HubTiers {
  /** the link the cost model assumes, and whether it is the emulation's (else measured) */
  link: TierLink & { emulated: boolean };
  /** the store's read rate, when copies come from it */
  store: TierLink | null;
  /** the near tier's speed the cost model assumes */
  near: DeviceSpeed;
  /** the engine's executor (EngineOptions.executor): the tiered executor on the engine's backend */
  executor: (backend: Backend, cfg: ModelConfig) => TieredExecutor;
}

/** How many experts a budget of `fraction` of all the experts holds; throws unless a fraction in [0, 1] that holds one at least. */
export function budgetExperts(cfg: ModelConfig, fraction: number): { experts: number; of: number } {
  if (!(fraction >= 0 && fraction <= 1)) throw new Error(`the fast budget must be a fraction of the experts in [0, 1], got ${fraction}`);
  const of = cfg.sparseLayers.filter(Boolean).length * cfg.experts;
  const experts = Math.floor(fraction * of);
  if (experts < 1) throw new Error(`a budget of ${(100 * fraction).toFixed(1)} % of the ${of} experts holds none: the fast tier needs room for one at least (${(100 / of).toFixed(1)} %)`);
  return { experts, of };
}

/**
 * The near tier's speed: the slowest device's, per rate. A device's rates are its own claim: one of 0 (which
 * the cost model prices as free) would make the slowest device the fastest, so only rates above 0 count.
 */
export function nearSpeed(devices: readonly DeviceSpeed[]): DeviceSpeed {
  const slowest = (rates: number[]) => Math.min(...rates.filter((r) => r > 0));
  return { gflops: slowest(devices.map((d) => d.gflops)), readGbps: slowest(devices.map((d) => d.readGbps)) };
}

const backoff = () => {
  const b = new Backoff({ firstMs: 250, capMs: 4000 });
  return () => b.next();
};

/** The tiers over `hub`, whose devices must be placed (hub.start resolved). */
export async function hubTiers(hub: DeviceHub, cfg: ModelConfig, o: HubTierOptions): Promise<HubTiers> {
  const budget = budgetExperts(cfg, o.budgetFraction);
  const layer = cfg.sparseLayers.indexOf(true);
  const speeds = hub.placed.map((name) => hub.capabilitiesOf(name)).filter((c) => c !== undefined);
  if (speeds.length === 0) throw new Error("MoNDE's near tier needs placed devices: set the tiers up once the hub has started");
  const near = nearSpeed(speeds);
  const link = o.link && o.link.downBps > 0 ? { gbps: o.link.downBps / 8e9, delayMs: o.link.delayMs, emulated: true } : { ...(await measureLink(hub, layer, cfg.hidden, o.linkPauseMs ?? backoff())), emulated: false };
  const store = o.store ? (o.storeGbps !== undefined ? { gbps: o.storeGbps, delayMs: 0 } : await measureStore(o.store, layer)) : null;
  const expert = expertWork(cfg, o.weightDType);
  const from = o.store;
  return {
    link,
    store,
    near,
    executor: (backend) => {
      const fast = { gflops: backend.measureComputeRate(), readGbps: backend.measureReadBandwidth(64 << 20) };
      const costs = tierCosts(expert, cfg.hidden * wireBytes(o.wireDType), link, fast, near, store ?? undefined);
      o.log?.(
        `MoNDE tiers: ${o.policy}, the BS keeps up to ${budget.experts} of ${budget.of} experts (${(100 * o.budgetFraction).toFixed(1)} %), ` +
          `copied from ${store ? `its store (${store.gbps.toPrecision(3)} GB/s${o.storeGbps === undefined ? ", measured" : ""})` : "the devices"}; ` +
          `BS ${fast.gflops.toPrecision(3)} GFLOP/s, ${fast.readGbps.toPrecision(3)} GB/s; devices (slowest) ${near.gflops.toPrecision(3)} GFLOP/s, ${near.readGbps.toPrecision(3)} GB/s; ` +
          `link ${link.gbps.toPrecision(3)} GB/s, ${link.delayMs.toPrecision(3)} ms (${link.emulated ? "emulated" : "measured"})`,
      );
      return new TieredExecutor(backend, cfg, {
        policy: o.policy, costs, budgetBytes: budget.experts * expert.weightBytes, window: o.window,
        near: hub.executor, pull: from ? (l, e) => from.read(l, e) : (l, e) => hub.pullExpert(l, e), wireDType: o.wireDType, onLayer: o.onLayer,
      });
    },
  };
}

/** The store's read rate: the best of three reads of one expert (from the page cache once the model is loaded, as a store in memory would be). */
async function measureStore(store: ExpertStore, layer: number): Promise<TierLink> {
  let ms = Infinity, bytes = 0;
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    bytes = (await store.read(layer, 0)).payload.length;
    ms = Math.min(ms, performance.now() - t0);
  }
  return { gbps: bytes / (Math.max(1e-3, ms) * 1e6), delayMs: 0 };
}

/** Tries at measuring the devices' link before giving up (each sample taken again after a pause when it fails). */
export const LINK_MEASURE_TRIES = 8;

/**
 * The devices' link as it is: its rate from copying an expert over it, its delay from one-row calls (best of
 * three each). A sample that fails (a device leaving meanwhile, its experts not yet placed again) is taken
 * again after a pause, up to LINK_MEASURE_TRIES tries in all.
 */
async function measureLink(hub: DeviceHub, layer: number, hidden: number, pauseMs: () => number): Promise<TierLink> {
  let copyMs = Infinity, bytes = 0, delayMs = Infinity;
  for (let tries = 1, taken = 0; taken < 3; tries++) {
    try {
      const t0 = performance.now();
      const copied = (await hub.pullExpert(layer, 0)).payload.length;
      const ms = performance.now() - t0;
      const [call] = hub.executor.dispatch([{ layer, expert: 0, rows: 1, input: new Float32Array(hidden) }]);
      const r = await call!;
      [bytes, copyMs, delayMs] = [copied, Math.min(copyMs, ms), Math.min(delayMs, Math.max(0, r.roundTripMs - r.computeMs) / 2)];
      taken++;
    } catch (e) {
      if (tries >= LINK_MEASURE_TRIES) throw new Error(`cannot measure the devices' link for MoNDE's cost model (${(e as Error).message}); give --link with a rate to model it instead`);
      await new Promise((r) => setTimeout(r, pauseMs()));
    }
  }
  return { gbps: bytes / (Math.max(1e-3, copyMs - 2 * delayMs) * 1e6), delayMs };
}
