#!/usr/bin/env node
// What a dashboard client costs the base station (issue 16: "with the dashboard open, decode throughput
// drops by less than 2 %"). One `distmoe serve` with device processes on this machine (loopback)
// decodes greedily from a fixed prompt, in rounds of two generations: one with no dashboard client, one
// with a client reading /dashboard/events the whole time (the base station then builds a snapshot
// about three times a second), in alternating order. Each figure is the median decode rate (the
// response's usage.decode_ms_per_token) and the ratio the median of the rounds' paired ratios, with
// their quartiles (how much the machine's noise moves it). Then, with a client reading, it kills a device
// process --kills times (the base station starts it again) and times how long the dashboard takes to show
// it failed: from the kill to the first snapshot that does ("turns failed within 2 s"). Prints a table and
// writes the JSON.
// Usage: node scripts/bench-dashboard.mjs [--model DIR] [--tokens 128] [--reps 20] [--warmup 6] [--devices 2]
//        [--kills 5] [--json docs/bench/dashboard.json]   (after npm run build)
import { parseScriptArgs } from "./lib/script-args.mjs";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { deviceChildren } from "../dist/testing/cli-process.js";
import { until as waitUntil } from "../dist/testing/until.js";
import { quantile } from "../dist/util/stats.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values: a } = parseScriptArgs(import.meta.url, {
  options: {
    model: { type: "string", default: path.resolve(root, "../shared/models/brown-moe") },
    tokens: { type: "string", default: "128" },
    reps: { type: "string", default: "20" },
    warmup: { type: "string", default: "6" },
    devices: { type: "string", default: "2" },
    kills: { type: "string", default: "5" },
    json: { type: "string", default: path.join(root, "docs/bench/dashboard.json") },
  },
});
const TOKENS = Number(a.tokens), REPS = Number(a.reps), WARMUP = Number(a.warmup), DEVICES = Number(a.devices), KILLS = Number(a.kills);
if (![TOKENS, REPS, DEVICES].every((n) => Number.isInteger(n) && n >= 1) || ![WARMUP, KILLS].every((n) => Number.isInteger(n) && n >= 0)) {
  process.stderr.write("bench-dashboard: --tokens, --reps and --devices are positive integers, --warmup and --kills ones from 0\n");
  process.exit(2);
}
const PROMPT = "The jury said it did find that many of the";
const KEY = "bench-api-key-0123456789";

const state = mkdtempSync(path.join(os.tmpdir(), "distmoe-bench-dashboard-"));
const bs = spawn(process.execPath, [path.join(root, "bin/distmoe.js"), "serve", "--model", a.model, "--port", "0", "--local-devices", String(DEVICES), "--threads", "1", "--state-dir", state, "--api-key", KEY], { stdio: ["ignore", "ignore", "pipe"] });
let log = "";
bs.stderr.on("data", (d) => (log += d));
const exited = new Promise((r) => bs.once("exit", r));

/** Waits for `f` to give a value (polling every 10 ms); fails after a minute with the server's log. */
const until = (f, what) => waitUntil(f, what).catch((e) => Promise.reject(new Error(`${e.message}; the base station said:\n${log}`)));

const port = await until(() => /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(log)?.[1], "the base station to listen");
const base = `http://127.0.0.1:${port}`;
const auth = { authorization: `Bearer ${KEY}` };
const rows = { off: [], on: [] };
/** per kill: ms from the kill to the first snapshot showing the device failed */
const failedMs = [];
let snapshots = 0, text = null;
try {
  await until(async () => (await (await fetch(`${base}/health`)).json()).status === "ok", "/health ok");
  /** One greedy generation; its decode tokens/s. */
  const generate = async () => {
    const r = await fetch(`${base}/v1/completions`, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify({ prompt: PROMPT, max_tokens: TOKENS, temperature: 0 }) });
    if (r.status !== 200) throw new Error(`completion: HTTP ${r.status} ${await r.text()}`);
    const body = await r.json();
    text ??= body.choices[0].text;
    if (body.choices[0].text !== text) throw new Error("the greedy text changed between runs");
    return 1000 / body.usage.decode_ms_per_token;
  };
  /** A dashboard client reading snapshots until stopped; each is given to `onSnapshot`. */
  const client = async (onSnapshot = () => {}) => {
    const abort = new AbortController();
    const r = await fetch(`${base}/dashboard/events`, { headers: auth, signal: abort.signal });
    if (r.status !== 200) throw new Error(`/dashboard/events: HTTP ${r.status}`);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    // server-sent events: one "data:" line per snapshot (a read may end within a line)
    let pending = "";
    const take = (chunk) => {
      const lines = (pending + chunk).split("\n");
      pending = lines.pop();
      for (const l of lines.filter((l) => l.startsWith("data:"))) {
        snapshots++;
        onSnapshot(JSON.parse(l.slice(5)));
      }
    };
    // the first snapshot read before the generation starts: the base station is building them
    const first = await reader.read();
    take(first.value ?? "");
    const reading = (async () => {
      for (;;) {
        const { done, value } = await reader.read().catch(() => ({ done: true }));
        if (done) return;
        take(value);
      }
    })();
    return { stop: async () => (abort.abort(), await reading) };
  };
  for (let i = 0; i < WARMUP; i++) await generate();
  for (let rep = 0; rep < REPS; rep++) {
    for (const mode of rep % 2 === 0 ? ["off", "on"] : ["on", "off"]) {
      if (mode === "off") rows.off.push(await generate());
      else {
        const c = await client();
        try {
          rows.on.push(await generate());
        } finally {
          await c.stop();
        }
      }
    }
    process.stderr.write(`round ${rep + 1}/${REPS}\n`);
  }
  let latest = null;
  const watcher = await client((snapshot) => (latest = snapshot));
  try {
    for (let k = 0; k < KILLS; k++) {
      const name = `local-${k % DEVICES}`;
      const state = () => latest?.devices.find((d) => d.name === name)?.state;
      await until(() => state() === "ready", `${name} ready`);
      const pid = deviceChildren(bs.pid).get(name);
      if (!pid) throw new Error(`no process for ${name}`);
      const t0 = performance.now();
      process.kill(pid, "SIGKILL");
      await until(() => state() === "failed", `${name} shown failed`);
      failedMs.push(performance.now() - t0);
      process.stderr.write(`kill ${k + 1}/${KILLS}: ${name} shown failed after ${failedMs.at(-1).toFixed(0)} ms\n`);
    }
  } finally {
    await watcher.stop();
  }
} finally {
  bs.kill("SIGTERM");
  await exited;
  rmSync(state, { recursive: true, force: true });
}

const ratios = rows.on.map((x, i) => x / rows.off[i]);
const [lo, ratio, hi] = [0.25, 0.5, 0.75].map((q) => quantile(ratios, q));
const off = quantile(rows.off, 0.5), on = quantile(rows.on, 0.5);
console.log(`\n${path.basename(a.model)}, ${DEVICES} device processes on loopback, ${os.availableParallelism()} cores; greedy, ${TOKENS} new tokens, ${REPS} rounds\n`);
console.log("| dashboard client | decode tok/s (median) | vs none (median of paired rounds, quartiles) |");
console.log("|---|---|---|");
console.log(`| none | ${off.toFixed(1)} | 1 |`);
console.log(`| one, reading /dashboard/events | ${on.toFixed(1)} | ${ratio.toFixed(3)} (${lo.toFixed(3)}–${hi.toFixed(3)}) |`);
console.log(`\n${snapshots} snapshots read while a client was connected`);
if (KILLS > 0) console.log(`a killed device shown failed after ${quantile(failedMs, 0.5).toFixed(0)} ms (median of ${KILLS} kills; slowest ${Math.max(...failedMs).toFixed(0)} ms)`);
mkdirSync(path.dirname(a.json), { recursive: true });
writeFileSync(a.json, `${JSON.stringify({ model: path.basename(a.model), devices: DEVICES, cores: os.availableParallelism(), tokens: TOKENS, prompt: PROMPT, rounds: REPS, decodeTokensPerS: { none: rows.off, client: rows.on }, ratio, ratioQuartiles: [lo, hi], snapshots, killedShownFailedMs: failedMs }, null, 2)}\n`);
console.log(`wrote ${path.relative(process.cwd(), a.json)}`);
