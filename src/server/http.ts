// The base station's HTTP API: OpenAI-compatible completions and chat completions (JSON or
// server-sent events), /v1/models, /health and Prometheus /metrics. Every request goes through the
// engine's continuous-batching scheduler.
import http from "node:http";
import { randomUUID } from "node:crypto";
import type { Engine, GenerationResult } from "../runtime/engine.js";
import { BadRequest, parseChat, parseCompletion, type SamplingParams } from "./api.js";
import type { ServerMetrics } from "./metrics.js";

const MAX_BODY = 4 << 20;

export interface ApiOptions {
  modelName: string;
  metrics: ServerMetrics;
  /** Extra fields for /health (devices, placement). */
  health?: () => Record<string, unknown>;
  log?: (line: string) => void;
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function error(res: http.ServerResponse, status: number, message: string, type = "invalid_request_error"): void {
  send(res, status, { error: { message, type } });
}

function readBody(req: http.IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new BadRequest(`the request body exceeds ${MAX_BODY} bytes`));
        req.destroy();
      } else chunks.push(c);
    });
    req.on("end", () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch (e) {
        reject(new BadRequest(`the request body is not valid JSON (${(e as Error).message})`));
      }
    });
    req.on("error", reject);
  });
}

const finishReason = (r: GenerationResult) => (r.stopReason === "eos" || r.stopReason === "stop" ? "stop" : "length");

function usage(r: GenerationResult) {
  return {
    prompt_tokens: r.promptTokens.length,
    completion_tokens: r.tokens.length,
    total_tokens: r.promptTokens.length + r.tokens.length,
    prefill_ms: r.prefillMs,
    decode_ms_per_token: r.decodeSteps > 0 ? r.decodeMs / r.decodeSteps : 0,
    latency_ms_per_token: r.latency,
    experts: r.experts,
  };
}

/** Answers every request with 503 while the model loads or devices join. */
export function startingHandler(req: http.IncomingMessage, res: http.ServerResponse): void {
  req.resume();
  error(res, 503, "the base station is starting (loading the model, waiting for devices)", "unavailable");
}

export function createApiHandler(engine: Engine, opts: ApiOptions): http.RequestListener {
  const { metrics } = opts;
  const created = () => Math.floor(Date.now() / 1000);

  async function generate(res: http.ServerResponse, kind: "text" | "chat", prompt: number[], p: SamplingParams): Promise<void> {
    const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID()}`;
    const object = kind === "chat" ? "chat.completion" : "text_completion";
    const sampling = { maxTokens: p.maxTokens, temperature: p.temperature, topP: p.topP, topK: p.topK, seed: p.seed, stop: p.stop };
    const chunk = (piece: string | null, finish: string | null, extra: Record<string, unknown> = {}) => ({
      id,
      object: kind === "chat" ? "chat.completion.chunk" : "text_completion",
      created: created(),
      model: opts.modelName,
      choices: [kind === "chat" ? { index: 0, delta: piece === null ? {} : { content: piece }, finish_reason: finish } : { index: 0, text: piece ?? "", finish_reason: finish }],
      ...extra,
    });
    metrics.requests.inc({ kind });
    const t0 = performance.now();
    if (!p.stream) {
      const r = await engine.scheduler.submit({ ...sampling, prompt });
      metrics.observe(r, performance.now() - t0);
      const choice = kind === "chat" ? { index: 0, message: { role: "assistant", content: r.text }, finish_reason: finishReason(r) } : { index: 0, text: r.text, finish_reason: finishReason(r) };
      send(res, 200, { id, object, created: created(), model: opts.modelName, choices: [choice], usage: usage(r) });
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
    // a client that goes away frees its place in the batch at the next step
    const abort = new AbortController();
    res.on("close", () => abort.abort());
    const event = (data: unknown) => res.write(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
    if (kind === "chat") event({ ...chunk(null, null), choices: [{ index: 0, delta: { role: "assistant" }, finish_reason: null }] });
    try {
      const r = await engine.scheduler.submit({ ...sampling, prompt, signal: abort.signal, onText: (piece) => event(chunk(piece, null)) });
      metrics.observe(r, performance.now() - t0);
      event(chunk(null, finishReason(r), { usage: usage(r) }));
    } catch (e) {
      event({ error: { message: (e as Error).message, type: "server_error" } });
    }
    event("[DONE]");
    res.end();
  }

  async function route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    const key = `${req.method} ${url.pathname}`;
    switch (key) {
      case "GET /health":
        return send(res, 200, { status: "ok", model: opts.modelName, ...engine.scheduler.depth, ...(opts.health?.() ?? {}) });
      case "GET /v1/models":
        return send(res, 200, { object: "list", data: [{ id: opts.modelName, object: "model", created: 0, owned_by: "distmoe" }] });
      case "GET /metrics": {
        const text = await metrics.text();
        res.writeHead(200, { "content-type": metrics.contentType });
        return void res.end(text);
      }
      case "POST /v1/completions": {
        const p = parseCompletion(await readBody(req));
        return generate(res, "text", engine.tokenizer.encode(p.prompt), p);
      }
      case "POST /v1/chat/completions": {
        const p = parseChat(await readBody(req));
        let text: string;
        try {
          text = engine.tokenizer.applyChatTemplate(p.messages);
        } catch (e) {
          throw new BadRequest((e as Error).message);
        }
        return generate(res, "chat", engine.tokenizer.encode(text, false), p);
      }
      default:
        return error(res, 404, `no route for ${key}`, "not_found");
    }
  }

  return (req, res) => {
    route(req, res).catch((e: Error) => {
      if (res.headersSent) return void res.end();
      if (e instanceof BadRequest) error(res, 400, e.message);
      else {
        opts.log?.(`request failed: ${e.stack ?? e.message}`);
        error(res, 500, e.message, "server_error");
      }
    });
  };
}
