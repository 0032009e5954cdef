#!/usr/bin/env node
// Where decode time goes in distmoe and in llama.cpp on the same GGUF file (issue 14: "where a row falls
// short, the measured reason"). Linux `perf record` samples each engine's decode on the native kernels:
// distmoe's engine decodes --tokens tokens after a --context-token prompt in one process; llama-bench
// decodes 128 tokens after the same context (`-p 0 -n 128 -d CONTEXT -r 5`). Both profiles include the
// context's prefill, done once. Prints each one's share of samples per shared object and its top symbols,
// side by side, and each engine's decode rate in the run.
// Needs perf (Debian: linux-perf) and llama-bench (built once by scripts/llama-cpp/build.mjs, as
// bench-vs-llamacpp.mjs does). Run it on a quiet machine: other work shows up in both profiles.
// Usage: node scripts/perf-vs-llamacpp.mjs --model FILE.gguf [--threads 2] [--tokens 600] [--context 256] [--top 14]
//        (after npm run build)
import { parseScriptArgs } from "./lib/script-args.mjs";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ensureLlamaCppTools } from "./llama-cpp/build.mjs";

const { values: a } = parseScriptArgs(import.meta.url, {
  options: {
    model: { type: "string" },
    threads: { type: "string", default: "2" },
    tokens: { type: "string", default: "600" },
    context: { type: "string", default: "256" },
    top: { type: "string", default: "14" },
    "decode-only": { type: "boolean" },
  },
});
const fail = (message) => {
  process.stderr.write(`perf-vs-llamacpp: ${message}\n`);
  process.exit(2);
};
if (a["decode-only"] && !a.model) fail("--decode-only needs --model FILE.gguf");
if (a["decode-only"]) {
  // the child: distmoe's decode loop, run under perf by the parent
  const { Engine } = await import("../dist/runtime/engine.js");
  const context = Number(a.context), tokens = Number(a.tokens);
  const engine = Engine.load(a.model, { backend: "native", threads: Number(a.threads) });
  const m = engine.model;
  if (context + tokens + 1 > m.contextLength) fail(`--context ${context} + --tokens ${tokens} do not fit this model's context of ${m.contextLength} positions`);
  const cache = m.newSequence(context + tokens + 1);
  await m.forward([{ cache, tokens: Array.from({ length: context }, (_, i) => 3 + ((i * 7) % 1000)), logits: "last" }]);
  const t0 = performance.now();
  for (let i = 0; i < tokens; i++) await m.forward([{ cache, tokens: [5 + (i % 100)], logits: "last" }]);
  console.log(JSON.stringify({ decode_tokens_per_s: tokens / ((performance.now() - t0) / 1000) }));
  engine.close();
  process.exit(0);
}
if (!a.model) fail("usage: node scripts/perf-vs-llamacpp.mjs --model FILE.gguf [--threads 2] [--tokens 600] [--context 256] [--top 14]");
for (const [k, v] of [["threads", a.threads], ["tokens", a.tokens], ["context", a.context], ["top", a.top]]) if (!(Number.isInteger(Number(v)) && Number(v) >= 1)) fail(`--${k} is a positive integer, got "${v}"`);
if (!existsSync(a.model)) fail(`no model file ${a.model}`);
if (spawnSync("perf", ["--version"]).status !== 0) fail("needs perf on the PATH (Debian: apt-get install linux-perf)");
const tools = await ensureLlamaCppTools(["llama-bench"]).catch((e) => fail(e.message));

const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-perf-"));
/** perf record over `cmd`; its stdout, and the samples' shares per shared object and per symbol. */
function profile(name, cmd, args) {
  const data = path.join(dir, `${name}.data`);
  const run = spawnSync("perf", ["record", "-F", "999", "-o", data, "--", cmd, ...args], { encoding: "utf8", maxBuffer: 64 << 20 });
  if (run.status !== 0) {
    // the profiled command's own error, not perf's lines about the samples it wrote
    const lines = run.stderr.trim().split("\n").filter((l) => !/^\[ perf record:/.test(l));
    fail(`${name} failed under perf: ${(lines.find((l) => /^\s*\w*Error: |^perf-vs-llamacpp: /.test(l)) ?? lines.find((l) => /error/i.test(l)) ?? lines.at(-1) ?? "").replace(/^perf-vs-llamacpp: /, "").trim()}`);
  }
  const report = (sort) =>
    spawnSync("perf", ["report", "-i", data, "--sort", sort, "--stdio"], { encoding: "utf8", maxBuffer: 64 << 20 })
      .stdout.split("\n")
      .filter((l) => /^\s+\d/.test(l))
      .map((l) => {
        const m = /^\s+([\d.]+)%\s+(.*)$/.exec(l);
        return [Number(m[1]), m[2].replace(/^\[[.k]\]\s+/, "").trim()];
      });
  return { stdout: run.stdout, dsos: report("dso"), symbols: report("sym") };
}

try {
  const threads = a.threads, context = a.context;
  const ours = profile("distmoe", process.execPath, [new URL(import.meta.url).pathname, "--decode-only", "--model", a.model, "--threads", threads, "--tokens", a.tokens, "--context", context]);
  const llama = profile("llama.cpp", tools.bin["llama-bench"], ["-m", a.model, "-t", threads, "-r", "5", "-p", "0", "-n", "128", "-d", context, "-o", "json"]);
  const oursRate = JSON.parse(ours.stdout.trim().split("\n").pop()).decode_tokens_per_s;
  const llamaRate = JSON.parse(llama.stdout).find((r) => r.n_gen > 0)?.avg_ts;
  console.log(`\n${path.basename(a.model)}, ${threads} threads, decode after ${context} tokens: distmoe ${oursRate.toFixed(1)} tok/s, llama.cpp ${llamaRate?.toFixed(1)} tok/s (in this run, under perf)\n`);
  const table = (title, rowsA, rowsB, n) => {
    console.log(`| ${title}: distmoe | % | llama.cpp | % |`);
    console.log("|---|---|---|---|");
    for (let i = 0; i < n; i++) {
      const [pa, sa] = rowsA[i] ?? [null, ""], [pb, sb] = rowsB[i] ?? [null, ""];
      console.log(`| ${sa} | ${pa ?? ""} | ${sb} | ${pb ?? ""} |`);
    }
    console.log("");
  };
  table("shared object", ours.dsos, llama.dsos, 6);
  table("symbol", ours.symbols, llama.symbols, Number(a.top));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
