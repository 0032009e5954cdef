// The other side of a device, for tests of it: a scripted base station, and `distmoe device` processes
// with their stderr kept.
import { spawn, type ChildProcess } from "node:child_process";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { WebSocketServer, type WebSocket } from "ws";
import { decodeFrame, encodeFrame, type Message } from "../protocol/frames.js";
import { newNonce } from "../protocol/handshake.js";
import { REPO_ROOT } from "./shared.js";

/** One connection of a scripted base station: its socket, and the frames the device sent on it, in order. */
export interface ScriptedConnection {
  ws: WebSocket;
  /** The next frame; rejects once the connection has closed with none left. */
  frames: () => Promise<Message>;
}

/** A scripted base station (admitting any device: challenge, hello, welcome): each connection's frames in order. */
export async function scriptedBs(): Promise<{ url: string; next: () => Promise<ScriptedConnection>; close: () => Promise<void> }> {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((r) => server.once("listening", r));
  const waiting: ScriptedConnection[] = [];
  let wake: (() => void) | null = null;
  /** The frames of `ws` from its first on (a test may take the connection after the device has spoken). */
  const inbox = (ws: WebSocket) => {
    const got: Message[] = [];
    let ping: (() => void) | null = null;
    let closed: string | null = null;
    ws.on("message", (d: Buffer) => {
      const m = decodeFrame(new Uint8Array(d));
      if (m.type === "hello") ws.send(encodeFrame({ type: "welcome" }));
      got.push(m);
      ping?.();
    });
    ws.on("close", (code: number, reason: Buffer) => {
      closed = `code ${code}${reason.length > 0 ? `, ${reason.toString()}` : ""}`;
      ping?.();
    });
    return async () => {
      while (got.length === 0) {
        if (closed !== null) throw new Error(`the connection closed (${closed}) with no frame left to read`);
        await new Promise<void>((r) => (ping = r));
      }
      return got.shift()!;
    };
  };
  server.on("connection", (ws) => {
    ws.send(encodeFrame({ type: "challenge", nonce: newNonce() }));
    waiting.push({ ws, frames: inbox(ws) });
    wake?.();
  });
  return {
    url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}`,
    next: async () => {
      while (waiting.length === 0) await new Promise<void>((r) => (wake = r));
      return waiting.shift()!;
    },
    close: () => {
      for (const c of server.clients) c.terminate();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/** `distmoe device …` (one compute thread, no spinning) with its stderr collected; `cwd` is where it runs. */
export function deviceProcess(args: string[], cwd?: string): { child: ChildProcess; stderr: () => string; exit: Promise<number | null> } {
  const child = spawn(process.execPath, [path.join(REPO_ROOT, "bin/distmoe.js"), "device", "--threads", "1", "--spin-ms", "0", ...args], { stdio: ["ignore", "ignore", "pipe"], cwd });
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exit = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return { child, stderr: () => err, exit };
}
