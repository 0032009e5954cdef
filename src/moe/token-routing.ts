// Per-token routing for the requests that ask for it: for one sequence, the experts each MoE layer ran
// for the row whose logits gave its next token, their gate weights and who computed them. Only the
// sequences with a tap cost anything: the MoE block looks at taps only in steps that carry one.
import type { RoutingDecision } from "../policies/selection.js";

/** Who computed an expert run in this process (an executor's result names no device). */
export const BASE_STATION = "base station";
/** Experts listed per token and layer at most (the heaviest first): a policy may keep many more than top-k. */
export const MAX_EXPERTS_LISTED = 16;

/** One expert a layer ran for a token: its gate weight (rounded) and the device that answered its call (null: the call failed, the expert was dropped). */
export interface ExpertRun {
  expert: number;
  weight: number;
  device: string | null;
}

export interface LayerRouting {
  layer: number;
  experts: ExpertRun[];
  /** experts the decision kept beyond MAX_EXPERTS_LISTED (absent: none) */
  more?: number;
}

/** A generated token and what ran to produce it: the MoE layers of the forward pass whose logits it was sampled from. */
export interface TokenRouting {
  token: number;
  layers: LayerRouting[];
}

/** A sequence's tap: the layers of the step in flight, taken when its token is sampled. */
export class RoutingTap {
  private layers: LayerRouting[] = [];

  record(layer: LayerRouting): void {
    this.layers.push(layer);
  }

  /** The layers recorded since the last take. */
  take(): LayerRouting[] {
    const layers = this.layers;
    this.layers = [];
    return layers;
  }
}

/** A tap and the row of the step it watches. */
export interface StepTap {
  readonly row: number;
  readonly tap: RoutingTap;
}

/** Row `row`'s experts in `decision`, heaviest first and capped, each with the device `deviceOf` names for it. */
export function layerRouting(layer: number, decision: RoutingDecision, row: number, deviceOf: (expert: number) => string | null): LayerRouting {
  const a = decision.offsets[row]!, b = decision.offsets[row + 1]!;
  const runs: ExpertRun[] = [];
  for (let i = a; i < b; i++) runs.push({ expert: decision.experts[i]!, weight: Math.round(decision.weights[i]! * 1000) / 1000, device: null });
  runs.sort((x, y) => y.weight - x.weight || x.expert - y.expert);
  const listed = runs.slice(0, MAX_EXPERTS_LISTED);
  for (const r of listed) r.device = deviceOf(r.expert);
  return runs.length > listed.length ? { layer, experts: listed, more: runs.length - listed.length } : { layer, experts: listed };
}
