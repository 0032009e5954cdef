// Frames over a `ws` WebSocket (Node); a browser device will have its own twin of these two functions.
import type WebSocket from "ws";
import { decodeFrame, encodeFrame, ProtocolError, type Message } from "./frames.js";

export function sendFrame(ws: WebSocket, m: Message): void {
  if (ws.readyState === ws.OPEN) ws.send(encodeFrame(m));
}

/** Decodes every message the socket receives; a bad frame is answered with an error frame and reported, never thrown. */
export function receiveFrames(ws: WebSocket, onMessage: (m: Message) => void, onBadFrame: (reason: string) => void): void {
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    let m: Message;
    try {
      if (!isBinary) throw new ProtocolError("text frames are not part of the protocol");
      m = decodeFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    } catch (e) {
      const reason = `bad frame: ${(e as Error).message}`;
      onBadFrame(reason);
      sendFrame(ws, { type: "error", message: reason });
      return;
    }
    onMessage(m);
  });
}
