// The hub's health in words: whether every expert can be served, and by enough devices.
import type { Placement } from "../../policies/placement.js";
import type { Battery, ComputeKind, DeviceKind } from "../../protocol/frames.js";
import type { Device } from "./device.js";

export interface DeviceStatus {
  name: string;
  ready: boolean;
  quarantined: boolean;
  /** why it is out of service (quarantined), in the base station's words */
  outOfService?: string;
  /** expert calls it has answered */
  calls: number;
  /** experts it holds */
  experts: number;
  /** weight bytes streamed to it */
  weightBytes: number;
  /** a Node process or a browser tab, as its hello said */
  kind: DeviceKind;
  /** a browser's user agent, as it said (checked printable and short, not trusted) */
  userAgent?: string;
  /** what computes its experts, as its hello said (absent: it did not say) */
  compute?: ComputeKind;
  /** the WebGPU adapter it computes on, as it said (checked printable and short, not trusted) */
  adapter?: string;
  /** the compute rate it measured, GFLOP/s */
  gflops: number;
  /** its battery as its last heartbeat said; absent: it reports none */
  battery?: Battery;
  /** it said it is leaving, and finishes its calls in flight */
  leaving: boolean;
}

export interface HubStatus {
  /** ok: every expert has its replicas ready; degraded: served, with less redundancy or a device out of service; unavailable: some expert cannot be served */
  state: "ok" | "degraded" | "unavailable";
  /** why it is not ok, in plain words */
  reasons: string[];
  devices: DeviceStatus[];
  /** the devices the placement in use refers to */
  placed: string[];
}

export interface HubView {
  devices: readonly Device[];
  members: readonly Device[];
  placement: Placement | null;
  /** devices each expert should be ready on */
  replicas: number;
  /** what serving waits for, when no placement is in use */
  waiting: string | null;
}

export function deviceStatus(d: Device): DeviceStatus {
  const { kind = "node", userAgent, compute, adapter, gflops } = d.capabilities;
  return {
    name: d.name, ready: d.ready, quarantined: d.quarantined, ...(d.outOfService === null ? {} : { outOfService: d.outOfService }), calls: d.calls, experts: d.holds.length, weightBytes: d.weightBytes, kind,
    ...(userAgent === undefined ? {} : { userAgent }), ...(compute === undefined ? {} : { compute }), ...(adapter === undefined ? {} : { adapter }), gflops,
    ...(d.battery ? { battery: d.battery } : {}), leaving: d.leaving,
  };
}

/** "layers 0, 3 and 5" (the first few, then how many more). */
function layerList(layers: readonly number[]): string {
  const shown = layers.slice(0, 5).join(", ");
  return `layer${layers.length === 1 ? "" : "s"} ${shown}${layers.length > 5 ? ` and ${layers.length - 5} more` : ""}`;
}

export function hubStatus(v: HubView): HubStatus {
  const reasons: string[] = [];
  const out = (state: HubStatus["state"]): HubStatus => ({ state, reasons, devices: v.devices.map(deviceStatus), placed: v.members.map((d) => d.name) });
  if (!v.placement) {
    reasons.push(v.waiting ?? "no placement is in use yet");
    return out("unavailable");
  }
  const missing = new Map<number, number>(), thin = new Map<number, number>();
  v.placement.hosts.forEach((layer, l) =>
    layer.forEach((hosts) => {
      const ready = hosts.filter((i) => v.members[i]?.ready).length;
      if (ready === 0) missing.set(l, (missing.get(l) ?? 0) + 1);
      else if (ready < v.replicas) thin.set(l, (thin.get(l) ?? 0) + 1);
    }),
  );
  const count = (m: Map<number, number>) => [...m.values()].reduce((s, n) => s + n, 0);
  if (missing.size > 0) reasons.push(`${count(missing)} experts (on ${layerList([...missing.keys()])}) have no ready device`);
  if (thin.size > 0) reasons.push(`${count(thin)} experts (on ${layerList([...thin.keys()])}) have fewer than ${v.replicas} ready devices`);
  for (const d of v.devices) if (d.quarantined) reasons.push(`device ${d.name} is out of service after failed calls`);
  return out(missing.size > 0 ? "unavailable" : reasons.length > 0 ? "degraded" : "ok");
}
