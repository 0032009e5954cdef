// The join handshake. The base station sends a fresh nonce (challenge). The device answers (hello) with
// its own nonce, its identity (an Ed25519 public key) and a signature by that key, and an HMAC under the
// join token; both are over the transcript: both nonces, its name, its key and the TLS channel binding
// when there is one. The base station answers (welcome) with an HMAC over the transcript the other way
// round. So each side proves it holds the join token without sending it, the device proves it holds its
// identity's private key, and a captured handshake is worth nothing on a new connection (its nonces are
// new) or relayed through another TLS session (its binding differs).
import { createHash, createHmac, createPublicKey, randomBytes, sign, timingSafeEqual, verify, type KeyObject } from "node:crypto";

/** Bytes of a nonce; on the wire as lowercase hex. */
export const NONCE_BYTES = 32;
/** Hex characters of a nonce and of a proof (an HMAC-SHA256). */
export const NONCE_HEX = NONCE_BYTES * 2;
export const PROOF_HEX = 64;
/** Hex characters of an Ed25519 public key (32 bytes) and of a signature (64 bytes). */
export const KEY_HEX = 64;
export const SIGNATURE_HEX = 128;

const DEVICE_CONTEXT = "distmoe-join v2";
const BS_CONTEXT = "distmoe-bs v2";
const IDENTITY_CONTEXT = "distmoe-identity v1";

/** What both sides' proofs are over. `key` and `binding` are "" when the device has no identity or the link no TLS. */
export interface Transcript {
  bsNonce: string;
  deviceNonce: string;
  name: string;
  key: string;
  binding: string;
}

/** A fresh nonce, as hex. */
export function newNonce(): string {
  return randomBytes(NONCE_BYTES).toString("hex");
}

/** A new join token: 24 random bytes, base64url (32 characters). */
export function newJoinToken(): string {
  return randomBytes(24).toString("base64url");
}

/** The parts of a transcript under a context, each ended by a NUL (no part holds one). */
function transcriptBytes(context: string, t: Transcript, nonces: "bs-first" | "device-first"): Buffer {
  const [a, b] = nonces === "bs-first" ? [t.bsNonce, t.deviceNonce] : [t.deviceNonce, t.bsNonce];
  return Buffer.from([context, a, b, t.name, t.key, t.binding].map((p) => `${p}\0`).join(""));
}

const hmac = (token: string, data: Buffer): string => createHmac("sha256", token).update(data).digest("hex");

/** The device's proof of the join token. */
export function deviceProof(token: string, t: Transcript): string {
  return hmac(token, transcriptBytes(DEVICE_CONTEXT, t, "bs-first"));
}

/** The base station's proof, answering the device's nonce (another context: a device proof is never a valid one). */
export function bsProof(token: string, t: Transcript): string {
  return hmac(token, transcriptBytes(BS_CONTEXT, t, "device-first"));
}

/** Whether two hex proofs are equal, in time independent of where they differ. */
export function sameProof(expected: string, given: string): boolean {
  const a = Buffer.from(expected, "hex"), b = Buffer.from(given, "hex");
  return a.length === b.length && a.length > 0 && timingSafeEqual(a, b);
}

/** Which of `tokens` the device's `proof` was made with; null when none. */
export function provenToken(tokens: readonly string[], t: Transcript, proof: string): string | null {
  let found: string | null = null;
  // every token is tried, so the time taken says nothing about which one matched
  for (const token of tokens) if (sameProof(deviceProof(token, t), proof)) found ??= token;
  return found;
}

/** An Ed25519 public key as it travels: its 32 raw bytes in hex. */
export function publicKeyHex(key: KeyObject): string {
  const jwk = key.export({ format: "jwk" });
  return Buffer.from(jwk.x!, "base64url").toString("hex");
}

/** The device's signature of the transcript with its identity's private key. */
export function signTranscript(privateKey: KeyObject, t: Transcript): string {
  return sign(null, transcriptBytes(IDENTITY_CONTEXT, t, "bs-first"), privateKey).toString("hex");
}

/**
 * The Ed25519 points of small order, as encoded (libsodium's list: 0, 1, p − 1, p, p + 1 and the two of
 * order 8; the sign bit is left out). With one of them as the public key, R the identity and s = 0 make
 * a "signature" that verifies for any message whose hash is a multiple of the point's order: always for
 * order 1, one in 8 at worst, and a device chooses its own nonce. OpenSSL's verify does not refuse them.
 */
const SMALL_ORDER_KEYS = new Set([
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]);

/** Whether a public key (hex) is a point of small order, whose signatures anyone can make. */
function smallOrder(keyHex: string): boolean {
  const k = Buffer.from(keyHex, "hex");
  if (k.length !== 32) return false;
  k[31] = k[31]! & 0x7f;
  return SMALL_ORDER_KEYS.has(k.toString("hex"));
}

/** Whether `signature` is the transcript's, by the private key of `t.key` (never for a key of small order: no one holds one). */
export function validSignature(t: Transcript, signature: string): boolean {
  if (smallOrder(t.key)) return false;
  try {
    const key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(t.key, "hex").toString("base64url") }, format: "jwk" });
    return verify(null, transcriptBytes(IDENTITY_CONTEXT, t, "bs-first"), key, Buffer.from(signature, "hex"));
  } catch {
    return false; // not a point on the curve
  }
}

/** A device's identity as the base station knows it: the SHA-256 of its public key, "SHA256:" and base64 (as ssh shows keys). */
export function identityFingerprint(keyHex: string): string {
  return `SHA256:${createHash("sha256").update(Buffer.from(keyHex, "hex")).digest("base64").replace(/=+$/, "")}`;
}
