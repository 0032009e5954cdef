#!/usr/bin/env node
// Spike (issue 14, item 1a): ggml's CPU kernels from node-llama-cpp's prebuilt npm libraries, called through koffi,
// against distmoe's wasm kernels on the same shapes. Not part of the engine; findings in docs/spikes/native-backend.md.
// Needs (not in package.json): npm install --no-save koffi @node-llama-cpp/linux-x64   (then npm run build for dist/)
// Usage: node scripts/spikes/ggml-ffi.mjs [--threads 1,2] [--reps 5] [--poll 0..100 (threadpool spin level)] [--bins DIR] [--quick]
import { parseArgs } from "node:util";
import { readdirSync } from "node:fs";
import path from "node:path";
import koffi from "koffi";
import { getBinsDir } from "@node-llama-cpp/linux-x64";
import { WasmBackend } from "../../dist/kernels/wasm/wasm-backend.js";
import { Random } from "../../dist/util/random.js";

const { values: a } = parseArgs({ options: { threads: { type: "string", default: "1,2" }, reps: { type: "string", default: "5" }, poll: { type: "string", default: "0" }, bins: { type: "string" }, quick: { type: "boolean" } } });
const THREADS = a.threads.split(",").map(Number);
const REPS = Number(a.reps);

// ------------------------------------------------------------------ loading
// the package's own entry point says where its libraries are (bins/<platform>/)
// (--bins DIR: another version's bins/linux-x64, to check that the same calls hold across releases)
const binDir = a.bins ?? path.join(getBinsDir().binsDir, "linux-x64");
const base = koffi.load(path.join(binDir, "libggml-base.so"));

// ggml_backend_load_best's rule, done here: every libggml-cpu-<variant>.so scores the running CPU (0 = cannot run), take the highest.
const variants = readdirSync(binDir).filter((f) => /^libggml-cpu-.*\.so$/.test(f)).map((f) => {
  const lib = koffi.load(path.join(binDir, f));
  return { name: f.slice("libggml-cpu-".length, -3), lib, score: lib.func("int ggml_backend_score(void)")() };
}).sort((x, y) => y.score - x.score);
const cpuLib = variants[0].lib;

const Type = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, Q4_K: 12, BF16: 30 };
const InitParams = koffi.struct("ggml_init_params", { mem_size: "size_t", mem_buffer: "void*", no_alloc: "bool" });
const g = {
  version: base.func("const char* ggml_version(void)"),
  commit: base.func("const char* ggml_commit(void)"),
  init: base.func("void* ggml_init(ggml_init_params p)"),
  free: base.func("void ggml_free(void* ctx)"),
  tensorOverhead: base.func("size_t ggml_tensor_overhead(void)"),
  graphOverhead: base.func("size_t ggml_graph_overhead(void)"),
  newTensor2d: base.func("void* ggml_new_tensor_2d(void* ctx, int type, int64_t ne0, int64_t ne1)"),
  mulMat: base.func("void* ggml_mul_mat(void* ctx, void* a, void* b)"),
  swigluSplit: base.func("void* ggml_swiglu_split(void* ctx, void* a, void* b)"),
  add: base.func("void* ggml_add(void* ctx, void* a, void* b)"),
  newGraph: base.func("void* ggml_new_graph(void* ctx)"),
  buildForward: base.func("void ggml_build_forward_expand(void* graph, void* tensor)"),
  nbytes: base.func("size_t ggml_nbytes(void* t)"),
  rowSize: base.func("size_t ggml_row_size(int type, int64_t ne)"),
  quantizeChunk: base.func("size_t ggml_quantize_chunk(int type, const float* src, void* dst, int64_t start, int64_t nrows, int64_t n_per_row, const float* imatrix)"),
  allocCtxTensors: base.func("void* ggml_backend_alloc_ctx_tensors(void* ctx, void* backend)"),
  allocCtxTensorsFromBuft: base.func("void* ggml_backend_alloc_ctx_tensors_from_buft(void* ctx, void* buft)"),
  bufferFree: base.func("void ggml_backend_buffer_free(void* buf)"),
  buftName: base.func("const char* ggml_backend_buft_name(void* buft)"),
  tensorSet: base.func("void ggml_backend_tensor_set(void* t, const void* data, size_t offset, size_t size)"),
  tensorGet: base.func("void ggml_backend_tensor_get(void* t, void* data, size_t offset, size_t size)"),
  graphCompute: base.func("int ggml_backend_graph_compute(void* backend, void* graph)"),
  backendFree: base.func("void ggml_backend_free(void* backend)"),
  regDevGet: base.func("void* ggml_backend_reg_dev_get(void* reg, size_t i)"),
  regProc: base.func("void* ggml_backend_reg_get_proc_address(void* reg, const char* name)"),
  devDescription: base.func("const char* ggml_backend_dev_description(void* dev)"),
  tpParamsInit: base.func("void ggml_threadpool_params_init(void* p, int n_threads)"),
  typeSize: base.func("size_t ggml_type_size(int type)"),
  cpuInit: cpuLib.func("void* ggml_backend_cpu_init(void)"),
  cpuReg: cpuLib.func("void* ggml_backend_cpu_reg(void)"),
  cpuSetThreads: cpuLib.func("void ggml_backend_cpu_set_n_threads(void* backend, int n)"),
  cpuSetThreadpool: cpuLib.func("void ggml_backend_cpu_set_threadpool(void* backend, void* tp)"),
  threadpoolNew: cpuLib.func("void* ggml_threadpool_new(void* params)"),
  threadpoolFree: cpuLib.func("void ggml_threadpool_free(void* tp)"),
};
const ExtraBufts = koffi.proto("void* get_extra_bufts(void* dev)");
// ggml logs every repacked tensor; keep the output to the figures
const LogCallback = koffi.proto("void ggml_log_callback(int level, const char* text, void* user)");
base.func("void ggml_log_set(ggml_log_callback* cb, void* user)")(koffi.register(() => {}, koffi.pointer(LogCallback)), null);
// CPU_REPACK on x86 in this build takes Q4_0, Q4_K (and IQ4_NL): a Q8_0 weight there has no repack layout, and
// ggml_backend_tensor_set then dereferences a null tensor->extra (a segfault, measured). llama.cpp asks
// ggml_backend_dev_supports_op with the weight placed in that buffer type first; a backend must do the same.
const REPACKABLE = new Set(["Q4_0", "Q4_K"]);

/** The CPU backend with a persistent threadpool (without one, ggml makes and joins threads on every compute). */
function cpuBackend(threads, { poll = Number(a.poll), threadpool = true } = {}) {
  const backend = g.cpuInit();
  g.cpuSetThreads(backend, threads);
  let tp = null;
  if (threadpool) {
    // struct ggml_threadpool_params: bool cpumask[512]; int n_threads; int prio; uint32 poll; bool strict_cpu; bool paused;
    const p = Buffer.alloc(528);
    g.tpParamsInit(p, threads);
    if (p.readInt32LE(512) !== threads) throw new Error("ggml_threadpool_params layout differs from the one assumed");
    p.writeUInt32LE(poll, 520);
    tp = g.threadpoolNew(p);
    g.cpuSetThreadpool(backend, tp);
  }
  return { backend, close() { g.backendFree(backend); if (tp) g.threadpoolFree(tp); } };
}

/** The CPU "extra" buffer types (repacked Q4_0/Q4_K/Q8_0… layouts that llama.cpp uses for weights by default). */
function extraBufts() {
  const reg = g.cpuReg(), dev = g.regDevGet(reg, 0);
  const fn = g.regProc(reg, "ggml_backend_dev_get_extra_bufts");
  if (!fn) return [];
  const list = koffi.call(fn, ExtraBufts, dev);
  const out = [];
  for (let i = 0; list; i++) { const b = koffi.decode(list, i * 8, "void*"); if (!b) break; out.push(b); }
  return out;
}

// ------------------------------------------------------------------ helpers
const rng = new Random(1);
function median(xs) { const s = [...xs].sort((p, q) => p - q); return s[s.length >> 1]; }
function timeMedian(fn, reps) { fn(); const ts = []; for (let r = 0; r < reps; r++) { const t0 = process.hrtime.bigint(); fn(); ts.push(Number(process.hrtime.bigint() - t0) / 1e9); } return median(ts); }
/** y[m][n] = x[m][k] · w[n][k]ᵀ for the first `mRows` rows */
function refMatmul(x, w, N, K, mRows) {
  const y = new Float32Array(mRows * N);
  for (let m = 0; m < mRows; m++) for (let n = 0; n < N; n++) { let s = 0; const xo = m * K, wo = n * K; for (let k = 0; k < K; k++) s += x[xo + k] * w[wo + k]; y[m * N + n] = s; }
  return y;
}
function relErr(got, want) { let d = 0, n = 0; for (let i = 0; i < want.length; i++) { d += (got[i] - want[i]) ** 2; n += want[i] ** 2; } return Math.sqrt(d / n); }
function weightBytes(type, N, K) { return N * Number(g.rowSize(type, K)); }
function quantize(type, values, N, K) {
  if (type === Type.F32) return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  const dst = Buffer.alloc(weightBytes(type, N, K));
  g.quantizeChunk(type, values, dst, 0, N, K, null);
  return dst;
}

/** A ggml context whose tensors get backend memory: weights in `wBuft` (or the default), the rest with the backend. */
class Graph {
  constructor(backend, nTensors) {
    this.backend = backend;
    this.ctx = g.init({ mem_size: Number(g.tensorOverhead()) * nTensors + Number(g.graphOverhead()) + 1024, mem_buffer: null, no_alloc: true });
    this.graph = null;
    this.buffers = [];
  }
  tensor(type, ne0, ne1) { return g.newTensor2d(this.ctx, type, ne0, ne1); }
  build(outputs) { this.graph = g.newGraph(this.ctx); for (const t of outputs) g.buildForward(this.graph, t); }
  allocate(buft) { this.buffers.push(buft ? g.allocCtxTensorsFromBuft(this.ctx, buft) : g.allocCtxTensors(this.ctx, this.backend)); }
  compute() { const s = g.graphCompute(this.backend, this.graph); if (s !== 0) throw new Error(`ggml_backend_graph_compute: status ${s}`); }
  close() { for (const b of this.buffers) g.bufferFree(b); g.free(this.ctx); }
}

// ------------------------------------------------------------------ runs
const out = { ggml: { version: g.version(), commit: g.commit(), variant: variants[0].name, scores: Object.fromEntries(variants.map((v) => [v.name, v.score])) } };
const cpuDesc = g.devDescription(g.regDevGet(g.cpuReg(), 0));
const bufts = extraBufts();
out.ggml.device = cpuDesc;
out.ggml.extraBufts = bufts.map((b) => g.buftName(b));
console.log(`ggml ${out.ggml.version} (${out.ggml.commit}), CPU variant ${out.ggml.variant} (scores ${JSON.stringify(out.ggml.scores)}), device "${cpuDesc}", extra buffer types ${JSON.stringify(out.ggml.extraBufts)}`);

const N = 4096, K = 4096, M = a.quick ? 64 : 256;
const D = 1024, FF = 3584; // one expert of the Mixtral-shaped 734 M model
const CHECK_ROWS = 2;
const wValues = rng.fillNormal(new Float32Array(N * K), 0.05);
const xValues = rng.fillNormal(new Float32Array(M * K), 1);
const refY = refMatmul(xValues, wValues, N, K, CHECK_ROWS);
const ffn = { g: rng.fillNormal(new Float32Array(FF * D), 0.05), u: rng.fillNormal(new Float32Array(FF * D), 0.05), d: rng.fillNormal(new Float32Array(D * FF), 0.05) };
const ffnX = rng.fillNormal(new Float32Array(M * D), 1);
const refFfn = (() => {
  const gg = refMatmul(ffnX, ffn.g, FF, D, CHECK_ROWS), uu = refMatmul(ffnX, ffn.u, FF, D, CHECK_ROWS);
  const h = gg.map((v, i) => (v / (1 + Math.exp(-v))) * uu[i]);
  return refMatmul(h, ffn.d, D, FF, CHECK_ROWS);
})();
const COPY_BYTES = 160 << 20; // GEMV weights cycled through exceed the last-level cache

function ggmlMatmul(threads, typeName, repack) {
  const type = Type[typeName];
  const bytes = weightBytes(type, N, K);
  const copies = Math.max(2, Math.ceil(COPY_BYTES / bytes));
  const cpu = cpuBackend(threads);
  const wq = quantize(type, wValues, N, K);
  const wg = new Graph(cpu.backend, copies + 8);
  const ws = Array.from({ length: copies }, () => wg.tensor(type, K, N));
  wg.allocate(repack ? bufts[0] : null);
  for (const w of ws) g.tensorSet(w, wq, 0, bytes);
  // one graph per shape: all copies × a vector (decode), one copy × M rows (prefill)
  const gv = new Graph(cpu.backend, 2 * copies + 8), xv = gv.tensor(Type.F32, K, 1);
  const ys = ws.map((w) => g.mulMat(gv.ctx, w, xv));
  gv.build(ys); gv.allocate();
  const gm = new Graph(cpu.backend, 8), xm = gm.tensor(Type.F32, K, M), ym = g.mulMat(gm.ctx, ws[0], xm);
  gm.build([ym]); gm.allocate();
  g.tensorSet(xv, xValues, 0, K * 4); g.tensorSet(xm, xValues, 0, M * K * 4);
  const tv = timeMedian(() => gv.compute(), REPS) / copies;
  const tm = timeMedian(() => gm.compute(), Math.max(3, REPS - 2));
  const y = new Float32Array(M * N); g.tensorGet(ym, y, 0, M * N * 4);
  const y1 = new Float32Array(N); g.tensorGet(ys[copies - 1], y1, 0, N * 4);
  const r = { gemv_gbps: bytes / tv / 1e9, gemv_gflops: (2 * N * K) / tv / 1e9, gemm_gflops: (2 * M * N * K) / tm / 1e9, err_gemm: relErr(y.subarray(0, CHECK_ROWS * N), refY), err_gemv: relErr(y1, refY.subarray(0, N)) };
  gm.close(); gv.close(); wg.close(); cpu.close();
  return r;
}

function ggmlFfn(threads, typeName, repack) {
  const type = Type[typeName];
  const cpu = cpuBackend(threads);
  const wg = new Graph(cpu.backend, 8);
  const Wg = wg.tensor(type, D, FF), Wu = wg.tensor(type, D, FF), Wd = wg.tensor(type, FF, D);
  wg.allocate(repack ? bufts[0] : null);
  for (const [t, v, rows, cols] of [[Wg, ffn.g, FF, D], [Wu, ffn.u, FF, D], [Wd, ffn.d, D, FF]]) { const q = quantize(type, v, rows, cols); g.tensorSet(t, q, 0, q.length); }
  const r = {};
  for (const rows of [1, M]) {
    const gr = new Graph(cpu.backend, 16), x = gr.tensor(Type.F32, D, rows);
    const y = g.mulMat(gr.ctx, Wd, g.swigluSplit(gr.ctx, g.mulMat(gr.ctx, Wg, x), g.mulMat(gr.ctx, Wu, x)));
    gr.build([y]); gr.allocate();
    g.tensorSet(x, ffnX, 0, rows * D * 4);
    // the per-call path a backend would take: input in, compute, output out
    const yOut = new Float32Array(rows * D);
    const t = timeMedian(() => { g.tensorSet(x, ffnX, 0, rows * D * 4); gr.compute(); g.tensorGet(y, yOut, 0, rows * D * 4); }, rows === 1 ? REPS * 4 : Math.max(3, REPS - 2));
    r[rows === 1 ? "decode_us" : `prefill${rows}_ms`] = rows === 1 ? t * 1e6 : t * 1e3;
    r[rows === 1 ? "decode_gflops" : "prefill_gflops"] = (2 * 3 * D * FF * rows) / t / 1e9;
    r[rows === 1 ? "err_decode" : "err_prefill"] = relErr(yOut.subarray(0, Math.min(rows, CHECK_ROWS) * D), refFfn.subarray(0, Math.min(rows, CHECK_ROWS) * D));
    gr.close();
  }
  wg.close(); cpu.close();
  return r;
}

/** Fixed cost per call for a tiny graph (64×64 matmul by a vector): reused graph vs one built and freed every call. */
function ggmlOverhead(threads, opts) {
  const cpu = cpuBackend(threads, opts);
  const wv = rng.fillNormal(new Float32Array(64 * 64), 0.1), xv = new Float32Array(64).fill(1), yv = new Float32Array(64);
  const wg = new Graph(cpu.backend, 2), w = wg.tensor(Type.F32, 64, 64); wg.allocate(); g.tensorSet(w, wv, 0, 64 * 64 * 4);
  const gr = new Graph(cpu.backend, 8), x = gr.tensor(Type.F32, 64, 1), y = g.mulMat(gr.ctx, w, x); gr.build([y]); gr.allocate();
  const n = 2000;
  const reuse = timeMedian(() => { for (let i = 0; i < n; i++) { g.tensorSet(x, xv, 0, 256); gr.compute(); g.tensorGet(y, yv, 0, 256); } }, 3) / n;
  const rebuild = timeMedian(() => {
    for (let i = 0; i < n; i++) {
      const t = new Graph(cpu.backend, 8), tx = t.tensor(Type.F32, 64, 1), ty = g.mulMat(t.ctx, w, tx);
      t.build([ty]); t.allocate(); g.tensorSet(tx, xv, 0, 256); t.compute(); g.tensorGet(ty, yv, 0, 256); t.close();
    }
  }, 3) / n;
  const ffiCall = timeMedian(() => { for (let i = 0; i < n * 10; i++) g.typeSize(0); }, 3) / (n * 10);
  gr.close(); wg.close(); cpu.close();
  return { reuse_us: reuse * 1e6, rebuild_us: rebuild * 1e6, ffi_call_us: ffiCall * 1e6 };
}

function wasmRuns(threads, dtype) {
  const be = new WasmBackend({ threads });
  const bytes = WasmBackend.weightBytes(dtype, N, K);
  const copies = Math.max(2, Math.ceil(COPY_BYTES / bytes));
  const ws = Array.from({ length: copies }, () => { const w = be.allocWeight(dtype, N, K); be.setWeight(w, wValues); return w; });
  const x = be.alloc(M * K * 4), y = be.alloc(M * N * 4);
  be.f32(x).set(xValues);
  const tv = timeMedian(() => { for (const w of ws) be.matmul(y, x, w, 1); }, REPS) / copies;
  const y1 = be.f32(y, 0, N).slice();
  const tm = timeMedian(() => be.matmul(y, x, ws[0], M), Math.max(3, REPS - 2));
  const r = { gemv_gbps: bytes / tv / 1e9, gemv_gflops: (2 * N * K) / tv / 1e9, gemm_gflops: (2 * M * N * K) / tm / 1e9, err_gemm: relErr(be.f32(y, 0, CHECK_ROWS * N), refY), err_gemv: relErr(y1, refY.subarray(0, N)) };
  for (const w of ws) be.freeWeight(w);
  be.free(x); be.free(y);
  // the expert FFN as the engine runs it: gate/up as one job, siluMul, down
  const Wg = be.allocWeight(dtype, FF, D), Wu = be.allocWeight(dtype, FF, D), Wd = be.allocWeight(dtype, D, FF);
  be.setWeight(Wg, ffn.g); be.setWeight(Wu, ffn.u); be.setWeight(Wd, ffn.d);
  const fx = be.alloc(M * D * 4), fg = be.alloc(M * FF * 4), fu = be.alloc(M * FF * 4), fh = be.alloc(M * FF * 4), fy = be.alloc(M * D * 4);
  be.f32(fx).set(ffnX);
  for (const rows of [1, M]) {
    const t = timeMedian(() => { be.matmulMany(fx, [[fg, Wg], [fu, Wu]], rows); be.siluMul(fh, fg, fu, rows * FF); be.matmul(fy, fh, Wd, rows); }, rows === 1 ? REPS * 4 : Math.max(3, REPS - 2));
    r[rows === 1 ? "ffn_decode_us" : `ffn_prefill${rows}_ms`] = rows === 1 ? t * 1e6 : t * 1e3;
    r[rows === 1 ? "ffn_decode_gflops" : "ffn_prefill_gflops"] = (2 * 3 * D * FF * rows) / t / 1e9;
    r[rows === 1 ? "ffn_err_decode" : "ffn_err_prefill"] = relErr(be.f32(fy, 0, Math.min(rows, CHECK_ROWS) * D), refFfn.subarray(0, Math.min(rows, CHECK_ROWS) * D));
  }
  be.close();
  return r;
}

const fmt = (r) => Object.entries(r).map(([k, v]) => `${k} ${k.startsWith("err") || k.includes("_err") ? v.toExponential(1) : v.toFixed(v < 10 ? 2 : 1)}`).join(", ");
for (const threads of THREADS) {
  out[`t${threads}`] = {};
  const o = ggmlOverhead(threads);
  const od = ggmlOverhead(threads, { threadpool: false });
  out[`t${threads}`].overhead = { ...o, rebuild_no_threadpool_us: od.rebuild_us, reuse_no_threadpool_us: od.reuse_us };
  console.log(`[${threads} thr] ggml tiny graph per call: reused ${o.reuse_us.toFixed(1)} µs, built+freed ${o.rebuild_us.toFixed(1)} µs; without a threadpool ${od.reuse_us.toFixed(1)} / ${od.rebuild_us.toFixed(1)} µs; one bare FFI call ${o.ffi_call_us.toFixed(2)} µs`);
  for (const [typeName, wasmDtype] of [["F32", "f32"], ["Q8_0", "q8"], ["Q4_0", "q4"], ["Q4_K", null]]) {
    for (const repack of REPACKABLE.has(typeName) && bufts.length ? [false, true] : [false]) {
      const label = `ggml ${typeName}${repack ? "+repack" : ""}`;
      const r = { ...ggmlMatmul(threads, typeName, repack), ...Object.fromEntries(Object.entries(ggmlFfn(threads, typeName, repack)).map(([k, v]) => [`ffn_${k}`, v])) };
      out[`t${threads}`][label] = r;
      console.log(`[${threads} thr] ${label.padEnd(18)} ${fmt(r)}`);
    }
    if (!wasmDtype) continue;
    const w = wasmRuns(threads, wasmDtype);
    out[`t${threads}`][`wasm ${wasmDtype}`] = w;
    console.log(`[${threads} thr] ${`wasm ${wasmDtype}`.padEnd(18)} ${fmt(w)}`);
  }
}
console.log(JSON.stringify(out));
