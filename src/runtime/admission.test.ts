// Admission by join token: a device proves it holds the token (and has the base station prove it) before
// it is placed or sent anything; no token, a wrong one, a replayed handshake and a base station without
// the token are each refused, with the reason in the refusing side's log or error.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import WebSocket, { WebSocketServer } from "ws";
import type { AddressInfo } from "node:net";
import { DeviceHub } from "./device-hub.js";
import { runDevice } from "./device.js";
import { initModel } from "../model/init-model.js";
import { decodeFrame, encodeFrame, type Capabilities, type Message } from "../protocol/frames.js";
import { bsProof, deviceProof, newJoinToken, newNonce, provenToken, sameProof } from "../protocol/handshake.js";
import { CLOSE } from "../protocol/socket.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-admission-"));
initModel({ arch: "MixtralForCausalLM", layers: 2, hidden: 64, experts: 4, topK: 2, seed: 3, out: dir });
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

const TOKEN = newJoinToken();
const CAPS: Capabilities = { memoryBytes: 1e9, gflops: 10, readGbps: 10, weightDTypes: ["f32"], wireDTypes: ["f32"] };

test("proofs: bound to the token, both nonces and the name; the base station's never passes as a device's", () => {
  const [a, b] = [newNonce(), newNonce()];
  const p = deviceProof(TOKEN, a, b, "d");
  assert.ok(sameProof(p, deviceProof(TOKEN, a, b, "d")));
  for (const other of [deviceProof(newJoinToken(), a, b, "d"), deviceProof(TOKEN, newNonce(), b, "d"), deviceProof(TOKEN, a, newNonce(), "d"), deviceProof(TOKEN, a, b, "e"), bsProof(TOKEN, b, a)]) {
    assert.ok(!sameProof(p, other));
  }
  assert.ok(!sameProof(p, p.slice(0, 62)) && !sameProof(p, ""), "a proof of another length is no match");
  assert.equal(provenToken(["x".repeat(20), TOKEN], a, b, "d", p), TOKEN);
  assert.equal(provenToken(["x".repeat(20)], a, b, "d", p), null);
});

/** A hub asking for TOKEN, its log, and a device started against it with `token`. */
async function withHub(fn: (hub: DeviceHub, lines: string[]) => Promise<void>): Promise<void> {
  const lines: string[] = [];
  const hub = await DeviceHub.listen({ model: dir, weightDType: "f32", wireDType: "f32", joinTokens: [TOKEN], log: (l) => lines.push(l) });
  try {
    await fn(hub, lines);
  } finally {
    await hub.close();
  }
}

const device = (bs: string, name: string, token?: string) =>
  runDevice({ bs, name, token, threads: 1, spinMs: 0, backoff: { firstMs: 10, capMs: 20 }, log: () => undefined });

test("a device with the token is placed; one with no token or a wrong one is refused before placement, and ends with the reason", async () => {
  await withHub(async (hub, lines) => {
    await assert.rejects(device(hub.url, "tokenless"), /^Error: the base station refused this device: not admitted: no join token presented \(run the device with --token TOKEN or DISTMOE_JOIN_TOKEN\)$/);
    await assert.rejects(device(hub.url, "guesser", newJoinToken()), /^Error: the base station refused this device: not admitted: wrong join token \(or a replayed handshake\)$/);
    assert.ok(lines.some((l) => /closing the connection: not admitted: no join token presented/.test(l)), lines.join("\n"));
    assert.ok(lines.some((l) => /closing the connection: not admitted: wrong join token/.test(l)), lines.join("\n"));
    assert.deepEqual(hub.status().devices, [], "neither was ever a device");
    const stop = new AbortController();
    const honest = runDevice({ bs: hub.url, name: "honest", token: TOKEN, threads: 1, spinMs: 0, signal: stop.signal, log: () => undefined });
    await hub.start(1);
    assert.deepEqual(hub.placed, ["honest"]);
    stop.abort();
    await honest;
  });
});

/** A raw connection: the frames the hub sent it, its challenge, and how it closed. */
async function raw(url: string) {
  const ws = new WebSocket(url);
  const got: Message[] = [];
  let challenged!: (nonce: string) => void;
  const challenge = new Promise<string>((r) => (challenged = r));
  ws.on("message", (d: Buffer) => {
    const m = decodeFrame(new Uint8Array(d));
    got.push(m);
    if (m.type === "challenge") challenged(m.nonce);
  });
  const closed = new Promise<{ code: number; reason: string }>((r) => ws.once("close", (code, reason) => r({ code, reason: reason.toString() })));
  return { ws, got, challenge, closed };
}

/** A relay between devices and `upstream` that keeps a copy of every frame a device sends, per connection. */
async function wiretap(upstream: string): Promise<{ url: string; captured: Buffer[][]; close: () => Promise<void> }> {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((r) => server.once("listening", r));
  const captured: Buffer[][] = [];
  server.on("connection", (down) => {
    const frames: Buffer[] = [];
    captured.push(frames);
    const up = new WebSocket(upstream);
    const opened = new Promise((r) => up.once("open", r));
    down.on("message", (d: Buffer) => {
      frames.push(d);
      void opened.then(() => up.send(d));
    });
    up.on("message", (d: Buffer) => down.send(d));
    up.on("close", (code, reason) => down.close(code, reason));
    down.on("close", () => up.close());
  });
  return {
    url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}`,
    captured,
    close: () => {
      for (const c of server.clients) c.terminate();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

test("a real device's hello, captured and replayed on a new connection, is refused: the challenge there is new", async () => {
  await withHub(async (hub, lines) => {
    const tap = await wiretap(hub.url);
    const stop = new AbortController();
    try {
      const honest = runDevice({ bs: tap.url, name: "d", token: TOKEN, threads: 1, spinMs: 0, signal: stop.signal, log: () => undefined });
      await hub.start(1);
      assert.deepEqual(hub.placed, ["d"], "admitted through the tap");
      const hello = tap.captured[0]![0]!;
      assert.equal(decodeFrame(new Uint8Array(hello)).type, "hello");
      stop.abort();
      await honest;
      for (const t0 = performance.now(); hub.status().devices.length > 0; await new Promise((r) => setTimeout(r, 10))) {
        assert.ok(performance.now() - t0 < 30_000, "the honest device has left");
      }

      const replay = await raw(hub.url);
      await replay.challenge;
      replay.ws.send(hello);
      const closed = await replay.closed;
      assert.equal(closed.code, CLOSE.notAdmitted);
      assert.match(closed.reason, /not admitted: wrong join token \(or a replayed handshake\)/);
      assert.deepEqual(replay.got.map((m) => m.type), ["challenge"], "nothing but the challenge was sent to it");
      assert.ok(lines.some((l) => /closing the connection: not admitted: wrong join token/.test(l)), lines.join("\n"));
      assert.deepEqual(hub.status().devices, [], "the replayer never became a device");
    } finally {
      await tap.close();
    }
  });
});

test("a base station that cannot prove the token is refused by the device before it takes anything from it", async () => {
  // an impostor base station: a challenge, then a welcome with a proof of another token, then an assignment
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((r) => server.once("listening", r));
  const received: Message["type"][] = [];
  server.on("connection", (ws) => {
    const bsNonce = newNonce();
    ws.send(encodeFrame({ type: "challenge", nonce: bsNonce }));
    ws.on("message", (d: Buffer) => {
      const m = decodeFrame(new Uint8Array(d));
      received.push(m.type);
      if (m.type !== "hello") return;
      ws.send(encodeFrame({ type: "welcome", proof: bsProof(newJoinToken(), m.nonce!, bsNonce) }));
      ws.send(encodeFrame({ type: "assign", model: dir, modelId: "m", config: {}, weightDType: "f32", wireDType: "f32", experts: [[0, 0]] }));
    });
  });
  // and a real hub that admits any device: it proves no token either
  const open = await DeviceHub.listen({ model: dir, weightDType: "f32", wireDType: "f32", log: () => undefined });
  try {
    const refusal = /did not prove it holds the join token: it is not this cluster's base station \(or its token differs\); refusing it$/;
    await assert.rejects(device(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`, "d", TOKEN), refusal);
    assert.deepEqual(received, ["hello"], "the device sent nothing after its hello: no ready, no fetch");
    await assert.rejects(device(open.url, "d", TOKEN), refusal);
    assert.deepEqual(open.placed, []);
  } finally {
    await open.close();
    for (const c of server.clients) c.terminate();
    await new Promise((r) => server.close(r));
  }
});
