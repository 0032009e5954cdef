// The page's compute threads: how many (the user's setting where valid, else the cores the browser reports,
// at most DEFAULT_MAX), started as Web Workers running the kernel pool's shared loop (kernel-thread.ts, served as kernel-worker.js,
// bundled beside the page). Only a cross-origin isolated page has shared memory to give them; one that is
// not computes on its own thread alone.
import type { ComputeThread, StartThread } from "../../kernels/wasm/pool.js";

/** Threads by default, at most: a phone's cores are mostly small ones, and the page shares them with the browser. */
export const DEFAULT_MAX = 4;
/** A setting is refused outside 1…MAX_SETTING. */
export const MAX_SETTING = 64;
/** The localStorage key of the user's setting. */
export const THREADS_KEY = "distmoe.threads";
/** The bundled compute thread's script, served by the base station. */
const SCRIPT = "/device/kernel-worker.js";

/** The user's setting, or null where `text` is not a whole number within bounds. */
export function parseThreads(text: string | null): number | null {
  if (text === null || !/^\s*\d+\s*$/.test(text)) return null;
  const n = Number(text);
  return n >= 1 && n <= MAX_SETTING ? n : null;
}

/** The threads the page computes on, and whence. */
export function threadCount(setting: string | null, hardwareConcurrency: number | undefined, isolated: boolean): { threads: number; from: string } {
  if (!isolated) return { threads: 1, from: "this page is not cross-origin isolated (the base station's COOP/COEP headers did not reach it), so it has no shared memory for more" };
  const n = parseThreads(setting);
  if (n !== null) return { threads: n, from: "this page's setting" };
  if (typeof hardwareConcurrency === "number" && Number.isInteger(hardwareConcurrency) && hardwareConcurrency > 0) {
    return { threads: Math.min(DEFAULT_MAX, hardwareConcurrency), from: `the browser reports ${hardwareConcurrency} cores (at most ${DEFAULT_MAX} by default)` };
  }
  return { threads: 1, from: "the default (this browser does not say how many cores it has)" };
}

/** A Web Worker running the compute loop: sent its start, then each arena's memory; it says when it runs. */
export const startWebWorker: StartThread = (init): ComputeThread => {
  const worker = new Worker(SCRIPT, { type: "module", name: `distmoe kernels ${init.tid}` });
  const started = new Promise<void>((resolve, reject) => {
    worker.addEventListener("message", () => resolve(), { once: true });
    worker.addEventListener("error", (e) => reject(new Error(`compute thread ${init.tid} did not start (${e.message || `${SCRIPT} failed to load`})`)), { once: true });
  });
  worker.postMessage(init);
  return { post: (m) => worker.postMessage(m), started, terminate: () => worker.terminate() };
};
