// ggml's CPU kernels from node-llama-cpp's prebuilt per-platform npm packages (@node-llama-cpp/<platform>),
// called through koffi. Both are optional dependencies: loadGgml throws one Error saying why when either
// is missing or the libraries are not a ggml version this module was tested with, and the caller falls
// back to the wasm kernels. See docs/spikes/native-backend.md for the measurements behind the choices here.
//
// Where a ggml built on this machine exists (`npm run build-ggml`: the same ggml source, compiled for this
// CPU with -march=native as llama.cpp's own build is), it is loaded instead of the prebuilt one: the
// prebuilt libraries' f32 and bf16 products run up to 1.6× slower (see ggmlLibraries).
import { createRequire } from "node:module";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";

/** ggml versions whose struct layouts and symbols this module was checked against. */
export const TESTED_GGML_VERSIONS: readonly string[] = ["0.23.0"];

/** Set to hide the native packages (as if they were not installed): the tests of the wasm fallback use it. */
export const HIDE_NATIVE_ENV = "DISTMOE_HIDE_NATIVE";

/** A folder holding the ggml libraries to load instead of the ones found by default, or `prebuilt` for the npm package's. */
export const GGML_DIR_ENV = "DISTMOE_GGML_DIR";

/** What `npm run build-ggml` writes beside the libraries it builds: the ggml they come from. */
export const LOCAL_GGML_STAMP = "distmoe-ggml.json";

/** Where `npm run build-ggml` puts the ggml libraries it builds for this machine ($DISTMOE_CACHE or ~/.cache/distmoe). */
export function localGgmlDir(env: Record<string, string | undefined> = process.env): string {
  return path.join(env.DISTMOE_CACHE ?? path.join(os.homedir(), ".cache", "distmoe"), "ggml-native", "bin");
}

/**
 * The folder to load ggml from: the one DISTMOE_GGML_DIR names (`named`; `local` where a build's stamp lies in it);
 * else a build of this machine's (localGgmlDir) whose stamp names a tested ggml version; else the prebuilt package's.
 * `skipped`: why a local build found was not taken. The local build comes first because it measured faster, with
 * the same ggml source (`node scripts/bench-vs-llamacpp.mjs --backend native,native-local`, 2 threads, this
 * project's 2-vCPU AMD EPYC VM): prefill of brown-moe f32 7.6 k against 12.8 k tok/s, bf16 9.3 k against 12.2 k,
 * the 734 M f32 217 against 323; quantized products and decode about the same.
 */
export function ggmlLibraries(env: Record<string, string | undefined>, prebuilt: () => string): { dir: string; from: "named" | "local" | "prebuilt"; skipped?: string } {
  const given = env[GGML_DIR_ENV];
  if (given && given !== "prebuilt") {
    const dir = path.resolve(given);
    return { dir, from: stampedVersion(dir) === null ? "named" : "local" };
  }
  if (given !== "prebuilt") {
    const dir = localGgmlDir(env);
    const version = stampedVersion(dir);
    if (version !== null) {
      if (TESTED_GGML_VERSIONS.includes(version)) return { dir, from: "local" };
      return { dir: prebuilt(), from: "prebuilt", skipped: `the ggml built in ${dir} is ${version ? `version ${version}, not a tested one` : "not described by a readable stamp"} (rebuild it: npm run build-ggml)` };
    }
  }
  return { dir: prebuilt(), from: "prebuilt" };
}

/** The ggml version a build's stamp in `dir` names: null without a stamp, "" where it does not parse. */
function stampedVersion(dir: string): string | null {
  const stamp = path.join(dir, LOCAL_GGML_STAMP);
  if (!existsSync(stamp)) return null;
  try {
    return String((JSON.parse(readFileSync(stamp, "utf8")) as { ggmlVersion?: unknown }).ggmlVersion ?? "");
  } catch {
    return "";
  }
}

/** ggml_type numbers (fixed by the GGUF format). */
export const GgmlType = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, Q4_K: 12, Q5_K: 13, Q6_K: 14, I32: 26, BF16: 30 } as const;

/** GGML_MAX_N_THREADS: a threadpool of more threads reads beyond its params' cpumask and hangs or aborts the process. */
export const GGML_MAX_THREADS = 512;

/** node-llama-cpp's package per platform-arch (the CPU builds; the GPU ones carry the same CPU libraries). */
const PLATFORM_PACKAGES: Record<string, string> = {
  "linux-x64": "linux-x64",
  "linux-arm64": "linux-arm64",
  "linux-arm": "linux-armv7l",
  "darwin-arm64": "mac-arm64-metal",
  "darwin-x64": "mac-x64",
  "win32-x64": "win-x64",
  "win32-arm64": "win-arm64",
};

// struct ggml_threadpool_params: bool cpumask[512]; int n_threads; enum prio; uint32 poll; bool strict_cpu; bool paused;
const TP_PARAMS_BYTES = 528, TP_N_THREADS = 512, TP_POLL = 520;

/** An opaque ggml pointer as koffi hands it out. */
export type Ptr = unknown;

// struct ggml_tensor (ggml.h): type, buffer, int64 ne[4] at 16, size_t nb[4] at 48, enum op at 80, …, size_t
// view_offs at 240, void* data at 248, …; 336 bytes. Checked at load against tensors ggml made (tensorLayoutHolds).
const TENSOR_BYTES = 336, TENSOR_NE = 16, TENSOR_NB = 48, TENSOR_OP = 80, TENSOR_VIEW_OFFS = 240, TENSOR_DATA = 248;
/** GGML_OP_NONE: a node ggml's CPU backend skips (ggml_op_is_empty). */
export const GGML_OP_NONE = 0;

/**
 * A tensor's header in a built graph, to change the rows of a 2-D result or view between runs (see
 * NativeBackend.moeExperts): ggml reads shapes, addresses and ops when it computes, not when it builds.
 */
export class TensorHeader {
  private readonly v: DataView;
  constructor(koffi: KoffiLike, t: Ptr) {
    this.v = new DataView(koffi.view(t, TENSOR_BYTES));
  }
  get op(): number {
    return this.v.getInt32(TENSOR_OP, true);
  }
  set op(op: number) {
    this.v.setInt32(TENSOR_OP, op, true);
  }
  /** ne[1] = rows (ne[2] = ne[3] = 1), its strides after, and where its data starts (a view: `viewOffset` into its source). */
  setRows(rows: number, data: number, viewOffset?: number): void {
    const v = this.v, rowBytes = Number(v.getBigUint64(TENSOR_NB + 8, true));
    v.setBigInt64(TENSOR_NE + 8, BigInt(rows), true);
    v.setBigUint64(TENSOR_NB + 16, BigInt(rows * rowBytes), true);
    v.setBigUint64(TENSOR_NB + 24, BigInt(rows * rowBytes), true);
    v.setBigUint64(TENSOR_DATA, BigInt(data), true);
    if (viewOffset !== undefined) v.setBigUint64(TENSOR_VIEW_OFFS, BigInt(viewOffset), true);
  }
}

/** Whether ggml's tensors lie as TensorHeader reads them: a tensor, and a view of it, made by ggml and read back. */
function tensorLayoutHolds(koffi: KoffiLike, f: GgmlFunctions): boolean {
  const ctx = f.init({ mem_size: 1 << 16, mem_buffer: null, no_alloc: false });
  try {
    const t = f.newTensor2d(ctx, GgmlType.F32, 7, 11), view = f.view2d(ctx, t, 7, 5, 28, 56);
    const tv = new DataView(koffi.view(t, TENSOR_BYTES)), vv = new DataView(koffi.view(view, TENSOR_BYTES));
    const i64 = (d: DataView, at: number) => Number(d.getBigInt64(at, true));
    const data = Number(koffi.address(f.getData(t)));
    return [7, 11, 1, 1].every((n, i) => i64(tv, TENSOR_NE + 8 * i) === n) && [4, 28, 308, 308].every((n, i) => i64(tv, TENSOR_NB + 8 * i) === n)
      && tv.getInt32(TENSOR_OP, true) === GGML_OP_NONE && vv.getInt32(TENSOR_OP, true) !== GGML_OP_NONE
      && data !== 0 && i64(tv, TENSOR_DATA) === data && i64(vv, TENSOR_DATA) === data + 56 && i64(vv, TENSOR_VIEW_OFFS) === 56
      && [7, 5, 1, 1].every((n, i) => i64(vv, TENSOR_NE + 8 * i) === n) && i64(vv, TENSOR_NB + 16) === 140;
  } finally {
    f.free(ctx);
  }
}

export interface Ggml {
  readonly version: string;
  /** The libggml-cpu build chosen for this CPU, e.g. "zen4", "cpu" where the folder has a single one, or "local": built on this machine. */
  readonly variant: string;
  readonly binDir: string;
  /** Where the libraries come from, for the startup log: the npm package's prebuilt ones or a build on this machine. */
  readonly origin: string;
  readonly koffi: KoffiLike;
  readonly f: GgmlFunctions;
  /** The CPU "extra" buffer types (CPU_REPACK …), in ggml's order. */
  readonly extraBufts: Ptr[];
  readonly cpuDevice: Ptr;
  /** A built tensor's header (see TensorHeader); null where ggml's tensor layout did not check out at load. */
  readonly header: ((t: Ptr) => TensorHeader) | null;
  /** A new threadpool of `threads` threads; poll 0 lets idle workers sleep, up to 100 spins longer. */
  newThreadpool(threads: number, poll: number): Ptr;
  /** Native address of a pointer. */
  address(p: Ptr): number;
  /** The whole file behind fd mapped copy-on-write (reads from the page cache, as llama.cpp's mmap), or an Error saying why not. */
  mapFile(fd: number, bytes: number): { address: number; unmap(): void } | Error;
}

interface KoffiLike {
  load(file: string): { func(sig: string): (...args: unknown[]) => any };
  struct(name: string, def: Record<string, string>): unknown;
  proto(sig: string): unknown;
  pointer(t: unknown): unknown;
  register(fn: (...args: any[]) => unknown, type: unknown): unknown;
  call(fn: unknown, type: unknown, ...args: unknown[]): any;
  decode(p: unknown, offset: number, type: string): any;
  address(p: unknown): bigint;
  view(p: unknown, len: number): ArrayBuffer;
  sizeof(t: string): number;
}

export type GgmlFunctions = ReturnType<typeof bind>;

function bind(base: ReturnType<KoffiLike["load"]>, cpu: ReturnType<KoffiLike["load"]>) {
  const b = (sig: string) => base.func(sig);
  const c = (sig: string) => cpu.func(sig);
  return {
    init: b("void* ggml_init(ggml_init_params p)") as (p: { mem_size: number; mem_buffer: null; no_alloc: boolean }) => Ptr,
    free: b("void ggml_free(void* ctx)") as (ctx: Ptr) => void,
    tensorOverhead: b("size_t ggml_tensor_overhead(void)") as () => number,
    graphOverheadCustom: b("size_t ggml_graph_overhead_custom(size_t size, bool grads)") as (size: number, grads: boolean) => number,
    newTensor1d: b("void* ggml_new_tensor_1d(void* ctx, int type, int64_t ne0)") as (ctx: Ptr, type: number, ne0: number) => Ptr,
    newTensor2d: b("void* ggml_new_tensor_2d(void* ctx, int type, int64_t ne0, int64_t ne1)") as (ctx: Ptr, type: number, ne0: number, ne1: number) => Ptr,
    newTensor3d: b("void* ggml_new_tensor_3d(void* ctx, int type, int64_t ne0, int64_t ne1, int64_t ne2)") as (ctx: Ptr, type: number, ne0: number, ne1: number, ne2: number) => Ptr,
    permute: b("void* ggml_permute(void* ctx, void* a, int ax0, int ax1, int ax2, int ax3)") as (ctx: Ptr, a: Ptr, a0: number, a1: number, a2: number, a3: number) => Ptr,
    mulMat: b("void* ggml_mul_mat(void* ctx, void* a, void* b)") as (ctx: Ptr, a: Ptr, b: Ptr) => Ptr,
    getRows: b("void* ggml_get_rows(void* ctx, void* a, void* b)") as (ctx: Ptr, a: Ptr, b: Ptr) => Ptr,
    setRows: b("void* ggml_set_rows(void* ctx, void* a, void* b, void* c)") as (ctx: Ptr, a: Ptr, b: Ptr, c: Ptr) => Ptr,
    rmsNorm: b("void* ggml_rms_norm(void* ctx, void* a, float eps)") as (ctx: Ptr, a: Ptr, eps: number) => Ptr,
    mul: b("void* ggml_mul(void* ctx, void* a, void* b)") as (ctx: Ptr, a: Ptr, b: Ptr) => Ptr,
    add: b("void* ggml_add(void* ctx, void* a, void* b)") as (ctx: Ptr, a: Ptr, b: Ptr) => Ptr,
    softMax: b("void* ggml_soft_max(void* ctx, void* a)") as (ctx: Ptr, a: Ptr) => Ptr,
    argsort: b("void* ggml_argsort(void* ctx, void* a, int order)") as (ctx: Ptr, a: Ptr, order: number) => Ptr,
    sumRows: b("void* ggml_sum_rows(void* ctx, void* a)") as (ctx: Ptr, a: Ptr) => Ptr,
    div: b("void* ggml_div(void* ctx, void* a, void* b)") as (ctx: Ptr, a: Ptr, b: Ptr) => Ptr,
    cont: b("void* ggml_cont(void* ctx, void* a)") as (ctx: Ptr, a: Ptr) => Ptr,
    reshape2d: b("void* ggml_reshape_2d(void* ctx, void* a, int64_t ne0, int64_t ne1)") as (ctx: Ptr, a: Ptr, ne0: number, ne1: number) => Ptr,
    reshape3d: b("void* ggml_reshape_3d(void* ctx, void* a, int64_t ne0, int64_t ne1, int64_t ne2)") as (ctx: Ptr, a: Ptr, ne0: number, ne1: number, ne2: number) => Ptr,
    view2d: b("void* ggml_view_2d(void* ctx, void* a, int64_t ne0, int64_t ne1, size_t nb1, size_t offset)") as (ctx: Ptr, a: Ptr, ne0: number, ne1: number, nb1: number, offset: number) => Ptr,
    mulMatId: b("void* ggml_mul_mat_id(void* ctx, void* as, void* b, void* ids)") as (ctx: Ptr, as: Ptr, b: Ptr, ids: Ptr) => Ptr,
    swigluSplit: b("void* ggml_swiglu_split(void* ctx, void* a, void* b)") as (ctx: Ptr, a: Ptr, b: Ptr) => Ptr,
    clampInplace: b("void* ggml_clamp_inplace(void* ctx, void* a, float min, float max)") as (ctx: Ptr, a: Ptr, min: number, max: number) => Ptr,
    ropeExtInplace: b("void* ggml_rope_ext_inplace(void* ctx, void* a, void* b, void* c, int n_dims, int mode, int n_ctx_orig, float freq_base, float freq_scale, float ext_factor, float attn_factor, float beta_fast, float beta_slow)") as (
      ctx: Ptr, a: Ptr, b: Ptr, c: Ptr | null, nDims: number, mode: number, nCtxOrig: number, freqBase: number, freqScale: number, extFactor: number, attnFactor: number, betaFast: number, betaSlow: number) => Ptr,
    flashAttnExt: b("void* ggml_flash_attn_ext(void* ctx, void* q, void* k, void* v, void* mask, float scale, float max_bias, float logit_softcap)") as (
      ctx: Ptr, q: Ptr, k: Ptr, v: Ptr, mask: Ptr, scale: number, maxBias: number, softcap: number) => Ptr,
    newGraphCustom: b("void* ggml_new_graph_custom(void* ctx, size_t size, bool grads)") as (ctx: Ptr, size: number, grads: boolean) => Ptr,
    buildForward: b("void ggml_build_forward_expand(void* graph, void* tensor)") as (graph: Ptr, t: Ptr) => void,
    nbytes: b("size_t ggml_nbytes(void* t)") as (t: Ptr) => number,
    rowSize: b("size_t ggml_row_size(int type, int64_t ne)") as (type: number, ne: number) => number,
    tensorSet: b("void ggml_backend_tensor_set(void* t, const void* data, size_t offset, size_t size)") as (t: Ptr, data: Uint8Array, offset: number, size: number) => void,
    getData: b("void* ggml_get_data(void* t)") as (t: Ptr) => Ptr,
    quantizeChunk: b("size_t ggml_quantize_chunk(int type, const float* src, void* dst, int64_t start, int64_t nrows, int64_t n_per_row, const float* imatrix)") as (
      type: number, src: Float32Array, dst: Uint8Array, start: number, nrows: number, nPerRow: number, imatrix: null) => number,
    tensorAlloc: b("int ggml_backend_tensor_alloc(void* buffer, void* tensor, uintptr_t addr)") as (buf: Ptr, t: Ptr, addr: number) => number,
    viewInit: b("int ggml_backend_view_init(void* tensor)") as (t: Ptr) => number,
    allocCtxTensorsFromBuft: b("void* ggml_backend_alloc_ctx_tensors_from_buft(void* ctx, void* buft)") as (ctx: Ptr, buft: Ptr) => Ptr,
    bufferFromPtr: b("void* ggml_backend_cpu_buffer_from_ptr(uintptr_t ptr, size_t size)") as (ptr: number, size: number) => Ptr,
    buftAllocBuffer: b("void* ggml_backend_buft_alloc_buffer(void* buft, size_t size)") as (buft: Ptr, size: number) => Ptr,
    bufferGetBase: b("void* ggml_backend_buffer_get_base(void* buf)") as (buf: Ptr) => Ptr,
    bufferFree: b("void ggml_backend_buffer_free(void* buf)") as (buf: Ptr) => void,
    bufferSetUsage: b("void ggml_backend_buffer_set_usage(void* buf, int usage)") as (buf: Ptr, usage: number) => void,
    buftName: b("const char* ggml_backend_buft_name(void* buft)") as (buft: Ptr) => string,
    graphCompute: b("int ggml_backend_graph_compute(void* backend, void* graph)") as (backend: Ptr, graph: Ptr) => number,
    backendFree: b("void ggml_backend_free(void* backend)") as (backend: Ptr) => void,
    regDevGet: b("void* ggml_backend_reg_dev_get(void* reg, size_t i)") as (reg: Ptr, i: number) => Ptr,
    regProc: b("void* ggml_backend_reg_get_proc_address(void* reg, const char* name)") as (reg: Ptr, name: string) => Ptr,
    devSupportsOp: b("bool ggml_backend_dev_supports_op(void* dev, void* op)") as (dev: Ptr, op: Ptr) => boolean,
    tpParamsInit: b("void ggml_threadpool_params_init(void* p, int n_threads)") as (p: Uint8Array, n: number) => void,
    cpuInit: c("void* ggml_backend_cpu_init(void)") as () => Ptr,
    cpuReg: c("void* ggml_backend_cpu_reg(void)") as () => Ptr,
    cpuBufferType: c("void* ggml_backend_cpu_buffer_type(void)") as () => Ptr,
    cpuSetThreads: c("void ggml_backend_cpu_set_n_threads(void* backend, int n)") as (backend: Ptr, n: number) => void,
    cpuSetThreadpool: c("void ggml_backend_cpu_set_threadpool(void* backend, void* tp)") as (backend: Ptr, tp: Ptr) => void,
    threadpoolNew: c("void* ggml_threadpool_new(void* params)") as (params: Uint8Array) => Ptr,
    threadpoolFree: c("void ggml_threadpool_free(void* tp)") as (tp: Ptr) => void,
    threadpoolPause: c("void ggml_threadpool_pause(void* tp)") as (tp: Ptr) => void,
  };
}

let loaded: Ggml | Error | null = null;

/** Loads ggml once per process; throws an Error whose message is the one reason it cannot. */
export function loadGgml(): Ggml {
  if (loaded instanceof Error) throw loaded;
  if (loaded) return loaded;
  try {
    loaded = open();
  } catch (e) {
    // the koffi types registered so far cannot be registered twice: the first failure is the answer
    loaded = e instanceof Error ? e : new Error(String(e));
    throw loaded;
  }
  return loaded;
}

function open(): Ggml {
  if (process.env[HIDE_NATIVE_ENV]) throw new Error(`the native packages are hidden (${HIDE_NATIVE_ENV} is set)`);
  const key = `${process.platform}-${process.arch}`;
  const pkg = PLATFORM_PACKAGES[key];
  if (!pkg) throw new Error(`no prebuilt ggml package for ${key}`);
  const require = createRequire(import.meta.url);
  let koffi: KoffiLike;
  try {
    koffi = require("koffi") as KoffiLike;
  } catch (e) {
    throw new Error(`koffi is not installed or does not load (${firstLine(e)})`);
  }
  const prebuilt = () => {
    try {
      // the package's entry is dist/index.js; its libraries lie in bins/<one folder per build>/
      const pkgDir = path.dirname(path.dirname(require.resolve(`@node-llama-cpp/${pkg}`)));
      const bins = readdirSync(path.join(pkgDir, "bins"), { withFileTypes: true }).filter((d) => d.isDirectory());
      if (bins.length !== 1) throw new Error(`expected one folder in ${path.join(pkgDir, "bins")}, found ${bins.length}`);
      return path.join(pkgDir, "bins", bins[0]!.name);
    } catch (e) {
      throw new Error(`@node-llama-cpp/${pkg} is not installed (${firstLine(e)})`);
    }
  };
  const chosen = ggmlLibraries(process.env, prebuilt);
  const binDir = chosen.dir;
  // a build of this machine's that does not load says how to do without it
  const fail = (why: string) => new Error(chosen.from === "local" ? `${why} (ggml built by npm run build-ggml: build it again, or set ${GGML_DIR_ENV}=prebuilt)` : why);
  if (!existsSync(binDir)) throw fail(`${GGML_DIR_ENV}: ${binDir} does not exist`);
  if (!statSync(binDir).isDirectory()) throw fail(`${GGML_DIR_ENV}: ${binDir} is not a folder`);
  const files = readdirSync(binDir);
  const baseFile = files.find((f) => /^(lib)?ggml-base\.(so|dylib|dll)$/.test(f));
  if (!baseFile) throw fail(`${binDir} holds no ggml-base library`);
  let base: ReturnType<KoffiLike["load"]>;
  try {
    base = koffi.load(path.join(binDir, baseFile));
  } catch (e) {
    throw fail(`${baseFile} does not load (${firstLine(e)})`);
  }
  const version = base.func("const char* ggml_version(void)")() as string;
  if (!TESTED_GGML_VERSIONS.includes(version)) throw fail(`ggml ${version} in ${binDir} is not a tested version (${TESTED_GGML_VERSIONS.join(", ")})`);

  // ggml_backend_load_best's rule: every CPU build scores this CPU (0 = cannot run it); take the highest
  const variants: Array<{ name: string; lib: ReturnType<KoffiLike["load"]>; score: number }> = [];
  for (const f of files) {
    const m = /^(?:lib)?ggml-cpu(?:-(.+))?\.(?:so|dylib|dll)$/.exec(f);
    if (!m) continue;
    try {
      const lib = koffi.load(path.join(binDir, f));
      let score = 1;
      try {
        score = lib.func("int ggml_backend_score(void)")() as number;
      } catch {
        // a single, unscored CPU build
      }
      if (score > 0) variants.push({ name: m[1] ?? "cpu", lib, score });
    } catch {
      // a build this system cannot load (missing instruction-set runtime, other libc): not a candidate
    }
  }
  variants.sort((x, y) => y.score - x.score);
  const best = variants[0];
  if (!best) throw fail(`no ggml CPU library in ${binDir} runs on this CPU`);
  const variant = chosen.from === "local" ? "local" : best.name;
  const origin = {
    local: `built for this CPU by npm run build-ggml (${binDir})`,
    named: `from ${binDir} (${GGML_DIR_ENV}), ${best.name} variant`,
    prebuilt: `prebuilt (@node-llama-cpp/${pkg}), ${best.name} variant${chosen.skipped ? `; ${chosen.skipped}` : ""}`,
  }[chosen.from];

  koffi.struct("ggml_init_params", { mem_size: "size_t", mem_buffer: "void*", no_alloc: "bool" });
  const f = bind(base, best.lib);
  // ggml logs every repacked tensor and graph reallocation to stderr; keep errors only
  const LogCallback = koffi.proto("void ggml_log_callback(int level, const char* text, void* user)");
  const logCb = koffi.register((level: number, text: string) => {
    if (level === 4 /* GGML_LOG_LEVEL_ERROR */) process.stderr.write(`ggml: ${text}`);
  }, koffi.pointer(LogCallback));
  base.func("void ggml_log_set(ggml_log_callback* cb, void* user)")(logCb, null);

  const params = new Uint8Array(TP_PARAMS_BYTES);
  f.tpParamsInit(params, 3);
  if (new DataView(params.buffer).getInt32(TP_N_THREADS, true) !== 3) throw new Error(`ggml ${version}: ggml_threadpool_params' layout differs from the one assumed`);

  const reg = f.cpuReg();
  const cpuDevice = f.regDevGet(reg, 0);
  const extraBufts: Ptr[] = [];
  const getExtra = f.regProc(reg, "ggml_backend_dev_get_extra_bufts");
  if (getExtra) {
    const list = koffi.call(getExtra, koffi.proto("void* get_extra_bufts(void* dev)"), cpuDevice);
    const pointerBytes = koffi.sizeof("void*");
    for (let i = 0; list; i++) {
      const b = koffi.decode(list, i * pointerBytes, "void*");
      if (!b) break;
      extraBufts.push(b);
    }
  }
  const headersHold = tensorLayoutHolds(koffi, f);
  return {
    version, variant, binDir, origin, koffi, f, extraBufts, cpuDevice,
    header: headersHold ? (t: Ptr) => new TensorHeader(koffi, t) : null,
    newThreadpool(threads: number, poll: number): Ptr {
      const p = new Uint8Array(TP_PARAMS_BYTES);
      f.tpParamsInit(p, threads);
      new DataView(p.buffer).setUint32(TP_POLL, poll, true);
      const tp = f.threadpoolNew(p);
      if (!tp) throw new Error(`ggml_threadpool_new failed for ${threads} threads`);
      return tp;
    },
    address: (p: Ptr) => Number(koffi.address(p)),
    mapFile: (fd: number, bytes: number) => mapFile(koffi, fd, bytes),
  };
}

let libc: { mmap: (...a: unknown[]) => Ptr; munmap: (...a: unknown[]) => number } | Error | null = null;

function mapFile(koffi: KoffiLike, fd: number, bytes: number): { address: number; unmap(): void } | Error {
  if (!libc) {
    try {
      const lib = koffi.load(process.platform === "darwin" ? "libSystem.B.dylib" : process.platform === "linux" ? "libc.so.6" : "");
      libc = {
        mmap: lib.func("void* mmap(void* addr, size_t length, int prot, int flags, int fd, int64_t offset)"),
        munmap: lib.func("int munmap(void* addr, size_t length)"),
      };
    } catch (e) {
      libc = new Error(`no mmap here (${firstLine(e)})`);
    }
  }
  if (libc instanceof Error) return libc;
  const PROT_READ = 1, PROT_WRITE = 2, MAP_PRIVATE = 2;
  // writable and private: setWeightData on a mapped weight copies the pages it writes, the file is never changed
  const p = libc.mmap(null, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (!p || koffi.address(p) === 0xffffffffffffffffn) return new Error("mmap failed");
  const { munmap } = libc;
  return { address: Number(koffi.address(p)), unmap: () => void munmap(p, bytes) };
}

function firstLine(e: unknown): string {
  return String(e instanceof Error ? e.message : e).split("\n")[0]!;
}
