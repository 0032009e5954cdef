// The base station's TLS certificate and key: files the operator gives (--tls-cert, --tls-key), checked
// before the port opens, or a self-signed pair made on first start and kept in the state directory,
// where later starts find it again (devices pin its fingerprint: a new one would lock them out).
import { KeyObject, X509Certificate, createPrivateKey, randomBytes, webcrypto } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import * as asn1js from "asn1js";
import * as pkijs from "pkijs";

export interface ServerTls {
  /** The certificate (with its chain, if the file has one), PEM. */
  cert: string;
  /** Its private key, PEM. */
  key: string;
  /** SHA-256 of the certificate's DER, AB:CD:… (as `openssl x509 -fingerprint -sha256` prints it): what devices pin. */
  fingerprint: string;
}

/** How long a self-signed certificate is valid: long, since devices pin it and a new one means re-pinning them all. */
const SELF_SIGNED_DAYS = 3650;

/**
 * The certificate and key in these PEM files, checked as a TLS server needs them: both readable and
 * parseable, the key unencrypted and belonging to the certificate. Throws one line naming the file and
 * what is wrong.
 */
export function loadTls(certFile: string, keyFile: string): ServerTls {
  const cert = readPem(certFile, "TLS certificate", /-----BEGIN CERTIFICATE-----/, "-----BEGIN CERTIFICATE-----");
  const key = readPem(keyFile, "TLS key", /-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----/, "-----BEGIN PRIVATE KEY-----");
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (e) {
    throw new Error(`TLS certificate ${certFile}: cannot parse it (${(e as Error).message})`);
  }
  // PKCS#8 encrypted, or a traditional PEM with a passphrase
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(key)) throw new Error(`TLS key ${keyFile}: it is encrypted; give it unencrypted (readable by this user only)`);
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey(key);
  } catch (e) {
    throw new Error(`TLS key ${keyFile}: cannot parse it (${(e as Error).message})`);
  }
  if (!x509.checkPrivateKey(keyObject)) throw new Error(`TLS key ${keyFile} does not belong to the certificate ${certFile} (their public keys differ)`);
  return { cert, key, fingerprint: x509.fingerprint256 };
}

/** A file's text, which must hold a PEM block of the kind `block` matches. */
function readPem(file: string, what: string, block: RegExp, expected: string): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new Error(`${what} ${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (!block.test(text)) throw new Error(`${what} ${file}: not PEM (no ${expected} block)`);
  return text;
}

/**
 * The names a self-signed certificate for a BS listening on `host` covers: this machine's loopback
 * names, its host name, and `host` itself when it is one specific address.
 */
export function certificateNames(host: string): string[] {
  const names = ["localhost", "127.0.0.1", "::1", os.hostname(), ...(["0.0.0.0", "::"].includes(host) ? [] : [host])];
  // a name a certificate cannot carry (IA5String: ASCII, no spaces) is left out
  return [...new Set(names.map((n) => n.replace(/%.*$/, "")).filter((n) => /^[\x21-\x7e]+$/.test(n)))];
}

/**
 * The self-signed certificate kept in `dir` (cert.pem, key.pem), made for `names` when there is none yet
 * (the key readable by this user only). `made` says which; `unnamed` lists the names asked for that a
 * kept certificate does not cover (clients that check names, unlike devices that pin, will refuse them).
 */
export async function selfSignedTls(dir: string, names: readonly string[]): Promise<ServerTls & { made: boolean; unnamed: string[] }> {
  const certFile = path.join(dir, "cert.pem"), keyFile = path.join(dir, "key.pem");
  // the certificate is written last: where it is, the pair is complete
  if (existsSync(certFile)) {
    const kept = loadTls(certFile, keyFile);
    const x509 = new X509Certificate(kept.cert);
    const unnamed = names.filter((n) => (net.isIP(n) ? x509.checkIP(n) : x509.checkHost(n)) === undefined);
    return { ...kept, made: false, unnamed };
  }
  const made = await makeSelfSigned(names);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeNew(keyFile, made.key, 0o600);
    writeNew(certFile, made.cert, 0o644);
  } catch (e) {
    throw new Error(`cannot keep the self-signed certificate in ${dir}: ${(e as Error).message}`);
  }
  return { ...made, made: true, unnamed: [] };
}

/** Writes `file` whole or not at all (a new file with `mode`, renamed into place). */
function writeNew(file: string, text: string, mode: number): void {
  const tmp = `${file}.tmp`;
  rmSync(tmp, { force: true });
  writeFileSync(tmp, text, { mode, flag: "wx" });
  renameSync(tmp, file);
}

/** A new ECDSA P-256 key and a self-signed certificate for `names` (DNS names and IP addresses). */
export async function makeSelfSigned(names: readonly string[]): Promise<ServerTls> {
  const engine = new pkijs.CryptoEngine({ name: "node", crypto: webcrypto as unknown as Crypto });
  const keys = await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  const cert = new pkijs.Certificate();
  cert.version = 2;
  // a positive serial of 16 random bytes (RFC 5280: at most 20 octets, unpredictable)
  cert.serialNumber = new asn1js.Integer({ valueHex: Uint8Array.from([0x40 | (randomBytes(1)[0]! & 0x3f), ...randomBytes(15)]) });
  const cn = new pkijs.AttributeTypeAndValue({ type: "2.5.4.3", value: new asn1js.Utf8String({ value: `distmoe base station ${os.hostname()}`.slice(0, 64) }) });
  cert.subject.typesAndValues.push(cn);
  cert.issuer.typesAndValues.push(cn);
  // an hour back: a device whose clock is a little behind still accepts it
  cert.notBefore.value = new Date(Date.now() - 3600e3);
  cert.notAfter.value = new Date(Date.now() + SELF_SIGNED_DAYS * 86400e3);
  const altNames = names.map((n) =>
    net.isIP(n) ? new pkijs.GeneralName({ type: 7, value: new asn1js.OctetString({ valueHex: ipBytes(n) }) }) : new pkijs.GeneralName({ type: 2, value: n }),
  );
  cert.extensions = [
    new pkijs.Extension({ extnID: "2.5.29.17", critical: false, extnValue: new pkijs.AltName({ altNames }).toSchema().toBER(false) }),
    new pkijs.Extension({ extnID: "2.5.29.19", critical: true, extnValue: new pkijs.BasicConstraints({ cA: false }).toSchema().toBER(false) }),
    // serverAuth: what a TLS server's certificate is for
    new pkijs.Extension({ extnID: "2.5.29.37", critical: false, extnValue: new pkijs.ExtKeyUsage({ keyPurposes: ["1.3.6.1.5.5.7.3.1"] }).toSchema().toBER(false) }),
  ];
  await cert.subjectPublicKeyInfo.importKey(keys.publicKey, engine);
  await cert.sign(keys.privateKey, "SHA-256", engine);
  const x509 = new X509Certificate(Buffer.from(cert.toSchema().toBER(false)));
  return { cert: x509.toString(), key: KeyObject.from(keys.privateKey).export({ type: "pkcs8", format: "pem" }) as string, fingerprint: x509.fingerprint256 };
}

/** An IPv4 or IPv6 address (as net.isIP accepts it) as the 4 or 16 bytes a certificate names it by. */
function ipBytes(ip: string): Uint8Array {
  const v4 = (s: string) => s.split(".").map(Number);
  if (net.isIPv4(ip)) return Uint8Array.from(v4(ip));
  // 16-bit groups; an IPv4 tail (::ffff:1.2.3.4) is two of them
  const groups = (s: string) => (s === "" ? [] : s.split(":").flatMap((g) => (g.includes(".") ? [0, 2].map((i) => (v4(g)[i]! << 8) | v4(g)[i + 1]!) : [parseInt(g, 16)])));
  const [head, tail] = ip.split("::") as [string, string | undefined];
  const h = groups(head), t = groups(tail ?? "");
  return Uint8Array.from([...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t].flatMap((g) => [g >> 8, g & 0xff]));
}
