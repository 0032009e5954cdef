// Frames over a `ws` WebSocket (Node); the browser device has its twin of these functions (web/device/socket.ts).
import type WebSocket from "ws";
import { decodeFrame, encodeFrame, type Message } from "./frames.js";

/** The WebSocket close codes (RFC 6455 §7.4.1) this protocol closes connections with. */
export const CLOSE = {
  normal: 1000,
  /** this side is shutting down */
  goingAway: 1001,
  /** a frame that is not a frame of this protocol */
  protocolError: 1002,
  /** a text frame */
  unsupportedData: 1003,
  /** the peer broke a rule: no hello in time, over a rate, too many refused frames */
  policy: 1008,
  tooBig: 1009,
  /** the other side is at its connection limit */
  tryAgainLater: 1013,
  /** (application code) the peer did not prove it holds the join token: trying again will not help */
  notAdmitted: 4403,
  /** (application code) another connection of the same device identity took this one's place */
  replaced: 4409,
} as const;

/** How long a peer has to complete the closing handshake before its socket is cut. */
const CLOSE_GRACE_MS = 2000;

export function sendFrame(ws: WebSocket, m: Message): void {
  if (ws.readyState === ws.OPEN) ws.send(encodeFrame(m));
}

/**
 * Sends and resolves once the frame has been written to the socket, so that a sender of many large
 * frames holds one at a time instead of buffering them all; false when the socket is not open (any more).
 */
export function sendFrameWritten(ws: WebSocket, m: Message): Promise<boolean> {
  if (ws.readyState !== ws.OPEN) return Promise.resolve(false);
  return new Promise((resolve) => ws.send(encodeFrame(m), (e) => resolve(!e)));
}

/**
 * Closes with `code` and `reason` (made printable ASCII and cut to the 123 bytes a close frame holds);
 * a peer that does not complete the closing handshake is cut off after a short grace.
 */
export function closeWith(ws: WebSocket, code: number, reason: string): void {
  if (ws.readyState !== ws.OPEN) return;
  ws.close(code, reason.replace(/[^\x20-\x7e]/g, "?").slice(0, 123));
  setTimeout(() => ws.terminate(), CLOSE_GRACE_MS).unref();
}

/**
 * Decodes every binary message the socket receives while it is open. A message that is not a frame of
 * this protocol is a protocol error: it is reported once, the connection is closed (1003 for a text
 * frame, 1002 otherwise) and nothing the peer sent after it is read.
 */
export function receiveFrames(ws: WebSocket, onMessage: (m: Message) => void, onBadFrame: (reason: string) => void): void {
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    if (ws.readyState !== ws.OPEN) return;
    if (!isBinary) {
      onBadFrame("bad frame: text frames are not part of the protocol");
      return closeWith(ws, CLOSE.unsupportedData, "text frames are not part of the protocol");
    }
    let m: Message;
    try {
      m = decodeFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    } catch (e) {
      const reason = `bad frame: ${(e as Error).message}`;
      onBadFrame(reason);
      return closeWith(ws, CLOSE.protocolError, reason);
    }
    onMessage(m);
  });
}
