// A device's hello as an honest one makes it, for tests that speak the protocol by hand.
import type { Capabilities } from "../protocol/frames.js";
import { encodeFrame } from "../protocol/frames.js";
import { deviceProof, newIdentity, newNonce, signTranscript, type DeviceIdentity, type Transcript } from "../protocol/handshake.js";

/**
 * A hello answering the challenge `bsNonce` with proof of `token` and of `identity` (default: a new one),
 * over a link without TLS, or bound to the TLS session's `binding`; `unbound`: as a browser device says it
 * (with `binding` given too, a bound hello that claims to be unbound).
 */
export async function provenHello(token: string, bsNonce: string, name: string, capabilities: Capabilities, identity?: DeviceIdentity, link: { binding?: string; unbound?: true } = {}): Promise<Uint8Array> {
  const id = identity ?? (await newIdentity());
  const t: Transcript = { bsNonce, deviceNonce: newNonce(), name, key: id.key, binding: link.binding ?? "" };
  const proof = await deviceProof(token, t), signature = await signTranscript(id.privateKey, t);
  return encodeFrame({ type: "hello", name, capabilities, nonce: t.deviceNonce, proof, key: id.key, signature, ...(link.unbound ? { unbound: true } : {}) });
}
