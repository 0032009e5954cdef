// A MoNDE setup on this machine: the base station's engine with a fast tier of a given budget, and a
// near tier in a separate process (a device of the distributed runtime holding every expert), over
// loopback or over a link shaped to a chosen rate and delay. Copies come from the near tier, or from
// the store (the checkpoint on disk). The cost model's inputs are measured: the fast tier's compute
// rate and memory bandwidth by the engine's backend, the near tier's by its own capability probe, an
// unshaped link by copying an expert over it, and the store by reading one.
import type { WeightDType } from "../kernels/backend.js";
import type { LinkParams } from "../channel/link.js";
import { openModel } from "../model/open-model.js";
import { expertWork } from "../model/work-shape.js";
import type { TierPolicyName } from "../policies/tiers.js";
import { wireBytes, type WireDType } from "../protocol/activations.js";
import { Engine } from "../runtime/engine.js";
import { onCluster, startLocalCluster, type LocalCluster } from "../runtime/local-cluster.js";
import { tierCosts, type TierLink } from "./cost-model.js";
import { ExpertStore } from "./expert-store.js";
import { TieredExecutor, type TierLayerReport } from "./tiered-executor.js";

export interface TieredSetupOptions {
  model: string;
  policy: TierPolicyName;
  /** the fast tier's budget for expert weights: a fraction of all the experts' bytes */
  budgetFraction: number;
  weightDType: WeightDType;
  /** activations on the link; f32 keeps every policy's outputs identical */
  wireDType: WireDType;
  /** the link between the tiers; null: loopback as it is */
  link: LinkParams | null;
  /** where copies come from: the near tier over the link (default), or the store */
  copyFrom?: CopySource;
  /** steps of routing statistics (default 16) */
  window?: number;
  /** compute threads of the base station and of the near process */
  threads?: number;
  nearThreads?: number;
  onLayer?: (r: TierLayerReport) => void;
  log?: (line: string) => void;
}

export interface TieredSetup {
  engine: Engine;
  tiers: TieredExecutor;
  cluster: LocalCluster;
  /** the link the cost model assumes */
  link: TierLink;
  /** the store's read rate, measured, when copies come from it */
  store: TierLink | null;
  close(): Promise<void>;
}

export const COPY_SOURCES = ["near", "store"] as const;
export type CopySource = (typeof COPY_SOURCES)[number];

export async function startTiered(o: TieredSetupOptions): Promise<TieredSetup> {
  const opened = openModel(o.model);
  opened.store.close();
  const cfg = opened.config;
  const expert = expertWork(cfg, o.weightDType);
  const allExperts = cfg.sparseLayers.filter(Boolean).length * cfg.experts;
  if (!(o.budgetFraction >= 0 && o.budgetFraction <= 1)) throw new Error(`the fast budget must be a fraction of the experts in [0, 1], got ${o.budgetFraction}`);
  const store = o.copyFrom === "store" ? ExpertStore.open(o.model, cfg, o.weightDType) : null;
  let cluster: LocalCluster;
  try {
    cluster = await startLocalCluster({
      model: o.model, devices: 1, weightDType: o.weightDType, wireDType: o.wireDType, link: o.link ? () => o.link! : undefined, threadsPerDevice: o.nearThreads ?? 1, log: o.log,
    });
  } catch (e) {
    store?.close();
    throw e;
  }
  const setup = await onCluster(cluster, async () => {
    const link = o.link ? { gbps: o.link.downBps / 8e9, delayMs: o.link.delayMs } : await measureLink(cluster, cfg.sparseLayers.indexOf(true), cfg.hidden);
    if (!(link.gbps > 0)) throw new Error("the link between the tiers needs a rate (rate=…); an unlimited shaped link has none to model");
    const storeLink = store ? await measureStore(store, cfg.sparseLayers.indexOf(true)) : null;
    const nearSpeed = cluster.hub.capabilitiesOf("local-0")!;
    let tiers: TieredExecutor | null = null;
    const engine = Engine.load(o.model, {
      dtype: o.weightDType,
      threads: o.threads,
      executor: (backend) => {
        const fast = { gflops: backend.measureComputeRate(), readGbps: backend.measureReadBandwidth(64 << 20) };
        const costs = tierCosts(expert, cfg.hidden * wireBytes(o.wireDType), link, fast, nearSpeed, storeLink ?? undefined);
        tiers = new TieredExecutor(backend, cfg, {
          policy: o.policy, costs, budgetBytes: Math.floor(o.budgetFraction * allExperts) * expert.weightBytes, window: o.window ?? 16,
          near: cluster.hub.executor, pull: store ? (l, e) => store.read(l, e) : (l, e) => cluster.hub.pullExpert(l, e), wireDType: o.wireDType, onLayer: o.onLayer,
        });
        return tiers;
      },
    });
    return { engine, tiers: tiers!, cluster, link, store: storeLink };
  }).catch((e: unknown) => {
    store?.close();
    throw e;
  });
  return {
    ...setup,
    close: async () => {
      await setup.close();
      store?.close();
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

/** The loopback link as it is: its rate from copying an expert over it, its delay from one-row calls (best of three each). */
async function measureLink(cluster: LocalCluster, layer: number, hidden: number): Promise<TierLink> {
  let copyMs = Infinity, bytes = 0, delayMs = Infinity;
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    bytes = (await cluster.hub.pullExpert(layer, 0)).payload.length;
    copyMs = Math.min(copyMs, performance.now() - t0);
    const [call] = cluster.hub.executor.dispatch([{ layer, expert: 0, rows: 1, input: new Float32Array(hidden) }]);
    const r = await call!;
    delayMs = Math.min(delayMs, Math.max(0, r.roundTripMs - r.computeMs) / 2);
  }
  return { gbps: bytes / (Math.max(1e-3, copyMs - 2 * delayMs) * 1e6), delayMs };
}
