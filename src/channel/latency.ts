// The per-token latency model of a distributed step, as WDMoE states it: the base station's own time,
// plus, for every MoE layer, the slowest of the devices it calls (downlink + compute + uplink). Pure
// functions of plain data: the cluster benchmark compares them with measurements, the hub derives
// deadlines from them, and the selection policies, the evaluation and the simulator build on them.
import type { WorkShape } from "../model/work-shape.js";
import type { LinkParams } from "./link.js";

/** What one device costs: its expert calls (a roofline) and its link. */
export interface DeviceCost {
  /** a call's floor: reading the expert's weights (weight bytes ÷ read bandwidth, or measured), ms */
  weightMs: number;
  /** computing one row (its FLOPs ÷ the compute rate), ms */
  rowMs: number;
  /** null: a link that costs nothing (in-process) */
  link: LinkParams | null;
}

export interface DeviceSpeed {
  readGbps: number;
  gflops: number;
}

export function deviceCost(shape: WorkShape, speed: DeviceSpeed, link: LinkParams | null): DeviceCost {
  return {
    weightMs: speed.readGbps > 0 ? shape.weightBytes / (speed.readGbps * 1e6) : 0,
    rowMs: speed.gflops > 0 ? (2 * shape.macsPerRow) / (speed.gflops * 1e6) : 0,
    link,
  };
}

/** One expert call of `rows` rows: the longer of reading the weights and computing the rows. */
export function callMs(cost: DeviceCost, rows: number): number {
  return Math.max(cost.weightMs, rows * cost.rowMs);
}

/** Time to move `bytes` over one direction of a link: serialisation plus propagation. */
export function transferMs(bytes: number, bps: number, delayMs: number): number {
  return (bps > 0 ? (bytes * 8 * 1000) / bps : 0) + delayMs;
}

export interface LayerCalls {
  /** for each expert call of the layer: the device serving it and the rows it carries */
  calls: ReadonlyArray<{ device: string; rows: number }>;
}

/** A layer's time, set by its slowest device, with that device's parts. */
export interface LayerTime {
  ms: number;
  downMs: number;
  computeMs: number;
  upMs: number;
  /** the slowest device (null when the layer called none) */
  device: string | null;
}

/** One device's part of a layer: its activations down, its calls one after another, the results up. */
export function deviceLayerTime(cost: DeviceCost, calls: ReadonlyArray<{ rows: number }>, rowBytes: number): Omit<LayerTime, "device"> {
  let rows = 0, computeMs = 0;
  for (const c of calls) {
    rows += c.rows;
    computeMs += callMs(cost, c.rows);
  }
  const l = cost.link;
  const downMs = l ? transferMs(rows * rowBytes, l.downBps, l.delayMs) : 0;
  const upMs = l ? transferMs(rows * rowBytes, l.upBps, l.delayMs) : 0;
  return { ms: downMs + computeMs + upMs, downMs, computeMs, upMs };
}

/** A layer's calls grouped by device. */
function byDevice(layer: LayerCalls): Map<string, Array<{ rows: number }>> {
  const groups = new Map<string, Array<{ rows: number }>>();
  for (const c of layer.calls) (groups.get(c.device) ?? groups.set(c.device, []).get(c.device)!).push(c);
  return groups;
}

export function layerTime(layer: LayerCalls, devices: ReadonlyMap<string, DeviceCost>, rowBytes: number): LayerTime {
  let slowest: LayerTime = { ms: 0, downMs: 0, computeMs: 0, upMs: 0, device: null };
  for (const [name, calls] of byDevice(layer)) {
    const cost = devices.get(name);
    if (!cost) throw new Error(`no cost known for device ${name}`);
    const t = deviceLayerTime(cost, calls, rowBytes);
    if (slowest.device === null || t.ms > slowest.ms) slowest = { ...t, device: name };
  }
  return slowest;
}

/** Predicted time of one step: bsMs + Σ over layers of its slowest device's time. */
export function stepLatencyMs(bsMs: number, layers: readonly LayerCalls[], devices: ReadonlyMap<string, DeviceCost>, rowBytes: number): number {
  return layers.reduce((t, layer) => t + layerTime(layer, devices, rowBytes).ms, bsMs);
}
