// Frames over a browser WebSocket: the page's twin of protocol/socket.ts (which is over Node's ws).
// A browser may close only with 1000 or an application code (3000–4999), so a frame that is not of the
// protocol closes with 1000 and says why in the reason.
import { decodeFrame, encodeFrame, type Message } from "../../protocol/frames.js";
import { CLOSE } from "../../protocol/socket.js";

/** Sends `m` where the connection is open; the bytes sent (0: not sent). */
export function sendFrame(ws: WebSocket, m: Message): number {
  if (ws.readyState !== WebSocket.OPEN) return 0;
  const frame = encodeFrame(m) as Uint8Array<ArrayBuffer>;
  ws.send(frame);
  return frame.length;
}

/** Closes with `code` (1000 where a browser may not use it) and `reason` made printable ASCII and cut to the 123 bytes a close frame holds. */
export function closeWith(ws: WebSocket, code: number, reason: string): void {
  if (ws.readyState !== WebSocket.OPEN && ws.readyState !== WebSocket.CONNECTING) return;
  ws.close(code === CLOSE.normal || (code >= 3000 && code <= 4999) ? code : CLOSE.normal, reason.replace(/[^\x20-\x7e]/g, "?").slice(0, 123));
}

/** Decodes every binary message; one that is not a frame of the protocol is reported once and closes the connection. */
export function receiveFrames(ws: WebSocket, onMessage: (m: Message) => void, onBadFrame: (reason: string) => void): void {
  ws.binaryType = "arraybuffer";
  ws.addEventListener("message", (e: MessageEvent) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    if (!(e.data instanceof ArrayBuffer)) {
      onBadFrame("bad frame: text frames are not part of the protocol");
      return closeWith(ws, CLOSE.normal, "text frames are not part of the protocol");
    }
    let m: Message;
    try {
      m = decodeFrame(new Uint8Array(e.data));
    } catch (err) {
      const reason = `bad frame: ${(err as Error).message}`;
      onBadFrame(reason);
      return closeWith(ws, CLOSE.normal, reason);
    }
    onMessage(m);
  });
}
