// The dashboard's controls against a real HTTP server: only the admin key changes anything; a policy
// change shows in the next snapshots; link settings and the join link for the admin's page.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import type { LinkParams } from "../../channel/link.js";
import { ADMIN_KEY, API_KEY, dashboardStation, readEvents, VIEW_KEY } from "../../testing/dashboard.js";
import { until } from "../../testing/until.js";
import { createApp } from "../app.js";
import { ServerMetrics } from "../metrics.js";
import { LivePolicy } from "./controls.js";
import { DashboardFeed } from "./stream.js";

const JOIN = "https://bs.example:8080/device#token=join-token-secret-0123";

function request(base: string, method: string, route: string, key: string | undefined, body?: unknown, type = "application/json") {
  const headers: Record<string, string> = { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(body === undefined ? {} : { "content-type": type }) };
  return fetch(base + route, { method, headers, body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body) });
}

test("controls: the admin key only; a θ change lowers experts per token in the next snapshots; bad bodies cost one clear error", async (t) => {
  let link: LinkParams = { downBps: 20e6, upBps: 20e6, delayMs: 5, jitterMs: 0, loss: 0 };
  const s = await dashboardStation(t, { link: { get: () => link, set: (p) => void (link = p) }, joinLink: () => JOIN });
  for (const key of [undefined, API_KEY, VIEW_KEY]) {
    const r = await request(s.base, "PUT", "/admin/policy", key, { name: "wlr", theta: 0.99 });
    assert.equal(r.status, 401, `refused with key ${key}`);
    assert.equal((await request(s.base, "GET", "/admin/join", key)).status, 401);
    assert.equal((await request(s.base, "PUT", "/admin/link", key, { delayMs: 1 })).status, 401);
  }

  const events = readEvents(await s.view(VIEW_KEY));
  const prompt = s.engine.tokenizer.encode("hello there");
  await s.engine.generate(prompt, { temperature: 0, maxTokens: 8 });
  const topk = await until(() => events.snapshots.find((x) => x.routing.experts_per_token !== null), "a snapshot of top-k routing");
  assert.deepEqual([topk.policy, topk.routing.experts_per_token, topk.routing.dropped_gate_mass], ["topk", 2, 0]);

  const set = await request(s.base, "PUT", "/admin/policy", ADMIN_KEY, { name: "wlr", theta: 0.99 });
  assert.equal(set.status, 200);
  assert.deepEqual(await set.json(), { policy: { name: "wlr", theta: 0.99 }, description: "wlr θ=0.99" });
  const seen = events.snapshots.length;
  await s.engine.generate(prompt, { temperature: 0, maxTokens: 8 });
  const wlr = await until(() => events.snapshots.slice(seen).find((x) => x.policy === "wlr θ=0.99" && x.routing.experts_per_token !== null && x.routing.experts_per_token < 2), "a snapshot with fewer experts per token");
  assert.ok(wlr.routing.dropped_gate_mass! > 0, "the gate mass wlr dropped");
  assert.deepEqual(await (await request(s.base, "GET", "/admin/policy", ADMIN_KEY)).json(), { policy: { name: "wlr", theta: 0.99 }, description: "wlr θ=0.99" });

  for (const [body, status] of [
    [{ name: "wlr" }, 400],
    [{ name: "wlr", theta: 2 }, 400],
    [{ name: "joint", theta: 0.3 }, 400],
    [{ name: "deadline", budgetMs: -1 }, 400],
    [{ name: "topk", extra: 1 }, 400],
    ["{not json", 400],
    [[], 400],
  ] as const) {
    const r = await request(s.base, "PUT", "/admin/policy", ADMIN_KEY, body);
    assert.equal(r.status, status, JSON.stringify(body));
    assert.equal((await r.json()).error.type, "invalid_request_error");
  }
  assert.equal((await request(s.base, "PUT", "/admin/policy", ADMIN_KEY, "name=topk", "text/plain")).status, 415);
  assert.equal((await request(s.base, "PUT", "/admin/policy", ADMIN_KEY, { name: "topk", pad: "x".repeat(8000) })).status, 413);
  assert.equal((await request(s.base, "PUT", "/admin/policy", ADMIN_KEY, { name: "deadline", budgetMs: 40 })).status, 200, "deadline with its budget");
  assert.equal(s.engine.work().layers, 2, "the engine still serves");
  await s.engine.generate(prompt, { temperature: 0, maxTokens: 4 });

  // link emulation: a partial change keeps the rest
  const changed = await request(s.base, "PUT", "/admin/link", ADMIN_KEY, { delayMs: 12, loss: 0.01 });
  assert.equal(changed.status, 200);
  assert.deepEqual((await changed.json()).link, { downBps: 20e6, upBps: 20e6, delayMs: 12, jitterMs: 0, loss: 0.01 });
  assert.deepEqual(link, { downBps: 20e6, upBps: 20e6, delayMs: 12, jitterMs: 0, loss: 0.01 });
  for (const bad of [{ loss: 1 }, { delayMs: -1 }, { rate: 5 }, { downBps: "fast" }]) assert.equal((await request(s.base, "PUT", "/admin/link", ADMIN_KEY, bad)).status, 400, JSON.stringify(bad));

  // the join link and its QR code, for the admin only; never in a snapshot
  const join = await (await request(s.base, "GET", "/admin/join", ADMIN_KEY)).json();
  assert.equal(join.link, JOIN);
  assert.match(join.qr_svg, /^<svg[^>]*>[\s\S]*<\/svg>\s*$/);
  assert.ok(events.raw.every((e) => !e.includes("join-token-secret")));
});

test("controls that are not there: no link emulation or browser devices is 404; no admin key configured is 403 for everyone", async (t) => {
  const s = await dashboardStation(t);
  assert.equal((await request(s.base, "PUT", "/admin/link", ADMIN_KEY, { delayMs: 1 })).status, 404);
  assert.equal((await request(s.base, "GET", "/admin/link", ADMIN_KEY)).status, 404);
  assert.equal((await request(s.base, "GET", "/admin/join", ADMIN_KEY)).status, 404);

  const metrics = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => ({ calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 }));
  const feed = new DashboardFeed({ registry: metrics.registry, model: () => null, health: () => ({ state: "ok", reasons: [] }), devices: () => [], placement: () => null, bsExperts: () => null, policy: () => "topk" });
  const app = createApp({ engine: () => undefined, modelName: "m", metrics, apiKeys: [API_KEY], dashboard: { feed, controls: { policy: new LivePolicy(() => undefined, null) } } });
  const server = createAdaptorServer({ fetch: app.fetch }) as Server;
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.after(() => new Promise((r) => server.close(r)));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  for (const key of [undefined, API_KEY, ADMIN_KEY]) assert.equal((await request(base, "PUT", "/admin/policy", key, { name: "topk" })).status, 403);
});

test("the policy a base station starts with is described while its model loads; setting one before the engine exists is 503", () => {
  const policy = new LivePolicy(() => undefined, null, { name: "wlr", theta: 0.5 });
  assert.deepEqual([policy.current, policy.describe()], [{ name: "wlr", theta: 0.5 }, "wlr θ=0.5"]);
  assert.throws(() => policy.set({ name: "topk" }), (e: Error & { status?: number }) => e.status === 503 && /still loading/.test(e.message));
});
