// The HTTP API against a real socket: OpenAI-compatible answers, and every request the issue found
// that broke the base station, each followed by a normal completion that must still be served.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Server } from "node:http";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import { Engine, type EngineOptions } from "../runtime/engine.js";
import { initModel } from "../model/init-model.js";
import { sharedPath } from "../testing/shared.js";
import { createApp, type AppOptions } from "./app.js";
import { ServerMetrics } from "./metrics.js";
import { until } from "../testing/until.js";

interface Served {
  base: string;
  engine: Engine;
  post(route: string, body: unknown, headers?: Record<string, string>): Promise<Response>;
  /** A greedy completion that must be what the engine gives alone: the server still serves. */
  stillServes(): Promise<void>;
  logs: string[];
  close(): Promise<void>;
}

async function serve(dir: string, engineOpts: EngineOptions = {}, appOpts: Partial<AppOptions> = {}): Promise<Served> {
  const engine = Engine.load(dir, { dtype: "f32", threads: 1, ...engineOpts });
  const metrics = new ServerMetrics(() => engine.scheduler.depth, () => engine.expertUsage());
  const logs: string[] = [];
  const app = createApp({ engine: () => engine, modelName: "tiny", metrics, log: (l) => logs.push(l), ...appOpts });
  const server = createAdaptorServer({ fetch: app.fetch }) as Server;
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const post = (route: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(base + route, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: typeof body === "string" ? body : JSON.stringify(body) });
  const want = (await engine.generate(engine.tokenizer.encode("hello"), { temperature: 0, maxTokens: 5 })).text;
  return {
    base,
    engine,
    post,
    logs,
    stillServes: async () => {
      const r = await post("/v1/completions", { prompt: "hello", max_tokens: 5, temperature: 0 }, appOpts.apiKeys ? { authorization: `Bearer ${appOpts.apiKeys[0]}` } : {});
      assert.equal(r.status, 200, "still serving");
      assert.equal((await r.json()).choices[0].text, want, "still serving the same answer");
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      engine.close();
    },
  };
}

function tinyModel(seed = 2): { dir: string; [Symbol.dispose](): void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-http-"));
  initModel({ arch: "Qwen3MoeForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed });
  return { dir, [Symbol.dispose]: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The server-sent events of a streamed answer, [DONE] last. */
async function events(r: Response): Promise<Array<Record<string, any> | "[DONE]">> {
  assert.equal(r.status, 200);
  assert.match(r.headers.get("content-type") ?? "", /text\/event-stream/);
  return (await r.text()).split("\n\n").filter(Boolean).map((e) => {
    const data = e.replace(/^data: ?/, "");
    return data === "[DONE]" ? data : JSON.parse(data);
  });
}
const chunks = (all: Array<Record<string, any> | "[DONE]">) => all.filter((e): e is Record<string, any> => e !== "[DONE]");

test("the OpenAI-compatible API: completions, chat, streaming, models, health, metrics", async () => {
  using m = tinyModel();
  const s = await serve(m.dir);
  const { post, engine, base } = s;
  try {
    const c = await (await post("/v1/completions", { prompt: "hello", max_tokens: 6, temperature: 0 })).json();
    assert.equal(c.object, "text_completion");
    assert.equal(c.model, "tiny");
    assert.equal(c.usage.prompt_tokens, 1 + 5);
    assert.deepEqual(Object.keys(c.usage.latency_ms_per_token), ["bs_compute_ms", "transfer_ms", "device_compute_ms", "waiting_ms"]);
    const direct = await engine.generate(engine.tokenizer.encode("hello"), { temperature: 0, maxTokens: 6 });
    assert.equal(c.choices[0].text, direct.text);

    const stream = await events(await post("/v1/completions", { prompt: "hello", max_tokens: 6, temperature: 0, stream: true }));
    assert.equal(stream.at(-1), "[DONE]");
    assert.equal(chunks(stream).map((k) => k.choices[0].text).join(""), direct.text);
    assert.ok(chunks(stream).every((k) => !("usage" in k)), "no usage without stream_options.include_usage");

    // stream_options.include_usage as OpenAI defines it: usage null on every chunk, then one chunk with the usage and no choices
    const withUsage = chunks(await events(await post("/v1/completions", { prompt: "hello", max_tokens: 6, temperature: 0, stream: true, stream_options: { include_usage: true } })));
    assert.ok(withUsage.slice(0, -1).every((k) => k.usage === null && k.choices.length === 1));
    assert.deepEqual(withUsage.at(-1)!.choices, []);
    assert.equal(withUsage.at(-1)!.usage.completion_tokens, direct.tokens.length);

    // stop sequences: the text ends before the first one, streamed or not, and never shows any of it
    const long = await engine.generate(engine.tokenizer.encode("hello"), { temperature: 0, maxTokens: 24 });
    const stopAt = Math.max(1, Math.floor(long.text.length / 2));
    const stop = long.text.slice(stopAt, stopAt + 2);
    const cut = long.text.slice(0, long.text.indexOf(stop));
    const stopped = await (await post("/v1/completions", { prompt: "hello", max_tokens: 24, temperature: 0, stop })).json();
    assert.equal(stopped.choices[0].text, cut);
    assert.equal(stopped.choices[0].finish_reason, "stop");
    const parts = chunks(await events(await post("/v1/completions", { prompt: "hello", max_tokens: 24, temperature: 0, stop: [stop], stream: true }))).map((k) => k.choices[0]);
    assert.equal(parts.map((p) => p.text).join(""), cut);
    assert.equal(parts.at(-1).finish_reason, "stop");

    const chat = await (await post("/v1/chat/completions", { model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 4, temperature: 0 })).json();
    assert.equal(chat.object, "chat.completion");
    assert.equal(chat.choices[0].message.role, "assistant");
    const parted = await (await post("/v1/chat/completions", { messages: [{ role: "user", content: [{ type: "text", text: "h" }, { type: "text", text: "i" }] }], max_tokens: 4, temperature: 0 })).json();
    assert.equal(parted.choices[0].message.content, chat.choices[0].message.content, "content parts are joined");
    const deltas = chunks(await events(await post("/v1/chat/completions", { messages: [{ role: "user", content: "hi" }], max_tokens: 4, temperature: 0, stream: true }))).map((k) => k.choices[0].delta);
    assert.equal(deltas[0].role, "assistant");
    assert.equal(deltas.map((d) => d.content ?? "").join(""), chat.choices[0].message.content);

    // concurrent requests share steps and still get their own answers
    const prompts = ["one", "two two", "three three three", "four"];
    const together = await Promise.all(prompts.map(async (p) => (await (await post("/v1/completions", { prompt: p, max_tokens: 5, temperature: 0 })).json()).choices[0].text));
    for (let i = 0; i < prompts.length; i++) {
      assert.equal(together[i], (await engine.generate(engine.tokenizer.encode(prompts[i]!), { temperature: 0, maxTokens: 5 })).text, prompts[i]);
    }

    assert.deepEqual((await (await fetch(base + "/v1/models")).json()).data[0].id, "tiny");
    assert.equal((await (await fetch(base + "/v1/models/tiny")).json()).id, "tiny");
    const noModel = await fetch(base + "/v1/models/other");
    assert.equal(noModel.status, 404);
    const h = await fetch(base + "/health");
    assert.equal(h.status, 200);
    assert.equal((await h.json()).status, "ok");
    const metrics = await (await fetch(base + "/metrics")).text();
    assert.match(metrics, /distmoe_generated_tokens_total \d+/);
    assert.match(metrics, /distmoe_expert_calls_total \d+/);
    assert.match(c.id, /^cmpl-/);
  } finally {
    await s.close();
  }
});

test("zero-token generations of every cause finish cleanly with the right finish_reason", async () => {
  using m = tinyModel();
  // EOS first: the model's first greedy token after "hello" made its end-of-sequence token
  const probe = Engine.load(m.dir, { dtype: "f32", threads: 1 });
  const first = (await probe.generate(probe.tokenizer.encode("hello"), { temperature: 0, maxTokens: 1 })).tokens[0]!;
  const firstText = (await probe.generate(probe.tokenizer.encode("hello"), { temperature: 0, maxTokens: 3 })).text;
  probe.close();
  const s = await serve(m.dir);
  try {
    for (const stream of [false, true]) {
      const zero = await s.post("/v1/completions", { prompt: "hello", max_tokens: 0, stream });
      const got = stream ? chunks(await events(zero)).at(-1)!.choices[0] : (await zero.json()).choices[0];
      assert.equal(got.finish_reason, "length", `max_tokens 0, stream ${stream}`);
      assert.equal(got.text, "");
      // a stop string that the first token's text starts with
      const stopped = await s.post("/v1/completions", { prompt: "hello", max_tokens: 5, temperature: 0, stop: firstText.slice(0, 1), stream });
      const all = stream ? chunks(await events(stopped)).map((k) => k.choices[0]) : [(await stopped.json()).choices[0]];
      assert.equal(all.map((c) => c.text).join(""), "", `stop at once, stream ${stream}`);
      assert.equal(all.at(-1).finish_reason, "stop");
      await s.stillServes();
    }
  } finally {
    await s.close();
  }
  const config = path.join(m.dir, "generation_config.json");
  writeFileSync(config, JSON.stringify({ ...JSON.parse(readFileSync(config, "utf8")), eos_token_id: first }));
  const eos = await serve(m.dir);
  try {
    for (const stream of [false, true]) {
      const r = await eos.post("/v1/completions", { prompt: "hello", max_tokens: 5, temperature: 0, stream });
      const choice = stream ? chunks(await events(r)).at(-1)!.choices[0] : (await r.json()).choices[0];
      assert.equal(choice.finish_reason, "stop", `EOS first, stream ${stream}`);
      const chat = await eos.post("/v1/chat/completions", { messages: [{ role: "user", content: "hi" }], max_tokens: 0, stream });
      assert.equal(chat.status, 200);
      if (stream) await events(chat);
    }
    await eos.stillServes();
  } finally {
    await eos.close();
  }
});

test("clients that give up, before their first token or while queued, take nobody else's request with them", async () => {
  using m = tinyModel();
  // one request at a time, so the others queue
  const s = await serve(m.dir, { maxBatch: 1 });
  try {
    const want = (await s.engine.generate(s.engine.tokenizer.encode("the patient one"), { temperature: 0, maxTokens: 40 })).text;
    const patient = s.post("/v1/completions", { prompt: "the patient one", max_tokens: 40, temperature: 0, stream: true });
    const impatient = Array.from({ length: 4 }, async (_, i) => {
      const gone = new AbortController();
      const r = await fetch(s.base + "/v1/completions", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: `impatient ${i}`, max_tokens: 40, stream: true }), signal: gone.signal });
      gone.abort(); // right after the headers: queued behind the patient one, before any token
      await r.body?.cancel().catch(() => undefined);
    });
    await Promise.all(impatient);
    assert.equal(chunks(await events(await patient)).map((k) => k.choices[0].text).join(""), want);
    const t0 = performance.now();
    while (s.engine.scheduler.depth.waiting + s.engine.scheduler.depth.active > 0) {
      assert.ok(performance.now() - t0 < 10_000, "the abandoned requests left the queue");
      await new Promise((r) => setTimeout(r, 10));
    }
    // and one that walks away mid-stream frees its place
    const gone = new AbortController();
    const streaming = await fetch(s.base + "/v1/completions", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "walk away", max_tokens: 60, stream: true }), signal: gone.signal });
    await streaming.body!.getReader().read();
    gone.abort();
    await s.stillServes();
  } finally {
    await s.close();
  }
});

test("refused requests get a clear status: validation, unsupported parameters, model, context, size, type, queue, timeout", async () => {
  using m = tinyModel();
  const s = await serve(m.dir, { contextLength: 32, maxBatch: 1, maxQueue: 1 }, { maxBodyBytes: 1 << 16, requestTimeoutMs: 60_000 });
  try {
    const bad: Array<[string, unknown, number, RegExp]> = [
      ["/v1/completions", "{not json", 400, /not valid JSON/],
      ["/v1/completions", [1, 2], 400, /must be a JSON object/],
      ["/v1/completions", { prompt: 3 }, 400, /prompt: must be a string/],
      ["/v1/completions", { prompt: "x", max_tokens: -1 }, 400, /max_tokens: must be ≥ 0/],
      ["/v1/completions", { prompt: "x", max_tokens: 1.5 }, 400, /max_tokens: must be an integer/],
      ["/v1/completions", { prompt: "x", temperature: "hot" }, 400, /temperature: must be a number/],
      ["/v1/completions", { prompt: "x", stop: ["a", "b", "c", "d", "e"] }, 400, /stop: must be a list of up to 4 strings/],
      ["/v1/completions", { prompt: "x", stop: [""] }, 400, /stop\[0\]: must be 1..256 characters/],
      ["/v1/completions", { prompt: "x", n: 2 }, 400, /n: only n = 1/],
      ["/v1/completions", { prompt: "x", stream_options: { include_usage: true } }, 400, /stream_options is only allowed with stream: true/],
      ["/v1/completions", { prompt: "x", frobnicate: 1 }, 400, /unrecognized parameter: frobnicate/],
      ["/v1/chat/completions", { messages: [] }, 400, /messages: must be a non-empty list/],
      ["/v1/chat/completions", { messages: [{ role: "user" }] }, 400, /messages\[0\]\.content/],
      ["/v1/chat/completions", { messages: [{ role: "wizard", content: "x" }] }, 400, /messages\[0\]\.role/],
      ["/v1/completions", { prompt: "x", model: "gpt-4" }, 404, /the model 'gpt-4' does not exist/],
      ["/v1/completions", { prompt: "word ".repeat(40) }, 400, /the prompt has \d+ tokens; this model's context holds 32/],
      // refused by its length before it is encoded (a long prompt would hold the server while it is)
      ["/v1/completions", { prompt: "x".repeat(5000) }, 400, /the prompt has 5000 characters: more than this model's context of 32 tokens can hold/],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "x".repeat(5000) }] }, 400, /the prompt has 5000 characters/],
      ["/v1/chat/completions", { messages: Array.from({ length: 40 }, () => ({ role: "user", content: "" })) }, 400, /40 messages: more than this model's context of 32 tokens can hold/],
      ["/v1/completions", { prompt: "x", max_tokens: 100 }, 400, /the context holds 32 tokens; the prompt has 2 and max_tokens asks for 100 more \(at most 30\)/],
    ];
    for (const [name, value] of [["logprobs", 2], ["presence_penalty", 0.5], ["frequency_penalty", 1], ["logit_bias", { "5": 10 }], ["response_format", { type: "json_object" }], ["tools", [{ type: "function" }]], ["echo", true], ["best_of", 3], ["suffix", "end"]] as const) {
      bad.push(["/v1/completions", { prompt: "x", [name]: value }, 400, new RegExp(`not supported by this server: ${name}`)]);
    }
    for (const [route, body, status, msg] of bad) {
      const r = await s.post(route, body);
      assert.equal(r.status, status, JSON.stringify(body));
      const e = (await r.json()).error;
      assert.match(e.message, msg);
      assert.ok(e.request_id && r.headers.get("x-request-id") === e.request_id, "the error names its request id");
    }
    // their no-op values are accepted
    assert.equal((await s.post("/v1/completions", { prompt: "x", max_tokens: 2, logprobs: null, presence_penalty: 0, frequency_penalty: 0, logit_bias: {}, echo: false, best_of: 1 })).status, 200);

    // a body over the limit is 413, read to the end (not a reset connection)
    const big = await s.post("/v1/completions", JSON.stringify({ prompt: "x".repeat(50 << 20) }));
    assert.equal(big.status, 413);
    assert.match((await big.json()).error.message, /exceeds 65536 bytes/);
    // JSON only: a text/plain POST (what a browser sends cross-origin without a preflight) is refused
    for (const type of ["text/plain", "application/x-www-form-urlencoded"]) {
      const r = await fetch(s.base + "/v1/completions", { method: "POST", headers: { "content-type": type }, body: JSON.stringify({ prompt: "x" }) });
      assert.equal(r.status, 415, type);
    }
    assert.equal((await fetch(s.base + "/v1/completions", { method: "POST", body: "{}" })).status, 415, "no content type");
    assert.equal((await fetch(s.base + "/v1/nothing")).status, 404);
    // CORS is off by default
    const pre = await fetch(s.base + "/v1/completions", { method: "OPTIONS", headers: { origin: "https://evil.example", "access-control-request-method": "POST" } });
    assert.equal(pre.headers.get("access-control-allow-origin"), null);

    // the queue holds one: with one in the batch (its step held back) and one waiting, the next is 429 with Retry-After
    const forward = s.engine.model.forward.bind(s.engine.model);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    s.engine.model.forward = async (...args) => (await held, forward(...args));
    const running = s.post("/v1/completions", { prompt: "x", max_tokens: 8, temperature: 0 });
    await until(() => s.engine.scheduler.depth.active === 1, "the first request in the batch");
    const waiting = s.post("/v1/completions", { prompt: "y", max_tokens: 4, temperature: 0 });
    await until(() => s.engine.scheduler.depth.waiting === 1, "the second request in the queue");
    const full = await s.post("/v1/completions", { prompt: "z", max_tokens: 4 });
    assert.equal(full.status, 429);
    assert.ok(Number(full.headers.get("retry-after")) > 0);
    s.engine.model.forward = forward;
    release();
    assert.equal((await running).status, 200);
    assert.equal((await waiting).status, 200);
    await s.stillServes();
  } finally {
    await s.close();
  }
  // a request past the server's time limit ends with 504 (streamed: an error event), and frees its place
  const slow = await serve(m.dir, {}, { requestTimeoutMs: 1 });
  try {
    const r = await slow.post("/v1/completions", { prompt: "x", max_tokens: 400 });
    assert.equal(r.status, 504);
    assert.match((await r.json()).error.message, /longer than the server's limit/);
    const streamed = chunks(await events(await slow.post("/v1/completions", { prompt: "x", max_tokens: 400, stream: true })));
    assert.match(streamed.at(-1)!.error.message, /longer than the server's limit/);
  } finally {
    await slow.close();
  }
});

test("API keys, CORS when asked, and /health states", async () => {
  using m = tinyModel();
  let devices = { state: "ok" as "ok" | "degraded" | "unavailable", reasons: [] as string[] };
  const s = await serve(m.dir, {}, { apiKeys: ["key-one-123", "key-two-456"], corsOrigins: ["https://app.example"], devices: () => devices });
  try {
    const none = await s.post("/v1/completions", { prompt: "x", max_tokens: 1 });
    assert.equal(none.status, 401);
    assert.match((await none.json()).error.message, /API key is required/);
    assert.equal((await s.post("/v1/completions", { prompt: "x", max_tokens: 1 }, { authorization: "Bearer wrong-key-000" })).status, 401);
    // any other Authorization header is 401 too (not bearerAuth's 400), and every refusal names its request id
    for (const authorization of ["Basic a2V5LW9uZS0xMjM=", "Bearer", "Bearer key one", "key-one-123", "Bearer wrong-key-000"]) {
      const r = await s.post("/v1/completions", { prompt: "x", max_tokens: 1 }, { authorization });
      assert.equal(r.status, 401, authorization);
      const e = (await r.json()).error;
      assert.equal(e.type, "authentication_error");
      assert.ok(e.request_id && r.headers.get("x-request-id") === e.request_id, `the refusal of '${authorization}' names its request id`);
    }
    assert.equal((await fetch(s.base + "/v1/models")).status, 401);
    assert.equal((await s.post("/v1/completions", { prompt: "x", max_tokens: 1 }, { authorization: "Bearer key-two-456" })).status, 200);
    assert.equal((await fetch(s.base + "/health")).status, 200, "health needs no key");
    const pre = await fetch(s.base + "/v1/completions", { method: "OPTIONS", headers: { origin: "https://app.example", "access-control-request-method": "POST" } });
    assert.equal(pre.headers.get("access-control-allow-origin"), "https://app.example");

    devices = { state: "degraded", reasons: ["local-1 is quarantined"] };
    let h = await fetch(s.base + "/health");
    assert.equal(h.status, 200);
    assert.deepEqual(await h.json().then((j) => [j.status, j.reasons]), ["degraded", ["local-1 is quarantined"]]);
    await s.stillServes();
    devices = { state: "unavailable", reasons: ["no live device holds 3 experts"] };
    h = await fetch(s.base + "/health");
    assert.equal(h.status, 503);
    assert.equal((await h.json()).status, "unavailable");
    const refused = await s.post("/v1/completions", { prompt: "x", max_tokens: 1 }, { authorization: "Bearer key-one-123" });
    assert.equal(refused.status, 503);
    assert.match((await refused.json()).error.message, /cannot serve now: no live device holds 3 experts/);
    assert.ok(Number(refused.headers.get("retry-after")) > 0);
    devices = { state: "ok", reasons: [] };
    await s.stillServes();
  } finally {
    await s.close();
  }
});

test("an unexpected error fails its own request (500 with a request id, logged once) and never the server", async () => {
  using m = tinyModel();
  const s = await serve(m.dir);
  try {
    const forward = s.engine.model.forward.bind(s.engine.model);
    s.engine.model.forward = async () => {
      throw new Error("a kernel blew up");
    };
    for (const stream of [false, true]) {
      const r = await s.post("/v1/completions", { prompt: "x", max_tokens: 3, stream });
      if (!stream) {
        assert.equal(r.status, 500);
        const e = (await r.json()).error;
        assert.match(e.message, new RegExp(`internal error \\(request id ${e.request_id}\\)`));
        assert.doesNotMatch(e.message, /blew up|at /, "no stack or internals to the client");
      } else {
        const e = chunks(await events(r)).at(-1)!.error;
        assert.match(e.message, /internal error \(request id/);
        assert.equal(e.request_id, r.headers.get("x-request-id"), "a streamed error names its request id too");
      }
    }
    assert.equal(s.logs.filter((l) => l.includes("a kernel blew up")).length, 2, "each logged once, with its stack");
    s.engine.model.forward = forward;
    await s.stillServes();
  } finally {
    await s.close();
  }
});
