// A MoNDE setup on this machine: the base station's engine with a fast tier of a given budget, and a
// near tier in a separate process (a device of the distributed runtime holding every expert), over
// loopback or over a link shaped to a chosen rate and delay. Copies come from the near tier, or from
// the store (the checkpoint on disk). The tiered executor and its cost model's inputs: hub-tiers.ts.
import type { WeightDType } from "../kernels/backend.js";
import type { LinkParams } from "../channel/link.js";
import { openModel } from "../model/open-model.js";
import type { TierPolicyName } from "../policies/tiers.js";
import type { WireDType } from "../protocol/activations.js";
import { Engine } from "../runtime/engine.js";
import { onCluster, startLocalCluster, type LocalCluster } from "../runtime/local-cluster.js";
import type { TierLink } from "./cost-model.js";
import { ExpertStore } from "./expert-store.js";
import { hubTiers } from "./hub-tiers.js";
import type { TieredExecutor, TierLayerReport } from "./tiered-executor.js";

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
    const bs = await hubTiers(cluster.hub, cfg, { policy: o.policy, budgetFraction: o.budgetFraction, window: o.window ?? 16, weightDType: o.weightDType, wireDType: o.wireDType, link: o.link, store, onLayer: o.onLayer });
    let tiers: TieredExecutor | null = null;
    const engine = Engine.load(o.model, { dtype: o.weightDType, threads: o.threads, executor: (backend, config) => (tiers = bs.executor(backend, config)) });
    return { engine, tiers: tiers!, cluster, link: bs.link, store: bs.store };
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
