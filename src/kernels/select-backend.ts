// Which kernels a process computes with: ggml's native CPU kernels where they load, the WebAssembly ones
// otherwise (or when asked). Every engine, device and referee opens its backend here, so the choice and
// its reason are made and said in one place.
import type { Backend } from "./backend.js";
import { WasmBackend } from "./wasm/wasm-backend.js";
import type { SimdVariant } from "./wasm/module.js";
import { NativeBackend } from "./native/native-backend.js";

export type BackendChoice = "auto" | "native" | "wasm";
export const BACKEND_CHOICES: readonly BackendChoice[] = ["auto", "native", "wasm"];
/** Sets the default choice (a test run of the whole suite on one backend, a deployment's preference). */
export const BACKEND_ENV = "DISTMOE_BACKEND";
/**
 * The native poll level for a process that waits on its peers between graphs: a device (one graph per call,
 * then the network), a base station whose experts are on devices. A worker spinning through the wait would
 * take a core from a device or base station on the same machine.
 */
export const POLL_WHEN_WAITING_ON_PEERS = 0;

export interface OpenBackendOptions {
  /** Default: $DISTMOE_BACKEND, else auto (native where it loads, wasm otherwise). */
  backend?: BackendChoice;
  threads?: number;
  /** wasm: the SIMD build. */
  simd?: SimdVariant | "auto";
  /** wasm: how long idle workers spin before sleeping, in ms. */
  spinMs?: number;
  /** native: how long idle pool workers poll before sleeping (0 to 100; see NativeBackendOptions.poll). */
  poll?: number;
  /** native: map weights from their files where they are held as stored (default true; see NativeBackendOptions.mmap). */
  mmap?: boolean;
}

export interface OpenedBackend {
  readonly backend: Backend;
  /** One line for the startup log, e.g. "kernels: native (ggml 0.23.0, zen4 variant, 2 threads)". */
  readonly why: string;
}

export function isBackendChoice(s: string): s is BackendChoice {
  return (BACKEND_CHOICES as readonly string[]).includes(s);
}

/** The choice in effect: the one given, else $DISTMOE_BACKEND, else auto. */
export function backendChoice(given?: BackendChoice): BackendChoice {
  if (given) return given;
  const env = process.env[BACKEND_ENV];
  if (env === undefined || env === "") return "auto";
  if (!isBackendChoice(env)) throw new Error(`${BACKEND_ENV}=${env}: expected ${BACKEND_CHOICES.join(", ")}`);
  return env;
}

export function openBackend(opts: OpenBackendOptions = {}): OpenedBackend {
  const choice = backendChoice(opts.backend);
  let unavailable = "";
  if (choice !== "wasm") {
    try {
      const backend = new NativeBackend({ threads: opts.threads, poll: opts.poll, mmap: opts.mmap });
      return { backend, why: `kernels: native (${backend.describe()})` };
    } catch (e) {
      const reason = e instanceof Error ? e.message : String(e);
      if (choice === "native") throw new Error(`the native backend does not load: ${reason}`);
      unavailable = `native unavailable: ${reason}`;
    }
  }
  const backend = new WasmBackend({ threads: opts.threads, simd: opts.simd, spinMs: opts.spinMs });
  return { backend, why: `kernels: wasm (${backend.variant} SIMD, ${backend.threads} thread${backend.threads === 1 ? "" : "s"}${unavailable ? `; ${unavailable}` : ", as asked"})` };
}
