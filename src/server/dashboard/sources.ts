// Where a base station's dashboard reads from: its metrics registry, its engine (the model's shape) and
// its device hub (devices, what they said of themselves, their emulated links, the placement in use) and
// its MoNDE tiers (the experts it holds itself).
import type { DeviceHub } from "../../runtime/device-hub.js";
import type { Engine } from "../../runtime/engine.js";
import { stationParts, type Health } from "../health.js";
import type { ServerMetrics } from "../metrics.js";
import type { DashboardSources } from "./stream.js";

export interface BaseStation {
  modelName: string;
  metrics: ServerMetrics;
  engine: () => Engine | undefined;
  /** the device hub, when the experts run on devices */
  hub: DeviceHub | null;
  /** what /health says (the app's, so that both say the same) */
  health: Health;
  /** the selection policy in use, described */
  policy: () => string;
  /** the experts the BS holds itself under MoNDE's tiers, read as the snapshot is made (null: no tiers) */
  bsExperts: () => ReadonlyArray<readonly [number, number]> | null;
}

export function dashboardSources(bs: BaseStation): DashboardSources {
  const { hub } = bs;
  return {
    registry: bs.metrics.registry,
    model: () => {
      const e = bs.engine();
      return e ? { name: bs.modelName, layers: e.config.layers, experts: e.config.experts, topK: e.config.topK } : null;
    },
    health: () => bs.health.status(stationParts(bs.engine() !== undefined, hub ? () => ({ ...hub.status() }) : undefined)),
    devices: () =>
      hub
        ? hub.status().devices.map((d) => {
            const c = hub.capabilitiesOf(d.name);
            return { ...d, memoryBytes: c?.memoryBytes, readGbps: c?.readGbps, link: hub.linkOf(d.name) };
          })
        : [],
    placement: () => hub?.placement() ?? null,
    bsExperts: bs.bsExperts,
    policy: bs.policy,
  };
}
