// The dashboard's controls, under /admin (the admin key only, as every /admin route): the selection
// policy and its knob, changed live (the engine's MoE layers take it from their next step); the link
// emulation's settings, where links are emulated; the browser join link and its QR code.
import type { Hono } from "hono";
import type { RequestIdVariables } from "hono/request-id";
import { renderSVG } from "uqr";
import { z } from "zod";
import type { LinkParams } from "../../channel/link.js";
import { describePolicy, makePolicy, type PolicyName, type PolicySpec } from "../../policies/registry.js";
import type { SelectionPolicy } from "../../policies/selection.js";
import type { Engine } from "../../runtime/engine.js";
import { QR_BORDER } from "../../cli/join-qr.js";
import { adminBodyLimit, readAdminJson } from "../admin.js";
import { ApiError } from "../errors.js";

/** The policies a serving base station runs (joint needs a cell's radio state, which it does not model). */
export const LIVE_POLICIES = ["topk", "wlr", "deadline"] as const satisfies readonly PolicyName[];

/** The longest deadline budget the policy control takes, ms. */
const MAX_BUDGET_MS = 60_000;

/**
 * The engine's selection policy, set live. The latency-aware policies (wlr, deadline) read each expert's
 * expected call time from `latencyMs` (the device hub's latency model), or, where every expert runs here,
 * an equal one for all. joint needs a cell's radio state, which a serving base station does not model.
 */
export class LivePolicy {
  /** `spec`: the policy to start with, described from the start; `set` puts it on the engine once that exists (serve does right after loading it). */
  constructor(private readonly engine: () => Engine | undefined, private readonly latencyMs: ((layer: number) => Float64Array) | null, private spec: PolicySpec = { name: "topk" }) {}

  get current(): PolicySpec {
    return this.spec;
  }

  describe(): string {
    return describePolicy(this.spec);
  }

  /** Sets the policy from the engine's next step; throws when there is no engine yet. */
  set(spec: PolicySpec): void {
    const engine = this.engine();
    if (!engine) throw new ApiError(503, "the model is still loading: the policy can be set once it is", "unavailable", { retryAfterS: 5 });
    const moeLayers = engine.config.sparseLayers.filter(Boolean).length;
    const policy = makePolicy(spec, moeLayers);
    engine.setPolicy(spec.name === "topk" ? policy : this.withLatencies(policy, engine.config.experts));
    this.spec = spec;
  }

  private withLatencies(policy: SelectionPolicy, experts: number): SelectionPolicy {
    const equal = new Float64Array(experts).fill(1);
    const latencyMs = this.latencyMs ?? (() => equal);
    return (router, ctx) => policy(router, { ...ctx, costs: { expertLatencyMs: latencyMs(router.layer) } });
  }
}

/** The link emulation's settings, changed live (every device's link reads them at each frame). */
export interface LinkControl {
  get(): LinkParams;
  set(p: LinkParams): void;
}

export interface Controls {
  policy: LivePolicy;
  /** absent: links are not emulated */
  link?: LinkControl;
  /** the link a browser joins with (it carries a join token: admin only); absent or null: browser devices are off */
  joinLink?: () => string | null;
}

const policyBody = z.discriminatedUnion("name", [
  // LIVE_POLICIES, each with its knob
  z.strictObject({ name: z.literal("topk") }),
  z.strictObject({ name: z.literal("wlr"), theta: z.number().min(0).max(1) }),
  z.strictObject({ name: z.literal("deadline"), budgetMs: z.number().positive().max(MAX_BUDGET_MS) }),
]);

const linkBody = z.strictObject({
  downBps: z.number().min(0).max(1e12).optional(),
  upBps: z.number().min(0).max(1e12).optional(),
  delayMs: z.number().min(0).max(10_000).optional(),
  jitterMs: z.number().min(0).max(10_000).optional(),
  loss: z.number().min(0).lt(1).optional(),
});

const parse = <T>(schema: z.ZodType<T>, json: unknown, shape: string): T => {
  const r = schema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new ApiError(400, `the body is ${shape}: ${issue?.path.length ? `${issue.path.join(".")}: ` : ""}${issue?.message}`, "invalid_request_error", { param: issue?.path.join(".") || undefined });
  }
  return r.data;
};

type Env = { Variables: RequestIdVariables };

/** Adds the controls to `app` under /admin, behind the admin key that mountAdmin requires there; each change is logged. */
export function mountControls(app: Hono<Env>, controls: Controls, log: (line: string) => void): void {
  const policy = () => ({ policy: controls.policy.current, description: controls.policy.describe() });
  app.get("/admin/policy", (c) => c.json(policy()));
  app.put("/admin/policy", adminBodyLimit, async (c) => {
    controls.policy.set(parse(policyBody, await readAdminJson(c), `{"name": "topk"} | {"name": "wlr", "theta": 0..1} | {"name": "deadline", "budgetMs": ms up to ${MAX_BUDGET_MS}}`));
    log(`selection policy: ${controls.policy.describe()} (set through /admin/policy)`);
    return c.json(policy());
  });

  const link = (): LinkControl => {
    if (!controls.link) throw new ApiError(404, "the links are not emulated: start the base station with --link to emulate them", "not_found_error");
    return controls.link;
  };
  app.get("/admin/link", (c) => c.json({ link: link().get() }));
  // a partial body changes what it names and keeps the rest
  app.put("/admin/link", adminBodyLimit, async (c) => {
    const change = parse(linkBody, await readAdminJson(c), '{"downBps"?, "upBps"? (bit/s, 0: unlimited), "delayMs"?, "jitterMs"?, "loss"? (0 to 1)}');
    const l = link();
    l.set({ ...l.get(), ...change });
    log(`link emulation: ${JSON.stringify(l.get())} (set through /admin/link)`);
    return c.json({ link: l.get() });
  });

  app.get("/admin/join", (c) => {
    const joinLink = controls.joinLink?.() ?? null;
    if (!joinLink) throw new ApiError(404, "browser devices are off: start the base station with --browser-devices", "not_found_error");
    return c.json({ link: joinLink, qr_svg: renderSVG(joinLink, { border: QR_BORDER, ecc: "L" }) });
  });
}
