// The kernels a test runs on: both where the native one loads (the same test, once per backend), the
// wasm one alone elsewhere, with the reason the native one is skipped.
import type { BackendChoice } from "../kernels/select-backend.js";
import { loadGgml } from "../kernels/native/ggml.js";

export interface TestBackend {
  readonly backend: Exclude<BackendChoice, "auto">;
  /** false, or why this backend cannot run here */
  readonly skip: string | false;
}

export function nativeSkip(): string | false {
  try {
    loadGgml();
    return false;
  } catch (e) {
    return `native kernels unavailable: ${(e as Error).message}`;
  }
}

export function testBackends(): TestBackend[] {
  return [{ backend: "wasm", skip: false }, { backend: "native", skip: nativeSkip() }];
}
