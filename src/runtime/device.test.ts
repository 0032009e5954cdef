// A device against a scripted base station: what it loads, serves, refuses and frees.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { WebSocketServer, type WebSocket } from "ws";
import type { AddressInfo } from "node:net";
import { runDevice } from "./device.js";
import { initModel } from "../model/init-model.js";
import { decodeFrame, encodeFrame, type Message } from "../protocol/frames.js";
import { encodeActivations } from "../protocol/activations.js";
import { newNonce } from "../protocol/handshake.js";

test("a device serves the experts it is assigned, refuses others, and frees those the base station releases", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-device-"));
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  try {
    initModel({ arch: "MixtralForCausalLM", layers: 2, hidden: 64, experts: 4, topK: 2, seed: 2, out: dir });
    await new Promise((r) => server.once("listening", r));
    const connected = new Promise<WebSocket>((r) => server.once("connection", r));
    const device = runDevice({ bs: `ws://127.0.0.1:${(server.address() as AddressInfo).port}`, name: "d", threads: 1, retryForMs: 0, log: () => undefined });
    const ws = await connected;
    const inbox: Message[] = [];
    let wake: (() => void) | null = null;
    ws.on("message", (d: Buffer) => {
      inbox.push(decodeFrame(new Uint8Array(d)));
      wake?.();
    });
    const next = async (): Promise<Message> => {
      while (inbox.length === 0) await new Promise<void>((r) => (wake = r));
      return inbox.shift()!;
    };
    const send = (m: Message) => ws.send(encodeFrame(m));
    send({ type: "challenge", nonce: newNonce() });
    const call = (id: number, expert: number) =>
      send({ type: "call", id, layer: 1, experts: [[expert, 2]], hidden: 64, dtype: "f32", payload: encodeActivations(new Float32Array(128).fill(0.5), "f32") });

    assert.equal((await next()).type, "hello");
    send({ type: "welcome" });
    const config = JSON.parse(readFileSync(path.join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    send({ type: "assign", model: dir, modelId: "test", config, weightDType: "f32", wireDType: "f32", experts: [[1, 0], [1, 3]] });
    assert.deepEqual(await next(), { type: "ready", experts: [[1, 0], [1, 3]] });

    call(1, 3);
    const result = await next();
    assert.ok(result.type === "result" && result.id === 1 && result.payload.length === 2 * 64 * 4, JSON.stringify(result.type));
    call(2, 1);
    assert.deepEqual(await next(), { type: "error", id: 2, message: "expert 1 of layer 1 is not held by this process" });

    send({ type: "release", experts: [[1, 3]] });
    call(3, 3);
    assert.deepEqual(await next(), { type: "error", id: 3, message: "expert 3 of layer 1 is not held by this process" });
    call(4, 0);
    assert.equal((await next()).type, "result", "the experts it keeps still serve");

    send({ type: "leave", reason: "done" });
    await device;
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
