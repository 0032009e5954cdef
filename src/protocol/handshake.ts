// The join handshake: each side proves it holds the cluster's join token without sending it. The base
// station sends a fresh nonce (challenge); the device answers its hello with its own nonce and an HMAC
// over both nonces and its name; the base station answers (welcome) with an HMAC over both nonces the
// other way round. A captured handshake is worth nothing on a new connection: its nonce is new.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** Bytes of a nonce; on the wire as lowercase hex. */
export const NONCE_BYTES = 32;
/** Hex characters of a nonce and of a proof (an HMAC-SHA256). */
export const NONCE_HEX = NONCE_BYTES * 2;
export const PROOF_HEX = 64;

const DEVICE_CONTEXT = "distmoe-join v1";
const BS_CONTEXT = "distmoe-bs v1";

/** A fresh nonce, as hex. */
export function newNonce(): string {
  return randomBytes(NONCE_BYTES).toString("hex");
}

/** A new join token: 24 random bytes, base64url (32 characters). */
export function newJoinToken(): string {
  return randomBytes(24).toString("base64url");
}

/** HMAC-SHA256 under `token` over the parts, each ended by a NUL (no part holds one), as hex. */
function hmac(token: string, parts: readonly string[]): string {
  const mac = createHmac("sha256", token);
  for (const p of parts) mac.update(p).update("\0");
  return mac.digest("hex");
}

/** The device's proof: binds both nonces and the name it says hello with. */
export function deviceProof(token: string, bsNonce: string, deviceNonce: string, name: string): string {
  return hmac(token, [DEVICE_CONTEXT, bsNonce, deviceNonce, name]);
}

/** The base station's proof, answering the device's nonce (another context: a device proof is never a valid one). */
export function bsProof(token: string, deviceNonce: string, bsNonce: string): string {
  return hmac(token, [BS_CONTEXT, deviceNonce, bsNonce]);
}

/** Whether two hex proofs are equal, in time independent of where they differ. */
export function sameProof(expected: string, given: string): boolean {
  const a = Buffer.from(expected, "hex"), b = Buffer.from(given, "hex");
  return a.length === b.length && a.length > 0 && timingSafeEqual(a, b);
}

/** Which of `tokens` the device's `proof` was made with; null when none. */
export function provenToken(tokens: readonly string[], bsNonce: string, deviceNonce: string, name: string, proof: string): string | null {
  let found: string | null = null;
  // every token is tried, so the time taken says nothing about which one matched
  for (const t of tokens) if (sameProof(deviceProof(t, bsNonce, deviceNonce, name), proof)) found ??= t;
  return found;
}
