// Channel binding for the join handshake: both ends of one TLS connection derive the same value from its
// session (the keying material exporter, RFC 5705 / RFC 8446 §7.5), which no one else can. A proof that
// covers it holds for that connection only: a man in the middle, with a TLS session to each side, cannot
// relay it. Each side gets the connection's socket from ws:
//   base station: wss.on("connection", (ws, req) => channelBinding(req.socket))
//   device:       ws.on("upgrade", (res) => channelBinding(res.socket))   (before "open", so before any frame)
import type { Socket } from "node:net";
import { TLSSocket } from "node:tls";

/** The exporter label (RFC 5705 §4: labels beginning "EXPORTER" are free for applications). */
export const CHANNEL_BINDING_LABEL = "EXPORTER-distmoe-join";

/**
 * 32 bytes exported from the TLS session under `socket` (with an empty context, which another
 * implementation must give too), in hex; "" for a plain TCP socket (there is no session to bind to).
 */
export function channelBinding(socket: Socket): string {
  return socket instanceof TLSSocket ? socket.exportKeyingMaterial(32, CHANNEL_BINDING_LABEL, Buffer.alloc(0)).toString("hex") : "";
}
