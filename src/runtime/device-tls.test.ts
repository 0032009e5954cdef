// A device and its base station's certificate: a wrong pin ends it at once, before anything is sent and
// without retrying; ws:// beyond this machine is warned of.
import { test } from "node:test";
import assert from "node:assert/strict";
import { runDevice } from "./device.js";
import { startWss } from "../testing/wss.js";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";

const keys = mkdtempSync(path.join(os.tmpdir(), "distmoe-device-tls-"));
process.on("exit", () => rmSync(keys, { recursive: true, force: true }));

const OTHER = "sha256:" + "ab".repeat(32);

test("runDevice with a wrong fingerprint: refused after the TLS handshake, nothing sent, no retry, both fingerprints in the error", async () => {
  const bs = await startWss();
  try {
    bs.wss.on("connection", () => assert.fail("no WebSocket may open"));
    // retrying forever is the default: only a refusal ends it
    await assert.rejects(runDevice({ bs: bs.url, fingerprint: OTHER, name: "d", threads: 1, log: () => undefined }), {
      message: `the base station at 127.0.0.1:${new URL(bs.url).port} presented a certificate with SHA-256 fingerprint ${bs.tls.fingerprint}, not the pinned ${"AB:".repeat(31)}AB: it is not the base station pinned (or its certificate changed); refusing it`,
    });
    assert.deepEqual(bs.counts, { connections: 1, upgrades: 0 });
  } finally {
    await bs.close();
  }
});

test("runDevice: --fingerprint needs wss://; ws:// to another machine is warned of (what crosses in clear), loopback and wss:// are not", async () => {
  await assert.rejects(runDevice({ bs: "ws://127.0.0.1:9", fingerprint: OTHER, name: "d", log: () => undefined }), { message: /--fingerprint pins the base station's TLS certificate: it needs a wss:\/\/ URL, not ws:\/\/127\.0\.0\.1:9/ });
  await assert.rejects(runDevice({ bs: "http://127.0.0.1:9", name: "d", log: () => undefined }), { message: /expected a ws:\/\/ or wss:\/\/ URL/ });
  // stopped before it starts: it says what it would warn of and connects nowhere
  const warnings = async (bs: string) => {
    const lines: string[] = [];
    await runDevice({ bs, name: "d", threads: 1, signal: AbortSignal.abort(), log: (l) => lines.push(l) });
    return lines.filter((l) => l.startsWith("warning:"));
  };
  const [warning, ...more] = await warnings("ws://192.0.2.7:8080");
  assert.equal(more.length, 0);
  assert.match(warning!, /^warning: ws:\/\/192\.0\.2\.7:8080 is not on this machine and ws:\/\/ is not encrypted: the join handshake's metadata, the expert weights streamed here, and the hidden states this device computes on and its results cross the network in clear \(use wss:\/\/ with --fingerprint/);
  for (const bs of ["ws://127.0.0.1:8080", "ws://localhost:8080", "ws://[::1]:8080", `wss://192.0.2.7:8080`]) assert.deepEqual(await warnings(bs), [], bs);
});

test("runDevice with ws:// against a base station serving TLS: the reason says to use wss:// and --fingerprint", async () => {
  const bs = await startWss();
  try {
    const plain = bs.url.replace("wss://", "ws://");
    await assert.rejects(
      runDevice({ bs: plain, name: "plain", retryForMs: 200, backoff: { firstMs: 10, capMs: 20 }, identityFile: path.join(keys, "plain.key"), log: () => undefined }),
      /cannot reach ws:\/\/127\.0\.0\.1:\d+: ECONNRESET \(the base station serves TLS: use wss:\/\/ and --fingerprint, as serve printed them\)$/,
    );
    assert.equal(bs.counts.upgrades, 0);
  } finally {
    await bs.close();
  }
});
