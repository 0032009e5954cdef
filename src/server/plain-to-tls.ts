// One port for a TLS base station that still answers a plain request: the first byte of a connection
// tells a TLS handshake (0x16) from plain HTTP. A handshake goes on to the HTTPS server (which also
// carries the devices' WSS); anything else is answered 426 with what to use instead, so a `curl
// http://…` or a device with ws:// gets a reason rather than a reset connection, and a browser a page
// that explains it in plain words (tls-help.ts).
import net from "node:net";
import type { Server as HttpsServer } from "node:https";
import { TLS_HELP_ANSWER, wantsPage } from "./tls-help.js";

/** The first byte of a TLS record carrying a handshake. */
const TLS_HANDSHAKE = 0x16;
/** How long a connection may wait for its first byte, and a plain one may last in all (its answer sent, a client that goes on sending is cut off). */
export const PLAIN_DEADLINE_MS = 10_000;

const ANSWER =
  "HTTP/1.1 426 Upgrade Required\r\nUpgrade: TLS/1.3, HTTP/1.1\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n" +
  "this port serves HTTPS, and WSS to devices: use https:// (devices: wss:// with --fingerprint)\n";

/** A server to listen with in place of `https`: it hands TLS connections to it and answers plain ones 426. */
export function plainToTls(https: HttpsServer, deadlineMs = PLAIN_DEADLINE_MS): net.Server {
  return net.createServer((socket) => {
    socket.on("error", () => socket.destroy());
    // a deadline from the start, not an idle timeout: a client trickling a byte now and then would
    // reset an idle one for ever and hold its socket (slowloris)
    const deadline = setTimeout(() => socket.destroy(), deadlineMs);
    socket.once("close", () => clearTimeout(deadline));
    socket.once("data", (first: Buffer) => {
      if (first[0] === TLS_HANDSHAKE) {
        clearTimeout(deadline);
        socket.pause();
        socket.unshift(first);
        https.emit("connection", socket);
        return;
      }
      // the rest of the request is read and dropped, so the socket ends once the client closes (a paused
      // one never would); one that does not close goes at the deadline
      socket.resume();
      socket.end(wantsPage(first) ? TLS_HELP_ANSWER : ANSWER);
    });
  });
}
