// The cost model's state as the selection policies read it, built from a cell: for each layer, which
// device serves each expert now (replica choice by channel), that device's expected one-row latency,
// and the radio state a joint policy splits the band with. Also the modelled time of a layer's routing
// decision, so the evaluation, the runtime check and the simulator price a decision the same way.
import type { WorkShape } from "../model/work-shape.js";
import { allocateForPairs } from "../policies/joint.js";
import { chooseReplica } from "../policies/replica.js";
import type { LayerCosts, RadioCosts, RoutingDecision } from "../policies/selection.js";
import type { ChannelModel } from "./channel-model.js";
import { callMs, deviceCost, deviceLayerTime, type DeviceCost, type DeviceSpeed, type LayerTime } from "./latency.js";
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

type CellState = CellSnapshot & { devices: RadioDevice[] };

export class CellCosts {
  /** per device: its expert calls' roofline */
  private readonly compute: readonly DeviceCost[];
  private readonly equalShare: number;
  private readonly rowBits: number;
  /** device states drawn so far (each a step of that device's fading): what a simulation's time mostly goes to */
  draws = 0;

  constructor(readonly channel: ChannelModel, readonly opts: CellCostsOptions) {
    this.compute = channel.scenario.devices.map((d, k) => deviceCost(opts.expert, opts.speeds?.[k] ?? d, null));
    this.equalShare = 1 / channel.devices.length;
    this.rowBits = opts.rowBytes * 8;
  }

  /** Writes device `k` at `ms` into `state`: its radio entry, its rates on the equal share, and a one-row call's latency there. */
  private fill(state: CellState, k: number, ms: number): void {
    const s = this.channel.scenario, c = this.compute[k]!;
    this.draws++;
    const entry = { link: this.channel.linkAt(k, ms), weightMs: c.weightMs, rowMs: c.rowMs, delayMs: s.delayMs };
    const r = linkRates(entry.link, s.bandwidthHz, this.equalShare);
    state.devices[k] = entry;
    state.downBps[k] = r.downBps;
    state.upBps[k] = r.upBps;
    // what the device costs a token: the estimate WLR, the deadline policy and replica choice use
    state.deviceMs[k] = 2 * entry.delayMs + (this.rowBits * 1000) / r.downBps + (this.rowBits * 1000) / r.upBps + callMs(c, 1);
  }

  /** The whole cell at `ms` on its clock (which only moves forward). */
  snapshotAt(ms: number): CellSnapshot {
    const K = this.channel.devices.length;
    const state: CellState = { devices: new Array<RadioDevice>(K), deviceMs: new Float64Array(K), downBps: new Float64Array(K), upBps: new Float64Array(K) };
    for (let k = 0; k < K; k++) this.fill(state, k, ms);
    return state;
  }

  /** What the policies read for layer `layer` in the cell's state `snap`. */
  layerCosts(snap: CellSnapshot, layer: number): LayerCosts & { radio: RadioCosts } {
    const E = this.opts.hosts[layer]?.length ?? 0;
    const costs = { expertLatencyMs: new Float64Array(E), radio: { cellHz: this.channel.scenario.bandwidthHz, rowBits: this.rowBits, expertDevice: new Int32Array(E), devices: snap.devices } };
    this.writeLayer(snap, layer, costs);
    return costs;
  }

  /** Writes the entries of `experts` (default: all of the layer's) for layer `layer` in the cell's state `snap`. */
  private writeLayer(snap: CellSnapshot, layer: number, costs: { expertLatencyMs: Float64Array; radio: { expertDevice: Int32Array } }, experts?: ArrayLike<number>): void {
    const hosts = this.opts.hosts[layer] ?? [];
    const n = experts ? experts.length : hosts.length;
    for (let i = 0; i < n; i++) {
      const e = experts ? experts[i]! : i, h = hosts[e]!;
      const k = (costs.radio.expertDevice[e] = h.length === 1 ? h[0]! : chooseReplica(h, snap.deviceMs));
      costs.expertLatencyMs[e] = snap.deviceMs[k]!;
    }
  }

  /**
   * The cell as the simulator reads it: one state kept up to date device by device, only for the
   * devices a token's candidates live on (each device's fading moves on only when it is read), so a
   * cell of many devices costs what it is used for; and each layer's costs, rewritten in place.
   */
  private live: (CellState & { timeMs: Float64Array }) | null = null;
  private readonly liveLayers = new Map<number, LayerCosts & { radio: RadioCosts }>();

  /**
   * layerCosts for `layer` at `ms`, refreshing only the hosts of `candidates`, whose entries alone are
   * then current: enough for a policy that chooses among a token's top-k (topk, wlr, deadline). Live: the
   * result is rewritten by the next call for the same layer.
   */
  layerCostsAt(ms: number, layer: number, candidates: ArrayLike<number>): LayerCosts {
    const live = this.liveAt(ms);
    const hosts = this.opts.hosts[layer] ?? [];
    for (let i = 0; i < candidates.length; i++) for (const k of hosts[candidates[i]!]!) this.refresh(live, k, ms);
    let l = this.liveLayers.get(layer);
    if (!l) this.liveLayers.set(layer, (l = this.layerCosts(live, layer)));
    else this.writeLayer(live, layer, l, candidates);
    return l;
  }

  /** Device `k`'s rate on the equal share at `ms` (live, like layerCostsAt). */
  equalRateAt(k: number, ms: number, direction: "down" | "up"): number {
    const live = this.liveAt(ms);
    this.refresh(live, k, ms);
    return direction === "down" ? live.downBps[k]! : live.upBps[k]!;
  }

  private liveAt(ms: number): CellState & { timeMs: Float64Array } {
    return (this.live ??= { ...(this.snapshotAt(ms) as CellState), timeMs: new Float64Array(this.channel.devices.length).fill(ms) });
  }

  /** Device k's clock only moves forward: a read for a moment it has passed gets its state now. */
  private refresh(live: CellState & { timeMs: Float64Array }, k: number, ms: number): void {
    if (live.timeMs[k]! >= ms) return;
    this.fill(live, k, ms);
    live.timeMs[k] = ms;
  }

  /** The modelled time of a layer that carries out `decision`: its slowest device's down + compute + up. */
  layerTime(costs: LayerCosts, decision: RoutingDecision): Omit<LayerTime, "device"> {
    return this.pairsTime(costs, decision.experts, decision.bandwidthShares);
  }

  /**
   * The modelled time of the expert calls `pairs` (one entry per row and expert) on the devices serving
   * them, the band split by the policy (`policyShares`) or by the mode. Only the called devices are
   * visited: the tier policies price several plans per token.
   */
  pairsTime(costs: LayerCosts, pairs: ArrayLike<number>, policyShares?: Float64Array): Omit<LayerTime, "device"> {
    const radio = costs.radio!;
    const rows = new Map<number, number>();
    for (let i = 0; i < pairs.length; i++) rows.set(pairs[i]!, (rows.get(pairs[i]!) ?? 0) + 1);
    const calls = new Map<number, Array<{ rows: number }>>();
    for (const [e, n] of rows) {
      const k = radio.expertDevice[e]!;
      (calls.get(k) ?? calls.set(k, []).get(k)!).push({ rows: n });
    }
    const shares = policyShares ?? (this.opts.bandwidth === "optimal" ? allocateForPairs(radio, pairs).shares : null);
    let slowest: Omit<LayerTime, "device"> = { ms: 0, downMs: 0, computeMs: 0, upMs: 0 };
    for (const [k, list] of calls) {
      const d = radio.devices[k]!, share = shares ? shares[k]! : this.equalShare;
      if (!(share > 0)) throw new Error(`device ${k} is called but has no share of the band`);
      const link = { ...linkRates(d.link, radio.cellHz, share), delayMs: d.delayMs, jitterMs: 0, loss: 0 };
      const t = deviceLayerTime({ weightMs: d.weightMs, rowMs: d.rowMs, link }, list, this.opts.rowBytes);
      if (t.ms > slowest.ms) slowest = t;
    }
    return slowest;
  }
}
