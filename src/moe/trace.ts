// Recording of every layer's routing: which experts each token used and with what weight.
import { closeSync, openSync, writeSync } from "node:fs";
import type { RouterOutput, RoutingDecision } from "../policies/selection.js";

export interface RoutingRecord {
  /** Forward pass counter of the engine (prefill is one step, each decode token another). */
  readonly step: number;
  readonly layer: number;
  /** Position of each row in its sequence. */
  readonly positions: ArrayLike<number>;
  readonly router: RouterOutput;
  readonly decision: RoutingDecision;
}

export interface RoutingTraceSink {
  record(r: RoutingRecord): void;
}

/** JSON Lines: one object per (step, layer) with each token's position, experts and weights. */
export class RoutingTraceFile implements RoutingTraceSink {
  private readonly fd: number;

  constructor(readonly path: string) {
    this.fd = openSync(path, "w");
  }

  record(r: RoutingRecord): void {
    const tokens = [];
    for (let i = 0; i < r.decision.rows; i++) {
      const a = r.decision.offsets[i]!, b = r.decision.offsets[i + 1]!;
      tokens.push({
        position: r.positions[i],
        experts: Array.from(r.decision.experts.subarray(a, b)),
        weights: Array.from(r.decision.weights.subarray(a, b), (w) => Number(w.toPrecision(6))),
      });
    }
    writeSync(this.fd, JSON.stringify({ step: r.step, layer: r.layer, tokens }) + "\n");
  }

  close(): void {
    closeSync(this.fd);
  }
}
