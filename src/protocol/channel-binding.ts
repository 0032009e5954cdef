// The TLS channel binding the join handshake is bound to (RFC 5705 keying material exporter): both ends
// of one TLS session compute the same bytes, and no other session has them, so a handshake relayed by a
// man in the middle (two TLS sessions) does not verify. A plain TCP connection has none ("").
import type { Socket } from "node:net";
import { TLSSocket } from "node:tls";

const LABEL = "EXPORTER-distmoe-join";

/** The connection's binding, hex; "" for a connection without TLS. */
export function channelBinding(socket: Socket): string {
  return socket instanceof TLSSocket ? socket.exportKeyingMaterial(32, LABEL, Buffer.alloc(0)).toString("hex") : "";
}
