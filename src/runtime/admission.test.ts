// Admission by join token and device identity: a device proves it holds the token (and has the base
// station prove it) and proves its identity before it is placed or sent anything; no token, a wrong one,
// a replayed handshake, a revoked token, a forged signature, an impostor using a known device's name and
// a base station without the token are each refused, with the reason in the refusing side's log or error.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import WebSocket, { WebSocketServer } from "ws";
import type { AddressInfo } from "node:net";
import { DeviceHub } from "./device-hub.js";
import { runDevice } from "./device.js";
import { initModel } from "../model/init-model.js";
import { decodeFrame, encodeFrame, type Capabilities, type Message } from "../protocol/frames.js";
import { bsProof, deviceProof, identityFingerprint, newJoinToken, newNonce, provenToken, sameProof, signTranscript, validSignature, type Transcript } from "../protocol/handshake.js";
import { CLOSE } from "../protocol/socket.js";
import { ephemeralIdentity, loadIdentity } from "./device-identity.js";
import { tokenId } from "./hub/join-tokens.js";
import { provenHello } from "../testing/hello.js";
import { until } from "../testing/until.js";
import { startWss } from "../testing/wss.js";
import { makeSelfSigned } from "../server/tls.js";
import https from "node:https";
import { channelBinding } from "../protocol/channel-binding.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-admission-"));
initModel({ arch: "MixtralForCausalLM", layers: 2, hidden: 64, experts: 4, topK: 2, seed: 3, out: dir });
const keys = mkdtempSync(path.join(os.tmpdir(), "distmoe-admission-keys-"));
process.on("exit", () => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(keys, { recursive: true, force: true });
});
/** An identity file of its own for each `who`. */
const keyFile = (who: string) => path.join(keys, `${who}.key`);

const TOKEN = newJoinToken();
const CAPS: Capabilities = { memoryBytes: 1e9, gflops: 10, readGbps: 10, weightDTypes: ["f32"], wireDTypes: ["f32"] };

test("proofs and signatures: bound to the token, both nonces, the name, the key and the TLS binding; the base station's never passes as a device's", async () => {
  const id = await ephemeralIdentity();
  const t: Transcript = { bsNonce: newNonce(), deviceNonce: newNonce(), name: "d", key: id.key, binding: "" };
  const p = await deviceProof(TOKEN, t);
  assert.ok(sameProof(p, await deviceProof(TOKEN, { ...t })));
  const others: Transcript[] = [
    { ...t, bsNonce: newNonce() }, { ...t, deviceNonce: newNonce() }, { ...t, name: "e" }, { ...t, key: (await ephemeralIdentity()).key }, { ...t, binding: "ab".repeat(32) },
    { ...t, bsNonce: t.deviceNonce, deviceNonce: t.bsNonce },
  ];
  for (const o of others) assert.ok(!sameProof(p, await deviceProof(TOKEN, o)));
  assert.ok(!sameProof(p, await deviceProof(newJoinToken(), t)) && !sameProof(p, await bsProof(TOKEN, t)));
  assert.ok(!sameProof(p, p.slice(0, 62)) && !sameProof(p, "") && !sameProof(p, `${p.slice(0, 63)}g`), "a proof of another length, or not hex, is no match");
  assert.equal(await provenToken(["x".repeat(20), TOKEN], t, p), TOKEN);
  assert.equal(await provenToken(["x".repeat(20)], t, p), null);

  const sig = await signTranscript(id.privateKey, t);
  assert.ok(await validSignature(t, sig));
  for (const o of others) assert.ok(!(await validSignature(o, sig)), "a signature is of one transcript only");
  assert.ok(!(await validSignature(t, await signTranscript((await ephemeralIdentity()).privateKey, t))), "by the presented key only");
  assert.ok(!(await validSignature({ ...t, key: "00".repeat(32) }, sig)), "a key that is no curve point verifies nothing");
  assert.match(await identityFingerprint(id.key), /^SHA256:[A-Za-z0-9+/]{43}$/);
});

test("a key of small order proves nothing: the signature anyone can make with one (R the identity, s = 0) is refused", async () => {
  const keys = ["00".repeat(32), "01" + "00".repeat(31), "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", "ec" + "ff".repeat(30) + "7f"];
  const forged = "01" + "00".repeat(63);
  for (const small of keys) {
    for (const key of [small, small.slice(0, 62) + (parseInt(small.slice(62), 16) | 0x80).toString(16)]) {
      // the device picks its nonce: with 64 of them, a forgery by an order-8 key would verify for some (1 in 8 each)
      const transcripts = Array.from({ length: 64 }, (_, i) => ({ bsNonce: "ab".repeat(32), deviceNonce: i.toString(16).padStart(64, "0"), name: "d", key, binding: "" }));
      const passed = (await Promise.all(transcripts.map((t) => validSignature(t, forged)))).filter(Boolean);
      assert.equal(passed.length, 0, `key ${key}`);
    }
  }
});

test("a device identity is made once, kept owner-only, and read back the same; a damaged file is a clear error", async () => {
  const keys = mkdtempSync(path.join(os.tmpdir(), "distmoe-identity-"));
  try {
    const file = path.join(keys, "identity", "d.key");
    const made = await loadIdentity(file);
    assert.ok(made.created);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const again = await loadIdentity(file);
    assert.ok(!again.created);
    assert.equal(again.fingerprint, made.fingerprint);
    writeFileSync(file, "not a key");
    await assert.rejects(loadIdentity(file), /is not a private key .*remove it to make a new identity/);
  } finally {
    rmSync(keys, { recursive: true, force: true });
  }
});

/** A hub asking for `tokens` (default TOKEN), its log, and a device started against it with `token`. */
async function withHub(fn: (hub: DeviceHub, lines: string[]) => Promise<void>, tokens: string[] = [TOKEN]): Promise<void> {
  const lines: string[] = [];
  const hub = await DeviceHub.listen({ model: dir, weightDType: "f32", wireDType: "f32", joinTokens: tokens, log: (l) => lines.push(l) });
  try {
    await fn(hub, lines);
  } finally {
    await hub.close();
  }
}

/** A device run against `bs`; its identity is `identity`'s (default: its name's), its log goes to `log`. */
const device = (bs: string, name: string, token?: string, o: { identity?: string; signal?: AbortSignal; log?: (l: string) => void } = {}) =>
  runDevice({ bs, name, token, identityFile: keyFile(o.identity ?? name), threads: 1, spinMs: 0, backoff: { firstMs: 10, capMs: 20 }, signal: o.signal, log: o.log ?? (() => undefined) });

test("a device with the token is placed; one with no token or a wrong one is refused before placement, and ends with the reason", async () => {
  await withHub(async (hub, lines) => {
    await assert.rejects(device(hub.url, "tokenless"), /^Error: the base station refused this device: not admitted: no join token presented \(run the device with --token TOKEN or DISTMOE_JOIN_TOKEN\)$/);
    await assert.rejects(device(hub.url, "guesser", newJoinToken()), /^Error: the base station refused this device: not admitted: wrong join token \(or a replayed handshake\)$/);
    assert.ok(lines.some((l) => /closing the connection: not admitted: no join token presented/.test(l)), lines.join("\n"));
    assert.ok(lines.some((l) => /closing the connection: not admitted: wrong join token/.test(l)), lines.join("\n"));
    assert.deepEqual(hub.status().devices, [], "neither was ever a device");
    const stop = new AbortController();
    const honest = device(hub.url, "honest", TOKEN, { signal: stop.signal });
    await hub.start(1);
    assert.deepEqual(hub.placed, ["honest"]);
    stop.abort();
    await honest;
  });
});

/** A raw connection: the frames the hub sent it, its challenge, and how it closed. */
async function raw(url: string) {
  // over TLS: any certificate (these tests are about the handshake), and the session's channel binding
  const ws = new WebSocket(url, { rejectUnauthorized: false });
  let binding = "";
  ws.on("upgrade", (res) => (binding = channelBinding(res.socket)));
  const got: Message[] = [];
  let challenged!: (nonce: string) => void;
  const challenge = new Promise<string>((r) => (challenged = r));
  ws.on("message", (d: Buffer) => {
    const m = decodeFrame(new Uint8Array(d));
    got.push(m);
    if (m.type === "challenge") challenged(m.nonce);
  });
  const closed = new Promise<{ code: number; reason: string }>((r) => ws.once("close", (code, reason) => r({ code, reason: reason.toString() })));
  return { ws, got, challenge, closed, binding: () => binding };
}

/** A relay between devices and `upstream` that keeps a copy of every frame a device sends, per connection. */
async function wiretap(upstream: string): Promise<{ url: string; captured: Buffer[][]; close: () => Promise<void> }> {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((r) => server.once("listening", r));
  const captured: Buffer[][] = [];
  server.on("connection", (down) => {
    const frames: Buffer[] = [];
    captured.push(frames);
    const up = new WebSocket(upstream);
    const opened = new Promise((r) => up.once("open", r));
    down.on("message", (d: Buffer) => {
      frames.push(d);
      void opened.then(() => up.send(d));
    });
    up.on("message", (d: Buffer) => down.send(d));
    up.on("close", (code, reason) => down.close(code, reason));
    down.on("close", () => up.close());
  });
  return {
    url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}`,
    captured,
    close: () => {
      for (const c of server.clients) c.terminate();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

test("a real device's hello, captured and replayed on a new connection, is refused: the challenge there is new", async () => {
  await withHub(async (hub, lines) => {
    const tap = await wiretap(hub.url);
    const stop = new AbortController();
    try {
      const honest = device(tap.url, "d", TOKEN, { signal: stop.signal });
      await hub.start(1);
      assert.deepEqual(hub.placed, ["d"], "admitted through the tap");
      const hello = tap.captured[0]![0]!;
      assert.equal(decodeFrame(new Uint8Array(hello)).type, "hello");
      stop.abort();
      await honest;
      await until(() => hub.status().devices.length === 0, "the honest device has left");

      const replay = await raw(hub.url);
      await replay.challenge;
      replay.ws.send(hello);
      const closed = await replay.closed;
      assert.equal(closed.code, CLOSE.notAdmitted);
      assert.match(closed.reason, /not admitted: wrong join token \(or a replayed handshake\)/);
      assert.deepEqual(replay.got.map((m) => m.type), ["challenge", "error"], "nothing but the challenge and the refusal was sent to it");
      assert.ok(lines.some((l) => /closing the connection: not admitted: wrong join token/.test(l)), lines.join("\n"));
      assert.deepEqual(hub.status().devices, [], "the replayer never became a device");
    } finally {
      await tap.close();
    }
  });
});

test("a base station that cannot prove the token is refused by the device before it takes anything from it", async () => {
  // an impostor base station: a challenge, then a welcome with a proof of another token, then an assignment
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((r) => server.once("listening", r));
  const received: Message["type"][] = [];
  server.on("connection", (ws) => {
    const bsNonce = newNonce();
    ws.send(encodeFrame({ type: "challenge", nonce: bsNonce }));
    ws.on("message", async (d: Buffer) => {
      const m = decodeFrame(new Uint8Array(d));
      received.push(m.type);
      if (m.type !== "hello") return;
      ws.send(encodeFrame({ type: "welcome", proof: await bsProof(newJoinToken(), { bsNonce, deviceNonce: m.nonce!, name: m.name, key: m.key ?? "", binding: "" }) }));
      ws.send(encodeFrame({ type: "assign", model: dir, modelId: "m", config: {}, weightDType: "f32", wireDType: "f32", experts: [[0, 0]] }));
    });
  });
  // and a real hub that admits any device: it proves no token either
  const open = await DeviceHub.listen({ model: dir, weightDType: "f32", wireDType: "f32", log: () => undefined });
  try {
    const refusal = /did not prove it holds the join token: it is not this cluster's base station \(or its token differs\); refusing it$/;
    await assert.rejects(device(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`, "d", TOKEN), refusal);
    assert.deepEqual(received, ["hello"], "the device sent nothing after its hello: no ready, no fetch");
    await assert.rejects(device(open.url, "d", TOKEN), refusal);
    assert.deepEqual(open.placed, []);
  } finally {
    await open.close();
    for (const c of server.clients) c.terminate();
    await new Promise((r) => server.close(r));
  }
});

test("revoking a join token disconnects the devices that joined with it and refuses it from then on; the others stay", async () => {
  const spare = newJoinToken();
  await withHub(async (hub, lines) => {
    const stop = new AbortController();
    const kept = device(hub.url, "kept", TOKEN, { signal: stop.signal });
    const revoked = device(hub.url, "revoked", spare);
    await hub.start(2);
    assert.deepEqual(hub.joinTokenList()!.map((t) => [t.id, t.devices]).sort(), [[tokenId(TOKEN), ["kept"]], [tokenId(spare), ["revoked"]]].sort());
    assert.deepEqual(hub.revokeJoinToken(tokenId(spare)), ["revoked"]);
    await assert.rejects(revoked, /^Error: the base station refused this device: not admitted: its join token was revoked$/);
    assert.ok(lines.some((l) => l.includes(`join token ${tokenId(spare)} revoked: disconnected revoked`)), lines.join("\n"));
    await assert.rejects(device(hub.url, "revoked", spare), /not admitted: wrong join token/);
    await until(() => hub.placed.length === 1, "placed again without the revoked device");
    assert.deepEqual(hub.placed, ["kept"]);
    assert.equal(hub.revokeJoinToken(tokenId(spare)), null, "a token revoked once is no longer there");
    stop.abort();
    await kept;
  }, [TOKEN, spare]);
});

test("a device is known by its key: an impostor using a known device's name is refused, the device itself is recognised when it rejoins", async () => {
  await withHub(async (hub, lines) => {
    const first = new AbortController();
    const real = device(hub.url, "alpha", TOKEN, { signal: first.signal });
    await hub.start(1);
    const [known] = hub.knownDevices();
    assert.equal(known!.name, "alpha");
    assert.equal(known!.fingerprint, (await loadIdentity(keyFile("alpha"))).fingerprint);
    assert.ok(known!.connected && known!.experts.length > 0, "remembers the experts it holds");
    first.abort();
    await real;
    await until(() => hub.status().devices.length === 0, "alpha has left");

    const impostor = device(hub.url, "alpha", TOKEN, { identity: "mallory" });
    await assert.rejects(impostor, (e: Error) => e.message.includes(`not admitted: the name alpha belongs to another device (identity ${known!.fingerprint}); this one is SHA256:`));
    assert.ok(lines.some((l) => /closing the connection: not admitted: the name alpha belongs to another device/.test(l)), lines.join("\n"));
    assert.deepEqual(hub.status().devices, []);

    const back = new AbortController();
    const again = device(hub.url, "alpha", TOKEN, { signal: back.signal });
    await until(() => hub.placed.includes("alpha") && hub.status().devices.length === 1, "the real alpha is back");
    assert.ok(lines.some((l) => l.includes(`alpha joined`) && l.includes(`known as ${known!.fingerprint}`)), lines.join("\n"));
    back.abort();
    await again;
  });
});

test("two processes sharing one identity: the later connection takes the place of the earlier, which ends with the reason", async () => {
  await withHub(async (hub) => {
    const stop = new AbortController();
    const earlier = device(hub.url, "twin", TOKEN);
    await hub.start(1);
    const later = device(hub.url, "twin", TOKEN, { signal: stop.signal });
    await assert.rejects(earlier, /another connection with this device's identity \(SHA256:.*\) took this one's place: two device processes share one identity/);
    await until(() => hub.status().devices.length === 1 && hub.placed.includes("twin"), "the later one serves");
    stop.abort();
    await later;
  });
});

test("a hello whose signature is not by the key it presents, or that presents no identity, is refused before placement", async () => {
  await withHub(async (hub, lines) => {
    const caps = CAPS;
    const forged = await raw(hub.url);
    const nonce = await forged.challenge;
    // the proof is right, the signature is by another key than the one presented
    const honest = await ephemeralIdentity(), other = await ephemeralIdentity();
    const t: Transcript = { bsNonce: nonce, deviceNonce: newNonce(), name: "f", key: honest.key, binding: "" };
    forged.ws.send(encodeFrame({ type: "hello", name: "f", capabilities: caps, nonce: t.deviceNonce, proof: await deviceProof(TOKEN, t), key: honest.key, signature: await signTranscript(other.privateKey, t) }));
    assert.match((await forged.closed).reason, /not admitted: the device's signature of the handshake does not verify/);

    const keyless = await raw(hub.url);
    const n2 = await keyless.challenge;
    const t2: Transcript = { bsNonce: n2, deviceNonce: newNonce(), name: "k", key: "", binding: "" };
    keyless.ws.send(encodeFrame({ type: "hello", name: "k", capabilities: caps, nonce: t2.deviceNonce, proof: await deviceProof(TOKEN, t2) }));
    assert.match((await keyless.closed).reason, /not admitted: no device identity presented/);

    const fine = await raw(hub.url);
    fine.ws.send(await provenHello(TOKEN, await fine.challenge, "fine", caps));
    await until(() => fine.got.some((m) => m.type === "welcome"), "the proven hello is welcomed");
    fine.ws.terminate();
    assert.equal(lines.filter((l) => /not admitted/.test(l)).length, 2, lines.join("\n"));
  });
});

test("over TLS the handshake is bound to the TLS session: a relay with a TLS session to each side cannot pass a device's proof on", async () => {
  const bsTls = await makeSelfSigned(["127.0.0.1"]);
  const server = https.createServer({ cert: bsTls.cert, key: bsTls.key });
  const lines: string[] = [];
  const hub = DeviceHub.attach(server, { model: dir, weightDType: "f32", wireDType: "f32", joinTokens: [TOKEN], log: (l) => lines.push(l) });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const bsUrl = `wss://127.0.0.1:${(server.address() as AddressInfo).port}`;
  // the relay: a device that trusts its certificate (it was given the relay's fingerprint) talks to it; it talks to the BS
  const relay = await startWss();
  relay.wss.on("connection", (down) => {
    const up = new WebSocket(bsUrl, { rejectUnauthorized: false });
    const opened = new Promise((r) => up.once("open", r));
    down.on("message", (d: Buffer) => void opened.then(() => up.send(d)));
    up.on("message", (d: Buffer) => down.send(d));
    up.on("close", (code, reason) => down.close(code, reason));
    down.on("close", () => up.close());
  });
  try {
    await assert.rejects(
      runDevice({ bs: relay.url, fingerprint: relay.tls.fingerprint, name: "relayed", token: TOKEN, identityFile: keyFile("relayed"), threads: 1, spinMs: 0, log: () => undefined }),
      /the base station refused this device: not admitted: wrong join token \(or a replayed handshake\)/,
    );
    assert.deepEqual(hub.status().devices, [], "never a device");
    const stop = new AbortController();
    const direct = runDevice({ bs: bsUrl, fingerprint: bsTls.fingerprint, name: "direct", token: TOKEN, identityFile: keyFile("direct"), threads: 1, spinMs: 0, signal: stop.signal, log: () => undefined });
    await hub.start(1);
    assert.deepEqual(hub.placed, ["direct"], "the same token over one TLS session is admitted");
    stop.abort();
    await direct;
  } finally {
    await relay.close();
    await hub.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});

test("a hello without a channel binding (a browser device's) is admitted only where the operator allows browser devices, over TLS or loopback; a bound device cannot pass as unbound", async () => {
  /** A hub over TLS on loopback (browser devices allowed or not), its log lines and its URL. */
  const tlsHub = async (browserDevices: boolean) => {
    const bsTls = await makeSelfSigned(["127.0.0.1"]);
    const server = https.createServer({ cert: bsTls.cert, key: bsTls.key });
    const lines: string[] = [];
    const hub = DeviceHub.attach(server, { model: dir, weightDType: "f32", wireDType: "f32", joinTokens: [TOKEN], browserDevices, log: (l) => lines.push(l) });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    return {
      hub, lines, url: `wss://127.0.0.1:${(server.address() as AddressInfo).port}`,
      close: async () => {
        await hub.close();
        server.closeAllConnections();
        await new Promise((r) => server.close(r));
      },
    };
  };
  const unbound = { unbound: true } as const;
  /** a browser tab's capabilities: its hello is unbound (frames.ts) */
  const TAB: Capabilities = { ...CAPS, kind: "browser" };
  const welcomed = async (c: Awaited<ReturnType<typeof raw>>) => {
    await until(() => c.got.some((m) => m.type === "welcome"), "a welcome");
    c.ws.terminate();
  };
  /** How the connection closed; a welcome instead ends the wait too (and fails the caller's match). */
  const ending = async (c: Awaited<ReturnType<typeof raw>>) => {
    let decided = false;
    const welcome = until(() => decided || c.got.some((m) => m.type === "welcome"), "a welcome").then(() => ({ code: 0, reason: "welcomed" }));
    const r = await Promise.race([c.closed, welcome]);
    decided = true;
    c.ws.terminate();
    return r;
  };

  const off = await tlsHub(false);
  try {
    const c = await raw(off.url);
    c.ws.send(await provenHello(TOKEN, await c.challenge, "tab", TAB, undefined, unbound));
    const closed = await ending(c);
    assert.equal(closed.code, CLOSE.notAdmitted, closed.reason);
    const error = c.got.find((m) => m.type === "error");
    assert.match(error?.type === "error" ? error.message : "", /not admitted: this base station does not admit browser devices .*serve --browser-devices$/);
  } finally {
    await off.close();
  }

  const on = await tlsHub(true);
  try {
    const tab = await raw(on.url);
    const nonce = await tab.challenge;
    tab.ws.send(await provenHello(TOKEN, nonce, "tab", TAB, undefined, unbound));
    await until(() => tab.got.some((m) => m.type === "welcome"), "the unbound hello over TLS is welcomed");
    const welcome = tab.got.find((m) => m.type === "welcome")!;
    assert.ok(welcome.type === "welcome" && welcome.proof !== undefined, "with the base station's proof of the token");
    tab.ws.terminate();
    // a hello bound to its TLS session, then marked unbound: the base station checks it against no binding, and it fails
    const downgraded = await raw(on.url);
    downgraded.ws.send(await provenHello(TOKEN, await downgraded.challenge, "bound", TAB, undefined, { binding: downgraded.binding(), unbound: true }));
    assert.match((await ending(downgraded)).reason, /not admitted: wrong join token/);
    const bound = await raw(on.url);
    const boundNonce = await bound.challenge;
    assert.notEqual(bound.binding(), "", "over TLS a Node device binds its handshake");
    bound.ws.send(await provenHello(TOKEN, boundNonce, "bound", CAPS, undefined, { binding: bound.binding() }));
    await welcomed(bound);
  } finally {
    await on.close();
  }

  // without TLS: from loopback, yes; from another address, no
  const plain = await DeviceHub.listen({ model: dir, weightDType: "f32", wireDType: "f32", joinTokens: [TOKEN], browserDevices: true, host: "0.0.0.0", log: () => undefined });
  try {
    const port = new URL(plain.url).port;
    const local = await raw(`ws://127.0.0.1:${port}`);
    local.ws.send(await provenHello(TOKEN, await local.challenge, "tab", TAB, undefined, unbound));
    await welcomed(local);
    const other = Object.values(os.networkInterfaces()).flat().find((i) => i && !i.internal && i.family === "IPv4");
    if (other) {
      const remote = await raw(`ws://${other.address}:${port}`);
      remote.ws.send(await provenHello(TOKEN, await remote.challenge, "remote-tab", TAB, undefined, unbound));
      assert.match((await ending(remote)).reason, /not admitted: a browser device is admitted over TLS only/);
    }
  } finally {
    await plain.close();
  }
});
