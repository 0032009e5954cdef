// The per-token latency model of a distributed step, as WDMoE states it: the base station's own time,
// plus, for every MoE layer, the slowest of the devices it calls (downlink + compute + uplink). A pure
// function of plain data: the cluster benchmark compares it with measurements; the WDMoE policies and
// the simulator (issue 4) build on it.
import type { LinkParams } from "./link.js";

export interface DeviceCost {
  /** one expert call at batch 1, ms */
  callMs: number;
  link: LinkParams | null;
}

export interface LayerCalls {
  /** for each expert call of the layer: the device serving it and the rows it carries */
  calls: ReadonlyArray<{ device: string; rows: number }>;
}

/** Time to move `bytes` over one direction of a link: serialisation plus propagation. */
export function transferMs(bytes: number, bps: number, delayMs: number): number {
  return (bps > 0 ? (bytes * 8 * 1000) / bps : 0) + delayMs;
}

/**
 * Predicted time of one step: bsMs + Σ over layers of max over the devices called of
 * (downlink of their activations + their calls one after another + uplink of the results).
 */
export function stepLatencyMs(bsMs: number, layers: readonly LayerCalls[], devices: ReadonlyMap<string, DeviceCost>, rowBytes: number): number {
  let total = bsMs;
  for (const layer of layers) {
    const perDevice = new Map<string, { calls: number; bytes: number }>();
    for (const c of layer.calls) {
      const d = perDevice.get(c.device) ?? { calls: 0, bytes: 0 };
      d.calls++;
      d.bytes += c.rows * rowBytes;
      perDevice.set(c.device, d);
    }
    let slowest = 0;
    for (const [name, use] of perDevice) {
      const cost = devices.get(name);
      if (!cost) throw new Error(`no cost known for device ${name}`);
      const l = cost.link;
      const t = (l ? transferMs(use.bytes, l.downBps, l.delayMs) + transferMs(use.bytes, l.upBps, l.delayMs) : 0) + use.calls * cost.callMs;
      slowest = Math.max(slowest, t);
    }
    total += slowest;
  }
  return total;
}

export interface CallShape {
  /** bytes of the expert's weights as the device holds them */
  weightBytes: number;
  /** multiply-adds per row (3 · hidden · ffn for a SwiGLU expert) */
  macsPerRow: number;
  rows: number;
  /** bytes of activations each way */
  activationBytes: number;
}

/**
 * Expected time of one expert call on a device: a roofline of its compute (weight bytes over the
 * device's read bandwidth, or FLOPs over its compute rate, whichever is longer) plus the link both ways.
 */
export function expectedCallMs(shape: CallShape, device: { readGbps: number; gflops: number }, link: LinkParams | null): number {
  const memoryMs = device.readGbps > 0 ? shape.weightBytes / (device.readGbps * 1e6) : 0;
  const computeMs = device.gflops > 0 ? (2 * shape.macsPerRow * shape.rows) / (device.gflops * 1e6) : 0;
  const linkMs = link ? transferMs(shape.activationBytes, link.downBps, link.delayMs) + transferMs(shape.activationBytes, link.upBps, link.delayMs) : 0;
  return Math.max(memoryMs, computeMs) + linkMs;
}
