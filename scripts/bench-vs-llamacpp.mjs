#!/usr/bin/env node
// distmoe against llama.cpp on the same GGUF file, the same threads, in the same run (issue 14, Acceptance):
// prefill tokens/s of a 256-token prompt and decode tokens/s of 64 tokens after it, for each model file and
// thread count, the two engines alternating round by round; medians, and distmoe ÷ llama.cpp.
//
// llama.cpp is measured by its own `llama-bench`, built from the llama.cpp source node-llama-cpp 3.21.1 bundles
// (scripts/llama-cpp/build.mjs; the same ggml 0.23.0 whose prebuilt libraries distmoe's native backend loads),
// not through node-llama-cpp: node-llama-cpp without a threadpool attached starts fresh threads for every
// graph, which under-reports llama.cpp's decode on small models by up to 5×; llama-bench is llama.cpp's own,
// honest measure (its defaults: OpenMP threads that spin while they wait, mmap, f16 KV cache, flash attention
// where it chooses it; the JSON records them). Building it needs npm, git, cmake and a C/C++ compiler; without
// them the script stops with one clear message (distmoe itself needs none of them).
//
// What is measured, matched to llama-bench's source (tools/llama-bench/llama-bench.cpp):
// - prefill: `llama-bench -p 256 -n 0` — one llama_decode of 256 tokens (BOS then random ids; n_batch 2048,
//   n_ubatch 512 hold them in one batch) on an empty KV cache, logits of the last token only; distmoe's
//   `bench` times one forward of 256 random ids from an empty cache, logits of the last token.
// - decode: `llama-bench -p 0 -n 64 -d 256` — 64 single-token llama_decode calls after a 256-token context
//   (the context is built untimed). llama-bench's plain `-n 64` would decode from an EMPTY cache, cheaper
//   attention than distmoe's 64 steps after its 256-token prompt, hence -d 256. distmoe's decode includes
//   its greedy argmax over the vocabulary; llama-bench's picks a random id (a few µs per token of difference).
// - both warm up before timing (llama-bench: a whole prompt run and one token; distmoe: the whole prompt and
//   4 steps); llama-bench reports each repetition (samples_ts), distmoe `bench --json` the median of its repeats.
// Each round runs llama-bench's two tests and each distmoe backend once, the order reversed every other round
// so drift on a shared machine falls on both; the table shows medians over rounds. The load average is
// sampled around every measurement: other processes on the machine take cores from both engines.
//
// Model files (generated ones under --cache, default ~/.cache/distmoe/bench-models, reused when present):
// - brown-moe: ../shared/models/brown-moe-gguf/brown-moe-{bf16,q8_0}.gguf (llama.cpp's converter wrote them);
//   f32 and q4_K_M made from the bf16 file by llama-quantize (bf16 is not a quantized type, so no
//   --allow-requantize is needed).
// - mixtral-734m: `distmoe init-model` (Mixtral, d 1024, ff 3584, 8 layers, 8 experts, top-2, 16 heads / 4 KV
//   heads, vocab 4096: 734 M parameters, 201 M active per token), `distmoe convert` to a bf16 GGUF, then
//   f32/q8_0/q4_K_M by llama-quantize. The row is skipped with a message where `distmoe convert` is missing.
// distmoe loads each tensor in its file's type where its kernels have it (BF16 → bf16, Q8_0 → q8, F32 → f32,
// Q4_K/Q5_K/Q6_K as they are on the native kernels) and converts what they lack to the nearest type they have
// (its load log says so; the table's "distmoe weights" column shows it: "file's types" for mixed K-quants).
//
// The table: per row, the medians of both engines, their ratio, the floors, distmoe's host time (outside ggml's graphs: per prefill, and per decode token), the load
// average, and the ratio round by round ("per round": the median of the rounds' own ratios and its quartiles;
// each round runs both engines back to back, so its ratio sees the machine as it was for both).
//
// Usage: node scripts/bench-vs-llamacpp.mjs [--models brown-moe,mixtral-734m|FILE.gguf,...] [--dtypes bf16,q8_0,f32,q4_K_M]
//        [--threads 2[,4]] [--rounds 3] [--repeats 3] [--backend native,native-local,wasm] [--llama-passive] [--no-mmap] [--quick] [--cache DIR]
//        [--prompt-tokens 256] [--decode-tokens 64] [--out docs/bench/vs-llamacpp.json]   (after npm run build)
// --backend passes `--backend B` to distmoe once per named backend; without it distmoe runs its default.
//   native: ggml's prebuilt libraries from the npm package (DISTMOE_GGML_DIR=prebuilt), what an install runs;
//   native-local: the same ggml source built for this CPU like llama-bench (npm run build-ggml, done here when
//   missing), so that both engines run the same kernels compiled the same way.
// --llama-passive: llama-bench's OpenMP threads sleep instead of spinning while they wait (OMP_WAIT_POLICY=passive):
//   not llama.cpp's default, but on a machine other processes share, its spinning 2-thread figures collapse
//   (brown-moe q8_0 decode here at load 4–6 on 2 CPUs: 15 tok/s spinning, 373 passive, 807 on 1 thread).
// --no-mmap: both engines read the weights into memory of their own (distmoe --no-mmap, llama-bench -mmp 0)
//   instead of mapping the file, their defaults: on this VM both decode f32 weights up to ~1.8× faster so.
// --quick: one round of two repetitions, brown-moe's bf16 and q8_0 only (a smoke run, not figures to publish).
import { parseScriptArgs } from "./lib/script-args.mjs";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { cacheRoot, ensureLlamaCppTools, ensureLocalGgml } from "./llama-cpp/build.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values: a } = parseScriptArgs(import.meta.url, {
  options: {
    models: { type: "string", default: "brown-moe,mixtral-734m" },
    dtypes: { type: "string" },
    threads: { type: "string", default: "2" },
    rounds: { type: "string" },
    repeats: { type: "string" },
    backend: { type: "string" },
    quick: { type: "boolean", default: false },
    "llama-passive": { type: "boolean", default: false },
    "no-mmap": { type: "boolean", default: false },
    cache: { type: "string", default: path.join(cacheRoot(), "bench-models") },
    "prompt-tokens": { type: "string", default: "256" },
    "decode-tokens": { type: "string", default: "64" },
    out: { type: "string", default: path.join(root, "docs/bench/vs-llamacpp.json") },
  },
});
if (!existsSync(path.join(root, "dist/model/gguf.js"))) {
  process.stderr.write("error: distmoe is not built here: run npm run build first\n");
  process.exit(1);
}
const { GgufFile } = await import("../dist/model/gguf.js");
const { median, quantile } = await import("../dist/util/stats.js");
const distmoe = path.join(root, "bin/distmoe.js");
const posInt = (name, v) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) fail(`--${name}: expected a positive integer, got "${v}"`);
  return n;
};
function fail(msg) {
  process.stderr.write(`error: ${msg}\n`);
  process.exit(2);
}
const say = (msg) => process.stderr.write(`${msg}\n`);

if (!a.cache) fail("--cache: expected a folder for the generated model files");
const rounds = posInt("rounds", a.rounds ?? (a.quick ? "1" : "3"));
const repeats = posInt("repeats", a.repeats ?? (a.quick ? "2" : "3"));
const threadCounts = a.threads.split(",").map((t) => posInt("threads", t));
const promptTokens = posInt("prompt-tokens", a["prompt-tokens"]), decodeTokens = posInt("decode-tokens", a["decode-tokens"]);
const wantDtypes = a.dtypes?.split(",") ?? (a.quick ? ["bf16", "q8_0"] : undefined);
const modelNames = a.quick && a.models === "brown-moe,mixtral-734m" ? ["brown-moe"] : a.models.split(",");
const backends = a.backend !== undefined ? a.backend.split(",") : [undefined];
for (const b of backends) if (b !== undefined && !["native", "native-local", "wasm"].includes(b)) fail(`--backend: expected native, native-local and/or wasm, got "${b}"`);

function runTool(cmd, args, what, env = process.env) {
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 64 << 20, env });
  if (r.error) throw new Error(`${what}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}):\n${(r.stderr || r.stdout).trim().split("\n").slice(-8).join("\n")}`);
  return r;
}

// ---- distmoe's capabilities in this checkout -------------------------------------------------------------
const help = (sub) => spawnSync(process.execPath, [distmoe, ...sub, "--help"], { encoding: "utf8" });
const benchHelp = help(["bench", "engine"]).stdout ?? "";
const hasBackendOption = benchHelp.includes("--backend");
if (a["no-mmap"] && !benchHelp.includes("--no-mmap")) fail("--no-mmap: this checkout's distmoe bench has no --no-mmap");
const noMmap = a["no-mmap"] ? { llama: ["-mmp", "0"], distmoe: ["--no-mmap"] } : { llama: [], distmoe: [] };
const hasConvert = /^\s+convert\b/m.test(help([]).stdout ?? "");
if (backends.some((b) => b !== undefined) && !hasBackendOption) {
  say("note: this distmoe has no --backend option yet: it runs the wasm kernels only; native rows are skipped, wasm rows run without the option");
}

// ---- model files ------------------------------------------------------------------------------------------
const tools = await ensureLlamaCppTools(["llama-bench", "llama-quantize"]).catch((e) => fail(e.message));
// native: ggml as the npm package ships it prebuilt (what an install gets); native-local: the same ggml source
// built for this CPU as llama-bench is (npm run build-ggml), so both engines run identically compiled kernels
const ggmlDirs = { native: "prebuilt", "native-local": backends.includes("native-local") ? await ensureLocalGgml().catch((e) => fail(e.message)) : undefined };
say(`llama.cpp ${tools.commit.slice(0, 10)} (release ${tools.tag || "?"}), ggml ${tools.ggmlVersion}, tools in ${path.dirname(tools.bin["llama-bench"])}`);
mkdirSync(a.cache, { recursive: true });

const QUANTIZE_TYPES = { f32: "F32", bf16: "BF16", q8_0: "Q8_0", q4_K_M: "Q4_K_M" };
const UNQUANTIZED = new Set(["F32", "F16", "BF16"]);

/** Tensor types of a GGUF file with their counts, largest share first: "Q4_K×97 Q6_K×17 F32×9". */
function fileTypes(file) {
  const g = GgufFile.open(file);
  try {
    const n = new Map();
    for (const t of g.header.tensors) n.set(t.type, (n.get(t.type) ?? 0) + 1);
    return [...n].sort((x, y) => y[1] - x[1]).map(([t, c]) => `${t}×${c}`).join(" ");
  } finally {
    g.close();
  }
}

/** `dst` in `dtype`, made from `src` by llama-quantize unless it exists (written to a temp name, renamed when whole). */
function quantized(src, dst, dtype) {
  if (existsSync(dst)) return dst;
  const type = QUANTIZE_TYPES[dtype];
  if (!type) throw new Error(`no llama-quantize type for ${dtype}; known: ${Object.keys(QUANTIZE_TYPES).join(", ")}`);
  const srcTypes = fileTypes(src).split(" ").map((s) => s.split("×")[0]);
  const requant = srcTypes.some((t) => !UNQUANTIZED.has(t)) ? ["--allow-requantize"] : [];
  const args = [...requant, src, partFile(dst), type];
  say(`llama-quantize ${args.join(" ")}`);
  runTool(tools.bin["llama-quantize"], args, "llama-quantize");
  renameSync(partFile(dst), dst);
  return dst;
}

/** Where a model file is written before it is renamed into place: still *.gguf, which distmoe convert requires. */
const partFile = (file) => file.replace(/\.gguf$/, ".part.gguf");

const MIXTRAL_734M = ["--arch", "MixtralForCausalLM", "--layers", "8", "--hidden", "1024", "--heads", "16", "--kv-heads", "4", "--experts", "8", "--top-k", "2", "--ffn", "3584", "--vocab", "4096", "--max-positions", "4096", "--file-dtype", "bf16"];

/** The 734 M Mixtral as a bf16 GGUF: init-model, then distmoe convert. Undefined (with the reason said) where convert is missing. */
function mixtralBase() {
  const file = path.join(a.cache, "mixtral-734m-bf16.gguf");
  if (existsSync(file)) return file;
  if (!hasConvert) {
    say("skipping mixtral-734m: this distmoe has no `convert` command yet (node bin/distmoe.js convert), so the generated model cannot become a GGUF file");
    return undefined;
  }
  const dir = path.join(a.cache, "mixtral-734m");
  if (!existsSync(path.join(dir, "config.json"))) {
    say(`writing the 734 M Mixtral to ${dir} (once)`);
    runTool(process.execPath, [distmoe, "init-model", ...MIXTRAL_734M, "--out", dir], "distmoe init-model");
  }
  const args = [distmoe, "convert", dir, partFile(file), "--outtype", "bf16"];
  say(`node bin/distmoe.js ${args.slice(1).join(" ")}`);
  runTool(process.execPath, args, "distmoe convert");
  renameSync(partFile(file), file);
  return file;
}

/** [{ model, dtype, file }] for the asked models and dtypes; files made as needed. */
function modelFiles() {
  const out = [];
  const pick = (list) => (wantDtypes ? list.filter((d) => wantDtypes.includes(d)) : list);
  for (const name of modelNames) {
    if (name.endsWith(".gguf")) {
      if (!existsSync(name)) fail(`${name}: no such file`);
      out.push({ model: path.basename(name, ".gguf"), dtype: "file", file: path.resolve(name) });
    } else if (name === "brown-moe") {
      const shipped = path.resolve(root, "../shared/models/brown-moe-gguf");
      const bf16 = path.join(shipped, "brown-moe-bf16.gguf");
      if (!existsSync(bf16)) {
        say(`skipping brown-moe: ${bf16} is not there`);
        continue;
      }
      for (const dtype of pick(["bf16", "q8_0", "f32", "q4_K_M"])) {
        const file = dtype === "bf16" || dtype === "q8_0" ? path.join(shipped, `brown-moe-${dtype}.gguf`) : quantized(bf16, path.join(a.cache, `brown-moe-${dtype}.gguf`), dtype);
        out.push({ model: "brown-moe", dtype, file });
      }
    } else if (name === "mixtral-734m") {
      const base = mixtralBase();
      if (!base) continue;
      for (const dtype of pick(["f32", "q8_0", "q4_K_M"])) out.push({ model: "mixtral-734m", dtype, file: quantized(base, path.join(a.cache, `mixtral-734m-${dtype}.gguf`), dtype) });
    } else fail(`--models: unknown model "${name}" (brown-moe, mixtral-734m, or a .gguf file)`);
  }
  return out;
}

// ---- the two measures -------------------------------------------------------------------------------------
const load1 = () => os.loadavg()[0];
const med = (xs) => (xs.length > 0 ? median(xs) : null);

/** llama-bench's samples (tokens/s, one per repetition) of one test. */
function llamaBench(file, threads, test) {
  const args = ["-m", file, "-t", String(threads), "-r", String(repeats), "-o", "json", ...(test === "pp" ? ["-p", String(promptTokens), "-n", "0"] : ["-p", "0", "-n", String(decodeTokens), "-d", String(promptTokens)]), ...noMmap.llama];
  const env = a["llama-passive"] ? { ...process.env, OMP_WAIT_POLICY: "passive" } : process.env;
  const r = runTool(tools.bin["llama-bench"], args, `llama-bench ${args.join(" ")}`, env);
  let rows;
  try {
    rows = JSON.parse(r.stdout);
  } catch {
    throw new Error(`llama-bench printed no JSON:\n${r.stdout.slice(0, 500)}`);
  }
  if (!Array.isArray(rows) || rows.length !== 1 || !Array.isArray(rows[0].samples_ts)) throw new Error(`llama-bench: expected one test in its JSON, got ${r.stdout.slice(0, 300)}`);
  return { samples: rows[0].samples_ts, info: { build_commit: rows[0].build_commit, cpu_info: rows[0].cpu_info, model_type: rows[0].model_type, type_k: rows[0].type_k, flash_attn: rows[0].flash_attn, n_threads: rows[0].n_threads, poll: rows[0].poll } };
}

function distmoeBench(file, threads, backend) {
  const args = [distmoe, "bench", "--model", file, "--prompt-tokens", String(promptTokens), "--decode-tokens", String(decodeTokens), "--threads", String(threads), "--repeats", String(repeats), "--json", ...noMmap.distmoe];
  if (backend !== undefined && hasBackendOption) args.push("--backend", backend.startsWith("native") ? "native" : backend);
  const env = ggmlDirs[backend] ? { ...process.env, DISTMOE_GGML_DIR: ggmlDirs[backend] } : process.env;
  const r = runTool(process.execPath, args, `${ggmlDirs[backend] ? `DISTMOE_GGML_DIR=${ggmlDirs[backend]} ` : ""}distmoe bench ${args.slice(2).join(" ")}`, env);
  const result = JSON.parse(r.stdout.trim().split("\n").pop());
  const loaded = r.stderr.split("\n").find((l) => / weights \S+ \(/.test(l));
  const m = loaded?.match(/ weights (\S+) \(([^)]*)\)/);
  return { result, weights: m?.[1] ?? "?", weightsWhy: m?.[2] ?? "", loadLine: loaded?.trim() };
}

/** distmoe ÷ llama.cpp round by round: each round's ratio, their median and quartiles; null without a round of both. */
function pairedRatios(ours, theirs) {
  // a figure of 0 or none (a run that printed nothing usable) makes no ratio
  const rounds = ours.slice(0, theirs.length).map((x, i) => x / theirs[i]).filter(Number.isFinite);
  if (rounds.length === 0) return null;
  return { median: median(rounds), q1: quantile(rounds, 0.25), q3: quantile(rounds, 0.75), rounds };
}

// ---- the run ----------------------------------------------------------------------------------------------
const files = modelFiles();
if (files.length === 0) fail("no model files to measure");
const rows = [];
for (const f of files) {
  const types = fileTypes(f.file);
  for (const threads of threadCounts) {
    const runBackends = backends.filter((b) => !b?.startsWith("native") || hasBackendOption);
    if (runBackends.length === 0) continue;
    // a side that fails (a file one engine cannot load) is said once and left out of the later rounds
    const llama = { pp: [], tg: [], error: undefined }, ours = new Map(runBackends.map((b) => [b ?? "default", { pp: [], tg: [], ppFloor: [], tgFloor: [], tgHost: [], ppHost: [], weights: "?", weightsWhy: "", kernels: "", loadLine: "", error: undefined }]));
    const loads = [];
    let llamaInfo;
    for (let round = 0; round < rounds; round++) {
      say(`${f.model} ${f.dtype}, ${threads} threads: round ${round + 1}/${rounds} (load average ${load1().toFixed(2)})`);
      const attempt = (side, what, fn) => {
        if (side.error !== undefined) return;
        try {
          fn();
        } catch (e) {
          side.error = e.message.split("\n").filter((l) => l.trim() !== "").slice(-1)[0] ?? e.message;
          say(`${what} failed on ${path.basename(f.file)}, left out: ${e.message}`);
        }
      };
      const steps = [
        () =>
          attempt(llama, "llama-bench", () => {
            const pp = llamaBench(f.file, threads, "pp"), tg = llamaBench(f.file, threads, "tg");
            llama.pp.push(median(pp.samples));
            llama.tg.push(median(tg.samples));
            llamaInfo = tg.info;
          }),
        ...runBackends.map((b) => () => {
          const o = ours.get(b ?? "default");
          attempt(o, `distmoe bench${b ? ` --backend ${b}` : ""}`, () => {
            const d = distmoeBench(f.file, threads, b);
            o.pp.push(d.result.prefill_tokens_per_s);
            o.tg.push(d.result.decode_tokens_per_s);
            // the floors this backend measured in the same run: decode reads every active weight once per token
            // (bytes ÷ read bandwidth), prefill does its multiply-adds (FLOPs ÷ the peak product rate)
            o.tgFloor.push((d.result.memory_read_gbps * 1e9) / d.result.decode_weight_bytes_per_token);
            o.ppFloor.push(d.result.compute_gflops / (d.result.prefill_gflops / d.result.prefill_tokens_per_s));
            // native: a decode token's time outside ggml's graphs (JavaScript and the handoffs between graphs)
            if (d.result.decode_host_ms_per_token !== undefined) o.tgHost.push(d.result.decode_host_ms_per_token);
            if (d.result.prefill_host_ms !== undefined) o.ppHost.push(d.result.prefill_host_ms);
            Object.assign(o, { weights: d.weights, weightsWhy: d.weightsWhy, kernels: d.result.kernels, loadLine: d.loadLine });
          });
        }),
      ];
      for (const step of round % 2 === 0 ? steps : steps.reverse()) {
        loads.push(load1());
        step();
      }
      loads.push(load1());
    }
    for (const [backend, o] of ours) {
      const row = {
        model: f.model, dtype: f.dtype, file: f.file, file_types: types, backend: backend === "default" ? (hasBackendOption ? "default" : "wasm") : backend, // as asked; kernels: what ran
        kernels: o.kernels, distmoe_weights: o.weights, distmoe_weights_why: o.weightsWhy, distmoe_load_log: o.loadLine, threads,
        distmoe: { prefill_tokens_per_s: med(o.pp), decode_tokens_per_s: med(o.tg), decode_host_ms_per_token: med(o.tgHost), prefill_host_ms: med(o.ppHost), rounds: { prefill: o.pp, decode: o.tg, decode_host_ms_per_token: o.tgHost, prefill_host_ms: o.ppHost }, error: o.error },
        floor: { prefill_tokens_per_s: med(o.ppFloor), decode_tokens_per_s: med(o.tgFloor) },
        llama_cpp: { prefill_tokens_per_s: med(llama.pp), decode_tokens_per_s: med(llama.tg), rounds: { prefill: llama.pp, decode: llama.tg }, error: llama.error, ...llamaInfo },
        load_average: { median: median(loads), max: Math.max(...loads), samples: loads },
      };
      // llama-bench's threads spin at barriers (OpenMP; --poll 50): on oversubscribed cores a spinning thread waits
      // for one that is not running, and its multi-thread figures collapse; such rows are marked, not comparable
      row.busy = row.load_average.median > os.cpus().length;
      const ratio = (x, y) => (x === null || y === null ? null : x / y);
      row.ratio = { prefill: ratio(row.distmoe.prefill_tokens_per_s, row.llama_cpp.prefill_tokens_per_s), decode: ratio(row.distmoe.decode_tokens_per_s, row.llama_cpp.decode_tokens_per_s) };
      // each round measures both engines back to back, so the ratio within a round sees the machine as it was for
      // both: the steadier figure on a noisy machine (a side that failed stopped there, so its rounds are a prefix)
      row.paired_ratio = { prefill: pairedRatios(o.pp, llama.pp), decode: pairedRatios(o.tg, llama.tg) };
      rows.push(row);
    }
  }
}

const f1 = (x) => (x === null ? "—" : x >= 100 ? x.toFixed(0) : x.toFixed(1));
const f2 = (x) => (x === null ? "—" : x.toFixed(2));
const paired = (p) => (p === null ? "—" : `${f2(p.median)} (${f2(p.q1)}–${f2(p.q3)})`);
const table = [
  `| model | file type | distmoe weights | backend | threads | distmoe prefill tok/s | llama.cpp prefill tok/s | prefill ratio | prefill floor tok/s | distmoe prefill host ms | distmoe decode tok/s | llama.cpp decode tok/s | decode ratio | decode floor tok/s | distmoe decode host µs/token | load avg | prefill ratio per round | decode ratio per round |`,
  `|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|`,
  ...rows.map((r) => `| ${r.model} | ${r.dtype} | ${r.distmoe_weights}${r.distmoe_weights_why.startsWith("the nearest") ? " (converted at load)" : ""} | ${r.kernels || r.backend} | ${r.threads} | ${f1(r.distmoe.prefill_tokens_per_s)} | ${f1(r.llama_cpp.prefill_tokens_per_s)} | ${f2(r.ratio.prefill)} | ${f1(r.floor.prefill_tokens_per_s)} | ${r.distmoe.prefill_host_ms === null ? "—" : `${f2(r.distmoe.prefill_host_ms)} (${((r.distmoe.prefill_host_ms * r.distmoe.prefill_tokens_per_s) / (10 * promptTokens)).toFixed(0)} %)`} | ${f1(r.distmoe.decode_tokens_per_s)} | ${f1(r.llama_cpp.decode_tokens_per_s)} | ${f2(r.ratio.decode)} | ${f1(r.floor.decode_tokens_per_s)} | ${r.distmoe.decode_host_ms_per_token === null ? "—" : `${(r.distmoe.decode_host_ms_per_token * 1000).toFixed(0)} (${((r.distmoe.decode_host_ms_per_token * r.distmoe.decode_tokens_per_s) / 10).toFixed(0)} %)`} | ${r.load_average.median.toFixed(1)} (max ${r.load_average.max.toFixed(1)})${r.busy ? " busy" : ""} | ${paired(r.paired_ratio.prefill)} | ${paired(r.paired_ratio.decode)} |`),
].join("\n");
process.stdout.write(`${table}\n`);
for (const r of rows) {
  for (const [who, side] of [["distmoe", r.distmoe], ["llama.cpp", r.llama_cpp]]) if (side.error) process.stdout.write(`${r.model} ${r.dtype} (${r.backend}, ${r.threads} threads): ${who} could not run it: ${side.error}\n`);
}
const busy = rows.filter((r) => r.busy);
if (busy.length > 0) process.stdout.write(`warning: ${busy.length} row(s) measured with a load average above the ${os.cpus().length} CPUs: other processes took cores, so ${a["llama-passive"] || busy.every((r) => r.threads === 1) ? "the figures are noisy" : "llama.cpp's spinning threads lost far more than distmoe's and those ratios overstate distmoe (--llama-passive makes them sleep)"}\n`);
process.stdout.write(`prefill ${promptTokens} tokens, decode ${decodeTokens} tokens after them; medians of ${rounds} round(s), each ${repeats} repetition(s); "per round": the median of the rounds' own ratios (each round runs both engines back to back), with its quartiles; llama.cpp ${tools.commit.slice(0, 10)} (ggml ${tools.ggmlVersion}) llama-bench, -march=native${a["llama-passive"] ? ", OMP_WAIT_POLICY=passive" : ""}; weights ${a["no-mmap"] ? "read into memory (--no-mmap, -mmp 0)" : "mapped from the file (both engines' default)"}; ${os.cpus().length} CPUs (${os.cpus()[0]?.model})\n`);

const report = {
  generated: new Date().toISOString(),
  command: `node scripts/bench-vs-llamacpp.mjs ${process.argv.slice(2).join(" ")}`.trim(),
  machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version },
  llama_cpp: { source: "node-llama-cpp@3.21.1 llama/gitRelease.bundle", commit: tools.commit, tag: tools.tag, ggml: tools.ggmlVersion, build: "Release, GGML_NATIVE=ON, static, CPU only" },
  method: {
    prompt_tokens: promptTokens, decode_tokens: decodeTokens, rounds, repeats,
    llama_prefill: `llama-bench -m FILE -t T -r ${repeats} -o json -p ${promptTokens} -n 0${noMmap.llama.map((x) => ` ${x}`).join("")}`,
    llama_decode: `llama-bench -m FILE -t T -r ${repeats} -o json -p 0 -n ${decodeTokens} -d ${promptTokens}${noMmap.llama.map((x) => ` ${x}`).join("")}`,
    distmoe: `node bin/distmoe.js bench --model FILE --prompt-tokens ${promptTokens} --decode-tokens ${decodeTokens} --threads T --repeats ${repeats} --json${noMmap.distmoe.map((x) => ` ${x}`).join("")}${hasBackendOption && backends[0] !== undefined ? " --backend B" : ""}`,
    weights: a["no-mmap"] ? "read into memory of each engine's own (distmoe --no-mmap, llama-bench -mmp 0)" : "mapped from the file where the engine maps them (both engines' default)",
    distmoe_ggml: "backend native: DISTMOE_GGML_DIR=prebuilt (the npm package's ggml); native-local: DISTMOE_GGML_DIR=<the folder npm run build-ggml wrote> (the same ggml source, -march=native, no OpenMP)",
    llama_threads_wait: a["llama-passive"] ? "OMP_WAIT_POLICY=passive" : "llama.cpp's default (OpenMP threads spin while waiting)",
    figures: "median over rounds of each round's median; ratio = distmoe ÷ llama.cpp; paired_ratio: each round's distmoe ÷ llama.cpp (rounds), their median and quartiles (q1, q3; interpolated between ranks)",
  },
  rows,
};
mkdirSync(path.dirname(a.out), { recursive: true });
writeFileSync(a.out, JSON.stringify(report, null, 1) + "\n");
say(`wrote ${path.relative(root, a.out)}`);
