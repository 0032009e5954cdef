// The dashboard's page (web/dashboard, bundled by scripts/build-web.mjs), served by the base station at /
// with its script under /dashboard/. The page holds no data or secret: it asks its viewer for a key and
// reads /dashboard/events and the /admin controls with it. Its content security policy lets it load and
// reach nothing but this base station (no CDN: the page works offline from the BS alone).
import type { Hono } from "hono";
import type { RequestIdVariables } from "hono/request-id";
import { BUILT_FILE_HEADERS, serveBuiltFiles, type BuiltFiles } from "../built-files.js";

const HEADERS = {
  "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  ...BUILT_FILE_HEADERS,
} as const;

const built = (file: string) => new URL(file, import.meta.url);

/** Path → the built file it serves (relative to this module in dist/server/dashboard) and its type. */
const FILES: BuiltFiles = {
  "/": { file: built("../../web/dashboard/index.html"), type: "text/html; charset=utf-8" },
  "/dashboard/": { file: built("../../web/dashboard/index.html"), type: "text/html; charset=utf-8" },
  "/dashboard/dashboard.js": { file: built("../../web/dashboard/dashboard.js"), type: "text/javascript; charset=utf-8" },
  "/dashboard/dashboard.js.map": { file: built("../../web/dashboard/dashboard.js.map"), type: "application/json" },
};

export function mountDashboardPage(app: Hono<{ Variables: RequestIdVariables }>): void {
  serveBuiltFiles(app, FILES, HEADERS, "the dashboard page");
}
