// A device's hello as an honest one makes it, for tests that speak the protocol by hand.
import type { Capabilities } from "../protocol/frames.js";
import { encodeFrame } from "../protocol/frames.js";
import { deviceProof, newNonce, signTranscript, type Transcript } from "../protocol/handshake.js";
import { ephemeralIdentity, type DeviceIdentity } from "../runtime/device-identity.js";

/** A hello answering the challenge `bsNonce` with proof of `token` and of `identity` (default: a new one), over a link without TLS. */
export function provenHello(token: string, bsNonce: string, name: string, capabilities: Capabilities, identity: DeviceIdentity = ephemeralIdentity()): Uint8Array {
  const t: Transcript = { bsNonce, deviceNonce: newNonce(), name, key: identity.key, binding: "" };
  return encodeFrame({ type: "hello", name, capabilities, nonce: t.deviceNonce, proof: deviceProof(token, t), key: identity.key, signature: signTranscript(identity.privateKey, t) });
}
