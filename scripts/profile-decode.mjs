#!/usr/bin/env node
// Where a decode step's time goes in the single-process engine (issue 14, item 3): per decode token, the
// total, the floor (weight bytes read per token ÷ measured read bandwidth), each kernel class, the
// backend's JavaScript around its kernels, and the JavaScript of the forward pass and the MoE seam
// (selection, dispatch plan, copies, awaits, combine), sampling, and allocations.
//
// Nothing in src is changed or slowed: the profile builds a second Transformer over the engine's own
// weights, with a timing wrapper around the Backend interface, the selection policy and the expert
// executor, and times the WebAssembly kernel calls on the backend's thread pool (an internal of
// WasmBackend: the script stops with a clear message if it moves). Time between two recorded events
// is JavaScript and is charged to the phase the last event opened. The uninstrumented engine is timed
// in the same run, so the wrapper's own cost is reported (instrumented − plain).
//
// Usage: node scripts/profile-decode.mjs [--model DIR] [--dtype f32,bf16,q8] [--tokens 64] [--prompt 16]
//        [--repeats 5] [--threads N] [--out docs/bench/decode-profile.json]   (after npm run build)
import { parseScriptArgs, refuseOption } from "./lib/script-args.mjs";
import { PerformanceObserver } from "node:perf_hooks";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import v8 from "node:v8";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Engine } from "../dist/runtime/engine.js";
import { Transformer } from "../dist/model/forward.js";
import { LocalExpertExecutor } from "../dist/moe/local-executor.js";
import { selectTopK } from "../dist/policies/selection.js";
import { argmax } from "../dist/runtime/sampler.js";
import { decodeFootprint } from "../dist/eval/bench.js";
import { median } from "../dist/util/stats.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values: a } = parseScriptArgs(import.meta.url, {
  options: {
    model: { type: "string", default: path.resolve(root, "../shared/models/brown-moe") },
    dtype: { type: "string", default: "f32,bf16,q8" },
    tokens: { type: "string", default: "64" },
    prompt: { type: "string", default: "16" },
    repeats: { type: "string", default: "5" },
    threads: { type: "string" },
    out: { type: "string", default: path.join(root, "docs/bench/decode-profile.json") },
  },
});
const N = Number(a.tokens), PROMPT = Number(a.prompt), REPEATS = Number(a.repeats);
const threads = a.threads ? Number(a.threads) : undefined;
for (const [k, v] of [["tokens", N], ["prompt", PROMPT], ["repeats", REPEATS], ["threads", threads ?? 1]]) {
  if (!(Number.isInteger(v) && v > 0)) refuseOption(import.meta.url, `--${k} must be a positive integer`);
}

// ------------------------------------------------------------------ the profiler

/** Groups of the table, in print order. */
const GROUP = { kernel: "wasm kernels", glue: "backend JS (inside Backend calls, outside the kernels)", js: "JS around the kernels" };

class Profiler {
  on = false;
  last = 0;
  /** phase charged with the JavaScript time until the next event */
  gap = "decode loop";
  /** MoE seam state: which phase the JS after a backend call belongs to */
  moe = "none";
  inKernel = 0;
  /** part → { group, ms, calls } */
  parts = new Map();
  counts = { steps: 0, backendCalls: 0, wasmJobs: 0, parallelJobs: 0, parallelMs: 0, arenaAllocs: 0, expertCalls: 0 };

  add(part, group, ms, calls = 0) {
    let p = this.parts.get(part);
    if (!p) this.parts.set(part, (p = { group, ms: 0, calls: 0 }));
    p.ms += ms;
    p.calls += calls;
  }

  reset() {
    this.parts.clear();
    for (const k of Object.keys(this.counts)) this.counts[k] = 0;
    this.moe = "none";
  }

  /** An event of the script or of a wrapped callee: the JS since the last event goes to the open phase. */
  mark(nextGap) {
    const t = performance.now();
    if (this.on) this.add(this.gap, GROUP.js, t - this.last);
    this.last = t;
    this.gap = nextGap;
    return t;
  }
}
const P = new Profiler();

/** Which kernel class a matrix product belongs to, by the weight it reads. */
function weightClasses(weights) {
  const m = new Map([[weights.lmHead, "LM head"]]);
  for (const L of weights.layers) {
    for (const t of [L.q, L.k, L.v, L.o]) m.set(t, "attention projections (q/k/v/o)");
    if (L.router) m.set(L.router, "router (gate matmul)");
    for (const f of [...L.experts, L.shared, L.dense]) if (f) for (const t of [f.gate, f.up, f.down]) m.set(t, "expert FFNs (gate/up, SiLU·mul, down)");
  }
  return m;
}

/** Weight bytes each kernel class reads per decode token (the top-k experts of every layer). */
function classBytes(weights, topK) {
  const b = new Map();
  const add = (cls, n) => b.set(cls, (b.get(cls) ?? 0) + n);
  add("LM head", weights.lmHead.bytes);
  add("embedding lookup", weights.embed.bytes / weights.embed.rows);
  add("RMS norms", weights.outputNorm.bytes);
  for (const L of weights.layers) {
    for (const t of [L.q, L.k, L.v, L.o]) add("attention projections (q/k/v/o)", t.bytes);
    add("RMS norms", L.attnNorm.bytes + L.ffnNorm.bytes);
    if (L.router) add("router (gate matmul)", L.router.bytes);
    const e = L.experts.find((x) => x);
    if (e) add("expert FFNs (gate/up, SiLU·mul, down)", topK * (e.gate.bytes + e.up.bytes + e.down.bytes));
  }
  return b;
}

const CALL_CLASS = {
  rmsnorm: "RMS norms",
  rope: "rotary embedding",
  attention: "attention (scores, softmax, values)",
  siluMul: "expert FFNs (gate/up, SiLU·mul, down)",
  ffn: "expert FFNs (gate/up, SiLU·mul, down)",
  add: "residual adds",
  addBias: "biases and clamps",
  clamp: "biases and clamps",
  embed: "embedding lookup",
};
const VIEW_CALLS = new Set(["f32", "i32", "alloc", "free"]);

/** The backend behind a timing wrapper; its own calls to itself are not seen, the model's all are. */
function timedBackend(be, weights) {
  const pool = be.pool;
  if (!pool || typeof pool.single !== "function" || typeof pool.parallel !== "function" || typeof pool.direct !== "function") {
    throw new Error("profile-decode: WasmBackend's thread pool (backend.pool.single/parallel/direct) has moved; update the script");
  }
  // kernel time: every call into the wasm module, on the calling thread (a parallel job includes its handoff)
  for (const kind of ["single", "parallel", "direct"]) {
    const orig = pool[kind].bind(pool);
    pool[kind] = (...args) => {
      if (!P.on) return orig(...args);
      const t0 = performance.now();
      orig(...args);
      const ms = performance.now() - t0;
      P.inKernel += ms;
      P.counts.wasmJobs++;
      if (kind === "parallel") {
        P.counts.parallelJobs++;
        P.counts.parallelMs += ms;
      }
    };
  }
  const classes = weightClasses(weights);
  const wrapped = { name: be.name, threads: be.threads };
  for (const name of Object.getOwnPropertyNames(Object.getPrototypeOf(be))) {
    if (name === "constructor" || typeof be[name] !== "function") continue;
    const fn = be[name].bind(be);
    wrapped[name] = (...args) => {
      if (!P.on) return fn(...args);
      const t0 = P.mark(P.gap);
      const k0 = P.inKernel;
      const r = fn(...args);
      const t1 = performance.now();
      const kernel = P.inKernel - k0;
      let cls;
      if (name === "matmul") cls = classes.get(args[2]) ?? "other matmuls";
      else if (name === "matmulMany") cls = classes.get(args[1][0][1]) ?? "other matmuls";
      else if (VIEW_CALLS.has(name)) cls = null;
      else cls = CALL_CLASS[name] ?? `other: ${name}`;
      P.counts.backendCalls++;
      if (name === "alloc") P.counts.arenaAllocs++;
      if (cls) {
        P.add(cls, GROUP.kernel, kernel, 1);
        P.add(`${cls} (call overhead)`, GROUP.glue, t1 - t0 - kernel);
      } else P.add("typed-array views, arena alloc/free", GROUP.glue, t1 - t0 - kernel, 1);
      P.last = t1;
      // the phase of the JS that follows
      if (P.moe === "await") [P.moe, P.gap] = ["combine", "MoE: combine (zero, weighted sum)"];
      // the layer's residual add is the first kernel after the combine: the JS before it (the combine's
      // end, returning from the await) stays with the combine
      else if (P.moe === "combine" && name === "add") [P.moe, P.gap] = ["none", "forward: JS between kernels"];
      else if (P.moe === "none") {
        if (cls === "router (gate matmul)") [P.moe, P.gap] = ["router", "MoE: logits copy, router softmax"];
        else if (name === "rope") P.gap = "forward: KV cache write (copy)";
        else if (cls === "LM head") P.gap = "forward: logits copy, buffer frees, return";
        else P.gap = "forward: JS between kernels";
      }
      return r;
    };
  }
  return wrapped;
}

function timedPolicy(policy) {
  return (router, ctx) => {
    if (!P.on) return policy(router, ctx);
    P.mark("MoE: selection (top-k)");
    const d = policy(router, ctx);
    P.mark("MoE: trace, dispatch plan, gather rows");
    P.moe = "plan";
    return d;
  };
}

function timedExecutor(executor) {
  const dispatch = executor.dispatch.bind(executor);
  executor.dispatch = (calls) => {
    if (!P.on) return dispatch(calls);
    P.mark("MoE: expert calls' copies in/out");
    P.moe = "calls";
    const r = dispatch(calls);
    P.counts.expertCalls += calls.length;
    P.mark("MoE: await results, accounting");
    P.moe = "await";
    return r;
  };
  return executor;
}

// ------------------------------------------------------------------ measurement

const gcEvents = [];
new PerformanceObserver((list) => gcEvents.push(...list.getEntries().map((e) => ({ start: e.startTime, ms: e.duration })))).observe({ entryTypes: ["gc"] });
const tick = () => new Promise(setImmediate);

function randomPrompt(vocab) {
  let s = 1;
  return Array.from({ length: PROMPT }, () => 3 + ((s = (s * 48271) % 2147483647) % (vocab - 3)));
}

/** N greedy decode steps after a prefill; returns ms per token and the step windows. */
async function decodeRun(model, prompt, profiled) {
  const cache = model.newSequence(PROMPT + N + 1);
  try {
    let [logits] = await model.forward([{ cache, tokens: prompt, logits: "last" }]);
    P.reset();
    P.gap = "decode loop";
    const t0 = P.mark("decode loop");
    P.on = profiled;
    for (let i = 0; i < N; i++) {
      P.mark("forward: step setup (buffers, ids, positions, embed)");
      [logits] = await model.forward([{ cache, tokens: [argmax(logits)], logits: "last" }]);
      P.mark("sampling (argmax)");
      argmax(logits);
      P.mark("decode loop");
    }
    const t1 = performance.now();
    P.on = false;
    return { ms: (t1 - t0) / N, t0, t1 };
  } finally {
    cache.free();
  }
}

/** Bytes in V8's young generation: it only grows between two scavenges, by what was allocated. */
function youngBytes() {
  let n = 0;
  for (const s of v8.getHeapSpaceStatistics()) if (s.space_name === "new_space" || s.space_name === "new_large_object_space") n += s.space_used_size;
  return n;
}

/** Median bytes allocated per decode step: JS heap (young generation) and ArrayBuffer backing stores. */
async function allocationRun(model, prompt) {
  const cache = model.newSequence(PROMPT + N + 1);
  try {
    let [logits] = await model.forward([{ cache, tokens: prompt, logits: "last" }]);
    const heap = [], buffers = [];
    for (let i = 0; i < N; i++) {
      const b0 = process.memoryUsage().arrayBuffers, h0 = youngBytes();
      [logits] = await model.forward([{ cache, tokens: [argmax(logits)], logits: "last" }]);
      argmax(logits);
      const h1 = youngBytes(), b1 = process.memoryUsage().arrayBuffers;
      // a collection inside the step makes its difference meaningless
      if (h1 >= h0 && b1 >= b0) heap.push(h1 - h0), buffers.push(b1 - b0);
    }
    return { heap: heap.length ? median(heap) : null, buffers: buffers.length ? median(buffers) : null, clean: heap.length };
  } finally {
    cache.free();
  }
}

async function profileDtype(dtype) {
  // the wasm kernels: the kernel timing reads their thread pool (the native backend's ops are timed as a whole)
  const engine = Engine.load(a.model, { dtype, threads, backend: "wasm", contextLength: PROMPT + N + 8 });
  const { config, weights, backend } = engine;
  const fp = decodeFootprint(engine);
  const prompt = randomPrompt(config.vocabSize);
  // the instrumented twin: same weights and backend, wrapped
  const tb = timedBackend(backend, weights);
  const executor = timedExecutor(new LocalExpertExecutor(tb, weights.layers.map((l) => l.experts), config.hidden));
  const twin = new Transformer(tb, config, weights, { policy: timedPolicy(selectTopK), executor }, PROMPT + N + 8);
  try {
    // warm-up: page in the weights, let V8 tier up both paths
    for (const m of [engine.model, twin]) for (let i = 0; i < 2; i++) await decodeRun(m, prompt, false);
    await engine.generate(prompt, { maxTokens: 8, temperature: 0 });

    const plain = [], profiled = [], generated = [], reads = [], partRuns = [], countRuns = [], gcPerToken = [], gcMsPerToken = [];
    for (let rep = 0; rep < REPEATS; rep++) {
      reads.push(backend.measureReadBandwidth(512 << 20));
      await tick();
      const gc0 = gcEvents.length;
      const r = await decodeRun(engine.model, prompt, false);
      await tick();
      await tick();
      const gcs = gcEvents.slice(gc0).filter((e) => e.start >= r.t0 && e.start <= r.t1);
      plain.push(r.ms);
      gcPerToken.push(gcs.length / N);
      gcMsPerToken.push(gcs.reduce((s, e) => s + e.ms, 0) / N);
      const p = await decodeRun(twin, prompt, true);
      profiled.push(p.ms);
      partRuns.push(new Map([...P.parts].map(([k, v]) => [k, { ...v }])));
      countRuns.push({ ...P.counts });
      // the engine's own generate loop (scheduler, sampler, text stream), greedy; an early EOS shortens it
      const g = await engine.generate(prompt, { maxTokens: N + 1, temperature: 0 });
      if (g.decodeSteps > 0) generated.push(g.decodeMs / g.decodeSteps);
    }
    const alloc = await allocationRun(engine.model, prompt);

    const msPlain = median(plain), msProfiled = median(profiled), read = median(reads);
    const floorMs = (fp.bytes / (read * 1e9)) * 1e3;
    // per part: median over repetitions of ms per token, scaled so the parts sum to the plain total
    const names = [...partRuns[0].keys()];
    const raw = names.map((k) => ({ part: k, group: partRuns[0].get(k).group, ms: median(partRuns.map((m) => (m.get(k)?.ms ?? 0) / N)), calls: median(partRuns.map((m) => (m.get(k)?.calls ?? 0) / N)) }));
    const sumRaw = raw.reduce((s, p) => s + p.ms, 0);
    const bytes = classBytes(weights, config.topK);
    const parts = raw
      .map((p) => {
        const wb = p.group === GROUP.kernel ? bytes.get(p.part) : undefined;
        return { ...p, share: p.ms / sumRaw, ms_scaled: (p.ms / sumRaw) * msPlain, ...(wb ? { weight_bytes: wb, kernel_gbps: wb / (p.ms * 1e6) } : {}) };
      })
      .sort((x, y) => Object.values(GROUP).indexOf(x.group) - Object.values(GROUP).indexOf(y.group) || y.ms - x.ms);
    const counts = Object.fromEntries(Object.keys(countRuns[0]).map((k) => [k, median(countRuns.map((c) => c[k])) / N]));
    return {
      dtype,
      kernels: backend.name,
      threads: backend.threads,
      decode_tokens: N,
      prompt_tokens: PROMPT,
      repeats: REPEATS,
      ms_per_token: msPlain,
      ms_per_token_runs: plain,
      generate_ms_per_token: generated.length ? median(generated) : null,
      instrumented_ms_per_token: msProfiled,
      weight_bytes_per_token: fp.bytes,
      read_gbps: read,
      floor_ms: floorMs,
      total_over_floor: msPlain / floorMs,
      parts,
      per_token: {
        backend_calls: counts.backendCalls,
        wasm_kernel_calls: counts.wasmJobs,
        parallel_jobs: counts.parallelJobs,
        parallel_job_ms: counts.parallelMs,
        arena_allocs: counts.arenaAllocs,
        expert_calls: counts.expertCalls,
        js_heap_bytes: alloc.heap,
        array_buffer_bytes: alloc.buffers,
        gc_count: median(gcPerToken),
        gc_ms: median(gcMsPerToken),
      },
    };
  } finally {
    twin.close();
    executor.close();
    engine.close();
  }
}

// ------------------------------------------------------------------ report

const fmt = (x, d = 3) => (x === null ? "–" : x.toFixed(d));
const load0 = os.loadavg();
const runs = [];
for (const dtype of a.dtype.split(",")) {
  const r = await profileDtype(dtype);
  runs.push(r);
  const groupMs = (g) => r.parts.filter((p) => p.group === g).reduce((s, p) => s + p.ms_scaled, 0);
  console.log(`\n## ${path.basename(a.model)}, ${dtype} weights, ${r.kernels}, ${r.threads} threads (median of ${REPEATS} runs of ${N} tokens)`);
  console.log(`decode ${fmt(r.ms_per_token)} ms/token (runs ${r.ms_per_token_runs.map((x) => x.toFixed(2)).join(", ")}); through engine.generate ${fmt(r.generate_ms_per_token)} ms/token; instrumented ${fmt(r.instrumented_ms_per_token)} ms/token`);
  console.log(`floor ${fmt(r.floor_ms)} ms = ${(r.weight_bytes_per_token / 2 ** 20).toFixed(1)} MiB ÷ ${r.read_gbps.toFixed(1)} GB/s; total ÷ floor ${r.total_over_floor.toFixed(1)}`);
  console.log("\n| part | group | ms/token | share | calls/token | weights read: MiB, GB/s in the kernel |\n|---|---|---|---|---|---|");
  for (const p of r.parts) if (p.ms_scaled >= 0.0005) console.log(`| ${p.part} | ${p.group.split(" ")[0] === "wasm" ? "kernel" : p.group.startsWith("backend") ? "backend JS" : "JS"} | ${fmt(p.ms_scaled)} | ${(100 * p.share).toFixed(1)}% | ${p.calls ? p.calls.toFixed(0) : ""} | ${p.weight_bytes ? `${(p.weight_bytes / 2 ** 20).toFixed(2)}, ${p.kernel_gbps.toFixed(1)}` : ""} |`);
  for (const g of Object.values(GROUP)) console.log(`| **${g}** | | **${fmt(groupMs(g))}** | **${((100 * groupMs(g)) / r.ms_per_token).toFixed(1)}%** | | |`);
  const c = r.per_token;
  console.log(`\nper token: ${c.backend_calls} Backend calls, ${c.wasm_kernel_calls} wasm kernel calls (${c.parallel_jobs} on the pool, ${fmt(c.parallel_job_ms)} ms), ${c.arena_allocs} arena allocs, ${c.expert_calls} expert calls;`);
  console.log(`JS heap ${c.js_heap_bytes === null ? "–" : (c.js_heap_bytes / 1024).toFixed(1) + " KiB"} and ArrayBuffers ${c.array_buffer_bytes === null ? "–" : (c.array_buffer_bytes / 1024).toFixed(1) + " KiB"} allocated; ${fmt(c.gc_count)} GCs (${fmt(c.gc_ms)} ms)`);
  console.log("(part ms are scaled to the uninstrumented total; shares are of the instrumented step)");
}
const report = {
  generated: new Date().toISOString(),
  model: path.basename(a.model),
  machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version, loadavg_before: load0, loadavg_after: os.loadavg() },
  note: "ms per decode token. parts: medians over repetitions of the instrumented run (ms), their share of its step, and ms_scaled = share × the uninstrumented ms_per_token. floor = weight_bytes_per_token ÷ read_gbps",
  runs,
};
mkdirSync(path.dirname(a.out), { recursive: true });
writeFileSync(a.out, JSON.stringify(report, null, 2) + "\n");
console.log(`\nload average ${load0.map((x) => x.toFixed(2)).join(" ")} → ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}; wrote ${path.relative(process.cwd(), a.out)}`);
