// A WebSocket server over TLS on loopback with a new self-signed certificate, for tests of what a client
// accepts and what reaches the server: it counts connections and WebSocket upgrade requests.
import https from "node:https";
import type { AddressInfo } from "node:net";
import { WebSocketServer } from "ws";
import { makeSelfSigned, type ServerTls } from "../server/tls.js";

export interface TestWss {
  url: string;
  tls: ServerTls;
  wss: WebSocketServer;
  /** Connections accepted, and WebSocket upgrade requests received on them (what a client sends after the TLS handshake). */
  counts: { connections: number; upgrades: number };
  close(): Promise<void>;
}

export async function startWss(): Promise<TestWss> {
  const tls = await makeSelfSigned(["localhost", "127.0.0.1"]);
  const server = https.createServer({ cert: tls.cert, key: tls.key });
  const counts = { connections: 0, upgrades: 0 };
  server.on("connection", () => counts.connections++);
  server.on("upgrade", () => counts.upgrades++);
  const wss = new WebSocketServer({ server });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `wss://127.0.0.1:${(server.address() as AddressInfo).port}`,
    tls,
    wss,
    counts,
    close: () =>
      new Promise((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
