// Fuzz test of the HTTP API against a real socket: whatever body, content type and /v1 route a client
// sends, it gets an answer with a status the API defines (never 500, never a reset connection), every
// refusal in OpenAI's error shape, every stream ended with [DONE], and the server serves on unchanged.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import fc from "fast-check";
import { Engine } from "../runtime/engine.js";
import { initModel } from "../model/init-model.js";
import { fuzzParams } from "../testing/fuzz.js";
import { createApp } from "./app.js";
import { ApiError } from "./errors.js";
import { ServerMetrics } from "./metrics.js";
import { parseChat, parseCompletion } from "./schemas.js";

const MAX_BODY = 1 << 15;
const STATUSES = [200, 400, 404, 413, 415, 429, 503];
const ROUTES = ["/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/models/tiny", "/v1/nothing", "/v1/completions/", "/v1/completions?stream=true", "/v1//completions"];
const CONTENT_TYPES = [undefined, "application/json", "application/json; charset=utf-8", "Application/JSON;charset=latin1", "application/json ; x=1", "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx", "json", "", "application/*"];
/** Parameters each route knows (implemented or refused by name); any other top-level key must be refused. */
const SAMPLING = ["model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream", "stream_options", "n", "user"];
const UNSUPPORTED = ["logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias", "response_format", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call", "echo", "best_of", "suffix"];
const KNOWN: Record<string, ReadonlySet<string>> = {
  "/v1/completions": new Set([...SAMPLING, ...UNSUPPORTED, "prompt"]),
  "/v1/chat/completions": new Set([...SAMPLING, ...UNSUPPORTED, "messages"]),
};

/** Raw JSON a client may send: values of every type, out of range, odd numbers, odd keys, deep nesting ("<deep>"), long strings ("<long>", and "<huge>": over the body limit). */
const oddToken = fc.constantFrom(
  "1e400", "-1e400", "-0", "1e-400", "-1", "0", "1", "2", "0.5", "1.5", "9007199254740993", "1e20", "4294967296", "1000001",
  '"NaN"', '"Infinity"', '"-Infinity"', '"1"', '""', '"x"', '"tiny"', '"text"', '"none"', '"\\ud800"', '"\\u0000\\u001b[31m"', '"<long>"',
  "null", "true", "false", "{}", "[]", '[""]', '["x"]', '["a","b","c","d","e"]', "[1]", '{"include_usage":true}', '{"include_usage":"yes"}', '{"include_usage":false,"x":1}',
  '{"type":"text"}', '{"type":"json_object"}', '{"__proto__":{"a":1}}', '{"constructor":{"prototype":{}}}', '[{"role":"user","content":"hi"}]', '[{"role":"user","content":[{"type":"text","text":"h"}]}]',
  '[{"role":"wizard","content":"x"}]', '[{"role":"user","content":[{"type":"image_url"}]}]', '[{"role":"user","content":"hi","__proto__":null}]', "<deep>", '{"a":<deep>}', '"<huge>"',
);
const oddJson = fc.oneof({ weight: 3, arbitrary: oddToken }, { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)) });
const expand = (json: string) => json.replaceAll("<deep>", `${"[".repeat(3000)}${"]".repeat(3000)}`).replaceAll("<long>", "y".repeat(20_000)).replaceAll("<huge>", "z".repeat(MAX_BODY));
/** Keys a body may carry besides the ones it has: known ones, and ones an object's prototype has. */
const oddKey = fc.oneof(fc.constantFrom(...SAMPLING, ...UNSUPPORTED, "prompt", "messages", "__proto__", "constructor", "toString", "hasOwnProperty", "valueOf", "", "Prompt", "max_tokens ", "frobnicate"), fc.string({ maxLength: 8 }));

/** Valid bodies for each generation route, kept short: max_tokens small so that accepted generations are quick. */
const sampling = {
  max_tokens: fc.integer({ min: 0, max: 4 }),
  temperature: fc.constantFrom(0, 0.7, 1),
  stream: fc.boolean(),
  stop: fc.constantFrom("\n", ["a", "b"], "e"),
  stream_options: fc.constantFrom({ include_usage: true }, { include_usage: false }, {}),
  seed: fc.nat(),
  model: fc.constant("tiny"),
};
const optional = { requiredKeys: ["max_tokens"] as Array<"max_tokens">, noNullPrototype: true };
/** stream_options only where stream is true (mutations make the other cases) */
const streamed = <T extends { stream?: boolean; stream_options?: object }>({ stream_options, ...b }: T) => (b.stream ? { ...b, stream_options } : b) as Record<string, unknown>;
const validBody = {
  "/v1/completions": fc.record({ prompt: fc.string({ maxLength: 12 }), ...sampling }, { ...optional, requiredKeys: ["prompt", "max_tokens"] }).map(streamed),
  "/v1/chat/completions": fc
    .record({ messages: fc.array(fc.record({ role: fc.constantFrom("system", "user", "assistant"), content: fc.string({ maxLength: 3 }) }), { minLength: 1, maxLength: 2 }), ...sampling }, { ...optional, requiredKeys: ["messages", "max_tokens"] })
    .map(streamed),
};

/** Ways a client may change a valid body, as data (so a counterexample reads well). */
type Mutation = { field: number; json: string } | { add: string; json: string } | { drop: number } | { damage: number; bytes: number[] } | { truncate: number };
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ field: fc.nat(), json: oddJson }) },
  { weight: 3, arbitrary: fc.record({ add: oddKey, json: oddJson }) },
  { weight: 1, arbitrary: fc.record({ drop: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ damage: fc.nat(), bytes: fc.array(fc.constantFrom(0xff, 0xfe, 0xc0, 0xc3, 0xe2, 0x82, 0xed, 0xa0, 0xf4, 0x90, 0x00, 0x22, 0x5c), { minLength: 1, maxLength: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ truncate: fc.nat() }) },
);

/** The body text with its `field`-th top-level value replaced by raw JSON, or a key added; text otherwise unchanged. */
function edited(body: Record<string, unknown>, m: Mutation): Record<string, unknown> | string {
  const keys = Object.keys(body);
  if ("drop" in m) return keys.length === 0 ? body : Object.fromEntries(Object.entries(body).filter(([k]) => k !== keys[m.drop % keys.length]));
  const mark = "\u0000MARK\u0000";
  const copy = { ...body };
  if ("field" in m) {
    if (keys.length === 0) return body;
    copy[keys[m.field % keys.length]!] = mark;
    return JSON.stringify(copy).replace(JSON.stringify(mark), expand(m.json));
  }
  // added last in the text (a duplicate of a known key then wins, as JSON.parse reads it)
  const text = JSON.stringify(copy);
  return `${text.slice(0, -1)}${keys.length > 0 ? "," : ""}${JSON.stringify((m as { add: string }).add)}:${expand((m as { json: string }).json)}}`;
}

/** Applies the mutations in order: structure first while the body is still an object, then bytes. */
function mutatedBody(body: Record<string, unknown>, ms: Mutation[]): Buffer {
  let value: Record<string, unknown> | string = body;
  let bytes: Buffer | null = null;
  for (const m of ms) {
    if ("damage" in m || "truncate" in m) {
      bytes ??= Buffer.from(typeof value === "string" ? value : JSON.stringify(value));
      bytes = "truncate" in m ? bytes.subarray(0, m.truncate % (bytes.length + 1)) : Buffer.concat([bytes.subarray(0, m.damage % (bytes.length + 1)), Buffer.from(m.bytes), bytes.subarray(m.damage % (bytes.length + 1))]);
    } else if (bytes === null) {
      const object = typeof value === "object" ? value : asObject(Buffer.from(value));
      // a body an earlier mutation made other than an object stays as it is
      if (object && Object.getPrototypeOf(object) === Object.prototype) value = edited(object, m);
    }
  }
  return bytes ?? Buffer.from(typeof value === "string" ? value : JSON.stringify(value));
}

interface Request {
  route: string;
  method: string;
  contentType: string | undefined;
  /** sent chunked, without a content-length */
  chunked: boolean;
  body: Buffer;
}

const anyBody = fc.oneof(
  fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
  fc.string({ unit: "binary", maxLength: 64 }).map((s) => Buffer.from(s)),
  oddJson.map((j) => Buffer.from(expand(j))),
);
const generation = (route: keyof typeof validBody, minLength: number) => fc.tuple(validBody[route], fc.array(mutation, { minLength, maxLength: 3 })).map(([b, ms]) => ({ route, body: mutatedBody(b, ms) }));
const request: fc.Arbitrary<Request> = fc.record({
  // mostly a body made for its route, valid or mutated; sometimes any body on any /v1 route
  target: fc.oneof(
    { weight: 2, arbitrary: generation("/v1/completions", 0) },
    { weight: 4, arbitrary: generation("/v1/completions", 1) },
    { weight: 2, arbitrary: generation("/v1/chat/completions", 0) },
    { weight: 4, arbitrary: generation("/v1/chat/completions", 1) },
    { weight: 3, arbitrary: fc.record({ route: fc.constantFrom(...ROUTES), body: fc.oneof(anyBody, generation("/v1/completions", 0).map((g) => g.body), generation("/v1/chat/completions", 1).map((g) => g.body)) }) },
  ),
  method: fc.oneof({ weight: 12, arbitrary: fc.constant("POST") }, { weight: 1, arbitrary: fc.constantFrom("GET", "PUT", "DELETE", "PATCH") }),
  contentType: fc.oneof({ weight: 8, arbitrary: fc.constant("application/json") }, { weight: 1, arbitrary: fc.constantFrom(...CONTENT_TYPES) }),
  chunked: fc.boolean(),
}).map(({ target, ...r }) => ({ ...r, ...target }));

/** One request on the keep-alive agent; rejects on a reset or broken connection. */
function send(base: URL, agent: http.Agent, r: Request): Promise<{ status: number; type: string; text: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    if (r.contentType !== undefined) headers["content-type"] = r.contentType;
    // named, since Node's client frames a GET's or DELETE's body only when told how
    headers[r.chunked ? "transfer-encoding" : "content-length"] = r.chunked ? "chunked" : String(r.body.length);
    const req = http.request({ host: base.hostname, port: base.port, path: r.route, method: r.method, agent, headers }, (res) => {
      const parts: Buffer[] = [];
      res.on("data", (d: Buffer) => parts.push(d));
      res.on("end", () => resolve({ status: res.statusCode!, type: String(res.headers["content-type"] ?? ""), text: Buffer.concat(parts).toString() }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(r.body);
  });
}

/** The parsed body when it is a JSON object, for the test's expectations. */
function asObject(body: Buffer): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(body.toString());
    return v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

function assertAnswer(r: Request, res: { status: number; type: string; text: string }): void {
  assert.ok(STATUSES.includes(res.status), `status ${res.status}: ${res.text.slice(0, 300)}`);
  if (res.status !== 200) {
    const e = (JSON.parse(res.text) as { error?: { message?: unknown; type?: unknown } }).error;
    assert.ok(e && typeof e.message === "string" && e.message.length > 0 && typeof e.type === "string", `an error in OpenAI's shape: ${res.text.slice(0, 300)}`);
  }
  const route = r.route in KNOWN && r.method === "POST" && /^application\/json\s*(;|$)/i.test(r.contentType ?? "");
  const body = asObject(r.body);
  if (route && body && r.body.length <= MAX_BODY) {
    const unknown = Object.keys(body).filter((k) => !KNOWN[r.route]!.has(k));
    if (unknown.length > 0) assert.equal(res.status, 400, `unknown parameters ${JSON.stringify(unknown)} are refused: ${res.text.slice(0, 300)}`);
  }
  if (res.status !== 200 || !(r.route in KNOWN)) return;
  if (res.type.startsWith("text/event-stream")) {
    const events = res.text.split("\n\n").filter(Boolean).map((e) => e.replace(/^data: ?/, ""));
    assert.equal(events.at(-1), "[DONE]", "a stream ends with [DONE]");
    for (const e of events.slice(0, -1)) {
      const chunk = JSON.parse(e) as { error?: { code?: unknown } };
      assert.ok(chunk.error === undefined || chunk.error.code !== 500, `no internal error: ${e}`);
    }
    return;
  }
  const c = JSON.parse(res.text) as { choices: Array<{ text?: string; message?: { content: string }; finish_reason: string }>; usage: { completion_tokens: number } };
  assert.equal(typeof (c.choices[0]!.text ?? c.choices[0]!.message?.content), "string");
  assert.ok(["stop", "length"].includes(c.choices[0]!.finish_reason));
  const max = body?.max_tokens ?? body?.max_completion_tokens;
  if (typeof max === "number") assert.ok(c.usage.completion_tokens <= max, "no more tokens than asked for");
}

test("fuzz: arbitrary bodies, content types and /v1 routes get a defined status and a clean error; the server serves on", async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-http-fuzz-"));
  initModel({ arch: "Qwen3MoeForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed: 2 });
  const engine = Engine.load(dir, { dtype: "f32", threads: 1, contextLength: 32 });
  const logs: string[] = [];
  const app = createApp({ engine: () => engine, modelName: "tiny", metrics: new ServerMetrics(() => engine.scheduler.depth, () => engine.expertUsage()), maxBodyBytes: MAX_BODY, log: (l) => logs.push(l) });
  const server = createAdaptorServer({ fetch: app.fetch }) as http.Server;
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const base = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const normal: Request = { route: "/v1/completions", method: "POST", contentType: "application/json", chunked: false, body: Buffer.from(JSON.stringify({ prompt: "hello", max_tokens: 5, temperature: 0 })) };
  const greedy = async () => {
    const res = await send(base, agent, normal);
    assert.equal(res.status, 200, res.text);
    return (JSON.parse(res.text) as { choices: Array<{ text: string }> }).choices[0]!.text;
  };
  try {
    const before = await greedy();
    const t0 = performance.now();
    const seen = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        const res = await send(base, agent, r);
        const kind = `${res.status}${res.type.startsWith("text/event-stream") ? " streamed" : ""}`;
        seen.set(kind, (seen.get(kind) ?? 0) + 1);
        assertAnswer(r, res);
        assert.deepEqual(logs, [], "no unexpected error");
      }),
      fuzzParams(3000),
    );
    const cases = [...seen.values()].reduce((a, b) => a + b, 0);
    t.diagnostic(`${cases} requests in ${Math.round(performance.now() - t0)} ms: ${[...seen].sort().map(([k, n]) => `${k} × ${n}`).join(", ")}`);
    // the generator reaches every answer it is meant to (a fuzz test that never gets past validation tests little)
    if (cases >= 1000) for (const kind of ["200", "200 streamed", "400", "404", "413", "415"]) assert.ok(seen.has(kind), `some requests get ${kind}`);
    assert.equal(await greedy(), before, "the same greedy completion as before the run");
    assert.deepEqual(engine.scheduler.depth, { waiting: 0, active: 0 });
  } finally {
    agent.destroy();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    engine.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

// found by the fuzz test: keys that Object.prototype has were taken for parameters refused by name,
// and dropped without a word ({"prompt": "", "max_tokens": 0, "hasOwnProperty": 1e400} was served)
test("parameters named like Object.prototype's members are refused as unrecognized, not ignored", () => {
  for (const key of ["hasOwnProperty", "constructor", "toString", "valueOf", "__proto__", "isPrototypeOf"]) {
    for (const [parse, body] of [[parseCompletion, `{"prompt":"","max_tokens":0,"${key}":1e400}`], [parseChat, `{"messages":[{"role":"user","content":"x"}],"${key}":{}}`]] as const) {
      assert.throws(() => parse(JSON.parse(body)), (e) => e instanceof ApiError && e.status === 400 && e.message === `unrecognized parameter: ${key}`, body);
    }
  }
});
