// The browser device's page (web/device, bundled by scripts/build-web.mjs) and the kernels it computes
// with, served by the base station at /device. Every answer carries the headers that make the page
// cross-origin isolated (COOP same-origin, COEP require-corp), which its compute threads' shared memory
// needs, and a content security policy that lets it load nothing (scripts, its workers) from anywhere but
// this base station.
import type { Hono } from "hono";
import type { RequestIdVariables } from "hono/request-id";
import { BUILT_FILE_HEADERS, serveBuiltFiles, type BuiltFiles } from "./built-files.js";

const PAGE_HEADERS = {
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-embedder-policy": "require-corp",
  "cross-origin-resource-policy": "same-origin",
  "content-security-policy": "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  ...BUILT_FILE_HEADERS,
} as const;

const built = (file: string) => new URL(file, import.meta.url);

/** Path → the built file it serves (relative to this module in dist/server) and its type. */
const FILES: BuiltFiles = {
  "/device": { file: built("../web/device/index.html"), type: "text/html; charset=utf-8" },
  "/device/device.js": { file: built("../web/device/device.js"), type: "text/javascript; charset=utf-8" },
  "/device/device.js.map": { file: built("../web/device/device.js.map"), type: "application/json" },
  "/device/kernel-worker.js": { file: built("../web/device/kernel-worker.js"), type: "text/javascript; charset=utf-8" },
  "/device/kernel-worker.js.map": { file: built("../web/device/kernel-worker.js.map"), type: "application/json" },
  "/device/kernels-simd.wasm": { file: built("../kernels/kernels-simd.wasm"), type: "application/wasm" },
  "/device/kernels-relaxed.wasm": { file: built("../kernels/kernels-relaxed.wasm"), type: "application/wasm" },
};

/** The headers that make the page cross-origin isolated. */
const ISOLATION = ["cross-origin-opener-policy", "cross-origin-embedder-policy"];

/** `isolated` false: without COOP/COEP, as a proxy that drops them would serve the page (it then computes on one thread). */
export function mountDevicePage(app: Hono<{ Variables: RequestIdVariables }>, isolated = true): void {
  const headers = isolated ? PAGE_HEADERS : Object.fromEntries(Object.entries(PAGE_HEADERS).filter(([h]) => !ISOLATION.includes(h)));
  serveBuiltFiles(app, FILES, headers, "the device page");
}
