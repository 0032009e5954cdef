// `distmoe serve` as an operator runs it: a real process, devices as real processes, HTTP on a real
// port. Startup failures exit non-zero with one line; the BS waits for its devices as long as it takes,
// says so in /health and answers 503 with the reason meanwhile; it serves once every expert has a
// holder, and answers 503 (never noise) when the devices are gone.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { initModel } from "../model/init-model.js";
import { Engine } from "../runtime/engine.js";
import { until } from "../testing/until.js";
import { readEvents } from "../testing/dashboard.js";
import { BIN, deviceChildren, start } from "../testing/cli-process.js";

test("serve: a port in use or a bad model ends the BS with one clear line and a non-zero code", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-serve-"));
  const taken = net.createServer();
  await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
  try {
    initModel({ arch: "MixtralForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed: 5 });
    const port = String((taken.address() as net.AddressInfo).port);
    const keyFile = path.join(dir, "keys.txt");
    writeFileSync(keyFile, "# ops\ngood-key-1234\n\"quoted key\"\n");
    for (const [args, msg] of [
      [["--model", dir, "--port", port], new RegExp(`^distmoe: error: cannot listen on 127.0.0.1:${port}: the port is in use\n$`)],
      [["--model", path.join(dir, "nowhere"), "--port", "0"], /^distmoe: error: .*nowhere.*\n$/],
      [["--model", dir, "--port", "0", "--api-key", "short"], /an API key is 8 to 256 characters of/],
      // printable, but not what `Authorization: Bearer` can carry: no request could ever use it
      [["--model", dir, "--port", "0", "--api-key", "pass:word!"], /an API key is 8 to 256 characters of/],
      // beyond what a timer holds, every completion would be a 500
      [["--model", dir, "--port", "0", "--request-timeout", "1000h"], /--request-timeout.*expected a duration above 0 and at most 596h/],
      [["--model", dir, "--port", "0", "--api-key-file", keyFile], /--api-key-file .*keys\.txt: key 2: an API key is 8 to 256 characters of/],
      // short enough to be guessed from a captured handshake
      [["--model", dir, "--port", "0", "--devices", "1", "--join-token", "short"], /--join-token.*a join token is 16 to 256 characters of/],
      [["--model", dir, "--port", "0", "--devices", "1", "--verify-rate", "1.5"], /--verify-rate.*expected a share of the expert calls from 0 to 1/],
      [["--model", dir, "--port", "0", "--verify-rate", "0.1"], /--verify-rate checks the devices' results: give --devices N or --local-devices N/],
      [["--model", dir, "--port", "0", "--local-devices", "1", "--browser-devices"], /--browser-devices admits browser tabs among the devices the BS waits for: give --devices N/],
      [["--model", dir, "--port", "0", "--policy", "deadline"], /the deadline policy needs --budget/],
      // a knob without its policy would be ignored: the careless `serve --theta 0.5` runs top-k
      [["--model", dir, "--port", "0", "--theta", "0.5"], /--theta is wlr's knob \(and joint's\): with --policy topk it would do nothing/],
      [["--model", dir, "--port", "0", "--policy", "wlr", "--budget", "20"], /--budget is the deadline policy's knob: with --policy wlr it would do nothing/],
      [["--model", dir, "--port", "0", "--policy", "deadline", "--budget", "0"], /--budget.*expected a number above 0, got "0"/],
      // joint splits a cell's band, which a serving BS does not model
      [["--model", dir, "--port", "0", "--policy", "joint"], /--policy.*Allowed choices are topk, wlr, deadline/],
      [["--model", dir, "--port", "0", "--local-devices", "1", "--bs-budget", "1.5"], /--bs-budget.*expected a share of the experts such as 25% or 0\.25, got "1\.5"/],
      [["--model", dir, "--port", "0", "--local-devices", "1", "--bs-budget", "0.1"], /--bs-budget: a budget of 10\.0 % of the 8 experts holds none: the fast tier needs room for one at least \(12\.5 %\)/],
      [["--model", dir, "--port", "0", "--bs-budget", "25%"], /--bs-budget keeps hot experts at the BS beside devices that hold them all: give --devices N or --local-devices N/],
      [["--model", dir, "--port", "0", "--local-devices", "1", "--bs-store-gbps", "5"], /--bs-store-gbps is the rate of the store the BS's hot experts are read from: without --bs-budget it would do nothing/],
    ] as const) {
      const r = spawnSync(process.execPath, [BIN, "serve", ...args], { encoding: "utf8", timeout: 60_000 });
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr.split("\n").filter((l) => !/^(listening|loading)/.test(l)).join("\n"), msg);
    }
  } finally {
    taken.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("serve --devices 2: waits for its devices, places one that comes 30 s late and uses both, 503 when they are gone, serves again when one rejoins", { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-serve-"));
  const children: ChildProcess[] = [];
  try {
    initModel({ arch: "MixtralForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed: 5 });
    const single = Engine.load(dir, { dtype: "f32", threads: 1 });
    const want = (await single.generate(single.tokenizer.encode("hello"), { temperature: 0, maxTokens: 6 })).text;
    single.close();

    const bs = start(["serve", "--model", dir, "--port", "0", "--devices", "2", "--threads", "1", "--state-dir", path.join(dir, "state")]);
    children.push(bs.child);
    const port = await until(() => /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(bs.err())?.[1], "the BS to listen");
    const base = `http://127.0.0.1:${port}`;
    const health = async () => {
      const r = await fetch(`${base}/health`);
      return { code: r.status, ...(await r.json()) };
    };
    const complete = () => fetch(`${base}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "hello", max_tokens: 6, temperature: 0 }) });
    // the exact command that joins a device, with the token generated for this run
    const [, url, token] = await until(() => /devices join with: distmoe device --bs (\S+) --token (\S+)\n/.exec(bs.err()), "the command to join");
    assert.equal(url, `ws://127.0.0.1:${port}`);
    const device = (name: string, args = ["--token", token!], env: NodeJS.ProcessEnv = {}) => {
      const d = start(["device", "--bs", url!, "--name", name, "--threads", "1", "--retry-for", "0", ...args], env);
      children.push(d.child);
      return d;
    };

    // a device with another token is refused before placement and exits with the reason; the BS logs it
    const stranger = device("stranger", ["--token", "not-the-token-at-all"]);
    assert.equal(await stranger.exited, 1);
    assert.match(stranger.err(), /distmoe: error: the base station refused this device: not admitted: wrong join token/);
    await until(() => (/peer 127\.0\.0\.1: closing the connection: not admitted: wrong join token/.test(bs.err())), "the refusal in the BS log");

    // one device of two: unavailable, saying why, and a completion is refused with the reason
    const first = device("first");
    await until(async () => ((await health()).reasons.join(";").includes("1 of 2 connected")), "the first device");
    await new Promise((r) => setTimeout(r, 30_000));
    const h = await health();
    assert.equal(h.code, 503);
    assert.equal(h.status, "unavailable");
    assert.match(h.reasons.join(";"), /waiting for devices: 1 of 2 connected/);
    assert.match(bs.err(), /waiting for devices: 1 of 2 connected/, "the wait is logged");
    const early = await complete();
    assert.equal(early.status, 503);
    assert.match((await early.json()).error.message, /waiting for devices/);

    // the second, 30 s late, is placed and used
    const late = device("late", [], { DISTMOE_JOIN_TOKEN: token });
    await until(async () => ((await health()).status === "ok"), "both devices placed");
    for (let i = 0; i < 3; i++) {
      const served = await complete();
      assert.equal(served.status, 200);
      assert.equal((await served.json()).choices[0].text, want);
    }
    assert.deepEqual((await health()).devices.map((d: { name: string; calls: number }) => [d.name, d.calls > 0]), [["first", true], ["late", true]], "both serve");

    // the devices are gone: 503 with the reason, never 200 with noise
    for (const d of [first, late]) d.child.kill("SIGKILL");
    await Promise.all([first.exited, late.exited]);
    await until(async () => ((await health()).code === 503), "the BS to see the devices gone");
    const gone = await complete();
    assert.equal(gone.status, 503);
    assert.match((await gone.json()).error.message, /cannot serve now/);

    // a device joins: served again, same answer
    device("again");
    await until(async () => ((await health()).status === "ok"), "the new device to be placed");
    const back = await complete();
    assert.equal(back.status, 200);
    assert.equal((await back.json()).choices[0].text, want);

    bs.child.kill("SIGTERM");
    assert.equal(await bs.exited, 0, "SIGTERM stops the BS cleanly");
  } finally {
    for (const c of children) c.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test("serve --local-devices 2 --replicas 2: a killed device is restarted under its name, answers stay the same, revoking the join token leaves them be, SIGTERM ends every device", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-serve-"));
  const children: ChildProcess[] = [];
  const pids: number[] = [];
  try {
    initModel({ arch: "MixtralForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed: 5 });
    const single = Engine.load(dir, { dtype: "f32", threads: 1 });
    const want = (await single.generate(single.tokenizer.encode("hello"), { temperature: 0, maxTokens: 6 })).text;
    single.close();

    const bs = start(["serve", "--model", dir, "--port", "0", "--local-devices", "2", "--replicas", "2", "--threads", "1", "--state-dir", path.join(dir, "state"), "--admin-key", "admin-key-0123"]);
    children.push(bs.child);
    const port = await until(() => /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(bs.err())?.[1], "the BS to listen");
    const base = `http://127.0.0.1:${port}`;
    const healthy = () => until(async () => ((await (await fetch(`${base}/health`)).json()).status === "ok"), "/health ok");
    const complete = async () => {
      const r = await fetch(`${base}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "hello", max_tokens: 6, temperature: 0 }) });
      assert.equal(r.status, 200);
      return (await r.json()).choices[0].text;
    };
    await healthy();
    const before = deviceChildren(bs.child.pid!);
    assert.deepEqual([...before.keys()].sort(), ["local-0", "local-1"]);
    pids.push(...before.values());
    const args = spawnSync("ps", ["-o", "args=", "-p", [...before.values()].join(",")], { encoding: "utf8" }).stdout;
    assert.ok(args.includes(" device ") && !args.includes("--token"), `the join token reaches local devices in their environment, not their command line: ${args}`);

    process.kill(before.get("local-1")!, "SIGKILL");
    // its replica serves meanwhile (or the device is back already): the same answer either way
    assert.equal(await complete(), want);
    const restarted = Number(await until(() => /^local-1 restarted \(pid (\d+)\)$/m.exec(bs.err())?.[1], "the restart"));
    assert.match(bs.err(), /^local-1 exited \(signal SIGKILL\); restarting in \d+\.\d s$/m);
    assert.notEqual(restarted, before.get("local-1"));
    pids.push(restarted);
    await healthy();
    assert.deepEqual(deviceChildren(bs.child.pid!), new Map([["local-0", before.get("local-0")], ["local-1", restarted]]));
    assert.equal(await complete(), want);

    // the token printed for other devices is revoked (it leaked, say): the BS's own devices join with one of their own
    const admin = { authorization: "Bearer admin-key-0123" };
    const listed = (await (await fetch(`${base}/admin/tokens`, { headers: admin })).json()).tokens as Array<{ id: string; devices: string[] }>;
    assert.deepEqual(listed.map((t) => t.devices), [[]], "the local devices' token is not listed");
    const revoked = await (await fetch(`${base}/admin/tokens/${listed[0]!.id}`, { method: "DELETE", headers: admin })).json();
    assert.deepEqual(revoked.disconnected, []);
    assert.equal(await complete(), want);
    assert.deepEqual(deviceChildren(bs.child.pid!), new Map([["local-0", before.get("local-0")], ["local-1", restarted]]));

    bs.child.kill("SIGTERM");
    assert.equal(await bs.exited, 0, "SIGTERM stops the BS cleanly");
    assert.deepEqual(pids.filter(alive), [], "no device outlives the BS");
    assert.doesNotMatch(bs.err(), /restarting in .*\n(.|\n)*restarting in/, "one restart only: none at shutdown");
  } finally {
    for (const c of children) c.kill("SIGKILL");
    for (const pid of pids.filter(alive)) process.kill(pid, "SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});

test("serve --local-devices 2 --link … --view-key --policy: the dashboard stream shows the devices, their emulated links and the placement; a killed device turns failed; the admin's controls change the link and the policy live", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-serve-"));
  const children: ChildProcess[] = [];
  try {
    initModel({ arch: "MixtralForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed: 5 });
    const bs = start([
      "serve", "--model", dir, "--port", "0", "--local-devices", "2", "--threads", "1", "--state-dir", path.join(dir, "state"), "--link", "rate=100mbit,delay=1ms",
      "--api-key", "api-key-0123", "--view-key", "view-key-0123", "--admin-key", "admin-key-0123", "--policy", "wlr", "--theta", "0",
    ]);
    children.push(bs.child);
    const port = await until(() => /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(bs.err())?.[1], "the BS to listen");
    const base = `http://127.0.0.1:${port}`;
    await until(async () => ((await (await fetch(`${base}/health`)).json()).status === "ok"), "/health ok");
    assert.match(bs.err(), /^selection policy: wlr θ=0$/m, "the policy it starts with is logged");
    const admin = { authorization: "Bearer admin-key-0123", "content-type": "application/json" };
    const complete = async () => {
      const r = await fetch(`${base}/v1/completions`, { method: "POST", headers: { authorization: "Bearer api-key-0123", "content-type": "application/json" }, body: JSON.stringify({ prompt: "hello there", max_tokens: 8, temperature: 0 }) });
      assert.equal(r.status, 200);
    };

    assert.equal((await fetch(`${base}/dashboard/events`)).status, 401, "no key, no view");
    const stream = await fetch(`${base}/dashboard/events`, { headers: { authorization: "Bearer view-key-0123" } });
    assert.equal(stream.status, 200);
    const events = readEvents(stream);
    const cell = await until(() => events.snapshots.find((s) => s.devices.filter((d) => d.state === "ready").length === 2 && s.placement !== null), "both devices ready and placed");
    assert.deepEqual(cell.devices.map((d) => [d.name, d.kind, d.link]).sort(), [
      ["local-0", "node", { emulated: true, down_bps: 100e6, up_bps: 100e6, rtt_ms: 2, loss: 0 }],
      ["local-1", "node", { emulated: true, down_bps: 100e6, up_bps: 100e6, rtt_ms: 2, loss: 0 }],
    ]);
    assert.ok(cell.placement!.every((row) => row.every((hosts) => hosts.length === 1)), "every expert has its device");

    // the controls: the admin key only
    assert.equal((await fetch(`${base}/admin/link`, { method: "PUT", headers: { authorization: "Bearer view-key-0123", "content-type": "application/json" }, body: JSON.stringify({ delayMs: 3 }) })).status, 401);
    assert.equal((await fetch(`${base}/admin/link`, { method: "PUT", headers: admin, body: JSON.stringify({ delayMs: 3 }) })).status, 200);
    await until(() => events.snapshots.some((s) => s.devices.some((d) => d.link.rtt_ms === 6)), "the new delay in a snapshot");
    await complete();
    // wlr at θ = 0 (from --policy) keeps every top-k expert
    await until(() => events.snapshots.some((s) => s.policy === "wlr θ=0" && s.routing.experts_per_token === 2), "top-k routing in a snapshot");
    assert.equal((await fetch(`${base}/admin/policy`, { method: "PUT", headers: admin, body: JSON.stringify({ name: "wlr", theta: 0.99 }) })).status, 200);
    assert.match(bs.err(), /^selection policy: wlr θ=0\.99 \(set through \/admin\/policy\)$/m, "the change is logged");
    await complete();
    await until(() => events.snapshots.some((s) => s.policy === "wlr θ=0.99" && s.routing.experts_per_token !== null && s.routing.experts_per_token < 2), "fewer experts per token under wlr θ=0.99");

    process.kill(deviceChildren(bs.child.pid!).get("local-1")!, "SIGKILL");
    const failed = await until(() => events.snapshots.find((s) => s.devices.some((d) => d.name === "local-1" && d.state === "failed")), "the killed device shown failed");
    assert.equal(failed.devices.find((d) => d.name === "local-1")!.reason, "disconnected");
    assert.ok(events.raw.every((e) => !/key-0123/.test(e)), "no key in a snapshot");

    bs.child.kill("SIGTERM");
    await events.ended;
    assert.equal(await bs.exited, 0);
  } finally {
    for (const c of children) c.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});

test("serve --local-devices 2 --bs-budget 0.25: MoNDE's hot experts at the BS, copied from its own checkpoint; the same greedy completion as without tiers; the dashboard and /metrics show the BS's experts", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-serve-"));
  const children: ChildProcess[] = [];
  try {
    initModel({ arch: "MixtralForCausalLM", out: dir, layers: 2, hidden: 64, experts: 4, topK: 2, seed: 5 });
    // bf16, as the checkpoint holds its experts: the BS's store serves copies as they are
    const single = Engine.load(dir, { dtype: "bf16", threads: 1 });
    const want = (await single.generate(single.tokenizer.encode("hello there"), { temperature: 0, maxTokens: 10 })).text;
    single.close();
    // an emulated delay and a fast store: a copy pays after one call, so monde keeps the experts used (the cost model decides, not the machine's load)
    const bs = start([
      "serve", "--model", dir, "--port", "0", "--local-devices", "2", "--threads", "1", "--state-dir", path.join(dir, "state"), "--dtype", "bf16",
      "--link", "rate=1gbit,delay=2ms", "--bs-budget", "0.25", "--bs-store-gbps", "10",
    ]);
    children.push(bs.child);
    const port = await until(() => /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(bs.err())?.[1], "the BS to listen");
    const base = `http://127.0.0.1:${port}`;
    await until(async () => ((await (await fetch(`${base}/health`)).json()).status === "ok"), "/health ok");
    assert.match(bs.err(), /^MoNDE tiers: monde, the BS keeps up to 2 of 8 experts \(25\.0 %\), copied from its store \(10\.0 GB\/s\); .* link 0\.125 GB\/s, 2\.00 ms \(emulated\)$/m, "the choice logged");
    const events = readEvents(await fetch(`${base}/dashboard/events`));
    await until(() => events.snapshots.some((s) => s.bs_experts !== null), "a snapshot with the BS's experts");
    for (let i = 0; i < 3; i++) {
      const r = await fetch(`${base}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "hello there", max_tokens: 10, temperature: 0 }) });
      assert.equal(r.status, 200);
      assert.equal((await r.json()).choices[0].text, want, "the model's own greedy tokens, whichever tier ran each expert");
    }
    const held = await until(() => events.snapshots.find((s) => s.bs_experts?.flat().some((n) => n > 0)), "the BS's experts in a snapshot");
    const count = held.bs_experts!.flat().reduce((a, b) => a + b, 0);
    assert.ok(count >= 1 && count <= 2, `within the budget of 2 experts: ${count}`);
    assert.ok(held.placement!.every((row) => row.every((hosts) => hosts.length === 1)), "the devices still hold every expert");
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^distmoe_bs_experts\{layer="[01]"\} [12]$/m);

    bs.child.kill("SIGTERM");
    await events.ended;
    assert.equal(await bs.exited, 0);
  } finally {
    for (const c of children) c.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});
