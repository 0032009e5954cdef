// Per-token routing through the completion API (distmoe.routing) on a real hub with two device
// processes: each token's experts per layer are the model's top-k for the row that produced it (as a
// single-process engine's routing trace has them), each named with a device that holds it; without the
// flag nothing is added; a bad flag is a 400; two concurrent requests each get their own tokens' routing; on one
// process a routed request keeps the one-job MoE layers for itself and the plain requests batched with it.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Server } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import { initModel } from "../model/init-model.js";
import { BASE_STATION, type TokenRouting } from "../moe/token-routing.js";
import type { RoutingRecord } from "../moe/trace.js";
import { Engine } from "../runtime/engine.js";
import { startLocalCluster } from "../runtime/local-cluster.js";
import { createApp } from "./app.js";
import { ROUTED_TOKENS_HELD_MAX } from "./completions.js";
import { ServerMetrics } from "./metrics.js";

/** Per generated token, per layer, expert → gate weight: the last row of each step of a greedy run on one process. */
type Expected = { tokens: number[]; layers: Array<Array<Map<number, number>>> };

async function expected(dir: string, prompts: readonly string[], maxTokens: number): Promise<Expected[]> {
  const records: RoutingRecord[] = [];
  const engine = Engine.load(dir, { dtype: "f32", threads: 1, trace: { record: (r) => records.push({ ...r, decision: { ...r.decision, offsets: r.decision.offsets.slice(), experts: r.decision.experts.slice(), weights: r.decision.weights.slice() } }) } });
  try {
    const out: Expected[] = [];
    for (const prompt of prompts) {
      records.length = 0;
      const r = await engine.generate(engine.tokenizer.encode(prompt, true), { temperature: 0, maxTokens });
      const steps = [...new Set(records.map((x) => x.step))].slice(0, r.tokens.length);
      const layers = steps.map((step) =>
        records.filter((x) => x.step === step).map(({ decision: d }) => {
          const row = d.rows - 1;
          return new Map(Array.from(d.experts.subarray(d.offsets[row]!, d.offsets[row + 1]!), (e, i) => [e, d.weights[d.offsets[row]! + i]!]));
        }),
      );
      out.push({ tokens: r.tokens, layers });
    }
    return out;
  } finally {
    engine.close();
  }
}

/** The routing of a streamed answer, its chunks' in order. */
async function streamedRouting(r: Response): Promise<{ routing: TokenRouting[]; chunks: Array<Record<string, any>> }> {
  assert.equal(r.status, 200);
  const chunks = (await r.text()).split("\n\n").filter(Boolean).map((e) => e.replace(/^data: ?/, "")).filter((d) => d !== "[DONE]").map((d) => JSON.parse(d) as Record<string, any>);
  return { routing: chunks.flatMap((c) => (c.distmoe?.routing ?? []) as TokenRouting[]), chunks };
}

test("distmoe.routing: per token, the top-k experts of each layer and the devices that hold them; off, a bad flag, two requests at once", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-routing-"));
  try {
    initModel({ arch: "MixtralForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed: 5 });
    const prompts = ["hello there", "the patient one waits"];
    const maxTokens = 10;
    const [one, two] = await expected(dir, prompts, maxTokens);
    assert.notDeepEqual(one!.layers, two!.layers, "the two prompts route differently (else attribution could not be told)");

    const cluster = await startLocalCluster({ model: dir, devices: 2, weightDType: "f32", wireDType: "f32", log: () => undefined });
    const engine = Engine.load(dir, { dtype: "f32", threads: 1, executor: cluster.hub.executor });
    const app = createApp({ engine: () => engine, modelName: "tiny", metrics: new ServerMetrics(() => engine.scheduler.depth, () => engine.expertUsage()) });
    const server = createAdaptorServer({ fetch: app.fetch }) as Server;
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const post = (route: string, body: unknown) => fetch(base + route, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    try {
      const placement = cluster.hub.placement()!;
      const check = (routing: readonly TokenRouting[], want: Expected, what: string) => {
        assert.deepEqual(routing.map((t) => t.token), want.tokens, `${what}: one entry per generated token`);
        routing.forEach((t, i) => {
          assert.deepEqual(t.layers.map((l) => l.layer), [0, 1], `${what}: token ${i} has every MoE layer`);
          for (const l of t.layers) {
            const top = want.layers[i]![l.layer]!;
            assert.deepEqual(l.experts.map((x) => x.expert).sort(), [...top.keys()].sort(), `${what}: token ${i} layer ${l.layer}: the model's top-k`);
            for (const x of l.experts) {
              assert.ok(Math.abs(x.weight - top.get(x.expert)!) < 2e-3, `${what}: token ${i} layer ${l.layer} expert ${x.expert}: weight ${x.weight} vs ${top.get(x.expert)}`);
              const holders = placement.hosts[l.layer]![x.expert]!.map((d) => placement.devices[d]);
              assert.ok(holders.includes(x.device!), `${what}: expert ${x.expert} of layer ${l.layer} computed by ${x.device}, held by ${holders.join(", ")}`);
            }
          }
        });
      };

      // JSON, completions and chat
      const body = await (await post("/v1/completions", { prompt: prompts[0], max_tokens: maxTokens, temperature: 0, distmoe: { routing: true } })).json();
      check(body.distmoe.routing, one!, "JSON");
      const chat = await post("/v1/chat/completions", { messages: [{ role: "user", content: "hi" }], max_tokens: 3, temperature: 0, stream: true, distmoe: { routing: true } });
      assert.equal((await streamedRouting(chat)).routing.length, 3, "chat: the routing of each of its 3 tokens");

      // off: nothing added
      const plain = await (await post("/v1/completions", { prompt: prompts[0], max_tokens: 3, temperature: 0 })).json();
      assert.equal("distmoe" in plain, false);
      const plainStream = await streamedRouting(await post("/v1/completions", { prompt: prompts[0], max_tokens: 3, temperature: 0, stream: true, distmoe: { routing: false } }));
      assert.ok(plainStream.chunks.length > 0 && plainStream.chunks.every((c) => !("distmoe" in c)));

      // bad flags: one clear 400 each
      for (const [flag, message] of [
        [{ routing: "yes" }, "distmoe.routing: must be true or false"],
        [{ routing: true, devices: true }, "unrecognized parameter: distmoe.devices"],
        [5, 'distmoe: must be an object such as {"routing": true}'],
      ] as const) {
        const r = await post("/v1/completions", { prompt: "hi", distmoe: flag });
        assert.equal(r.status, 400, JSON.stringify(flag));
        assert.equal((await r.json()).error.message, message);
      }

      // two requests at once, batched into shared steps: each gets its own tokens' routing
      const before = { ...engine.scheduler.decodeTime };
      const [a, b] = await Promise.all(prompts.map((prompt) => post("/v1/completions", { prompt, max_tokens: maxTokens, temperature: 0, stream: true, distmoe: { routing: true } }).then(streamedRouting)));
      const after = engine.scheduler.decodeTime;
      assert.ok(after.tokens - before.tokens > after.steps - before.steps, "some step decoded both requests");
      check(a!.routing, one!, "first of two");
      check(b!.routing, two!, "second of two");
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      engine.close();
      await cluster.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("routing on one process: each expert named the base station; a request that asks keeps the one-job MoE layers, and so do the requests batched with it", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-routing-"));
  try {
    initModel({ arch: "MixtralForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed: 5 });
    const engine = Engine.load(dir, { threads: 1 });
    try {
      const prompt = engine.tokenizer.encode("hello there", true);
      const other = engine.tokenizer.encode("the patient one waits", true);
      const maxTokens = 6;
      const oneJob = () => engine.model.expertStats.oneJobLayers;
      const routed = await engine.generate(prompt, { temperature: 0, maxTokens, routing: true });
      assert.deepEqual(routed.routing!.map((t) => t.token), routed.tokens);
      for (const t of routed.routing!) assert.deepEqual(t.layers.map((l) => l.layer), [0, 1]);
      for (const t of routed.routing!) for (const l of t.layers) assert.deepEqual(l.experts.map((x) => [x.device, typeof x.expert]), [[BASE_STATION, "number"], [BASE_STATION, "number"]]);
      const plain = await engine.generate(prompt, { temperature: 0, maxTokens });
      assert.equal(plain.routing, undefined);
      assert.deepEqual(plain.tokens, routed.tokens, "the same tokens either way");
      const plainOther = await engine.generate(other, { temperature: 0, maxTokens });

      // streamed: the pieces carry every token's routing, and the sequence keeps none it gave (a long stream's routing is not held to its end)
      const pieces: TokenRouting[] = [];
      const streamed = await engine.generate(prompt, { temperature: 0, maxTokens, routing: true }, (_text, _token, routing) => pieces.push(...(routing ?? [])));
      assert.deepEqual(pieces.map((t) => t.token), routed.tokens);
      assert.equal(streamed.routing, undefined, "a streamed request's result holds no routing: its pieces had it");

      // a routed request and a plain one in the same steps: the plain one's tokens and path are its own, the routed one's routing as alone
      let before = oneJob();
      await Promise.all([engine.generate(prompt, { temperature: 0, maxTokens }), engine.generate(other, { temperature: 0, maxTokens })]);
      const plainPair = oneJob() - before;
      before = oneJob();
      const [routedMixed, plainMixed] = await Promise.all([engine.generate(prompt, { temperature: 0, maxTokens, routing: true }), engine.generate(other, { temperature: 0, maxTokens })]);
      assert.deepEqual(plainMixed.tokens, plainOther.tokens);
      assert.deepEqual(routedMixed.tokens, routed.tokens);
      routedMixed.routing!.forEach((t, i) =>
        t.layers.forEach((l, j) => {
          const alone = routed.routing![i]!.layers[j]!;
          assert.deepEqual(l.experts.map((x) => x.expert), alone.experts.map((x) => x.expert), `token ${i} layer ${l.layer}: the experts it had alone`);
          l.experts.forEach((x, k) => assert.ok(Math.abs(x.weight - alone.experts[k]!.weight) < 2e-3, `token ${i} layer ${l.layer}: weight ${x.weight} vs ${alone.experts[k]!.weight}`));
        }),
      );
      if (engine.backend.moeTopK) assert.ok(plainPair > 2 && oneJob() - before === plainPair, `the pair ran ${oneJob() - before} one-job layers, as two plain requests do (${plainPair})`);
    } finally {
      engine.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("an answer not streamed holds its routing to the end: at most ROUTED_TOKENS_HELD_MAX tokens of it (a 400 beyond, the default chat length included); streamed, the same length is served", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-routing-"));
  try {
    initModel({ arch: "MixtralForCausalLM", out: dir, layers: 1, hidden: 32, experts: 2, topK: 1, seed: 5, maxPositions: 2 * ROUTED_TOKENS_HELD_MAX });
    const engine = Engine.load(dir, { threads: 1, contextLength: 2 * ROUTED_TOKENS_HELD_MAX });
    const app = createApp({ engine: () => engine, modelName: "tiny", metrics: new ServerMetrics(() => engine.scheduler.depth, () => engine.expertUsage()) });
    const server = createAdaptorServer({ fetch: app.fetch }) as Server;
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const post = (route: string, body: unknown, signal?: AbortSignal) => fetch(base + route, { method: "POST", signal, headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    try {
      const over = ROUTED_TOKENS_HELD_MAX + 1;
      let r = await post("/v1/completions", { prompt: "hi", max_tokens: over, distmoe: { routing: true } });
      assert.equal(r.status, 400);
      const e = (await r.json()).error;
      assert.equal(e.param, "max_tokens");
      assert.match(e.message, new RegExp(`at most ${ROUTED_TOKENS_HELD_MAX} tokens, and max_tokens is ${over}; ask for fewer, or stream the answer`));
      r = await post("/v1/chat/completions", { messages: [{ role: "user", content: "hi" }], distmoe: { routing: true } });
      assert.equal(r.status, 400, "chat without max_tokens runs to the end of the context");
      assert.match((await r.json()).error.message, /max_tokens is the context's room, \d+/);
      // streamed, it is admitted (and left at once)
      const left = new AbortController();
      r = await post("/v1/completions", { prompt: "hi", max_tokens: over, stream: true, distmoe: { routing: true } }, left.signal);
      assert.equal(r.status, 200);
      left.abort();
      await r.body?.cancel().catch(() => undefined);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      engine.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
