#!/usr/bin/env node
// Soak test of the base station: starts `distmoe serve --local-devices D --replicas R`, runs N
// concurrent clients against it for M minutes (completions and chat, streamed mostly, greedy and
// sampled, some disconnecting on purpose at a random point) while a device process is SIGKILLed now
// and then (one at a time, the next only once /health is ok again), then stops serve with SIGTERM.
// Every request is classified: completed (200 with a finish_reason, and [DONE] for a stream),
// cancelled (by this script, on purpose) or failed (anything else, with the reason counted). Prints a
// progress line every few seconds and a summary: counts, failure reasons, p50/p99 latency and time to
// first token, serve's RSS after warm-up / mid-run / at the end, kills, serve's exit code.
// Exits 1 if any request failed or serve did not exit 0. Loopback only; reads /proc (Linux).
// Usage: node scripts/soak.mjs [--clients 32] [--minutes 10] [--devices 4] [--replicas 2] … (--help)
import { parseScriptArgs } from "./lib/script-args.mjs";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const OPTIONS = {
  model: { type: "string", default: path.resolve(root, "../shared/models/brown-moe"), help: "model directory" },
  corpus: { type: "string", default: path.resolve(root, "../shared/corpus/brown/valid.txt"), help: "text the prompts are cut from" },
  clients: { type: "string", default: "32", help: "concurrent clients" },
  minutes: { type: "string", default: "10", help: "how long clients send requests" },
  devices: { type: "string", default: "4", help: "serve --local-devices" },
  replicas: { type: "string", default: "2", help: "serve --replicas" },
  "kill-every": { type: "string", default: "20", help: "mean seconds between device kills (exponential); 0: none" },
  "abort-rate": { type: "string", default: "0.1", help: "fraction of requests the client abandons at a random point" },
  "max-tokens": { type: "string", default: "8-64", help: "max_tokens range, MIN-MAX" },
  "chat-rate": { type: "string", default: "0.3", help: "fraction of requests to /v1/chat/completions (if the model has a chat template)" },
  "stream-rate": { type: "string", default: "0.8", help: "fraction of requests streamed" },
  port: { type: "string", default: "0", help: "serve's port (0: any free one)" },
  progress: { type: "string", default: "15", help: "seconds between progress lines" },
  warmup: { type: "string", default: "", help: "seconds after which serve's RSS is the baseline (default: 10% of the run, 15 to 60)" },
  "rss-tolerance": { type: "string", default: "0.25", help: "memory is flat when end RSS ≤ (1 + this) × the baseline" },
  "request-timeout": { type: "string", default: "120", help: "seconds before a request counts as failed (hung)" },
  grace: { type: "string", default: "60", help: "seconds requests in flight at the deadline may take to finish" },
  json: { type: "string", help: "write the full results here" },
};
const usage = () =>
  ["Usage: node scripts/soak.mjs [options]", "", ...Object.entries(OPTIONS).map(([k, o]) => `  --${k.padEnd(16)} ${o.help}${o.default ? ` (default ${o.default})` : ""}`), `  --${"help".padEnd(16)} this text`].join("\n");
const { values: a } = parseScriptArgs(import.meta.url, { options: Object.fromEntries(Object.entries(OPTIONS).map(([k, { help, ...o }]) => [k, o])) }, usage);
const num = (name, min, max = Infinity) => {
  const v = Number(a[name]);
  if (!Number.isFinite(v) || v < min || v > max) fail(`--${name} ${a[name]}: a number from ${min}${max < Infinity ? ` to ${max}` : ""}`);
  return v;
};
function fail(msg) {
  process.stderr.write(`soak: ${msg}\n`);
  process.exit(2);
}
const CLIENTS = num("clients", 1), RUN_MS = num("minutes", 0.05) * 60_000, DEVICES = num("devices", 1), REPLICAS = num("replicas", 1);
const KILL_EVERY_MS = num("kill-every", 0) * 1000, ABORT_RATE = num("abort-rate", 0, 1), CHAT_RATE = num("chat-rate", 0, 1), STREAM_RATE = num("stream-rate", 0, 1);
const PROGRESS_MS = num("progress", 1) * 1000, RSS_TOLERANCE = num("rss-tolerance", 0), REQUEST_TIMEOUT_MS = num("request-timeout", 1) * 1000, GRACE_MS = num("grace", 0) * 1000;
const WARMUP_MS = a.warmup ? num("warmup", 0) * 1000 : Math.min(60_000, Math.max(15_000, RUN_MS / 10));
const [MIN_TOKENS, MAX_TOKENS] = (/^(\d+)-(\d+)$/.exec(a["max-tokens"]) ?? fail("--max-tokens: MIN-MAX, e.g. 8-64")).slice(1).map(Number);
if (MIN_TOKENS < 1 || MAX_TOKENS < MIN_TOKENS) fail("--max-tokens: 1 ≤ MIN ≤ MAX");

const corpus = readFileSync(a.corpus, "utf8").split("\n").filter((l) => l.trim().split(/\s+/).length >= 4);
const rand = (lo, hi) => lo + Math.random() * (hi - lo);
const randInt = (lo, hi) => Math.floor(rand(lo, hi + 1));
const pick = (xs) => xs[Math.floor(Math.random() * xs.length)];
const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const now = () => performance.now();

// ---- the serve process and its device children ------------------------------------------------

/** Every device pid seen, to check that none outlives serve. */
const devicePids = new Set();

/** The `distmoe device` processes whose parent is `ppid` (from /proc): pid and --name. */
function childrenOf(ppid) {
  const out = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) !== ppid) continue;
      const argv = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      if (!argv.includes("device")) continue;
      out.push({ pid: Number(entry), name: argv[argv.indexOf("--name") + 1] });
      devicePids.add(Number(entry));
    } catch {
      // the process ended meanwhile
    }
  }
  return out;
}

/** Resident set size in KiB, 0 for a process that is gone. */
function rssKiB(pid) {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
  } catch {
    return 0;
  }
}
/** Whether `pid` is a live `distmoe device` (not a pid reused by something else). */
function alive(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes("device") && !/^\S+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}
const mib = (kib) => (kib / 1024).toFixed(0);

// join tokens and device identities of this run only, not the operator's
const stateDir = mkdtempSync(path.join(os.tmpdir(), "distmoe-soak-state-"));
process.on("exit", () => rmSync(stateDir, { recursive: true, force: true }));
const serveArgs = ["serve", "--model", a.model, "--state-dir", stateDir, "--host", "127.0.0.1", "--port", a.port, "--local-devices", String(DEVICES), "--replicas", String(REPLICAS), "--max-queue", String(Math.max(64, CLIENTS))];
const serve = spawn(process.execPath, [path.join(root, "bin/distmoe.js"), ...serveArgs], { stdio: ["ignore", "ignore", "pipe"] });
const serveLog = [];
const serveEvents = { exits: 0, restarts: 0, internalErrors: 0 };
let serveErr = "";
serve.stderr.on("data", (d) => {
  serveErr += d.toString();
  const lines = serveErr.split("\n");
  serveErr = lines.pop();
  for (const l of lines) {
    serveLog.push(l);
    if (serveLog.length > 400) serveLog.shift();
    if (/^local-\d+ exited/.test(l)) serveEvents.exits++;
    else if (/^local-\d+ restarted/.test(l)) serveEvents.restarts++;
    else if (/internal error|failed: .*Error/.test(l)) serveEvents.internalErrors++;
    else continue;
    console.log(`  serve: ${l}`);
  }
});
const serveExit = new Promise((r) => serve.once("exit", (code, signal) => r({ code, signal })));
let serveEnded = false;
serveExit.then(() => (serveEnded = true));
/** Whatever happens to this script, serve and its devices do not outlive it. */
function killAll() {
  if (!serveEnded) childrenOf(serve.pid);
  for (const pid of devicePids.values()) if (alive(pid)) process.kill(pid, "SIGKILL");
  if (!serveEnded) serve.kill("SIGKILL");
}
process.on("exit", killAll);
const stopEverything = new AbortController();
for (const signal of ["SIGINT", "SIGTERM"])
  process.once(signal, () => {
    process.stderr.write(`soak: ${signal}: stopping serve and its devices\n`);
    stopEverything.abort();
    killAll();
    process.exit(130);
  });

let port;
while (!(port = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(serveLog.join("\n"))?.[1])) {
  if (serveEnded) fail(`serve exited before listening:\n${serveLog.join("\n")}`);
  await sleep(50);
}
const base = `http://127.0.0.1:${port}`;

async function health() {
  try {
    return (await (await fetch(`${base}/health`, { signal: AbortSignal.timeout(5000) })).json()).status ?? "?";
  } catch (e) {
    return `unreachable (${e.cause?.code ?? e.name})`;
  }
}
const startWait = now();
while ((await health()) !== "ok") {
  if (serveEnded) fail(`serve exited before it was ready:\n${serveLog.join("\n")}`);
  if (now() - startWait > 300_000) fail("serve not healthy after 300 s");
  await sleep(200);
}

// chat needs a chat template; a model without one answers 400 and gets completions only
const probe = await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ messages: [{ role: "user", content: "Hello" }], max_tokens: 1 }) });
const chatBody = await probe.json();
const chat = probe.status === 200;
if (!chat) process.stdout.write(`note: no chat requests: ${chatBody.error?.message ?? probe.status}\n`);
console.log(`soak: ${CLIENTS} clients for ${RUN_MS / 60_000} min against ${base} (${DEVICES} local devices, replicas ${REPLICAS}); kills every ~${KILL_EVERY_MS / 1000} s; abort rate ${ABORT_RATE}; max_tokens ${MIN_TOKENS}-${MAX_TOKENS}`);

// ---- clients ------------------------------------------------------------------------------------

const t0 = now();
const deadline = t0 + RUN_MS;
const stats = { completed: 0, failed: 0, cancelled: 0, tokens: 0, reasons: new Map(), latency: [], ttft: [], byKind: new Map() };

/** A failure's reason with its numbers masked, so that like failures count together. */
const reasonOf = (s) => String(s).replace(/\d+(\.\d+)?/g, "N").replace(/[0-9a-f]{8}-[0-9a-f-]{27}/g, "ID").slice(0, 160);

function makeRequest() {
  const lines = Array.from({ length: randInt(1, 3) }, () => pick(corpus));
  const words = lines.join(" ").split(/\s+/);
  const start = randInt(0, Math.max(0, words.length - 8));
  const text = words.slice(start, start + randInt(4, 60)).join(" ");
  const kind = chat && Math.random() < CHAT_RATE ? "chat" : "text";
  const stream = Math.random() < STREAM_RATE;
  const maxTokens = randInt(MIN_TOKENS, MAX_TOKENS);
  const body = { max_tokens: maxTokens, temperature: Math.random() < 0.5 ? 0 : Number(rand(0.3, 1.2).toFixed(2)), stream };
  if (stream) body.stream_options = { include_usage: true };
  if (kind === "chat") body.messages = [{ role: "user", content: text }];
  else body.prompt = text;
  // the client gives up after a random time, or (a stream) after a random number of pieces
  let abort = null;
  if (Math.random() < ABORT_RATE) abort = stream && Math.random() < 0.5 ? { afterPieces: randInt(0, maxTokens) } : { afterMs: rand(0, 4000) };
  return { kind, stream, body, abort };
}

/** How to end each request in flight, when the grace period is over. */
const running = new Set();
stopEverything.signal.addEventListener("abort", () => {
  for (const stop of running) stop();
});

/**
 * One request, start to end: "completed" | "cancelled" | a failure's reason. Ending it early (on
 * purpose, at its timeout, at the end of the grace period) aborts the fetch and also settles every
 * await at once: a stream's pending read is not trusted to notice the abort.
 */
async function run(req) {
  const ours = new AbortController();
  let why = null;
  let giveUp;
  const gaveUp = new Promise((_, reject) => (giveUp = reject));
  gaveUp.catch(() => undefined);
  const end = (reason) => {
    why ??= reason;
    ours.abort();
    giveUp(new Error(reason));
  };
  const settled = (p) => Promise.race([p, gaveUp]);
  const timers = [setTimeout(() => end("timeout"), REQUEST_TIMEOUT_MS)];
  if (req.abort?.afterMs !== undefined) timers.push(setTimeout(() => end("cancelled"), req.abort.afterMs));
  const onStop = () => end("stopped");
  if (stopEverything.signal.aborted) onStop();
  else running.add(onStop);
  const start = now();
  let ttft = null, pieces = 0, tokens = 0, reader = null;
  /** What ending it early makes of a request that did not complete. */
  const early = () => ({ cancelled: "cancelled", timeout: `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`, stopped: `still running ${GRACE_MS / 1000} s after the deadline` })[why];
  const attempt = async () => {
    const url = `${base}/v1/${req.kind === "chat" ? "chat/completions" : "completions"}`;
    const res = await settled(fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(req.body), signal: ours.signal }));
    if (res.status !== 200) {
      const text = await settled(res.text());
      let msg = text;
      try {
        msg = JSON.parse(text).error?.message ?? text;
      } catch {}
      return `HTTP ${res.status}: ${msg}`;
    }
    let finish = null, done = false;
    if (!req.stream) {
      const r = await settled(res.json());
      finish = r.choices?.[0]?.finish_reason ?? null;
      tokens = r.usage?.completion_tokens ?? 0;
      done = true;
    } else {
      // afterPieces 0: the client gives up before its first token
      if (req.abort?.afterPieces === 0) end("cancelled");
      reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done: ended } = await settled(reader.read());
        if (ended) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const event = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          if (!data) continue;
          if (done) return `data after [DONE]: ${data.slice(0, 40)}`;
          if (data === "[DONE]") {
            done = true;
            continue;
          }
          let m;
          try {
            m = JSON.parse(data);
          } catch {
            return `an event that is not JSON: ${data.slice(0, 40)}`;
          }
          if (m.error) return `error event: ${m.error.message}`;
          if (m.usage) tokens = m.usage.completion_tokens;
          const c = m.choices?.[0];
          if (!c) continue;
          const piece = req.kind === "chat" ? c.delta?.content : c.text;
          if (piece) {
            ttft ??= now() - start;
            pieces++;
            if (req.abort?.afterPieces !== undefined && pieces >= req.abort.afterPieces) end("cancelled");
          }
          if (c.finish_reason) finish = c.finish_reason;
        }
      }
      if (!done) return "stream ended without [DONE]";
      if (!tokens) tokens = pieces;
    }
    if (finish !== "stop" && finish !== "length") return `finish_reason ${finish}`;
    stats.latency.push(now() - start);
    if (ttft !== null) stats.ttft.push(ttft);
    stats.tokens += tokens;
    return "completed";
  };
  try {
    const outcome = await attempt();
    return outcome === "completed" || !why ? outcome : early();
  } catch (e) {
    return why ? early() : `network: ${e.cause?.code ?? e.cause?.message ?? e.message}`;
  } finally {
    for (const t of timers) clearTimeout(t);
    running.delete(onStop);
    // a request classified before its end (a bad event, data after [DONE]) lets go of its connection
    ours.abort();
    reader?.cancel().catch(() => undefined);
  }
}

async function client() {
  while (now() < deadline) {
    inFlight++;
    const outcome = await run(makeRequest());
    inFlight--;
    if (outcome === "completed") stats.completed++;
    else if (outcome === "cancelled") stats.cancelled++;
    else {
      stats.failed++;
      const r = reasonOf(outcome);
      stats.reasons.set(r, (stats.reasons.get(r) ?? 0) + 1);
    }
  }
}

// ---- device kills -------------------------------------------------------------------------------

const kills = [];
async function untilHealthy(by) {
  while (now() < by) {
    if ((await health()) === "ok") return true;
    await sleep(250);
  }
  return false;
}
async function killer() {
  if (!KILL_EVERY_MS) return;
  for (;;) {
    await sleep(Math.min(-Math.log(1 - Math.random()) * KILL_EVERY_MS, deadline - now()));
    if (now() >= deadline) return;
    // never a second kill before the first device is back
    if (!(await untilHealthy(deadline))) return;
    const victims = childrenOf(serve.pid);
    if (victims.length === 0) continue;
    const v = pick(victims);
    process.kill(v.pid, "SIGKILL");
    const kill = { at: (now() - t0) / 1000, name: v.name, pid: v.pid, backAfterS: null };
    kills.push(kill);
    const killedAt = now();
    // back: a new process under the same name, and every expert with its replicas again
    while (now() < deadline + GRACE_MS) {
      const back = childrenOf(serve.pid).find((c) => c.name === v.name && c.pid !== v.pid);
      if (back && (await health()) === "ok") {
        kill.backAfterS = (now() - killedAt) / 1000;
        break;
      }
      await sleep(250);
    }
  }
}

// ---- progress and memory ------------------------------------------------------------------------

const samples = [];
async function sample() {
  const devices = childrenOf(serve.pid);
  const s = {
    t: (now() - t0) / 1000,
    serveRssKiB: rssKiB(serve.pid),
    devicesRssKiB: devices.reduce((sum, d) => sum + rssKiB(d.pid), 0),
    devices: devices.length,
    completed: stats.completed,
    failed: stats.failed,
    cancelled: stats.cancelled,
    tokens: stats.tokens,
    kills: kills.length,
    health: await health(),
  };
  samples.push(s);
  return s;
}
async function progress() {
  let last = { t: 0, tokens: 0 };
  while (now() < deadline) {
    await sleep(Math.min(PROGRESS_MS, deadline - now()));
    const s = await sample();
    const tps = (s.tokens - last.tokens) / (s.t - last.t);
    console.log(
      `[${s.t.toFixed(0).padStart(5)} s] completed ${s.completed} failed ${s.failed} cancelled ${s.cancelled} | ${tps.toFixed(1)} tok/s | serve RSS ${mib(s.serveRssKiB)} MiB, ` +
        `devices ${mib(s.devicesRssKiB)} MiB (${s.devices}) | kills ${s.kills} | health ${s.health}`,
    );
    last = s;
  }
}

let inFlight = 0;
const clients = Array.from({ length: CLIENTS }, () => client());
await Promise.all([killer(), progress()]);
console.log(`deadline: waiting for ${inFlight} requests in flight (at most ${GRACE_MS / 1000} s)`);
// requests in flight at the deadline get the grace period, then are ended
const graceTimer = setTimeout(() => stopEverything.abort(), GRACE_MS);
await Promise.all(clients);
clearTimeout(graceTimer);
const end = await sample();
childrenOf(serve.pid);
const ranS = end.t;

console.log("stopping serve (SIGTERM)");
serve.kill("SIGTERM");
const stopTimer = setTimeout(killAll, 30_000);
const exit = await serveExit;
clearTimeout(stopTimer);
const leftover = [...devicePids].filter(alive).length;

// ---- summary ------------------------------------------------------------------------------------

const pct = (xs, p) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};
const nearest = (t) => samples.reduce((b, s) => (Math.abs(s.t - t) < Math.abs(b.t - t) ? s : b));
const warm = nearest(WARMUP_MS / 1000), mid = nearest((WARMUP_MS / 1000 + ranS) / 2);
const ratio = end.serveRssKiB / warm.serveRssKiB;
const flat = ratio <= 1 + RSS_TOLERANCE;
const recovered = kills.filter((k) => k.backAfterS !== null).map((k) => k.backAfterS);
const ms = (x) => (Number.isNaN(x) ? "-" : `${(x / 1000).toFixed(2)} s`);
const rows = [
  ["requests completed", stats.completed],
  ["requests failed", stats.failed],
  ["requests cancelled (on purpose)", stats.cancelled],
  ["tokens generated", `${stats.tokens} (${(stats.tokens / ranS).toFixed(1)} tok/s)`],
  ["latency p50 / p99", `${ms(pct(stats.latency, 50))} / ${ms(pct(stats.latency, 99))}`],
  ["time to first token p50 / p99", `${ms(pct(stats.ttft, 50))} / ${ms(pct(stats.ttft, 99))}`],
  ["serve RSS after warm-up / mid / end", `${mib(warm.serveRssKiB)} (${warm.t.toFixed(0)} s) / ${mib(mid.serveRssKiB)} (${mid.t.toFixed(0)} s) / ${mib(end.serveRssKiB)} MiB (${end.t.toFixed(0)} s)`],
  ["serve RSS end / after warm-up", `${ratio.toFixed(3)} (${flat ? "flat" : "GROWING"}: tolerance ${RSS_TOLERANCE})`],
  ["device RSS total after warm-up / end", `${mib(warm.devicesRssKiB)} / ${mib(end.devicesRssKiB)} MiB`],
  ["devices killed / back (time to /health ok)", `${kills.length} / ${recovered.length}${recovered.length ? ` (median ${pct(recovered, 50).toFixed(1)} s, max ${Math.max(...recovered).toFixed(1)} s)` : ""}`],
  ["serve: device exits / restarts logged", `${serveEvents.exits} / ${serveEvents.restarts}`],
  ["serve: internal errors logged", serveEvents.internalErrors],
  ["serve exit after SIGTERM", exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`],
  ["device processes left after serve exited", leftover],
];
const w = Math.max(...rows.map(([k]) => k.length));
console.log(`\nsoak summary (${(ranS / 60).toFixed(1)} min, ${CLIENTS} clients, ${DEVICES} devices, replicas ${REPLICAS})`);
for (const [k, v] of rows) console.log(`  ${k.padEnd(w)}  ${v}`);
if (stats.reasons.size) {
  console.log("  failure reasons:");
  for (const [r, n] of [...stats.reasons].sort((x, y) => y[1] - x[1])) console.log(`    ${String(n).padStart(6)}  ${r}`);
}
const ok = stats.failed === 0 && exit.code === 0 && leftover === 0;
if (!ok || serveEvents.internalErrors) console.log(`\nlast lines of serve's log:\n${serveLog.slice(-30).map((l) => `  ${l}`).join("\n")}`);
if (a.json) {
  const result = {
    options: { clients: CLIENTS, minutes: RUN_MS / 60_000, devices: DEVICES, replicas: REPLICAS, killEveryS: KILL_EVERY_MS / 1000, abortRate: ABORT_RATE, maxTokens: [MIN_TOKENS, MAX_TOKENS], chat, serveArgs },
    completed: stats.completed, failed: stats.failed, cancelled: stats.cancelled, tokens: stats.tokens,
    failureReasons: Object.fromEntries(stats.reasons),
    latencyMs: { p50: pct(stats.latency, 50), p99: pct(stats.latency, 99) }, ttftMs: { p50: pct(stats.ttft, 50), p99: pct(stats.ttft, 99) },
    rss: { warm, mid, end, ratio, flat }, kills, serveEvents, serveExit: exit, leftoverDevices: leftover, samples, serveLogTail: serveLog.slice(-100),
  };
  writeFileSync(a.json, JSON.stringify(result, null, 2));
}
process.exit(ok ? 0 : 1);
