#!/usr/bin/env node
// One browser-tab device against one Node device process, on this machine: per-call latency (p50/p95)
// and throughput (calls/s, rows/s) of the same expert calls, at 1 thread and more. The Node device
// computes with the same WebAssembly kernels as the page (--backend wasm), and, for reference, with
// ggml's native kernels (what it picks by default where they load: --node native). Each configuration
// gets its own base station (the TLS one the browser tests use, testing/browser-hub.ts) with that one
// device holding every expert; the calls go through the hub's executor as the engine's do (call frame,
// result frame, result checks), so the round trip is what the base station waits for, and the
// device's own compute time comes back in each result. Latency: one call at a time, cycling through
// every layer's experts (cold weights, as in decode). Throughput: --concurrency calls kept in flight.
// The tab computes with the page's kernels: `--compute` is passed as the page's #compute= fragment
// parameter; a kind the page does not report using (its #compute tile's data-compute) gets a row saying
// it is not available in this page instead of figures.
// Usage: node scripts/bench-browser-device.mjs [--model DIR] [--dtypes f32,q8] [--threads 1,2] [--node wasm,native]
//   [--compute wasm,webgpu] [--rows 1,16] [--calls 200] [--concurrency 4] [--out docs/bench/browser-device.json]
import { parseScriptArgs } from "./lib/script-args.mjs";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { newJoinToken } from "../dist/protocol/handshake.js";
import { spawnLocalDevices } from "../dist/runtime/local-cluster.js";
import { browserSkip, launchBrowser } from "../dist/testing/browser.js";
import { startBrowserHub } from "../dist/testing/browser-hub.js";
import { until } from "../dist/testing/until.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values: a } = parseScriptArgs(import.meta.url, {
  paths: ["model"],
  options: {
    model: { type: "string", default: path.resolve(root, "../shared/models/brown-moe") },
    dtypes: { type: "string", default: "f32,q8" },
    threads: { type: "string", default: "1,2" },
    compute: { type: "string", default: "wasm,webgpu" },
    node: { type: "string", default: "wasm,native" },
    rows: { type: "string", default: "1,16" },
    calls: { type: "string", default: "200" },
    concurrency: { type: "string", default: "4" },
    out: { type: "string", default: path.join(root, "docs/bench/browser-device.json") },
  },
});
const list = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);
const CALLS = Number(a.calls), CONCURRENCY = Number(a.concurrency);
const config = JSON.parse(readFileSync(path.join(a.model, "config.json"), "utf8"));
const hidden = config.hidden_size;
const experts = Array.from({ length: config.num_hidden_layers * config.num_local_experts }, (_, i) => ({ layer: Math.floor(i / config.num_local_experts), expert: i % config.num_local_experts }));
if (browserSkip) console.error(`browser rows skipped: ${browserSkip}`);

/** Activations that look like a real FFN input (a fixed pseudo-random draw, the same for every device). */
function activations(rows) {
  const x = new Float32Array(rows * hidden);
  let s = 12345;
  for (let i = 0; i < x.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    x[i] = ((s >>> 8) / 2 ** 24 - 0.5) * 2;
  }
  return x;
}

const quantile = (xs, q) => {
  const s = [...xs].sort((p, r) => p - r);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

/** Latency and throughput of `rows`-row calls through `hub`'s executor to its one device. */
async function measure(hub, rows) {
  const input = activations(rows);
  const call = (i) => hub.executor.dispatch([{ ...experts[i % experts.length], rows, input }])[0];
  for (let i = 0; i < 2 * experts.length; i++) await call(i); // every expert once warm, JIT and caches settled
  const roundTrip = [], compute = [];
  for (let i = 0; i < CALLS; i++) {
    const r = await call(i);
    roundTrip.push(r.roundTripMs);
    compute.push(r.computeMs);
  }
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < CALLS) await call(next++);
  }));
  const seconds = (performance.now() - t0) / 1000;
  const r2 = (x) => Math.round(x * 100) / 100;
  return {
    rows, calls: CALLS, p50Ms: r2(quantile(roundTrip, 0.5)), p95Ms: r2(quantile(roundTrip, 0.95)), computeP50Ms: r2(quantile(compute, 0.5)), computeP95Ms: r2(quantile(compute, 0.95)),
    concurrency: CONCURRENCY, callsPerSecond: r2(CALLS / seconds), rowsPerSecond: Math.round((CALLS * rows) / seconds),
  };
}

/** A base station with `join` as its one device; the figures for each row count, or why there are none. */
async function bench(dtype, join) {
  const token = newJoinToken();
  const lines = [];
  const bs = await startBrowserHub({ model: a.model, weightDType: dtype, wireDType: "f32", joinTokens: [token], log: (l) => lines.push(l) });
  let device;
  try {
    device = await join(bs, token);
    if (device.unavailable) return { unavailable: device.unavailable };
    await Promise.race([bs.hub.start(1), device.failed ?? new Promise(() => {})]);
    const results = [];
    for (const rows of list(a.rows).map(Number)) results.push(await measure(bs.hub, rows));
    return { results, kernels: device.kernels };
  } catch (e) {
    process.stderr.write(`${lines.join("\n")}\n`);
    throw e;
  } finally {
    await device?.close();
    await bs.close();
  }
}

/** A Node device process (`distmoe device`) computing with `backend`, its idle wasm threads spinning as long as the page's (the pool's default). */
const nodeDevice = (threads, backend) => async (bs, token) => {
  const devices = spawnLocalDevices(`wss://127.0.0.1:${bs.port}`, token, 1, threads, ["--fingerprint", bs.fingerprint, "--spin-ms", "0.5", "--backend", backend]);
  return { failed: devices.failed, kernels: `${backend}, ${threads} thread${threads > 1 ? "s" : ""}`, close: async () => (devices.settled(), await devices.exited()) };
};

/** A tab of `browser` opening the device page with the thread setting `threads` and #compute=`compute`. */
const browserDevice = (browser, threads, compute) => async (bs, token) => {
  const tab = await browser.context.newPage();
  await tab.addInitScript((n) => localStorage.setItem("distmoe.threads", n), String(threads));
  await tab.goto(`https://127.0.0.1:${bs.port}/device#token=${token}&name=bench-${compute}-${threads}&compute=${compute}`);
  const close = () => tab.close();
  // the page has chosen its compute once it joins (or has given up: #compute=webgpu without an adapter)
  const state = await until(async () => {
    const now = await tab.textContent("#state");
    return now === "starting" ? undefined : now;
  }, "the page to choose its compute");
  if (state === "error") return { unavailable: `${compute === "webgpu" ? "WebGPU" : compute}: not available in this page (${(await tab.textContent("#detail")).trim()})`, close };
  const computes = await tab.getAttribute("#compute", "data-compute");
  if (computes !== compute) return { unavailable: `${compute === "webgpu" ? "WebGPU" : compute}: not available in this page (it computes with ${computes})`, close };
  const used = Number(await tab.getAttribute("#kernels", "data-threads"));
  if (used !== threads) return { unavailable: `${threads} threads: the page computes on ${used}`, close };
  return { kernels: (await tab.textContent("#compute")).trim(), close };
};

const rows = [];
// WebGPU where the browser offers it (headless chromium here: SwiftShader, a software adapter)
const browser = browserSkip ? null : await launchBrowser({ trustAnyCertificate: true, webgpu: list(a.compute).includes("webgpu") });
try {
  for (const dtype of list(a.dtypes)) {
    for (const threads of list(a.threads).map(Number)) {
      for (const backend of list(a.node)) {
        let figures;
        try {
          figures = await bench(dtype, nodeDevice(threads, backend));
        } catch (e) {
          if (backend === "wasm") throw e;
          figures = { unavailable: `${backend}: ${e.message}` }; // native kernels that do not load here
        }
        rows.push({ device: "node", compute: backend, dtype, threads, ...figures });
      }
      if (!browser) continue;
      for (const compute of list(a.compute)) rows.push({ device: "browser", compute, dtype, threads, ...(await bench(dtype, browserDevice(browser, threads, compute))) });
    }
  }
} finally {
  await browser?.close();
}

const table = [["device", "compute", "dtype", "threads", "rows", "p50 ms", "p95 ms", "compute p50", "calls/s", "rows/s"]];
for (const r of rows) {
  if (r.unavailable) table.push([r.device, r.compute, r.dtype, String(r.threads), "–", r.unavailable]);
  else for (const m of r.results) table.push([r.device, r.compute, r.dtype, String(r.threads), String(m.rows), m.p50Ms.toFixed(2), m.p95Ms.toFixed(2), m.computeP50Ms.toFixed(2), m.callsPerSecond.toFixed(0), String(m.rowsPerSecond)]);
}
const widths = table[0].map((_, i) => Math.max(...table.filter((r) => r.length === table[0].length).map((r) => r[i].length)));
for (const r of table) console.log(r.length === table[0].length ? r.map((c, i) => c.padStart(widths[i])).join("  ") : `${r.slice(0, 5).map((c, i) => c.padStart(widths[i])).join("  ")}  ${r[5]}`);

const out = {
  command: `node scripts/bench-browser-device.mjs ${process.argv.slice(2).join(" ")}`.trim(),
  date: new Date().toISOString(), machine: `${os.cpus()[0]?.model ?? "?"}, ${os.availableParallelism()} cores, load ${os.loadavg()[0].toFixed(1)} at the end (shared, ad hoc)`,
  model: path.basename(a.model), calls: CALLS, concurrency: CONCURRENCY, rows,
};
mkdirSync(path.dirname(a.out), { recursive: true });
writeFileSync(a.out, `${JSON.stringify(out, null, 2)}\n`);
console.log(`written to ${path.relative(process.cwd(), a.out)}`);
