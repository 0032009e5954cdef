// A base station for dashboard tests: a tiny model served in-process by the app on a real HTTP server,
// with its dashboard stream and controls and the three kinds of key; and a reader of its snapshots.
import assert from "node:assert/strict";
import type { Server } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import { initModel } from "../model/init-model.js";
import { Engine } from "../runtime/engine.js";
import { createApp } from "../server/app.js";
import { LivePolicy, type Controls } from "../server/dashboard/controls.js";
import type { Snapshot } from "../server/dashboard/snapshot.js";
import { dashboardSources } from "../server/dashboard/sources.js";
import { DashboardFeed } from "../server/dashboard/stream.js";
import { Health } from "../server/health.js";
import { ServerMetrics } from "../server/metrics.js";

export const API_KEY = "api-key-0123456789", VIEW_KEY = "view-key-0123456789", ADMIN_KEY = "admin-key-0123456789";

export interface Events {
  snapshots: Snapshot[];
  /** each event's text as it came */
  raw: string[];
  /** settles when the stream ends */
  ended: Promise<void>;
}

/** Reads a /dashboard/events response's snapshots as they come. */
export function readEvents(r: Response): Events {
  const out: Events = { snapshots: [], raw: [], ended: Promise.resolve() };
  const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  out.ended = (async () => {
    for (;;) {
      const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }));
      if (done) return;
      buffer += value;
      let end: number;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        out.raw.push(event);
        assert.match(event, /^event: snapshot\n/);
        out.snapshots.push(JSON.parse(event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n")));
      }
    }
  })();
  return out;
}

export interface DashboardStation {
  engine: Engine;
  feed: DashboardFeed;
  base: string;
  /** GET /dashboard/events with a key (none: without) */
  view(key?: string, signal?: AbortSignal): Promise<Response>;
  /** snapshots built so far */
  builds(): number;
}

/** `controls`: besides the policy (always live), what the test gives (link emulation, join link). */
export async function dashboardStation(t: { after(fn: () => unknown): void }, controls: Omit<Controls, "policy"> = {}): Promise<DashboardStation> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-dash-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  initModel({ arch: "Qwen3MoeForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed: 5 });
  const engine = Engine.load(dir, { dtype: "f32", threads: 1 });
  const metrics = new ServerMetrics(() => engine.scheduler.depth, () => engine.expertUsage());
  metrics.countEngineWork(() => engine.work());
  const policy = new LivePolicy(() => engine, null);
  const health = new Health();
  const sources = dashboardSources({ modelName: "tiny", metrics, engine: () => engine, hub: null, health, policy: () => policy.describe(), bsExperts: () => null });
  let builds = 0;
  const feed = new DashboardFeed({ ...sources, policy: () => (builds++, sources.policy()) }, { intervalMs: 40, windowMs: 400 });
  const app = createApp({ engine: () => engine, modelName: "tiny", metrics, health, apiKeys: [API_KEY], admin: { keys: [ADMIN_KEY] }, dashboard: { feed, viewKeys: [VIEW_KEY], controls: { ...controls, policy } } });
  const server = createAdaptorServer({ fetch: app.fetch }) as Server;
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  t.after(async () => {
    feed.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    engine.close();
  });
  return {
    engine,
    feed,
    base,
    view: (key, signal) => fetch(`${base}/dashboard/events`, { headers: key ? { authorization: `Bearer ${key}` } : {}, signal }),
    builds: () => builds,
  };
}
