// Who gets onto the device port: a cap on connections, a hello within a time limit as the first frame,
// and a safe, unique name for each device that says it.
import type { IncomingMessage } from "node:http";
import type { WebSocket, WebSocketServer } from "ws";
import type { Message } from "../../protocol/frames.js";
import { CLOSE } from "../../protocol/socket.js";
import type { Complaints } from "./complaints.js";
import { Connection } from "./connection.js";
import type { Device } from "./device.js";
import type { HubLimits } from "./limits.js";
import { safeName, uniqueName } from "./names.js";

export type Hello = Extract<Message, { type: "hello" }>;

export interface AdmissionEvents {
  /** A connection said hello: the device it is, under `name` (safe and unique). */
  hello(conn: Connection, name: string, m: Hello): Device;
  joined(d: Device): void;
  message(d: Device, m: Message): void;
  left(d: Device): void;
}

export class Admission {
  /** Connected devices (that said hello), in order of arrival. */
  readonly devices: Device[] = [];
  /** Open sockets, with or without a hello, counted against the cap. */
  private readonly sockets = new Set<WebSocket>();

  constructor(server: WebSocketServer, private readonly limits: HubLimits, private readonly complaints: Complaints, private readonly events: AdmissionEvents) {
    server.on("connection", (ws, req) => this.accept(ws, req));
    // with a shared HTTP server, ws passes that server's errors on here too
    server.on("error", (e) => complaints.report("device port", "server errors", `error: ${e.message}`));
  }

  private accept(ws: WebSocket, req: IncomingMessage): void {
    let device: Device | null = null;
    const conn: Connection = new Connection(ws, req.socket.remoteAddress ?? "unknown", this.limits, this.complaints, (m) => {
      if (device) return this.events.message(device, m);
      if (m.type !== "hello") return conn.close(CLOSE.policy, "no hello", `say hello first (got ${m.type})`);
      clearTimeout(helloTimer);
      const name = uniqueName(safeName(m.name), (n) => this.devices.some((d) => d.name === n));
      conn.who = name;
      device = this.events.hello(conn, name, m);
      this.devices.push(device);
      this.events.joined(device);
    });
    this.sockets.add(ws);
    const helloTimer = setTimeout(() => conn.close(CLOSE.policy, "no hello", `no hello within ${this.limits.helloTimeoutMs} ms`), this.limits.helloTimeoutMs);
    ws.on("close", () => {
      clearTimeout(helloTimer);
      this.sockets.delete(ws);
      if (!device) return;
      this.devices.splice(this.devices.indexOf(device), 1);
      this.events.left(device);
    });
    if (this.sockets.size > this.limits.maxConnections) {
      conn.close(CLOSE.tryAgainLater, "the connection limit", `the base station is at its limit of ${this.limits.maxConnections} device connections`);
    }
  }
}
