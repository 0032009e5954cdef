// The device page: a browser tab that joins the base station which served it as an expert device. It
// speaks the device protocol through the same core as the Node device (runtime/device-core.ts) and
// computes with the same AssemblyScript kernels, compiled from the .wasm the base station serves. The
// join token comes in the URL's fragment (/device#token=…), which the browser never sends to a server.
// Cross-origin isolated, it computes on its own thread and Web Workers over shared memory (threads.ts; the
// count is a setting), else on its own thread alone; streamed weights and its identity are kept in the origin's
// storage (storage.ts), so a reopened page is the same device and downloads only what it lacks. Hidden
// or frozen, the page leaves the base station and rejoins when shown (lifecycle.ts); its heartbeat
// carries its battery where the browser reports one (battery.ts). Where the browser offers a WebGPU
// adapter that measures faster than the kernels, experts held as f32, f16 or bf16 compute on it
// (gpu-experts.ts); `#compute=wasm` in the address keeps them on the kernels, `#compute=webgpu` insists on WebGPU.
import { Backoff } from "../../runtime/backoff.js";
import { DeviceSession, ExpertHost, mib, printable } from "../../runtime/device-core.js";
import { WasmBackend } from "../../kernels/wasm/wasm-backend.js";
import type { KernelModule, SimdVariant } from "../../kernels/wasm/module.js";
import { navigatorGpu } from "../../kernels/webgpu/gpu-api.js";
import { WebGpuFfn } from "../../kernels/webgpu/webgpu-ffn.js";
import { ThreadPool } from "../../kernels/wasm/pool.js";
import { CLOSE } from "../../protocol/socket.js";
import { safeName } from "../../protocol/names.js";
import type { Battery, Message } from "../../protocol/frames.js";
import { openBattery } from "./battery.js";
import { BrowserWeights } from "./browser-weights.js";
import { GpuExperts } from "./gpu-experts.js";
import { PageLife, ScreenWakeLock } from "./lifecycle.js";
import { offeredMemory, parseSetting, SETTING_KEY } from "./memory-offer.js";
import { closeWith, receiveFrames, sendFrame } from "./socket.js";
import { parseThreads, startWebWorker, threadCount, THREADS_KEY } from "./threads.js";
import { keptIdentity, weightEntries } from "./storage.js";

/** Pages (64 KiB) per kernel arena: 1 GiB, of address space a phone's browser can reserve; more arenas are made as weights need them. */
const ARENA_PAGES = 16384;
/** Lines of the log kept on the page. */
const LOG_LINES = 200;
/** How often the page sends its heartbeat (with its battery) and measures its link's round trip. */
const HEARTBEAT_MS = 5000;

type State = "starting" | "joining" | "serving" | "away" | "error";

const $ = (id: string): HTMLElement => document.getElementById(id)!;

const view = {
  state: "starting" as State, detail: "", experts: 0, calls: 0, inFlight: 0, callsPerSecond: 0, roundTripMs: null as number | null,
  bytesIn: 0, bytesOut: 0, weightBytes: 0, offered: 0, wakeLock: "", battery: "not reported", compute: "wasm" as "wasm" | "webgpu", computeDetail: "–", kernels: "–",
};

/** Bytes in KiB, MiB or GiB, whichever reads best. */
function bytes(n: number): string {
  if (n < 2 ** 20) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return n < 2 ** 30 ? mib(n) : `${(n / 2 ** 30).toFixed(2)} GiB`;
}

function render(): void {
  $("state").textContent = view.state;
  $("state").dataset.state = view.state;
  $("detail").textContent = view.detail;
  $("experts").textContent = String(view.experts);
  $("calls").textContent = String(view.calls);
  $("in-flight").textContent = String(view.inFlight);
  $("rate").textContent = view.callsPerSecond.toFixed(1);
  $("rtt").textContent = view.roundTripMs === null ? "–" : `${view.roundTripMs.toFixed(0)} ms`;
  $("bytes-in").textContent = bytes(view.bytesIn);
  $("bytes-out").textContent = bytes(view.bytesOut);
  $("weights").textContent = mib(view.weightBytes);
  $("weights").dataset.bytes = String(view.weightBytes);
  $("memory-used").textContent = `${bytes(view.weightBytes)} / ${bytes(view.offered)}`;
  $("wake-lock").textContent = view.wakeLock;
  $("battery").textContent = view.battery;
  $("compute").textContent = view.computeDetail;
  $("compute").dataset.compute = view.compute;
  $("kernels").textContent = view.kernels;
}

function show(state: State, detail: string): void {
  view.state = state;
  view.detail = detail;
  render();
}

function log(line: string): void {
  // the console too: a developer's tools (and the browser tests, which print a failed test's console) see the same lines
  console.info(line);
  const pre = $("log");
  pre.textContent = `${(pre.textContent ?? "").split("\n").slice(-LOG_LINES).join("\n")}${new Date().toISOString().slice(11, 19)} ${line}\n`;
}

/** The kernels: the relaxed-SIMD build where this browser validates it, the plain SIMD128 one otherwise. */
async function loadKernels(): Promise<KernelModule> {
  for (const variant of ["relaxed", "simd"] as SimdVariant[]) {
    const res = await fetch(`/device/kernels-${variant}.wasm`);
    if (!res.ok) throw new Error(`the base station did not serve the ${variant} kernels (HTTP ${res.status})`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (WebAssembly.validate(bytes)) return { module: await WebAssembly.compile(bytes), variant };
  }
  throw new Error("this browser runs neither kernel build (it needs WebAssembly SIMD)");
}

/**
 * WebGPU for the experts, as the page's address asks (`compute`: "wasm", "webgpu", or unset: where the browser
 * offers an adapter that computes faster than the kernels), measured; null: the kernels compute them.
 */
async function openGpuExperts(want: string | null, backend: WasmBackend): Promise<GpuExperts | null> {
  if (want !== null && want !== "wasm" && want !== "webgpu") throw new Error(`compute=${printable(want)} in the address is neither wasm nor webgpu`);
  if (want === "wasm") return null;
  const fail = (why: string) => {
    if (want === "webgpu") throw new Error(`the address asks for compute=webgpu, but ${why}`);
    log(`compute: wasm (${why})`);
    return null;
  };
  const gpu = navigatorGpu();
  if (!gpu) return fail("this browser has no WebGPU");
  try {
    const ffn = await WebGpuFfn.open(gpu, log);
    if (!ffn) return fail("this browser's WebGPU offers no adapter");
    const gflops = await ffn.measureGflops();
    // an adapter slower than the kernels (a software one, as SwiftShader is) is used only when asked for
    const kernels = want === "webgpu" ? 0 : backend.measureComputeRate();
    if (gflops < kernels) {
      ffn.close();
      log(`compute: wasm (WebGPU on ${ffn.adapter} measured ${gflops.toFixed(2)} GFLOP/s, the wasm kernels ${kernels.toFixed(1)}; #compute=webgpu in the address uses WebGPU anyway)`);
      return null;
    }
    log(`compute: WebGPU on ${ffn.adapter}, ${gflops.toFixed(2)} GFLOP/s measured`);
    return new GpuExperts(ffn, backend, gflops, log);
  } catch (e) {
    return fail(`WebGPU failed: ${(e as Error).message}`);
  }
}

/** How one connection ended: refused (trying again would not help), or lost. */
type Ending = { refused: string } | { lost: string; readied: boolean };

function connect(session: (ws: WebSocket) => DeviceSession): Promise<Ending> {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/`);
  const s = session(ws);
  ws.addEventListener("message", (e: MessageEvent) => (view.bytesIn += e.data instanceof ArrayBuffer ? e.data.byteLength : 0));
  view.inFlight = 0;
  receiveFrames(ws, (m) => (m.type === "call" && view.inFlight++, s.receive(m)), (reason) => log(printable(reason)));
  const leave = () => {
    sendFrame(ws, { type: "leave", reason: "page closed" });
    closeWith(ws, CLOSE.normal, "page closed");
  };
  addEventListener("pagehide", leave);
  return new Promise((resolve) => {
    ws.addEventListener("close", (e: CloseEvent) => {
      s.closed();
      removeEventListener("pagehide", leave);
      if (s.refused !== null) return resolve({ refused: s.refused });
      if (e.code === CLOSE.notAdmitted) return resolve({ refused: `the base station refused this device: ${printable(!s.welcomed && s.handshakeError !== null ? s.handshakeError : e.reason)}` });
      if (e.code === CLOSE.replaced) return resolve({ refused: "another connection with this page's identity took this one's place" });
      resolve({ lost: s.left !== null ? `the base station left (${printable(s.left)})` : `the connection closed (code ${e.code}${e.reason ? `, ${printable(e.reason)}` : ""})`, readied: s.readied });
    });
  });
}

/** The memory offered to expert weights (memory-offer.ts); the page's field shows it and keeps a change for the next join. */
function memorySetting(): number {
  const input = $("memory") as HTMLInputElement;
  const offer = offeredMemory(localStorage.getItem(SETTING_KEY), (navigator as Navigator & { deviceMemory?: number }).deviceMemory);
  log(`offers ${mib(offer.bytes)} for experts: ${offer.from}`);
  input.value = String(Math.round(offer.bytes / 2 ** 20));
  input.addEventListener("change", () => {
    if (parseSetting(input.value) === null) return log(`${printable(input.value)} MiB is not a memory this page can offer (${input.min}–${input.max} MiB)`);
    localStorage.setItem(SETTING_KEY, input.value.trim());
    log(`will offer ${input.value.trim()} MiB from the next time this page joins (reload it to apply)`);
  });
  return offer.bytes;
}

/** The threads to compute on (threads.ts); the page's field shows the setting and keeps a change for the next visit. */
function threadSetting(): { threads: number; from: string } {
  const input = $("threads-setting") as HTMLInputElement;
  const count = threadCount(localStorage.getItem(THREADS_KEY), navigator.hardwareConcurrency, globalThis.crossOriginIsolated);
  input.value = String(parseThreads(localStorage.getItem(THREADS_KEY)) ?? count.threads);
  input.disabled = !globalThis.crossOriginIsolated;
  input.addEventListener("change", () => {
    if (parseThreads(input.value) === null) return log(`${printable(input.value)} is not a thread count this page can use (${input.min}–${input.max})`);
    localStorage.setItem(THREADS_KEY, input.value.trim());
    log(`will compute on ${input.value.trim()} threads from the next time this page opens (reload it to apply)`);
  });
  return count;
}

/** The kernels on the threads chosen: Web Workers run only once this thread yields, so they are awaited before the first arena. */
async function openBackend(kernels: KernelModule): Promise<WasmBackend> {
  const { threads, from } = threadSetting();
  const pool = new ThreadPool(kernels.module, { threads, start: startWebWorker });
  await pool.started;
  const backend = new WasmBackend({ kernels, pool, arenaPages: ARENA_PAGES });
  const what = `wasm (${backend.variant} SIMD) on ${threads === 1 ? "1 thread" : `${threads} threads`}`;
  view.kernels = globalThis.crossOriginIsolated ? what : `${what}: ${from}`;
  $("kernels").dataset.compute = "wasm";
  $("kernels").dataset.threads = String(threads);
  log(`kernels: ${what}: ${from}`);
  setInterval(() => ($("kernels").dataset.workerShares = String(backend.workerShares)), 1000);
  return backend;
}

async function main(): Promise<void> {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token") || undefined;
  const kernels = await loadKernels();
  const backend = await openBackend(kernels);
  const gpu = await openGpuExperts(params.get("compute"), backend);
  view.compute = gpu ? "webgpu" : "wasm";
  view.computeDetail = gpu ? `WebGPU (${gpu.adapter})` : "the wasm kernels";
  const { identity, made } = await keptIdentity(params.get("name") ?? "");
  const name = safeName(params.get("name") ?? `browser-${identity.key.slice(0, 8)}`);
  log(`device ${name}, identity ${identity.fingerprint} (${made ? "new, kept for this page's next visits" : "kept from an earlier visit"})`);
  const offered = memorySetting();
  view.offered = offered;
  const entries = await weightEntries();
  log(`weights are kept in ${entries.kind}`);
  const stores = new Map<string, BrowserWeights>();
  // the weights kept for a rejoin: at most twice the memory offered, across the models served
  const supply = {
    atHand: () => null,
    store: (id: string) => stores.get(id) ?? stores.set(id, new BrowserWeights(entries.of(id), log)).get(id)!,
    trim: async (id: string, keep: readonly string[]) => {
      const gone = await entries.trim(id, keep, 2 * offered);
      if (gone.length > 0) log(`removed ${gone.length} kept tensors (${mib(gone.reduce((n, e) => n + e.bytes, 0))}, the oldest not held) to keep the weights within ${mib(2 * offered)}`);
    },
  };
  const host = new ExpertHost(backend, supply, () => offered, log, { kind: "browser", userAgent: navigator.userAgent }, gpu ?? undefined);
  let current: DeviceSession | null = null;
  let socket: WebSocket | null = null;
  const send = (m: Message) => {
    if (socket) view.bytesOut += sendFrame(socket, m);
  };
  const wakeLock = new ScreenWakeLock();
  // hidden or frozen: tell the base station this device is leaving; it closes the connection once the calls in flight are answered
  const life = new PageLife((why) => {
    log(`${why}: leaving the base station after the calls in flight`);
    show("away", `${why}: left ${location.host}; rejoins when shown again`);
    wakeLock.release();
    if (current?.welcomed) send({ type: "leave", reason: why });
    else if (socket) closeWith(socket, CLOSE.normal, why);
  });
  let battery: (() => Battery) | null = null;
  const heartbeat = () => {
    const b = battery?.();
    if (b) view.battery = `${Math.round(b.level * 100)} %${b.charging ? ", charging" : ""}`;
    if (current?.welcomed) send({ type: "heartbeat", ...(b ? { battery: b } : {}) });
  };
  battery = await openBattery(heartbeat);
  // the link's round trip, as a request to the base station takes it
  const measureRoundTrip = () => {
    const t0 = performance.now();
    fetch(location.pathname, { method: "HEAD", cache: "no-store" }).then(() => (view.roundTripMs = performance.now() - t0), () => (view.roundTripMs = null));
  };
  setInterval(() => {
    heartbeat();
    measureRoundTrip();
  }, HEARTBEAT_MS);
  let lastCalls = 0;
  setInterval(() => {
    view.callsPerSecond = view.calls - lastCalls;
    lastCalls = view.calls;
  }, 1000);
  setInterval(() => {
    view.experts = host.holds().length;
    view.weightBytes = [...stores.values()].reduce((n, s) => n + s.received, 0);
    if (current?.readied && view.state === "joining") {
      show("serving", `serving ${location.host} as ${name}`);
      heartbeat();
      measureRoundTrip();
      void wakeLock.hold();
    }
    view.wakeLock = wakeLock.state;
    render();
  }, 100);
  const backoff = new Backoff();
  for (;;) {
    await life.shown();
    show("joining", `joining ${location.host} as ${name}`);
    const end = await connect((ws) => {
      socket = ws;
      current = new DeviceSession(
        host,
        {
          send: (m) => {
            const sent = sendFrame(ws, m);
            view.bytesOut += sent;
            // a call is answered by its result, or an error naming it
            if (sent > 0 && (m.type === "result" || (m.type === "error" && m.id !== undefined))) {
              view.inFlight--;
              if (m.type === "result") view.calls++;
            }
          },
          close: (code, reason) => closeWith(ws, code, reason),
        },
        // a page cannot read the TLS session's exporter: its hello says it is unbound (hub/admission.ts)
        { bs: location.host, name, token, identity, binding: () => null, log },
      );
      return current;
    });
    if ("refused" in end) throw new Error(end.refused);
    if (life.isAway) {
      log(`left the base station (${end.lost}); rejoining when shown again`);
      backoff.reset();
      continue;
    }
    if (end.readied) backoff.reset();
    const wait = backoff.next();
    log(`${end.lost}; reconnecting in ${(wait / 1000).toFixed(1)} s`);
    show("joining", `${end.lost}; reconnecting`);
    await new Promise((r) => setTimeout(r, wait));
  }
}

main().catch((e: Error) => {
  log(e.message);
  show("error", e.message);
});
