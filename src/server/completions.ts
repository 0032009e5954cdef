// POST /v1/completions and /v1/chat/completions: a validated request becomes one scheduler request,
// answered as one JSON body or streamed as server-sent events in OpenAI's chunk format. Admission
// (queue, context, availability) is decided before any byte is sent, so a refused streaming request
// still gets its status code; a client that goes away, or a request past its timeout, leaves the batch
// at the next step.
import { randomUUID } from "node:crypto";
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import type { Engine, GenerationResult } from "../runtime/engine.js";
import { RequestRejected } from "../runtime/scheduler.js";
import { ExpertsUnavailable } from "../moe/executor.js";
import type { TokenRouting } from "../moe/token-routing.js";
import { ApiError, errorBody } from "./errors.js";
import type { SamplingParams } from "./schemas.js";

/** Completions without max_tokens stop here (OpenAI's default); chat runs to the end of the context. */
const COMPLETION_MAX_TOKENS_DEFAULT = 16;
/**
 * An answer not streamed holds every token's routing (distmoe.routing) until it is sent: at most this many
 * tokens, some MB for a large model (a layer's entry lists up to MAX_EXPERTS_LISTED experts), so a long
 * context cannot make one request hold hundreds of MB, or a body beyond what JSON.stringify can write.
 * A streamed answer gives each token's routing away with its text and has no such bound.
 */
export const ROUTED_TOKENS_HELD_MAX = 4096;

export interface GenerationContext {
  engine: Engine;
  modelName: string;
  requestTimeoutMs: number;
  /** Told of every finished generation and its time in ms. */
  onResult(r: GenerationResult, ms: number): void;
  /** The answer to an error while streaming (an unexpected one is logged with the request id). */
  toApiError(e: unknown): ApiError;
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

/** The error a failed generation is answered with. */
export function generationError(e: unknown, timeoutMs: number): ApiError | null {
  if (e instanceof ApiError) return e;
  if (e instanceof ExpertsUnavailable) return new ApiError(503, `the experts cannot be served: ${e.message}`, "unavailable", { retryAfterS: 5 });
  if (e instanceof RequestRejected) return e.reason === "queue_full" ? new ApiError(429, `the base station is busy: ${e.message}`, "rate_limit_error", { retryAfterS: 1 }) : new ApiError(400, e.message);
  if (e instanceof DOMException && e.name === "TimeoutError") return new ApiError(504, `the request took longer than the server's limit of ${timeoutMs / 1000} s`, "timeout");
  return null;
}

/**
 * Refuses a prompt of more characters than the context could hold even at the tokenizer's longest
 * tokens (twice that, for normalisers that shorten text) before it is encoded: a megabyte of prompt
 * would otherwise hold the event loop for seconds while it is encoded.
 */
export function refuseOverlongPrompt(engine: Engine, chars: number, param: string): void {
  const ctx = engine.model.contextLength;
  if (chars > 2 * ctx * engine.tokenizer.maxTokenChars) throw new ApiError(400, `the prompt has ${chars} characters: more than this model's context of ${ctx} tokens can hold`, "invalid_request_error", { param });
}

/** The prompt's tokens, once it is known to be short enough to encode. */
export function promptTokens(engine: Engine, text: string, special: boolean, param: string): number[] {
  refuseOverlongPrompt(engine, text.length, param);
  return engine.tokenizer.encode(text, special);
}

export function generate(c: Context, g: GenerationContext, kind: "text" | "chat", prompt: number[], p: SamplingParams): Response | Promise<Response> {
  if (p.model !== undefined && p.model !== g.modelName) throw new ApiError(404, `the model '${p.model}' does not exist; this server serves '${g.modelName}'`, "not_found_error", { param: "model" });
  const ctx = g.engine.model.contextLength;
  const room = ctx - prompt.length;
  if (room <= 0) throw new ApiError(400, `the prompt has ${prompt.length} tokens; this model's context holds ${ctx}`, "invalid_request_error", { param: kind === "chat" ? "messages" : "prompt" });
  const maxTokens = p.maxTokens ?? (kind === "text" ? Math.min(COMPLETION_MAX_TOKENS_DEFAULT, room) : room);
  if (maxTokens > room) {
    throw new ApiError(400, `the context holds ${ctx} tokens; the prompt has ${prompt.length} and max_tokens asks for ${maxTokens} more (at most ${room})`, "invalid_request_error", { param: "max_tokens" });
  }
  if (p.routing && !p.stream && maxTokens > ROUTED_TOKENS_HELD_MAX) {
    throw new ApiError(400, `distmoe.routing without "stream" holds every token's routing until the answer is sent: at most ${ROUTED_TOKENS_HELD_MAX} tokens, and max_tokens is ${p.maxTokens ?? `the context's room, ${maxTokens}`}; ask for fewer, or stream the answer`, "invalid_request_error", { param: "max_tokens" });
  }

  const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID()}`;
  const created = Math.floor(Date.now() / 1000);
  const object = kind === "chat" ? "chat.completion.chunk" : "text_completion";
  const chunk = (choice: Record<string, unknown> | null, extra: Record<string, unknown> = {}) => ({
    id,
    object,
    created,
    model: g.modelName,
    choices: choice ? [{ index: 0, ...choice }] : [],
    ...(p.includeUsage ? { usage: null } : {}),
    ...extra,
  });
  // with distmoe.routing, a piece carries the routing of the tokens whose text it brings
  const piece = (text: string | null, finish: string | null, routing?: readonly TokenRouting[]) =>
    chunk(
      kind === "chat" ? { delta: text === null ? {} : { content: text }, finish_reason: finish } : { text: text ?? "", finish_reason: finish },
      routing ? { distmoe: { routing } } : {},
    );
  // the deadline's timer ends with the request, so a finished request holds none for the rest of it
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(new DOMException("the request timed out", "TimeoutError")), g.requestTimeoutMs);
  const client = new AbortController();
  const signal = AbortSignal.any([c.req.raw.signal, client.signal, deadline.signal]);
  const t0 = performance.now();
  // a streamed request's pieces go out once its stream exists (right after admission, below)
  let send: (data: unknown) => void = () => undefined;
  let submitted: Promise<GenerationResult>;
  try {
    submitted = g.engine.scheduler.submit({ maxTokens, temperature: p.temperature, topP: p.topP, topK: p.topK, seed: p.seed, stop: p.stop, routing: p.routing, prompt, signal, onText: p.stream ? (text, _token, routing) => send(piece(text, null, routing)) : undefined });
  } catch (e) {
    clearTimeout(timer);
    throw e;
  }
  /** The result, or the error its request must be answered with (a timeout is one). */
  const result = submitted.finally(() => clearTimeout(timer)).then((r) => {
    g.onResult(r, performance.now() - t0);
    if (r.stopReason === "cancelled" && deadline.signal.aborted) throw deadline.signal.reason;
    return r;
  });

  if (!p.stream) {
    return result.then((r) => {
      const choice = kind === "chat" ? { index: 0, message: { role: "assistant", content: r.text }, finish_reason: finishReason(r) } : { index: 0, text: r.text, finish_reason: finishReason(r) };
      return c.json({ id, object: kind === "chat" ? "chat.completion" : "text_completion", created, model: g.modelName, choices: [choice], usage: usage(r), ...(r.routing && { distmoe: { routing: r.routing } }) });
    });
  }

  // events are written in order, whatever the socket's pace
  let writes: Promise<void> = Promise.resolve();
  return streamSSE(c, async (stream) => {
    stream.onAbort(() => client.abort());
    send = (data) => void (writes = writes.then(() => stream.writeSSE({ data: typeof data === "string" ? data : JSON.stringify(data) })));
    if (kind === "chat") send(chunk({ delta: { role: "assistant", content: "" }, finish_reason: null }));
    try {
      const r = await result;
      send(piece(null, finishReason(r)));
      if (p.includeUsage) send(chunk(null, { usage: usage(r) }));
    } catch (e) {
      const err = g.toApiError(e);
      send(errorBody(err.message, err.type, err.options.param, c.get("requestId")));
    }
    send("[DONE]");
    await writes;
  });
}
