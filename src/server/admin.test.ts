// The operator's /admin endpoints over a real device hub and real devices: keys of their own (API keys
// are not admin keys), off without any; a token added there admits a device, revoking it disconnects
// that device; identities are listed and can be forgotten; bad requests are clear 4xx answers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { initModel } from "../model/init-model.js";
import { DeviceHub } from "../runtime/device-hub.js";
import { runDevice } from "../runtime/device.js";
import { tokenId } from "../runtime/hub/join-tokens.js";
import { newJoinToken } from "../protocol/handshake.js";
import { until } from "../testing/until.js";
import { hubAdmin } from "./admin.js";
import { createApp } from "./app.js";
import { ServerMetrics } from "./metrics.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-admin-"));
initModel({ arch: "MixtralForCausalLM", layers: 2, hidden: 64, experts: 4, topK: 2, seed: 5, out: path.join(dir, "model") });
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

const ADMIN = "admin-key-0123456789";
const API = "api-key-0123456789";
const TOKEN = newJoinToken();

async function withAdmin(fn: (call: (method: string, route: string, o?: { key?: string; body?: unknown }) => Promise<{ status: number; body: any }>, hub: DeviceHub) => Promise<void>, keys = [ADMIN]): Promise<void> {
  const hub = await DeviceHub.listen({ model: path.join(dir, "model"), weightDType: "f32", wireDType: "f32", joinTokens: [TOKEN], log: () => undefined });
  const metrics = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => ({ calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 }));
  const app = createApp({ engine: () => undefined, modelName: "m", metrics, apiKeys: [API], admin: { keys, devices: hubAdmin(hub, (t) => `distmoe device --bs ${hub.url} --token ${t}`) } });
  const call = async (method: string, route: string, o: { key?: string; body?: unknown } = {}) => {
    const headers: Record<string, string> = o.key === undefined ? {} : { authorization: `Bearer ${o.key}` };
    if (o.body !== undefined) headers["content-type"] = "application/json";
    const r = await app.request(route, { method, headers, body: o.body === undefined ? undefined : typeof o.body === "string" ? o.body : JSON.stringify(o.body) });
    return { status: r.status, body: await r.json() };
  };
  try {
    await fn(call, hub);
  } finally {
    await hub.close();
  }
}

const device = (bs: string, name: string, token: string, signal?: AbortSignal) =>
  runDevice({ bs, name, token, identityFile: path.join(dir, `${name}.key`), threads: 1, spinMs: 0, signal, log: () => undefined });

test("/admin takes its own keys: none, a wrong one and an API key are 401; without admin keys it is off (403)", async () => {
  await withAdmin(async (call) => {
    for (const key of [undefined, "wrong-key-0123456789", API]) {
      const r = await call("GET", "/admin/tokens", { key });
      assert.equal(r.status, 401, `key ${key}`);
      assert.equal(r.body.error.type, "authentication_error");
    }
    assert.equal((await call("GET", "/admin/tokens", { key: ADMIN })).status, 200);
  });
  await withAdmin(async (call) => {
    const r = await call("GET", "/admin/tokens", { key: ADMIN });
    assert.equal(r.status, 403);
    assert.match(r.body.error.message, /the admin endpoints are off: start the base station with --admin-key/);
  }, []);
});

test("a token added through /admin admits a device; revoking it disconnects that device and no other", async () => {
  await withAdmin(async (call, hub) => {
    const added = await call("POST", "/admin/tokens", { key: ADMIN, body: {} });
    assert.equal(added.status, 201);
    assert.match(added.body.token, /^[A-Za-z0-9_-]{32}$/);
    assert.equal(added.body.id, tokenId(added.body.token));
    assert.equal(added.body.join, `distmoe device --bs ${hub.url} --token ${added.body.token}`);

    const stop = new AbortController();
    const kept = device(hub.url, "kept", TOKEN, stop.signal);
    const guest = device(hub.url, "guest", added.body.token);
    await hub.start(2);
    const list = await call("GET", "/admin/tokens", { key: ADMIN });
    assert.deepEqual(list.body.tokens.map((t: { id: string; devices: string[] }) => [t.id, t.devices]).sort(), [[tokenId(TOKEN), ["kept"]], [added.body.id, ["guest"]]].sort());

    const revoked = await call("DELETE", `/admin/tokens/${added.body.id}`, { key: ADMIN });
    assert.deepEqual(revoked, { status: 200, body: { id: added.body.id, revoked: true, disconnected: ["guest"] } });
    await assert.rejects(guest, /not admitted: its join token was revoked/);
    assert.equal((await call("DELETE", `/admin/tokens/${added.body.id}`, { key: ADMIN })).status, 404);
    await until(() => hub.placed.length === 1, "placed on the device that stays");
    assert.deepEqual(hub.placed, ["kept"]);

    const devices = await call("GET", "/admin/devices", { key: ADMIN });
    const kd = devices.body.devices.find((d: { name: string }) => d.name === "kept");
    assert.ok(kd.connected && kd.experts.length === 2 * 4, "kept holds every expert now");
    assert.ok(devices.body.devices.some((d: { name: string; connected: boolean }) => d.name === "guest" && !d.connected));
    const forgotten = await call("DELETE", `/admin/devices/${encodeURIComponent(kd.fingerprint)}`, { key: ADMIN });
    assert.deepEqual(forgotten.body, { fingerprint: kd.fingerprint, forgotten: true });
    await assert.rejects(kept, /not admitted: the base station's operator removed this device's identity/);
    assert.equal((await call("DELETE", `/admin/devices/${encodeURIComponent(kd.fingerprint)}`, { key: ADMIN })).status, 404);
  });
});

test("/admin refuses bad bodies with clear 4xx answers", async () => {
  await withAdmin(async (call) => {
    const cases: Array<[unknown, number, RegExp]> = [
      ["{", 400, /not valid JSON/],
      [{ token: "short" }, 400, /a join token is 16 to 256 characters/],
      [{ token: "has spaces in it, sixteen+" }, 400, /a join token is 16 to 256 characters/],
      [{ token: 7 }, 400, /the body is \{"token"\?: string\}/],
      [{ tokens: "x" }, 400, /the body is \{"token"\?: string\}/],
      ["x".repeat(5000), 413, /4 KiB at most/],
    ];
    for (const [body, status, message] of cases) {
      const r = await call("POST", "/admin/tokens", { key: ADMIN, body });
      assert.equal(r.status, status, JSON.stringify(body).slice(0, 40));
      assert.match(r.body.error.message, message);
    }
    const chosen = await call("POST", "/admin/tokens", { key: ADMIN, body: { token: "a-chosen-token-0123456789" } });
    assert.equal(chosen.status, 201);
    assert.equal(chosen.body.id, tokenId("a-chosen-token-0123456789"));
  });
});

test("a base station without a device port answers /admin's device routes 404", async () => {
  const metrics = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => ({ calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 }));
  const app = createApp({ engine: () => undefined, modelName: "m", metrics, admin: { keys: [ADMIN] } });
  const r = await app.request("/admin/tokens", { headers: { authorization: `Bearer ${ADMIN}` } });
  assert.equal(r.status, 404);
  assert.match(((await r.json()) as { error: { message: string } }).error.message, /no device port/);
});
