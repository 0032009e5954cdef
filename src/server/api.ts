// The OpenAI-compatible request bodies: parsed and checked here, so the handlers only see valid values.
import type { ChatMessage } from "../model/tokenizer.js";

export class BadRequest extends Error {}

export interface SamplingParams {
  maxTokens: number;
  stop: string[];
  temperature: number;
  topP: number;
  topK: number;
  seed?: number;
  stream: boolean;
}

export interface CompletionRequest extends SamplingParams {
  prompt: string;
}

export interface ChatRequest extends SamplingParams {
  messages: ChatMessage[];
}

type Body = Record<string, unknown>;

function num(b: Body, key: string, def: number, min: number, max: number, integer = false): number {
  const v = b[key] ?? def;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    throw new BadRequest(`${key} must be ${integer ? "an integer" : "a number"} in [${min}, ${max}], got ${JSON.stringify(b[key])}`);
  }
  return v;
}

function sampling(b: Body, maxTokensDefault: number): SamplingParams {
  const stop = b.stop === undefined || b.stop === null ? [] : typeof b.stop === "string" ? [b.stop] : b.stop;
  if (!Array.isArray(stop) || stop.length > 4 || !stop.every((x) => typeof x === "string" && x.length > 0 && x.length <= 256)) {
    throw new BadRequest("stop must be a string or a list of up to 4 non-empty strings");
  }
  if (b.n !== undefined && b.n !== 1) throw new BadRequest("only n = 1 is supported");
  if (b.stream !== undefined && typeof b.stream !== "boolean") throw new BadRequest("stream must be true or false");
  return {
    stop: stop as string[],
    maxTokens: num(b, "max_tokens", b.max_completion_tokens === undefined ? maxTokensDefault : num(b, "max_completion_tokens", 0, 0, 1e6, true), 0, 1e6, true),
    temperature: num(b, "temperature", 1, 0, 100),
    topP: num(b, "top_p", 1, Number.MIN_VALUE, 1),
    topK: num(b, "top_k", 0, 0, 1e9, true),
    seed: b.seed === undefined || b.seed === null ? undefined : num(b, "seed", 0, 0, 2 ** 32 - 1, true),
    stream: b.stream === true,
  };
}

function object(body: unknown): Body {
  if (!body || typeof body !== "object" || Array.isArray(body)) throw new BadRequest("the request body must be a JSON object");
  return body as Body;
}

export function parseCompletion(body: unknown): CompletionRequest {
  const b = object(body);
  if (typeof b.prompt !== "string") throw new BadRequest("prompt must be a string");
  return { prompt: b.prompt, ...sampling(b, 16) };
}

export function parseChat(body: unknown): ChatRequest {
  const b = object(body);
  const m = b.messages;
  if (!Array.isArray(m) || m.length === 0) throw new BadRequest("messages must be a non-empty list");
  const messages = m.map((x, i) => {
    if (!x || typeof x !== "object" || typeof x.role !== "string" || typeof x.content !== "string") throw new BadRequest(`messages[${i}] needs a string role and a string content`);
    return { role: x.role as string, content: x.content as string };
  });
  return { messages, ...sampling(b, 256) };
}
