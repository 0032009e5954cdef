// The BS's certificate: given files are checked before use, with one line naming the file and the fault;
// a self-signed one is made once, kept (its key private to the user) and found again.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { certificateNames, loadTls, makeSelfSigned, selfSignedTls } from "./tls.js";

test("loadTls: a good pair loads with its fingerprint; a missing, unreadable-as-PEM, unparseable, encrypted or foreign key, or a non-PEM certificate, is refused naming the file", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-tls-"));
  try {
    const a = await makeSelfSigned(["localhost"]), b = await makeSelfSigned(["localhost"]);
    const file = (name: string, text: string) => {
      const f = path.join(dir, name);
      writeFileSync(f, text);
      return f;
    };
    const certA = file("a.crt", a.cert), keyA = file("a.key", a.key), keyB = file("b.key", b.key);
    assert.deepEqual(loadTls(certA, keyA), a);
    assert.equal(a.fingerprint, new X509Certificate(a.cert).fingerprint256);

    const encrypted = createPrivateKey(a.key).export({ type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase: "secret" }) as string;
    for (const [cert, key, msg] of [
      [path.join(dir, "none.crt"), keyA, /^TLS certificate .*none\.crt: cannot read \(ENOENT\)$/],
      [certA, path.join(dir, "none.key"), /^TLS key .*none\.key: cannot read \(ENOENT\)$/],
      [file("der.crt", new X509Certificate(a.cert).raw.toString("latin1")), keyA, /^TLS certificate .*der\.crt: not PEM \(no -----BEGIN CERTIFICATE----- block\)$/],
      [certA, file("cert-as-key.pem", a.cert), /^TLS key .*cert-as-key\.pem: not PEM \(no -----BEGIN PRIVATE KEY----- block\)$/],
      [file("broken.crt", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), keyA, /^TLS certificate .*broken\.crt: cannot parse it/],
      [certA, file("enc.key", encrypted), /^TLS key .*enc\.key: it is encrypted; give it unencrypted/],
      [certA, keyB, /^TLS key .*b\.key does not belong to the certificate .*a\.crt \(their public keys differ\)$/],
    ] as const) {
      assert.throws(() => loadTls(cert, key), { message: msg });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("selfSignedTls: made on first use for the names asked (the key 0600), the same one found again, names it lacks reported", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-tls-"));
  try {
    const tlsDir = path.join(dir, "state", "tls");
    const names = certificateNames("192.0.2.10");
    assert.deepEqual(names, [...new Set(["localhost", "127.0.0.1", "::1", os.hostname(), "192.0.2.10"])]);
    assert.deepEqual(certificateNames("0.0.0.0"), names.slice(0, -1), "a wildcard address is no name");

    const made = await selfSignedTls(tlsDir, [...names, "2001:db8::ffff:1.2.3.4"]);
    assert.equal(made.made, true);
    assert.equal(statSync(path.join(tlsDir, "key.pem")).mode & 0o777, 0o600);
    const x509 = new X509Certificate(made.cert);
    assert.equal(x509.fingerprint256, made.fingerprint);
    assert.ok(x509.verify(x509.publicKey), "self-signed");
    for (const ip of ["127.0.0.1", "::1", "192.0.2.10", "2001:db8::ffff:102:304"]) assert.equal(x509.checkIP(ip), ip, ip);
    for (const host of ["localhost", os.hostname()]) assert.equal(x509.checkHost(host), host, host);

    const kept = await selfSignedTls(tlsDir, [...names, "192.0.2.11"]);
    assert.deepEqual({ ...kept, unnamed: [] }, { ...made, made: false });
    assert.deepEqual(kept.unnamed, ["192.0.2.11"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
