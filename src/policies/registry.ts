// The selection policies by name, with their one knob each, as the command line, the evaluation and
// the simulator name them.
import { selectDeadline } from "./deadline.js";
import { selectJoint, type JointQuality } from "./joint.js";
import { selectTopK, selectWlr, type SelectionPolicy } from "./selection.js";

export const POLICY_NAMES = ["topk", "wlr", "joint", "deadline"] as const;
export type PolicyName = (typeof POLICY_NAMES)[number];

export interface PolicySpec {
  name: PolicyName;
  /** wlr: θ, the WLR threshold; joint: θ, its price of dropped gate mass (see joint.ts) */
  theta?: number;
  /** joint: how quality is held */
  quality?: JointQuality;
  /** deadline: the token's latency budget for its expert round trips, ms, shared evenly by the MoE layers */
  budgetMs?: number;
}

export function makePolicy(spec: PolicySpec, moeLayers: number): SelectionPolicy {
  const knob = (what: string) => {
    if (spec.theta === undefined) throw new Error(`the ${spec.name} policy needs ${what}`);
    return spec.theta;
  };
  switch (spec.name) {
    case "topk":
      return selectTopK;
    case "wlr":
      return selectWlr({ theta: knob("--theta") });
    case "joint":
      return selectJoint({ theta: knob("--theta"), quality: spec.quality });
    case "deadline":
      if (spec.budgetMs === undefined) throw new Error("the deadline policy needs --budget");
      return selectDeadline({ layerBudgetMs: spec.budgetMs / Math.max(1, moeLayers) });
  }
}

/** "wlr θ=0.3", "deadline 12 ms", "topk". */
export function describePolicy(spec: PolicySpec): string {
  if (spec.name === "deadline") return `deadline ${spec.budgetMs} ms`;
  if (spec.name === "topk") return "topk";
  return `${spec.name} θ=${spec.theta}`;
}
