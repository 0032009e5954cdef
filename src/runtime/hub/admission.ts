// Who gets onto the device port: a cap on connections, a hello within a time limit as the first frame,
// proof of the join token in it (when the hub has tokens), and a safe, unique name for each device.
import type { IncomingMessage } from "node:http";
import type { WebSocket, WebSocketServer } from "ws";
import type { Message } from "../../protocol/frames.js";
import { bsProof, newNonce, provenToken } from "../../protocol/handshake.js";
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

  /**
   * `joinTokens`: a device must prove it holds one of them (protocol/handshake.ts) before it is placed
   * or sent anything; null admits every device that says hello.
   */
  constructor(
    server: WebSocketServer,
    private readonly limits: HubLimits,
    private readonly complaints: Complaints,
    private readonly joinTokens: readonly string[] | null,
    private readonly events: AdmissionEvents,
  ) {
    server.on("connection", (ws, req) => this.accept(ws, req));
    // with a shared HTTP server, ws passes that server's errors on here too
    server.on("error", (e) => complaints.report("device port", "server errors", `error: ${e.message}`));
  }

  private accept(ws: WebSocket, req: IncomingMessage): void {
    let device: Device | null = null;
    const nonce = newNonce();
    const conn: Connection = new Connection(ws, req.socket.remoteAddress ?? "unknown", this.limits, this.complaints, (m) => {
      if (device) return this.events.message(device, m);
      if (m.type !== "hello") return conn.close(CLOSE.policy, "no hello", `say hello first (got ${m.type})`);
      clearTimeout(helloTimer);
      const admitted = this.admit(nonce, m);
      if ("refused" in admitted) return conn.close(CLOSE.notAdmitted, "the join token", `not admitted: ${admitted.refused}`);
      conn.send(admitted.welcome);
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
      return conn.close(CLOSE.tryAgainLater, "the connection limit", `the base station is at its limit of ${this.limits.maxConnections} device connections`);
    }
    conn.send({ type: "challenge", nonce });
  }

  /** The welcome for a hello answering the challenge `nonce`, or why it is not admitted. */
  private admit(nonce: string, m: Hello): { welcome: Message } | { refused: string } {
    if (!this.joinTokens) return { welcome: { type: "welcome" } };
    if (m.proof === undefined || m.nonce === undefined) return { refused: "no join token presented (run the device with --token TOKEN or DISTMOE_JOIN_TOKEN)" };
    const token = provenToken(this.joinTokens, nonce, m.nonce, m.name, m.proof);
    if (token === null) return { refused: "wrong join token (or a replayed handshake)" };
    return { welcome: { type: "welcome", proof: bsProof(token, m.nonce, nonce) } };
  }
}
