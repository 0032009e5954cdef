// The cost model's state as the selection policies read it, built from a cell: for each layer, which
// device serves each expert now (replica choice by channel), that device's expected one-row latency,
// and the radio state a joint policy splits the band with. Also the modelled time of a layer's routing
// decision, so the evaluation, the runtime check and the simulator price a decision the same way.
import type { WorkShape } from "../model/work-shape.js";
import { allocateForPairs } from "../policies/joint.js";
import { chooseReplica } from "../policies/replica.js";
import type { LayerCosts, RadioCosts, RoutingDecision } from "../policies/selection.js";
import type { ChannelModel } from "./channel-model.js";
import { callMs, deviceCost, deviceLayerTime, type DeviceSpeed, type LayerTime } from "./latency.js";
import { linkRates } from "./radio.js";

/** How the band is split among the devices when the policy does not split it itself. */
export type BandwidthMode = "equal" | "optimal";
export const BANDWIDTH_MODES: readonly BandwidthMode[] = ["equal", "optimal"];

export interface CellCostsOptions {
  /** one expert call's weights and work */
  expert: WorkShape;
  /** bytes of one row of activations on the wire */
  rowBytes: number;
  /** hosts[layer][expert]: the scenario's devices (indices) holding it */
  hosts: ReadonlyArray<ReadonlyArray<readonly number[]>>;
  /**
   * equal: every device of the cell always has 1/K of the band (static FDMA);
   * optimal: each layer's band goes to the devices it calls, split so they finish together.
   */
  bandwidth: BandwidthMode;
  /** the devices' speeds, when measured (the runtime's capability probe) rather than declared in the scenario */
  speeds?: readonly DeviceSpeed[];
}

type RadioDevice = RadioCosts["devices"][number];

/** The cell at one moment. */
export interface CellSnapshot {
  devices: readonly RadioDevice[];
  /** per device: a one-row call's latency on the equal share */
  deviceMs: Float64Array;
  /** per device: its rates on the equal share */
  downBps: Float64Array;
  upBps: Float64Array;
}

export class CellCosts {
  /** per device: its expert calls' roofline */
  private readonly compute: ReadonlyArray<{ weightMs: number; rowMs: number }>;
  private readonly equalShare: number;

  constructor(readonly channel: ChannelModel, readonly opts: CellCostsOptions) {
    this.compute = channel.scenario.devices.map((d, k) => {
      const { weightMs, rowMs } = deviceCost(opts.expert, opts.speeds?.[k] ?? d, null);
      return { weightMs, rowMs };
    });
    this.equalShare = 1 / channel.devices.length;
  }

  /** Device `k` at `ms`: its radio entry, its rates on the equal share, and a one-row call's latency there. */
  private deviceAt(k: number, ms: number): { entry: RadioDevice; deviceMs: number; downBps: number; upBps: number } {
    const s = this.channel.scenario;
    const entry = { link: this.channel.linkAt(k, ms), ...this.compute[k]!, delayMs: s.delayMs };
    const r = linkRates(entry.link, s.bandwidthHz, this.equalShare);
    const rowBits = this.opts.rowBytes * 8;
    // what the device costs a token: the estimate WLR, the deadline policy and replica choice use
    const deviceMs = 2 * entry.delayMs + (rowBits * 1000) / r.downBps + (rowBits * 1000) / r.upBps + callMs({ weightMs: entry.weightMs, rowMs: entry.rowMs, link: null }, 1);
    return { entry, deviceMs, ...r };
  }

  /** The whole cell at `ms` on its clock (which only moves forward). */
  snapshotAt(ms: number): CellSnapshot {
    const states = this.channel.devices.map((_, k) => this.deviceAt(k, ms));
    return {
      devices: states.map((x) => x.entry),
      deviceMs: Float64Array.from(states, (x) => x.deviceMs),
      downBps: Float64Array.from(states, (x) => x.downBps),
      upBps: Float64Array.from(states, (x) => x.upBps),
    };
  }

  /** What the policies read for layer `layer` in the cell's state `snap`. */
  layerCosts(snap: CellSnapshot, layer: number): LayerCosts {
    const hosts = this.opts.hosts[layer] ?? [];
    const expertDevice = new Int32Array(hosts.length), expertLatencyMs = new Float64Array(hosts.length);
    for (let e = 0; e < hosts.length; e++) {
      const k = (expertDevice[e] = hosts[e]!.length === 1 ? hosts[e]![0]! : chooseReplica(hosts[e]!, snap.deviceMs));
      expertLatencyMs[e] = snap.deviceMs[k]!;
    }
    return { expertLatencyMs, radio: { cellHz: this.channel.scenario.bandwidthHz, rowBits: this.opts.rowBytes * 8, expertDevice, devices: snap.devices } };
  }

  /**
   * The cell as the simulator reads it: one snapshot kept up to date device by device, only for the
   * devices a layer's experts live on, so a cell of many devices costs what it is used for.
   */
  private live: (CellSnapshot & { timeMs: Float64Array }) | null = null;

  /** layerCosts for `layer` at `ms`, refreshing only its experts' hosts; the returned snapshot is live (read it before moving on). */
  layerCostsAt(ms: number, layer: number): { costs: LayerCosts; cell: CellSnapshot } {
    const live = this.liveAt(ms);
    for (const hosts of this.opts.hosts[layer] ?? []) for (const k of hosts) this.refresh(live, k, ms);
    return { costs: this.layerCosts(live, layer), cell: live };
  }

  /** Device `k`'s rates on the equal share at `ms` (live, like layerCostsAt). */
  equalRatesAt(k: number, ms: number): { downBps: number; upBps: number } {
    const live = this.liveAt(ms);
    this.refresh(live, k, ms);
    return { downBps: live.downBps[k]!, upBps: live.upBps[k]! };
  }

  private liveAt(ms: number): CellSnapshot & { timeMs: Float64Array } {
    return (this.live ??= { ...this.snapshotAt(ms), timeMs: new Float64Array(this.channel.devices.length).fill(ms) });
  }

  private refresh(live: CellSnapshot & { timeMs: Float64Array }, k: number, ms: number): void {
    if (live.timeMs[k] === ms) return;
    const x = this.deviceAt(k, ms);
    (live.devices as RadioDevice[])[k] = x.entry;
    live.deviceMs[k] = x.deviceMs;
    live.downBps[k] = x.downBps;
    live.upBps[k] = x.upBps;
    live.timeMs[k] = ms;
  }

  /** The band's split for a decision: the policy's own, or the mode's. */
  shares(costs: LayerCosts, decision: RoutingDecision): ArrayLike<number> {
    if (decision.bandwidthShares) return decision.bandwidthShares;
    if (this.opts.bandwidth === "optimal") return allocateForPairs(costs.radio!, decision.experts).shares;
    return costs.radio!.devices.map(() => this.equalShare);
  }

  /** The modelled time of a layer that carries out `decision`: its slowest device's down + compute + up. */
  layerTime(costs: LayerCosts, decision: RoutingDecision): Omit<LayerTime, "device"> {
    const radio = costs.radio!;
    const rows = new Map<number, number>();
    for (const e of decision.experts) rows.set(e, (rows.get(e) ?? 0) + 1);
    const calls = radio.devices.map(() => [] as Array<{ rows: number }>);
    for (const [e, n] of rows) calls[radio.expertDevice[e]!]!.push({ rows: n });
    const shares = this.shares(costs, decision);
    let slowest: Omit<LayerTime, "device"> = { ms: 0, downMs: 0, computeMs: 0, upMs: 0 };
    calls.forEach((list, k) => {
      if (list.length === 0) return;
      const d = radio.devices[k]!;
      if (!(shares[k]! > 0)) throw new Error(`device ${k} is called but has no share of the band`);
      const link = { ...linkRates(d.link, radio.cellHz, shares[k]!), delayMs: d.delayMs, jitterMs: 0, loss: 0 };
      const t = deviceLayerTime({ weightMs: d.weightMs, rowMs: d.rowMs, link }, list, this.opts.rowBytes);
      if (t.ms > slowest.ms) slowest = t;
    });
    return slowest;
  }
}
