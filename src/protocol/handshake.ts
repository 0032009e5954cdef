// The join handshake. The base station sends a fresh nonce (challenge). The device answers (hello) with
// its own nonce, its identity (an Ed25519 public key) and a signature by that key, and an HMAC under the
// join token; both are over the transcript: both nonces, its name, its key and the TLS channel binding
// when there is one. The base station answers (welcome) with an HMAC over the transcript the other way
// round. So each side proves it holds the join token without sending it, the device proves it holds its
// identity's private key, and a captured handshake is worth nothing on a new connection (its nonces are
// new) or relayed through another TLS session (its binding differs).
// All of it runs on WebCrypto (globalThis.crypto), which Node 20 and browsers both have: the Node device,
// the browser device and the base station share this one implementation.

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

const subtle = (): SubtleCrypto => {
  const s = globalThis.crypto?.subtle;
  // browsers offer it only in a secure context (https://, or http://localhost)
  if (!s) throw new Error("WebCrypto (crypto.subtle) is not available here: a browser offers it only to pages served over https:// or from localhost");
  return s;
};

/** What both sides' proofs are over. `key` and `binding` are "" when the device has no identity or the link no TLS binding. */
export interface Transcript {
  bsNonce: string;
  deviceNonce: string;
  name: string;
  key: string;
  binding: string;
}

export const toHex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** The bytes of hex; empty for a string that is not whole pairs of hex digits (so it matches nothing). */
export function fromHex(hex: string): Uint8Array {
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(hex)) return new Uint8Array(0);
  return Uint8Array.from({ length: hex.length / 2 }, (_, i) => Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16));
}

const base64 = (b: Uint8Array): string => btoa(String.fromCharCode(...b));

function randomBytes(n: number): Uint8Array {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

/** A fresh nonce, as hex. */
export function newNonce(): string {
  return toHex(randomBytes(NONCE_BYTES));
}

/** A new join token: 24 random bytes, base64url (32 characters). */
export function newJoinToken(): string {
  return base64(randomBytes(24)).replace(/\+/g, "-").replace(/\//g, "_");
}

/** SHA-256 of `data`, in hex (a streamed tensor's checksum). */
export async function sha256Hex(data: Uint8Array): Promise<string> {
  return toHex(new Uint8Array(await subtle().digest("SHA-256", data as Uint8Array<ArrayBuffer>)));
}

/** The parts of a transcript under a context, each ended by a NUL (no part holds one). */
function transcriptBytes(context: string, t: Transcript, nonces: "bs-first" | "device-first"): Uint8Array<ArrayBuffer> {
  const [a, b] = nonces === "bs-first" ? [t.bsNonce, t.deviceNonce] : [t.deviceNonce, t.bsNonce];
  return new TextEncoder().encode([context, a, b, t.name, t.key, t.binding].map((p) => `${p}\0`).join(""));
}

async function hmac(token: string, data: Uint8Array<ArrayBuffer>): Promise<string> {
  const key = await subtle().importKey("raw", new TextEncoder().encode(token), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return toHex(new Uint8Array(await subtle().sign("HMAC", key, data)));
}

/** The device's proof of the join token. */
export function deviceProof(token: string, t: Transcript): Promise<string> {
  return hmac(token, transcriptBytes(DEVICE_CONTEXT, t, "bs-first"));
}

/** The base station's proof, answering the device's nonce (another context: a device proof is never a valid one). */
export function bsProof(token: string, t: Transcript): Promise<string> {
  return hmac(token, transcriptBytes(BS_CONTEXT, t, "device-first"));
}

/** Whether two hex proofs are equal, in time independent of where they differ. */
export function sameProof(expected: string, given: string): boolean {
  const a = fromHex(expected), b = fromHex(given);
  if (a.length !== b.length || a.length === 0) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** Which of `tokens` the device's `proof` was made with; null when none. */
export async function provenToken(tokens: readonly string[], t: Transcript, proof: string): Promise<string | null> {
  // every token is tried, so the time taken says nothing about which one matched
  const proofs = await Promise.all(tokens.map((token) => deviceProof(token, t)));
  let found: string | null = null;
  proofs.forEach((p, i) => {
    if (sameProof(p, proof)) found ??= tokens[i]!;
  });
  return found;
}

/** The device's signature of the transcript with its identity's private key (an Ed25519 CryptoKey). */
export async function signTranscript(privateKey: CryptoKey, t: Transcript): Promise<string> {
  return toHex(new Uint8Array(await subtle().sign("Ed25519", privateKey, transcriptBytes(IDENTITY_CONTEXT, t, "bs-first"))));
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
  const k = fromHex(keyHex);
  if (k.length !== 32) return false;
  k[31] = k[31]! & 0x7f;
  return SMALL_ORDER_KEYS.has(toHex(k));
}

/** Whether `signature` is the transcript's, by the private key of `t.key` (never for a key of small order: no one holds one). */
export async function validSignature(t: Transcript, signature: string): Promise<boolean> {
  const raw = fromHex(t.key), sig = fromHex(signature);
  if (raw.length !== 32 || sig.length !== 64 || smallOrder(t.key)) return false;
  try {
    const key = await subtle().importKey("raw", raw as Uint8Array<ArrayBuffer>, "Ed25519", false, ["verify"]);
    return await subtle().verify("Ed25519", key, sig as Uint8Array<ArrayBuffer>, transcriptBytes(IDENTITY_CONTEXT, t, "bs-first"));
  } catch {
    return false; // not a point on the curve
  }
}

/** A device's identity as the base station knows it: the SHA-256 of its public key, "SHA256:" and base64 (as ssh shows keys). */
export async function identityFingerprint(keyHex: string): Promise<string> {
  const digest = new Uint8Array(await subtle().digest("SHA-256", fromHex(keyHex) as Uint8Array<ArrayBuffer>));
  return `SHA256:${base64(digest).replace(/=+$/, "")}`;
}

/** A device's identity: its Ed25519 key pair's private half (as WebCrypto holds it) and its public key as the hello carries it. */
export interface DeviceIdentity {
  privateKey: CryptoKey;
  /** the public key as the hello carries it (hex) */
  key: string;
  /** as the base station shows it: "SHA256:…" */
  fingerprint: string;
}

/** An identity from a key pair. */
export async function identityOf(privateKey: CryptoKey, publicKey: CryptoKey): Promise<DeviceIdentity> {
  const key = toHex(new Uint8Array(await subtle().exportKey("raw", publicKey)));
  return { privateKey, key, fingerprint: await identityFingerprint(key) };
}

/** A new identity (its private key exportable only where `extractable`, for a device that keeps it in a file). */
export async function newIdentity(extractable = false): Promise<DeviceIdentity> {
  const pair = (await subtle().generateKey("Ed25519", extractable, ["sign", "verify"])) as CryptoKeyPair;
  return identityOf(pair.privateKey, pair.publicKey);
}
