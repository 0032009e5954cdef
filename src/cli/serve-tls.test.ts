// `distmoe serve` over TLS as an operator runs it, with devices as real processes: the certificate is
// checked (or made and kept) before the port opens, devices pin its fingerprint and refuse any other
// before saying anything, and plain links beyond loopback are warned of.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { REPO_ROOT } from "../testing/shared.js";
import { initModel } from "../model/init-model.js";
import { Engine } from "../runtime/engine.js";
import { makeSelfSigned } from "../server/tls.js";
import { until } from "../testing/until.js";
import { encode } from "uqr";
import { QR_BORDER } from "./join-qr.js";

const BIN = path.join(REPO_ROOT, "bin/distmoe.js");
const FINGERPRINT = "[0-9A-F]{2}(?::[0-9A-F]{2}){31}";

/** A process of ours with its stderr gathered. */
function start(args: string[]): { child: ChildProcess; err: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  return { child, err: () => err, exited: new Promise((r) => child.once("exit", (code) => r(code))) };
}

/** A request to the BS over HTTPS, trusting `ca` only: status and JSON body. */
function request(port: string, ca: string, urlPath: string, body?: object): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: "127.0.0.1", port, path: urlPath, ca, method: body ? "POST" : "GET", headers: { "content-type": "application/json" } }, (res) => {
      let text = "";
      res.on("data", (d: Buffer) => (text += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode!, json: JSON.parse(text) }));
    });
    req.on("error", reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

const tinyModel = (dir: string) => initModel({ arch: "MixtralForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed: 5 });

test("serve --tls self-signed: the fingerprint is printed and kept across starts; a device pinning it joins and HTTPS serves; a wrong pin is refused before its hello; local devices pin it too", { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-serve-tls-"));
  const children: ChildProcess[] = [];
  try {
    const model = path.join(dir, "model"), state = path.join(dir, "state");
    tinyModel(model);
    const single = Engine.load(model, { dtype: "f32", threads: 1 });
    const want = (await single.generate(single.tokenizer.encode("hello"), { temperature: 0, maxTokens: 6 })).text;
    single.close();
    const completion = { prompt: "hello", max_tokens: 6, temperature: 0 };
    const serve = (more: string[]) => {
      const bs = start(["serve", "--model", model, "--port", "0", "--threads", "1", "--tls", "self-signed", "--state-dir", state, ...more]);
      children.push(bs.child);
      return bs;
    };

    const bs = serve(["--devices", "1"]);
    await until(() => new RegExp(`^made a join token, kept in ${state}/join-tokens.json$`, "m").test(bs.err()), "the join token made on first start");
    const fingerprint = await until(() => new RegExp(`^TLS: made a self-signed certificate in ${state}/tls, SHA-256 fingerprint (${FINGERPRINT})$`, "m").exec(bs.err())?.[1], "the fingerprint");
    const ca = readFileSync(path.join(state, "tls", "cert.pem"), "utf8");
    const port = await until(() => /^listening on https:\/\/127\.0\.0\.1:(\d+) \(devices: wss:\/\/127\.0\.0\.1:\1\)$/m.exec(bs.err())?.[1], "the BS to listen");
    const [, url, pin, token] = await until(() => /devices join with: distmoe device --bs (\S+) --fingerprint (\S+) --token (\S+)\n/.exec(bs.err()), "the command to join");
    assert.deepEqual([url, pin], [`wss://127.0.0.1:${port}`, fingerprint]);
    const device = (name: string, fp: string) => {
      const d = start(["device", "--bs", url!, "--fingerprint", fp, "--token", token!, "--name", name, "--threads", "1", "--retry-for", "0", "--cache", path.join(dir, "cache")]);
      children.push(d.child);
      return d;
    };

    // plain HTTP and ws:// on the TLS port: answered 426 with what to use, not a reset connection
    const plainAnswer = await fetch(`http://127.0.0.1:${port}/health`);
    assert.equal(plainAnswer.status, 426);
    assert.match(await plainAnswer.text(), /this port serves HTTPS, and WSS to devices: use https:\/\/ \(devices: wss:\/\/ with --fingerprint\)/);
    // (with the default --retry-for, forever: a 426 is an answer, not an outage)
    const plainDevice = start(["device", "--bs", url!.replace("wss://", "ws://"), "--token", token!, "--name", "plain", "--threads", "1", "--cache", path.join(dir, "cache")]);
    children.push(plainDevice.child);
    assert.equal(await plainDevice.exited, 1);
    assert.match(plainDevice.err(), /Unexpected server response: 426 \(the base station serves TLS: use wss:\/\/ and --fingerprint, as serve printed them\)/);

    // pinning another certificate: it ends at once, naming both, and the BS never hears from it
    const other = "ab".repeat(32);
    const wrong = device("wrong-pin", other);
    assert.equal(await wrong.exited, 1);
    assert.match(wrong.err(), new RegExp(`^\\[device wrong-pin\\] identity SHA256:\\S+.*\\n(?:\\[device wrong-pin\\] kernels: .*\\n)?distmoe: error: the base station at 127\\.0\\.0\\.1:${port} presented a certificate with SHA-256 fingerprint ${fingerprint}, not the pinned ${other.toUpperCase().match(/../g)!.join(":")}: .*refusing it\\n$`));

    device("good", fingerprint.toLowerCase().replaceAll(":", ""));
    await until(async () => (await request(port, ca, "/health")).json.status === "ok", "the device to be placed");
    const served = await request(port, ca, "/v1/completions", completion);
    assert.equal(served.status, 200);
    assert.equal(served.json.choices[0].text, want);
    assert.match(bs.err(), /good joined/);
    assert.doesNotMatch(bs.err(), /wrong-pin|closing the connection/, "no hello from the device that refused the BS");
    bs.child.kill("SIGTERM");
    assert.equal(await bs.exited, 0);

    // a second start finds the same certificate; its local devices connect with wss:// and pin it
    const again = serve(["--local-devices", "1"]);
    await until(() => /^ready: /m.test(again.err()), "the BS with its local device");
    assert.match(again.err(), new RegExp(`^TLS: the self-signed certificate kept in ${state}/tls, SHA-256 fingerprint ${fingerprint}$`, "m"));
    const againPort = /listening on https:\/\/127\.0\.0\.1:(\d+)/.exec(again.err())![1]!;
    // the join token and the devices known are kept in the state directory too: a restarted BS admits the same devices
    assert.match(again.err(), new RegExp(`devices join with: distmoe device --bs wss://127\\.0\\.0\\.1:${againPort} --fingerprint ${fingerprint} --token ${token!.replace(/[.+/=~-]/g, "\\$&")}\n`));
    assert.doesNotMatch(again.err(), /made a join token/);
    const known = JSON.parse(readFileSync(path.join(state, "devices.json"), "utf8")) as { identities: Array<{ name: string; fingerprint: string }> };
    assert.deepEqual(known.identities.map((k) => k.name).sort(), ["good", "local-0"]);
    assert.equal((await request(againPort, ca, "/v1/completions", completion)).json.choices[0].text, want);
    again.child.kill("SIGTERM");
    assert.equal(await again.exited, 0);
  } finally {
    for (const c of children) c.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});

test("serve --tls-cert/--tls-key: bad files end the BS before it listens, with one line naming the file (a bad pin ends a device so); a good pair serves HTTPS; binding beyond loopback without TLS is warned of, with TLS not", { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-serve-tls-"));
  const children: ChildProcess[] = [];
  try {
    const model = path.join(dir, "model");
    tinyModel(model);
    const file = (name: string, text: string) => {
      writeFileSync(path.join(dir, name), text);
      return path.join(dir, name);
    };
    const a = await makeSelfSigned(["localhost"]), b = await makeSelfSigned(["localhost"]);
    const cert = file("a.crt", a.cert), key = file("a.key", a.key);
    for (const [args, msg] of [
      [["--tls-cert", path.join(dir, "none.crt"), "--tls-key", key], /^distmoe: error: TLS certificate .*none\.crt: cannot read \(ENOENT\)\n$/],
      [["--tls-cert", file("junk.crt", "not a certificate\n"), "--tls-key", key], /^distmoe: error: TLS certificate .*junk\.crt: not PEM \(no -----BEGIN CERTIFICATE----- block\)\n$/],
      [["--tls-cert", cert, "--tls-key", file("b.key", b.key)], /^distmoe: error: TLS key .*b\.key does not belong to the certificate .*a\.crt \(their public keys differ\)\n$/],
      [["--tls-cert", cert], /^distmoe: error: --tls-cert and --tls-key go together: give both\n$/],
      [["--tls", "self-signed", "--tls-cert", cert, "--tls-key", key], /option '--tls <mode>' cannot be used with option '--tls-cert <file>'/],
    ] as const) {
      const r = spawnSync(process.execPath, [BIN, "serve", "--model", model, "--port", "0", ...args], { encoding: "utf8", timeout: 60_000 });
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, msg);
      assert.doesNotMatch(r.stderr, /listening/);
    }

    // and a device's pin is checked as it is given
    for (const [args, msg] of [
      [["--bs", "wss://127.0.0.1:9", "--fingerprint", "AB:CD"], /^error: option '--fingerprint <sha256>' argument 'AB:CD' is invalid\. expected a SHA-256 fingerprint/],
      [["--bs", "ws://127.0.0.1:9", "--fingerprint", a.fingerprint], /^distmoe: error: --fingerprint pins the base station's TLS certificate: it needs a wss:\/\/ URL, not ws:\/\/127\.0\.0\.1:9\n$/],
    ] as const) {
      const r = spawnSync(process.execPath, [BIN, "device", ...args], { encoding: "utf8", timeout: 60_000 });
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, msg);
    }

    const serve = (args: string[]) => {
      const bs = start(["serve", "--model", model, "--port", "0", "--threads", "1", "--host", "0.0.0.0", ...args]);
      children.push(bs.child);
      return bs;
    };
    const plain = serve([]), secure = serve(["--tls-cert", cert, "--tls-key", key]);
    await until(() => /^ready: /m.test(plain.err()) && /^ready: /m.test(secure.err()), "both BSs");
    assert.match(
      plain.err(),
      /^warning: 0\.0\.0\.0 is not a loopback address and TLS is off: .*the devices' join handshake and what they report .*, the expert weights streamed to devices, every user's hidden states sent to the devices and their results, and the API's requests and answers, API keys included; serve with --tls self-signed/m,
    );
    assert.match(secure.err(), new RegExp(`^TLS: certificate ${cert}, SHA-256 fingerprint ${a.fingerprint}$`, "m"));
    assert.match(secure.err(), /^listening on https:\/\/0\.0\.0\.0:\d+ \(devices: wss:/m);
    assert.doesNotMatch(secure.err(), /TLS is off/);
  } finally {
    for (const c of children) c.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});

test("serve --browser-devices --tls self-signed --qr: the join link, a QR code of exactly that link, and how to trust the certificate; --no-qr leaves the code out", { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-serve-qr-"));
  const children: ChildProcess[] = [];
  try {
    const model = path.join(dir, "model");
    tinyModel(model);
    const serve = (more: string[]) => {
      const bs = start(["serve", "--model", model, "--port", "0", "--threads", "1", "--tls", "self-signed", "--state-dir", path.join(dir, "state"), "--devices", "1", "--browser-devices", ...more]);
      children.push(bs.child);
      return bs;
    };
    const bs = serve(["--qr"]);
    const fingerprint = await until(() => new RegExp(`SHA-256 fingerprint (${FINGERPRINT})$`, "m").exec(bs.err())?.[1], "the fingerprint");
    const link = await until(() => /a browser joins by opening (https:\/\/127\.0\.0\.1:\d+\/device#token=\S+)\n/.exec(bs.err())?.[1], "the join link");
    const trust = await until(() => /^a browser warns about this self-signed certificate: .*$/m.exec(bs.err())?.[0], "how to trust the certificate");
    assert.ok(trust.includes(`check that its SHA-256 fingerprint is ${fingerprint}, and continue`), trust);
    assert.match(trust, /\(http:\/\/127\.0\.0\.1:\d+\/device explains each browser's steps in plain words\)$/);
    // the code as printed, read back module by module (a light module drawn, two rows per line), is the link's
    const drawn = /the same link for a phone's camera:\n((?:[█▀▄ ]+\n)+)/.exec(bs.err())![1]!.trimEnd().split("\n");
    const want = encode(link, { border: QR_BORDER, ecc: "L" }).data;
    const read = drawn.flatMap((line) => [[...line].map((c) => c === " " || c === "▄"), [...line].map((c) => c === " " || c === "▀")]);
    assert.deepEqual(read.slice(0, want.length), want);

    const quiet = serve(["--no-qr", "--state-dir", path.join(dir, "state2")]);
    await until(() => /a browser joins by opening/.test(quiet.err()), "the join link");
    assert.doesNotMatch(quiet.err(), /for a phone's camera/);
  } finally {
    for (const c of children) c.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});
