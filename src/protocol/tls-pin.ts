// A device's TLS connection to its base station: the base station's certificate pinned by its SHA-256
// fingerprint (as `distmoe serve` prints it), or else verified against this machine's CAs. A certificate
// refused either way ends the connection before a byte of the WebSocket upgrade is sent.
import net from "node:net";
import tls from "node:tls";
import type { Duplex } from "node:stream";

/** SHA-256 in hex: 32 bytes, colon-separated or not, with an optional sha256: prefix. */
const FINGERPRINT = /^(?:sha256:)?([0-9a-f]{64}|[0-9a-f]{2}(?::[0-9a-f]{2}){31})$/i;

/**
 * A SHA-256 certificate fingerprint (AB:CD:…, plain hex, any case, optionally prefixed sha256:) in the
 * form Node gives a peer certificate's (upper case, colon-separated); throws the rule when it is not one.
 */
export function parseFingerprint(v: string): string {
  const m = FINGERPRINT.exec(v.trim());
  if (!m) throw new Error(`expected a SHA-256 fingerprint (32 bytes in hex, e.g. AB:CD:…:EF as \`distmoe serve\` prints it; plain hex and a sha256: prefix are accepted too), got "${v}"`);
  return m[1]!.replace(/:/g, "").toUpperCase().match(/../g)!.join(":");
}

/** The base station's certificate was refused (pin mismatch, or it does not verify): trying again will not help. */
export class CertificateRefused extends Error {}

/**
 * A `createConnection` for ws's client (and so for http's request, which waits for `done`): opens TLS to
 * the host and hands the socket on only once its certificate is accepted — its fingerprint equal to
 * `pin`, or, without a pin, verified against the system CAs for the host name. A refusal is a
 * CertificateRefused that says what was presented and what to do.
 */
export function bsTlsConnection(pin: string | null) {
  return (options: tls.ConnectionOptions, done: (e: Error | null, socket?: Duplex) => void): undefined => {
    const where = `${options.host}:${options.port}`;
    // as ws does: no SNI for an address (RFC 6066 names hosts only)
    const servername = options.servername ?? (net.isIP(options.host ?? "") ? "" : options.host);
    // TLS 1.3 only: the handshake's channel binding holds against a relay only there (TLS 1.2 admits the triple handshake)
    const socket = tls.connect({ ...options, servername, rejectUnauthorized: pin === null, minVersion: "TLSv1.3" });
    const failed = (e: Error) =>
      done(
        socket.authorizationError
          ? new CertificateRefused(`the base station's certificate at ${where} does not verify against this machine's CAs (${e.message}); a base station with a self-signed certificate (serve --tls self-signed) is pinned with --fingerprint, as serve printed it`)
          : e,
      );
    socket.once("error", failed);
    socket.once("secureConnect", () => {
      socket.off("error", failed);
      const seen = socket.getPeerCertificate().fingerprint256;
      if (pin !== null && seen !== pin) {
        socket.destroy();
        return done(new CertificateRefused(`the base station at ${where} presented a certificate with SHA-256 fingerprint ${seen}, not the pinned ${pin}: it is not the base station pinned (or its certificate changed); refusing it`));
      }
      done(null, socket);
    });
    return undefined;
  };
}
