// A Node device's identity: an Ed25519 key pair, kept in a file beside its weight cache (owner-only), made on
// first start. The base station knows the device by the fingerprint of its public key: a device that
// keeps its key is recognised when it rejoins, and no other device can take its name. (A browser device's
// identity lives in its page: protocol/handshake.ts newIdentity.)
import { createPrivateKey, type KeyObject } from "node:crypto";
import { linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { identityOf, newIdentity, type DeviceIdentity } from "../protocol/handshake.js";

export type { DeviceIdentity } from "../protocol/handshake.js";

/**
 * Where a device keeps its identity by default: in its cache directory, one file per device name, under
 * `.identity` (no model id starts with a dot, so no model's weights ever share that folder).
 */
export const identityFile = (cacheDir: string, name: string): string => path.join(cacheDir, ".identity", `${name}.key`);

/** A new identity, held in memory only. */
export const ephemeralIdentity = (): Promise<DeviceIdentity> => newIdentity();

/** The identity of an Ed25519 private key, as WebCrypto keys (the handshake signs with those). */
async function identityOfKey(key: KeyObject): Promise<DeviceIdentity> {
  const { crv, x, d } = key.export({ format: "jwk" });
  const subtle = globalThis.crypto.subtle;
  const privateKey = await subtle.importKey("jwk", { kty: "OKP", crv, x, d }, "Ed25519", false, ["sign"]);
  const publicKey = await subtle.importKey("jwk", { kty: "OKP", crv, x }, "Ed25519", true, ["verify"]);
  return identityOf(privateKey, publicKey);
}

/**
 * The identity in `file` (PKCS#8 PEM), made there first if there is none. Several processes starting at
 * once agree on one: the file is written aside and linked into place, and whoever loses reads the
 * winner's. `created` says whether this call made it.
 */
export async function loadIdentity(file: string): Promise<DeviceIdentity & { created: boolean }> {
  const existing = readIdentity(file);
  if (existing) return { ...(await identityOfKey(existing)), created: false };
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const fresh = await newIdentity(true);
  const der = Buffer.from(await globalThis.crypto.subtle.exportKey("pkcs8", fresh.privateKey));
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, createPrivateKey({ key: der, format: "der", type: "pkcs8" }).export({ format: "pem", type: "pkcs8" }), { mode: 0o600 });
  try {
    linkSync(tmp, file);
    return { ...fresh, created: true };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    return { ...(await identityOfKey(readIdentity(file)!)), created: false };
  } finally {
    rmSync(tmp, { force: true });
  }
}

function readIdentity(file: string): KeyObject | null {
  let pem: string;
  try {
    pem = readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new Error(`cannot read this device's identity ${file}: ${(e as Error).message}`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (e) {
    throw new Error(`${file} is not a private key (${(e as Error).message}); remove it to make a new identity (the base station then sees a new device)`);
  }
  if (key.asymmetricKeyType !== "ed25519") throw new Error(`${file} holds a ${key.asymmetricKeyType} key, not Ed25519; remove it to make a new identity`);
  return key;
}
