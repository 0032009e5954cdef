// Channel binding: the two ends of one wss connection export the same value, each connection its own;
// a plain ws connection has none.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import WebSocket, { WebSocketServer, type ClientOptions } from "ws";
import { channelBinding } from "./channel-binding.js";
import { bsTlsConnection } from "./tls-pin.js";
import { startWss } from "../testing/wss.js";

/** What each end computes for one connection: the server from the request's socket, the client from the upgrade response's. */
async function bindings(server: WebSocketServer, url: string, opts: ClientOptions): Promise<{ server: string; client: string }> {
  const atServer = new Promise<string>((r) => server.once("connection", (_ws, req: IncomingMessage) => r(channelBinding(req.socket))));
  const ws = new WebSocket(url, opts);
  const atClient = new Promise<string>((r) => ws.once("upgrade", (res: IncomingMessage) => r(channelBinding(res.socket))));
  await new Promise((r) => ws.once("open", r));
  const both = { server: await atServer, client: await atClient };
  ws.close();
  return both;
}

test("channelBinding: both ends of a wss connection agree on 32 bytes, a new connection gets new ones, plain ws gives none", async () => {
  const bs = await startWss();
  const plain = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((r) => plain.once("listening", r));
  try {
    const pinned = { createConnection: bsTlsConnection(bs.tls.fingerprint) as unknown as ClientOptions["createConnection"] };
    const first = await bindings(bs.wss, bs.url, pinned);
    assert.match(first.server, /^[0-9a-f]{64}$/);
    assert.equal(first.client, first.server);
    const second = await bindings(bs.wss, bs.url, pinned);
    assert.equal(second.client, second.server);
    assert.notEqual(second.server, first.server, "bound to its own TLS session");

    assert.deepEqual(await bindings(plain, `ws://127.0.0.1:${(plain.address() as AddressInfo).port}`, {}), { server: "", client: "" });
  } finally {
    plain.close();
    await bs.close();
  }
});
