import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { AddressInfo } from "node:net";
import { Engine } from "../runtime/engine.js";
import { initModel } from "../model/init-model.js";
import { createApiHandler } from "./http.js";
import { ServerMetrics } from "./metrics.js";

test("the OpenAI-compatible API: completions, chat, streaming, models, health, metrics and clear errors", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-http-"));
  initModel({ arch: "Qwen3MoeForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed: 2 });
  const engine = Engine.load(dir, { dtype: "f32", threads: 1 });
  const metrics = new ServerMetrics(() => engine.scheduler.depth, () => engine.expertUsage());
  const server = http.createServer(createApiHandler(engine, { modelName: "tiny", metrics }));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const post = (route: string, body: unknown) => fetch(base + route, { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body) });
  try {
    const c = await (await post("/v1/completions", { prompt: "hello", max_tokens: 6, temperature: 0 })).json();
    assert.equal(c.object, "text_completion");
    assert.equal(c.model, "tiny");
    assert.equal(c.usage.completion_tokens, c.choices[0].finish_reason === "length" ? 6 : c.usage.completion_tokens);
    assert.equal(c.usage.prompt_tokens, 1 + 5);
    assert.deepEqual(Object.keys(c.usage.latency_ms_per_token), ["bs_compute_ms", "transfer_ms", "device_compute_ms", "waiting_ms"]);
    const direct = await engine.generate(engine.tokenizer.encode("hello"), { temperature: 0, maxTokens: 6 });
    assert.equal(c.choices[0].text, direct.text);

    const stream = await (await post("/v1/completions", { prompt: "hello", max_tokens: 6, temperature: 0, stream: true })).text();
    const events = stream.split("\n\n").filter(Boolean).map((e) => e.replace(/^data: /, ""));
    assert.equal(events.at(-1), "[DONE]");
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    assert.equal(chunks.map((k) => k.choices[0].text).join(""), direct.text);
    assert.ok(chunks.at(-1).usage.total_tokens > 0);

    // stop sequences: the text ends before the first one, streamed or not, and never shows any of it
    const long = await engine.generate(engine.tokenizer.encode("hello"), { temperature: 0, maxTokens: 24 });
    const stopAt = Math.max(1, Math.floor(long.text.length / 2));
    const stop = long.text.slice(stopAt, stopAt + 2);
    const cut = long.text.slice(0, long.text.indexOf(stop));
    const stopped = await (await post("/v1/completions", { prompt: "hello", max_tokens: 24, temperature: 0, stop })).json();
    assert.equal(stopped.choices[0].text, cut);
    assert.equal(stopped.choices[0].finish_reason, "stop");
    const stoppedStream = await (await post("/v1/completions", { prompt: "hello", max_tokens: 24, temperature: 0, stop: [stop], stream: true })).text();
    const parts = stoppedStream.split("\n\n").filter((e) => e && !e.endsWith("[DONE]")).map((e) => JSON.parse(e.replace(/^data: /, "")).choices[0]);
    assert.equal(parts.map((p) => p.text).join(""), cut);
    assert.equal(parts.at(-1).finish_reason, "stop");

    const chat = await (await post("/v1/chat/completions", { messages: [{ role: "user", content: "hi" }], max_tokens: 4, temperature: 0 })).json();
    assert.equal(chat.object, "chat.completion");
    assert.equal(chat.choices[0].message.role, "assistant");
    const chatStream = await (await post("/v1/chat/completions", { messages: [{ role: "user", content: "hi" }], max_tokens: 4, temperature: 0, stream: true })).text();
    const deltas = chatStream.split("\n\n").filter((e) => e && !e.endsWith("[DONE]")).map((e) => JSON.parse(e.replace(/^data: /, "")).choices[0].delta);
    assert.equal(deltas[0].role, "assistant");
    assert.equal(deltas.map((d) => d.content ?? "").join(""), chat.choices[0].message.content);

    // concurrent requests share steps and still get their own answers
    const prompts = ["one", "two two", "three three three", "four"];
    const together = await Promise.all(prompts.map(async (p) => (await (await post("/v1/completions", { prompt: p, max_tokens: 5, temperature: 0 })).json()).choices[0].text));
    for (let i = 0; i < prompts.length; i++) {
      assert.equal(together[i], (await engine.generate(engine.tokenizer.encode(prompts[i]!), { temperature: 0, maxTokens: 5 })).text, prompts[i]);
    }

    // a client that walks away mid-stream frees its place; the server goes on serving
    const gone = new AbortController();
    const streaming = await fetch(base + "/v1/completions", { method: "POST", body: JSON.stringify({ prompt: "walk away", max_tokens: 400, temperature: 0, stream: true }), signal: gone.signal });
    await streaming.body!.getReader().read();
    gone.abort();
    const t0 = performance.now();
    while (engine.scheduler.depth.active > 0) {
      assert.ok(performance.now() - t0 < 10_000, "the abandoned request left the batch");
      await new Promise((r) => setTimeout(r, 10));
    }

    assert.deepEqual((await (await fetch(base + "/v1/models")).json()).data[0].id, "tiny");
    assert.equal((await (await fetch(base + "/health")).json()).status, "ok");
    const m = await (await fetch(base + "/metrics")).text();
    assert.match(m, /distmoe_generated_tokens_total \d+/);
    assert.match(m, /distmoe_expert_calls_total \d+/);

    const bad: Array<[string, unknown, RegExp]> = [
      ["/v1/completions", "{not json", /not valid JSON/],
      ["/v1/completions", [1, 2], /must be a JSON object/],
      ["/v1/completions", { prompt: 3 }, /prompt must be a string/],
      ["/v1/completions", { prompt: "x", max_tokens: -1 }, /max_tokens must be an integer/],
      ["/v1/completions", { prompt: "x", temperature: "hot" }, /temperature must be a number/],
      ["/v1/completions", { prompt: "x", stop: ["a", "b", "c", "d", "e"] }, /stop must be a string or a list of up to 4 non-empty strings/],
      ["/v1/completions", { prompt: "x", stop: [""] }, /stop must be/],
      ["/v1/chat/completions", { messages: [] }, /messages must be a non-empty list/],
      ["/v1/chat/completions", { messages: [{ role: "user" }] }, /messages\[0\] needs a string role and a string content/],
    ];
    for (const [route, body, msg] of bad) {
      const r = await post(route, body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match((await r.json()).error.message, msg);
    }
    assert.equal((await fetch(base + "/v1/nothing")).status, 404);
    const after = await (await post("/v1/completions", { prompt: "hello", max_tokens: 6, temperature: 0 })).json();
    assert.equal(after.choices[0].text, direct.text, "still serving after bad requests");
  } finally {
    server.close();
    engine.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
