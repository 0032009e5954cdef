// Finds and compiles the kernel module: the relaxed-SIMD build where the engine supports it (browsers by
// default; Node 20 behind a V8 flag, which we turn on), the plain SIMD128 build otherwise.
import { readFileSync } from "node:fs";
import v8 from "node:v8";

export type SimdVariant = "simd" | "relaxed";

export interface KernelModule {
  module: WebAssembly.Module;
  variant: SimdVariant;
}

function bytesOf(variant: SimdVariant): Uint8Array<ArrayBuffer> {
  const url = new URL(`../kernels-${variant}.wasm`, import.meta.url);
  try {
    return new Uint8Array(readFileSync(url));
  } catch (e) {
    throw new Error(`kernel module ${url.pathname} is missing: run \`npm run build\` (${(e as Error).message})`);
  }
}

export function relaxedSimdSupported(): boolean {
  const relaxed = bytesOf("relaxed");
  if (WebAssembly.validate(relaxed)) return true;
  v8.setFlagsFromString("--experimental-wasm-relaxed-simd");
  return WebAssembly.validate(relaxed);
}

const cache = new Map<SimdVariant, WebAssembly.Module>();

export function loadKernelModule(want: SimdVariant | "auto" = "auto"): KernelModule {
  const variant: SimdVariant = want === "auto" ? (relaxedSimdSupported() ? "relaxed" : "simd") : want;
  if (variant === "relaxed" && !relaxedSimdSupported()) throw new Error("this JavaScript engine has no relaxed SIMD; use --simd simd");
  let module = cache.get(variant);
  if (!module) {
    module = new WebAssembly.Module(bytesOf(variant));
    cache.set(variant, module);
  }
  return { module, variant };
}
