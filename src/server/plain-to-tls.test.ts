// One port for TLS: a TLS client is served; a plain request is answered 426 and its socket is gone once
// the client closes (a leak of one descriptor per plain request would let anyone exhaust the process);
// a browser is shown a page saying so in plain words.
import { test } from "node:test";
import assert from "node:assert/strict";
import https from "node:https";
import net, { type AddressInfo } from "node:net";
import { makeSelfSigned } from "./tls.js";
import { plainToTls } from "./plain-to-tls.js";
import { until } from "../testing/until.js";
import { browserSkip, launchBrowser } from "../testing/browser.js";

test("a TLS port serves TLS, answers plain requests 426, and keeps no socket of a plain client that closed", async () => {
  const t = await makeSelfSigned(["127.0.0.1"]);
  const server = https.createServer({ cert: t.cert, key: t.key }, (_req, res) => res.end("over tls"));
  const front = plainToTls(server);
  await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
  const port = (front.address() as AddressInfo).port;
  try {
    const answers = await Promise.all(
      Array.from({ length: 8 }, () =>
        new Promise<string>((resolve, reject) => {
          const c = net.connect(port, "127.0.0.1", () => c.end("GET /health HTTP/1.1\r\nhost: x\r\n\r\n"));
          let got = "";
          c.on("data", (d: Buffer) => (got += d.toString()));
          c.on("end", () => resolve(got));
          c.on("error", reject);
        }),
      ),
    );
    for (const a of answers) assert.match(a, /^HTTP\/1\.1 426 Upgrade Required\r\n[\s\S]*this port serves HTTPS, and WSS to devices/);
    const open = () => new Promise<number>((r) => front.getConnections((_e, n) => r(n)));
    await until(async () => (await open()) === 0, "every plain socket gone");

    const body = await new Promise<string>((resolve, reject) =>
      https.get({ host: "127.0.0.1", port, ca: t.cert, path: "/" }, (res) => {
        let b = "";
        res.on("data", (d: Buffer) => (b += d.toString()));
        res.on("end", () => resolve(b));
      }).on("error", reject),
    );
    assert.equal(body, "over tls");
  } finally {
    front.close();
    server.closeAllConnections();
  }
});

test("a plain client that goes on sending after its answer is cut off at the deadline, not kept by each byte (slowloris)", async () => {
  const t = await makeSelfSigned(["127.0.0.1"]);
  const server = https.createServer({ cert: t.cert, key: t.key }, (_req, res) => res.end("over tls"));
  const front = plainToTls(server, 300);
  await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
  const port = (front.address() as AddressInfo).port;
  const c = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
  let got = "";
  let closed = false;
  c.on("data", (d: Buffer) => (got += d.toString()));
  c.on("error", () => {});
  c.on("close", () => (closed = true));
  // a header line now and then, far more often than the deadline, and never the end of the request
  const trickle = setInterval(() => c.writable && c.write("x-slow: 1\r\n"), 20);
  try {
    c.write("GET / HTTP/1.1\r\nhost: x\r\n");
    await until(() => closed, "the server closing the trickling socket", 15_000);
    assert.match(got, /^HTTP\/1\.1 426 Upgrade Required\r\n/);
    assert.equal(await new Promise<number>((r) => front.getConnections((_e, n) => r(n))), 0);
  } finally {
    clearInterval(trickle);
    c.destroy();
    front.close();
    server.closeAllConnections();
  }
});

test("a browser that asks a TLS port for a page over http:// is shown why, how to check the certificate, and a link to https:// that keeps the join token", { skip: browserSkip }, async () => {
  const t = await makeSelfSigned(["127.0.0.1"]);
  const server = https.createServer({ cert: t.cert, key: t.key }, (_req, res) => res.end("over tls"));
  const front = plainToTls(server);
  await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
  const port = (front.address() as AddressInfo).port;
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    const errors: string[] = [];
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    const response = await page.goto(`http://127.0.0.1:${port}/device#token=abc&name=phone`);
    assert.equal(response?.status(), 426);
    assert.match((await page.textContent("h1")) ?? "", /speaks only https:\/\//);
    assert.match((await page.textContent("body")) ?? "", /SHA-256 fingerprint[\s\S]*If the two are the same, continue/);
    // its one script ran under the page's policy: the link carries the path and the fragment
    assert.equal(await page.getAttribute("#go", "href"), `https://127.0.0.1:${port}/device#token=abc&name=phone`);
    assert.deepEqual(errors.filter((e) => /Content Security Policy/i.test(e)), [], "the policy refused nothing");
  } finally {
    await browser.close();
    front.close();
    server.closeAllConnections();
  }
});
