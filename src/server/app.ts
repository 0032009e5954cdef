// The base station's HTTP API on Hono: OpenAI-compatible completions and chat completions (JSON or
// server-sent events), /v1/models, /health, Prometheus /metrics, the operator's /admin (admin.ts) and the
// browser device's page at /device (device-page.ts) where browser devices are allowed.
// Cross-cutting concerns are middleware: request ids, API keys, CORS, body limits, JSON-only bodies, and one error handler that
// answers every failure in OpenAI's error shape — an unexpected one as 500 with the request id,
// logged once with its stack, never taking the process or another request with it.
import { Hono, type Context, type MiddlewareHandler } from "hono";
import { bearerAuth } from "hono/bearer-auth";
import { bodyLimit } from "hono/body-limit";
import { cors } from "hono/cors";
import { HTTPException } from "hono/http-exception";
import { requestId, type RequestIdVariables } from "hono/request-id";
import type { Engine } from "../runtime/engine.js";
import { generate, generationError, promptTokens, refuseOverlongPrompt } from "./completions.js";
import { ApiError, errorBody } from "./errors.js";
import { mountAdmin, type AdminOptions } from "./admin.js";
import { mountControls, type Controls } from "./dashboard/controls.js";
import { mountDashboardStream, type DashboardFeed } from "./dashboard/stream.js";
import { mountDashboardPage } from "./dashboard/page.js";
import { mountDevicePage } from "./device-page.js";
import { Health, stationParts, type PartStatus } from "./health.js";
import type { ServerMetrics } from "./metrics.js";
import { parseChat, parseCompletion } from "./schemas.js";

export interface AppOptions {
  /** The engine, once loaded (until then every /v1 request is 503 and /health says loading). */
  engine: () => Engine | undefined;
  modelName: string;
  metrics: ServerMetrics;
  /** What /health reports recent failures from (default: its own); the dashboard shares it. */
  health?: Health;
  /** The device hub's status, when the experts run on devices. */
  devices?: () => PartStatus;
  /** Bearer keys that /v1/* requires (the admin keys are taken there too); none: open. */
  apiKeys?: readonly string[];
  /** The operator's /admin endpoints (join tokens, device identities); default: off (403). */
  admin?: AdminOptions;
  /**
   * Whether to serve the browser device's page at /device (with the kernels it loads); default false.
   * "not-isolated": without the headers that make it cross-origin isolated, as a proxy that drops them would (tests of the page's one-thread fallback).
   */
  devicePage?: boolean | "not-isolated";
  /**
   * The dashboard's live data at /dashboard/events. Viewers need an API key, a view key or an admin key;
   * with neither API nor view keys it is open, as /v1 is. Its controls are under /admin, for the admin key only.
   */
  dashboard?: { feed: DashboardFeed; viewKeys?: readonly string[]; controls?: Controls };
  /** Origins allowed cross-origin requests; none: CORS off. */
  corsOrigins?: readonly string[];
  maxBodyBytes?: number;
  requestTimeoutMs?: number;
  log?: (line: string) => void;
}

export const DEFAULT_MAX_BODY_BYTES = 4 << 20;
export const DEFAULT_REQUEST_TIMEOUT_MS = 600_000;

type Env = { Variables: RequestIdVariables };

export function createApp(opts: AppOptions): Hono<Env> {
  const log = opts.log ?? (() => undefined);
  const maxBodyBytes = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const requestTimeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const health = opts.health ?? new Health();
  const app = new Hono<Env>();

  const fail = (c: Context<Env>, e: ApiError) => {
    if (e.options.retryAfterS !== undefined) c.header("retry-after", String(e.options.retryAfterS));
    return c.json(errorBody(e.message, e.type, e.options.param, c.get("requestId")), e.status);
  };
  /** The answer to any error; one that nothing expects is logged once with its stack. */
  const toApiError = (c: Context<Env>, e: unknown): ApiError => {
    const known = generationError(e, requestTimeoutMs);
    if (known) return known;
    if (e instanceof HTTPException) return new ApiError(e.status as ApiError["status"], e.message || e.getResponse().statusText, e.status === 401 ? "authentication_error" : "invalid_request_error");
    log(`request ${c.get("requestId")} failed: ${(e as Error)?.stack ?? String(e)}`);
    return new ApiError(500, `internal error (request id ${c.get("requestId")})`, "server_error");
  };
  const status = () => {
    const parts = stationParts(opts.engine() !== undefined, opts.devices);
    return { ...health.status(parts), parts };
  };
  /** The engine, if it can serve now; 503 with the reasons otherwise. */
  const serving = (): Engine => {
    const engine = opts.engine();
    const s = status();
    if (!engine || s.state === "unavailable") throw new ApiError(503, `the base station cannot serve now: ${s.reasons.join("; ")}`, "unavailable", { retryAfterS: 5 });
    return engine;
  };

  app.use(requestId());
  // middleware that answers by throwing its own response (bearer auth) keeps it
  app.onError((e, c) => (e instanceof HTTPException && e.res ? e.getResponse() : fail(c, toApiError(c, e))));
  app.notFound((c) => fail(c, new ApiError(404, `no route for ${c.req.method} ${c.req.path}`, "not_found_error")));
  if (opts.corsOrigins?.length) app.use(cors({ origin: [...opts.corsOrigins], allowHeaders: ["authorization", "content-type"], exposeHeaders: ["x-request-id", "retry-after"] }));
  if (opts.apiKeys?.length) {
    // every refusal is 401 with the request id (bearerAuth's own answer to a header in another scheme is 400 without it)
    const refuse = (message: string | ((c: Context<Env>) => string)) => (c: Context<Env>) =>
      c.json(errorBody(typeof message === "string" ? message : message(c), "authentication_error", undefined, c.get("requestId")), 401);
    const required = refuse("a valid API key is required: Authorization: Bearer KEY");
    const viewKeys = new Set(opts.dashboard?.viewKeys ?? []);
    const invalid = refuse((c) =>
      viewKeys.has(c.req.header("authorization")?.replace(/^Bearer\s+/i, "") ?? "") ? "a view key only views the dashboard: the API needs an API key" : "the API key is not valid",
    );
    // the operator's admin keys may use the API too (the dashboard's playground under the admin key)
    const keys = [...opts.apiKeys, ...(opts.admin?.keys ?? [])];
    app.use("/v1/*", bearerAuth({ token: keys, noAuthenticationHeader: { message: required }, invalidAuthenticationHeader: { message: required }, invalidToken: { message: invalid } }));
  }

  const jsonBody: MiddlewareHandler<Env> = async (c, next) => {
    const type = c.req.header("content-type") ?? "";
    if (!/^application\/json\s*(;|$)/i.test(type)) throw new ApiError(415, `the request body must be JSON (content-type: application/json), not '${type.slice(0, 64) || "none"}'`);
    await next();
  };
  const limit = bodyLimit({
    maxSize: maxBodyBytes,
    onError: (c) => {
      c.header("connection", "close");
      return fail(c as Context<Env>, new ApiError(413, `the request body exceeds ${maxBodyBytes} bytes`));
    },
  });
  mountAdmin(app, opts.admin ?? { keys: [] });
  if (opts.dashboard) {
    const viewers = [...(opts.apiKeys ?? []), ...(opts.dashboard.viewKeys ?? [])];
    mountDashboardStream(app, opts.dashboard.feed, { keys: viewers.length > 0 ? [...viewers, ...(opts.admin?.keys ?? [])] : [] });
    // without admin keys, /admin/* answers 403 before these routes
    if (opts.dashboard.controls) mountControls(app, opts.dashboard.controls, log);
    mountDashboardPage(app);
  }
  if (opts.devicePage) mountDevicePage(app, opts.devicePage !== "not-isolated");
  const readJson = async (c: Context<Env>): Promise<unknown> => {
    const text = await c.req.text();
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new ApiError(400, `the request body is not valid JSON (${(e as Error).message})`);
    }
  };
  const generation = (c: Context<Env>, engine: Engine) => ({
    engine,
    modelName: opts.modelName,
    requestTimeoutMs,
    onResult: (r: Parameters<Health["noteResult"]>[0], ms: number) => {
      health.noteResult(r);
      opts.metrics.observe(r, ms);
    },
    toApiError: (e: unknown) => toApiError(c, e),
  });

  app.post("/v1/completions", limit, jsonBody, async (c) => {
    const p = parseCompletion(await readJson(c));
    const engine = serving();
    opts.metrics.requests.inc({ kind: "text" });
    return generate(c, generation(c, engine), "text", promptTokens(engine, p.prompt, true, "prompt"), p);
  });
  app.post("/v1/chat/completions", limit, jsonBody, async (c) => {
    const p = parseChat(await readJson(c));
    const engine = serving();
    // the messages' own text bounds the prompt's before the template is rendered
    refuseOverlongPrompt(engine, p.messages.reduce((n, m) => n + m.content.length, 0), "messages");
    if (p.messages.length > engine.model.contextLength) throw new ApiError(400, `${p.messages.length} messages: more than this model's context of ${engine.model.contextLength} tokens can hold`, "invalid_request_error", { param: "messages" });
    let text: string;
    try {
      text = engine.tokenizer.applyChatTemplate(p.messages);
    } catch (e) {
      throw new ApiError(400, (e as Error).message, "invalid_request_error", { param: "messages" });
    }
    opts.metrics.requests.inc({ kind: "chat" });
    return generate(c, generation(c, engine), "chat", promptTokens(engine, text, false, "messages"), p);
  });

  const model = { id: opts.modelName, object: "model", created: 0, owned_by: "distmoe" };
  app.get("/v1/models", (c) => c.json({ object: "list", data: [model] }));
  app.get("/v1/models/:id{.+}", (c) => (c.req.param("id") === opts.modelName ? c.json(model) : fail(c, new ApiError(404, `the model '${c.req.param("id")}' does not exist`, "not_found_error"))));

  app.get("/health", (c) => {
    const engine = opts.engine();
    const { state, reasons, parts } = status();
    const details = Object.assign({}, ...parts.map(({ state: _s, reasons: _r, ...rest }) => rest)) as Record<string, unknown>;
    return c.json({ status: state, reasons, model: opts.modelName, ...(engine ? engine.scheduler.depth : {}), ...details }, state === "unavailable" ? 503 : 200);
  });
  app.get("/metrics", async (c) => c.body(await opts.metrics.text(), 200, { "content-type": opts.metrics.contentType }));
  return app;
}
