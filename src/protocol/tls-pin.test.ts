// A device's TLS to its base station: the pinned fingerprint or the system's CAs decide, and a refused
// certificate ends the connection before the WebSocket upgrade is sent.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket, { type ClientOptions } from "ws";
import { bsTlsConnection, CertificateRefused, parseFingerprint } from "./tls-pin.js";
import { startWss } from "../testing/wss.js";

const HEX = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const CANONICAL = HEX.toUpperCase().match(/../g)!.join(":");

test("parseFingerprint: AB:CD:…, plain hex, any case, a sha256: prefix; anything else is refused with the rule", () => {
  for (const v of [CANONICAL, CANONICAL.toLowerCase(), HEX, HEX.toUpperCase(), `sha256:${HEX}`, `SHA256:${CANONICAL}`, ` ${HEX}\n`]) assert.equal(parseFingerprint(v), CANONICAL, v);
  for (const v of ["", HEX.slice(2), `${HEX}00`, CANONICAL.slice(3), `${HEX.slice(0, 62)}zz`, `sha1:${HEX}`, `${CANONICAL.slice(0, 5)}${CANONICAL.slice(6)}`, "AB:CD"]) {
    assert.throws(() => parseFingerprint(v), /expected a SHA-256 fingerprint/, v);
  }
});

/** How a client with `pin` fares against the server: opened, or the error it got. */
function connectWith(url: string, pin: string | null): Promise<"open" | Error> {
  const ws = new WebSocket(url, { createConnection: bsTlsConnection(pin) as unknown as ClientOptions["createConnection"] });
  return new Promise((resolve) => {
    ws.once("open", () => {
      ws.close();
      resolve("open");
    });
    ws.once("error", resolve);
  });
}

test("bsTlsConnection: the pinned certificate opens; another, or an unverifiable one without a pin, is refused after the TLS handshake and before the upgrade", async () => {
  const bs = await startWss();
  try {
    assert.equal(await connectWith(bs.url, bs.tls.fingerprint), "open");
    assert.deepEqual(bs.counts, { connections: 1, upgrades: 1 });

    const wrong = await connectWith(bs.url, CANONICAL);
    assert.ok(wrong instanceof CertificateRefused, String(wrong));
    assert.match(wrong.message, new RegExp(`presented a certificate with SHA-256 fingerprint ${bs.tls.fingerprint}, not the pinned ${CANONICAL}`));
    // it saw the certificate (the message names it), so the TLS handshake was done, and it sent nothing over it
    assert.deepEqual(bs.counts, { connections: 2, upgrades: 1 });

    // no pin: the system's CAs, which do not know a self-signed certificate
    const unverified = await connectWith(bs.url, null);
    assert.ok(unverified instanceof CertificateRefused, String(unverified));
    assert.match(unverified.message, /does not verify against this machine's CAs \(self-signed certificate\).*--fingerprint/);
    assert.equal(bs.counts.upgrades, 1);
  } finally {
    await bs.close();
  }
});
