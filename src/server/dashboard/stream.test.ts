// The dashboard's stream against a real HTTP server: who may view it, what the snapshots say as the
// engine works, one snapshot per tick whatever the number of clients, slow clients dropped, a clean end.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Server } from "node:http";
import net, { type AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import { ADMIN_KEY, API_KEY, dashboardStation, readEvents, VIEW_KEY, type Events } from "../../testing/dashboard.js";
import { until } from "../../testing/until.js";
import { createApp } from "../app.js";
import { ServerMetrics } from "../metrics.js";
import { DashboardFeed } from "./stream.js";

test("the dashboard stream: the API, view or admin key may view it, nothing else; snapshots follow the engine's work and carry no secret", async (t) => {
  const s = await dashboardStation(t);
  for (const key of [undefined, "wrong"]) {
    const r = await s.view(key);
    assert.equal(r.status, 401);
    assert.equal((await r.json()).error.type, "authentication_error");
  }
  const streams = await Promise.all([API_KEY, VIEW_KEY, ADMIN_KEY].map((k) => s.view(k)));
  for (const r of streams) {
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type") ?? "", /text\/event-stream/);
  }
  const [api, viewer, admin] = streams.map(readEvents) as [Events, Events, Events];
  await until(() => api.snapshots.length >= 2 && viewer.snapshots.length >= 2 && admin.snapshots.length >= 2, "snapshots on every stream");
  const first = viewer.snapshots[0]!;
  assert.equal(first.model, "tiny");
  assert.equal(first.policy, "topk");
  assert.deepEqual(first.health, { state: "ok", reasons: [] });
  assert.deepEqual(first.grid, { layers: 2, experts: 4, top_k: 2, layers_per_row: 1, experts_per_col: 1 });
  assert.deepEqual(first.devices, [], "every expert runs at the base station");

  await s.engine.generate(s.engine.tokenizer.encode("hello"), { temperature: 0, maxTokens: 8 });
  const busy = await until(() => viewer.snapshots.find((x) => x.tokens_per_s !== null && x.tokens_per_s > 0 && x.latency_ms !== null), "a snapshot of the generation");
  assert.equal(busy.routing.experts_per_token, 2, "top-k: k experts per token and layer");
  assert.equal(busy.routing.dropped_gate_mass, 0);
  assert.ok(busy.routing.heat!.every((row) => Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 0.01), "each layer's use shares sum to one");
  assert.ok(busy.latency_ms!.bs_compute > 0);

  for (const e of [...api.raw, ...viewer.raw, ...admin.raw]) for (const secret of [API_KEY, VIEW_KEY, ADMIN_KEY]) assert.ok(!e.includes(secret), "no key in a snapshot");
  // shutting down ends every stream
  s.feed.close();
  await Promise.all([api.ended, viewer.ended, admin.ended]);
});

test("the API (the playground's) takes the API and admin keys; a view key is refused there, with why", async (t) => {
  const s = await dashboardStation(t);
  const models = (key: string) => fetch(`${s.base}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
  assert.equal((await models(API_KEY)).status, 200);
  assert.equal((await models(ADMIN_KEY)).status, 200);
  const viewer = await models(VIEW_KEY);
  assert.equal(viewer.status, 401);
  assert.match((await viewer.json()).error.message, /a view key only views the dashboard/);
  assert.match((await (await models("wrong-key-000")).json()).error.message, /the API key is not valid/);
});

test("one snapshot per tick, whatever the number of clients", async (t) => {
  const s = await dashboardStation(t);
  const aborts = Array.from({ length: 4 }, () => new AbortController());
  const clients = await Promise.all(aborts.map((a) => s.view(API_KEY, a.signal)));
  const events = clients.map(readEvents);
  await until(() => events.every((e) => e.snapshots.length >= 6), "six snapshots on each stream");
  const received = events.reduce((n, e) => n + e.snapshots.length, 0);
  assert.ok(s.builds() < received / 2, `${s.builds()} snapshots built for ${received} sent`);
  assert.equal(s.feed.listeners, 4);
  for (const a of aborts) a.abort();
  await until(() => s.feed.listeners === 0, "clients that went away are let go");
});

test("a client that reads nothing is dropped once it has held a snapshot for the stall bound; the others go on", async () => {
  const registry = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => ({ calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 })).registry;
  const feed = new DashboardFeed({ registry, model: () => null, health: () => ({ state: "ok", reasons: [] }), devices: () => [], placement: () => null, bsExperts: () => null, policy: () => "topk" }, { intervalMs: 10, stallMs: 100 });
  const dropped: string[] = [];
  let stuckSends = 0, readerSends = 0;
  feed.subscribe(() => (stuckSends++, new Promise<void>(() => undefined)), (why) => dropped.push(`stuck ${why}`));
  feed.subscribe(async () => void readerSends++, (why) => dropped.push(`reader ${why}`));
  await until(() => dropped.length > 0, "the stuck client dropped", 10_000);
  assert.deepEqual(dropped, ["stuck stalled"]);
  assert.equal(stuckSends, 1, "one snapshot in flight at most: the ones after are skipped, not queued");
  const before = readerSends;
  await until(() => readerSends > before + 2, "the reading client still gets snapshots");
  assert.equal(feed.listeners, 1);
  feed.close();
  assert.deepEqual(dropped, ["stuck stalled", "reader closing"]);
});

test("over HTTP, a client that stops reading is dropped once its socket's buffers are full, its connection closed; a reading client goes on", async (t) => {
  const metrics = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => ({ calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 }));
  // snapshots of some 40 KB, many a second: a client that reads none fills its buffers within a second or two
  const devices = Array.from({ length: 64 }, (_, i) => ({
    name: `device-${i}`, ready: false, quarantined: true, outOfService: "x".repeat(200), calls: 0, experts: 0, weightBytes: 0, kind: "node" as const, gflops: 1, leaving: false, link: null,
  }));
  const feed = new DashboardFeed({ registry: metrics.registry, model: () => null, health: () => ({ state: "ok", reasons: [] }), devices: () => devices, placement: () => null, bsExperts: () => null, policy: () => "topk" }, { intervalMs: 2, stallMs: 200 });
  const app = createApp({ engine: () => undefined, modelName: "m", metrics, dashboard: { feed } });
  const server = createAdaptorServer({ fetch: app.fetch }) as Server;
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.after(async () => {
    feed.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  const port = (server.address() as AddressInfo).port;

  const reader = new AbortController();
  const reading = readEvents(await fetch(`http://127.0.0.1:${port}/dashboard/events`, { signal: reader.signal }));
  const stuck = net.connect(port, "127.0.0.1");
  let closed = false;
  stuck.on("error", () => undefined).on("close", () => (closed = true));
  stuck.write(`GET /dashboard/events HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n`);
  stuck.pause();
  await until(() => feed.listeners === 2, "both clients listening");
  await until(() => feed.listeners === 1, "the client that reads nothing dropped");
  const connections = () => new Promise<number>((resolve, reject) => server.getConnections((e, n) => (e ? reject(e) : resolve(n))));
  await until(async () => (await connections()) === 1, "its connection closed at the base station, what it held freed");
  // reading again, it gets what its buffers held, then the end
  stuck.resume();
  await until(() => closed, "its connection closed");
  const before = reading.snapshots.length;
  await until(() => reading.snapshots.length > before + 2, "the reading client still gets snapshots");
  reader.abort();
});
