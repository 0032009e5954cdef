// The OpenAI-compatible request bodies as zod schemas: a handler only ever sees a valid request.
// Parameters OpenAI defines that this server does not implement are refused by name (400) unless they
// carry their no-op value, so a client never gets a silently different answer; unknown ones too.
import { z } from "zod";
import type { ChatMessage } from "../model/tokenizer.js";
import { ApiError } from "./errors.js";

/** Parameters not implemented yet, each with the test for its no-op value (accepted and ignored). */
const UNSUPPORTED: Record<string, (v: unknown) => boolean> = {
  logprobs: (v) => v === null || v === false,
  top_logprobs: (v) => v === null || v === 0,
  presence_penalty: (v) => v === null || v === 0,
  frequency_penalty: (v) => v === null || v === 0,
  logit_bias: (v) => v === null || (typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 0),
  response_format: (v) => v === null || (typeof v === "object" && (v as { type?: unknown }).type === "text"),
  tools: (v) => v === null || (Array.isArray(v) && v.length === 0),
  tool_choice: (v) => v === null || v === "none",
  parallel_tool_calls: (v) => v === null,
  functions: (v) => v === null || (Array.isArray(v) && v.length === 0),
  function_call: (v) => v === null || v === "none",
  echo: (v) => v === null || v === false,
  best_of: (v) => v === null || v === 1,
  suffix: (v) => v === null || v === "",
};

const int = (min: number, max: number) => z.number({ error: "must be a number" }).int({ error: "must be an integer" }).min(min, { error: `must be ≥ ${min}` }).max(max, { error: `must be ≤ ${max}` });

const stopString = z.string().min(1, { error: "must be 1..256 characters" }).max(256, { error: "must be 1..256 characters" });

const sampling = {
  model: z.string().max(256).optional(),
  max_tokens: int(0, 1_000_000).nullish(),
  max_completion_tokens: int(0, 1_000_000).nullish(),
  temperature: z.number({ error: "must be a number" }).min(0, { error: "must be ≥ 0" }).max(100, { error: "must be ≤ 100" }).nullish(),
  top_p: z.number({ error: "must be a number" }).gt(0, { error: "must be > 0" }).max(1, { error: "must be ≤ 1" }).nullish(),
  top_k: int(0, 1e9).nullish(),
  seed: int(0, 2 ** 32 - 1).nullish(),
  // one string is a list of one
  stop: z.preprocess((v) => (typeof v === "string" ? [v] : v), z.array(stopString, { error: "must be a string or a list of up to 4 strings" }).max(4, { error: "must be a list of up to 4 strings" }).nullish()),
  stream: z.boolean({ error: "must be true or false" }).nullish(),
  stream_options: z.strictObject({ include_usage: z.boolean({ error: "must be true or false" }).optional() }).nullish(),
  n: z.literal(1, { error: "only n = 1 is supported" }).nullish(),
  user: z.string().max(256).optional(),
  // this server's own options
  distmoe: z.strictObject({ routing: z.boolean({ error: "must be true or false" }).optional() }, { error: "must be an object such as {\"routing\": true}" }).nullish(),
};

const completionSchema = z.strictObject({
  ...sampling,
  prompt: z.union([z.string(), z.tuple([z.string()])], { error: "must be a string" }),
});

const textPart = z.strictObject({ type: z.literal("text"), text: z.string() });
const chatSchema = z.strictObject({
  ...sampling,
  messages: z
    .array(
      z.object({
        role: z.enum(["system", "developer", "user", "assistant"], { error: "must be system, developer, user or assistant" }),
        content: z.union([z.string(), z.array(textPart)], { error: "must be a string or a list of text parts" }),
        name: z.string().max(256).optional(),
      }),
      { error: "must be a list of messages" },
    )
    .min(1, { error: "must be a non-empty list" }),
});

export interface SamplingParams {
  /** the model asked for, if any */
  model?: string;
  /** null: as many as the context leaves */
  maxTokens: number | null;
  stop: string[];
  temperature: number;
  topP: number;
  topK: number;
  seed?: number;
  stream: boolean;
  /** OpenAI's stream_options.include_usage: one last chunk with the usage and no choices */
  includeUsage: boolean;
  /** distmoe.routing: each generated token's experts per layer and the devices that computed them */
  routing: boolean;
}

export interface CompletionRequest extends SamplingParams {
  prompt: string;
}

export interface ChatRequest extends SamplingParams {
  messages: ChatMessage[];
}

function parse<T extends z.ZodType>(schema: T, body: unknown): z.infer<T> {
  if (!body || typeof body !== "object" || Array.isArray(body)) throw new ApiError(400, "the request body must be a JSON object");
  const b = body as Record<string, unknown>;
  const unsupported = Object.keys(UNSUPPORTED).filter((k) => k in b && !UNSUPPORTED[k]!(b[k]));
  if (unsupported.length > 0) throw new ApiError(400, `not supported by this server: ${unsupported.join(", ")}`, "invalid_request_error", { param: unsupported[0] });
  const rest = Object.fromEntries(Object.entries(b).filter(([k]) => !Object.hasOwn(UNSUPPORTED, k)));
  const r = schema.safeParse(rest);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  if (issue.code === "unrecognized_keys") {
    const keys = issue.keys.map((k) => [...issue.path, k].join("."));
    throw new ApiError(400, `unrecognized parameter${keys.length > 1 ? "s" : ""}: ${keys.join(", ")}`, "invalid_request_error", { param: keys[0] });
  }
  const param = issue.path.map((p, i) => (typeof p === "number" ? `[${p}]` : i > 0 ? `.${String(p)}` : String(p))).join("");
  throw new ApiError(400, `${param || "body"}: ${issue.message}`, "invalid_request_error", { param });
}

function samplingParams(b: z.infer<typeof completionSchema> | z.infer<typeof chatSchema>): SamplingParams {
  if (b.stream_options && !b.stream) throw new ApiError(400, "stream_options is only allowed with stream: true", "invalid_request_error", { param: "stream_options" });
  return {
    model: b.model,
    maxTokens: b.max_tokens ?? b.max_completion_tokens ?? null,
    stop: b.stop ?? [],
    temperature: b.temperature ?? 1,
    topP: b.top_p ?? 1,
    topK: b.top_k ?? 0,
    seed: b.seed ?? undefined,
    stream: b.stream ?? false,
    includeUsage: b.stream_options?.include_usage ?? false,
    routing: b.distmoe?.routing ?? false,
  };
}

export function parseCompletion(body: unknown): CompletionRequest {
  const b = parse(completionSchema, body);
  return { prompt: typeof b.prompt === "string" ? b.prompt : b.prompt[0], ...samplingParams(b) };
}

export function parseChat(body: unknown): ChatRequest {
  const b = parse(chatSchema, body);
  const messages = b.messages.map((m) => ({ role: m.role, content: typeof m.content === "string" ? m.content : m.content.map((p) => p.text).join("") }));
  return { messages, ...samplingParams(b) };
}
