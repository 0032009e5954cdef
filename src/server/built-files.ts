// Files of the project's own build (a page and its bundle, under dist/) served by the base station:
// each read once, on its first request, and kept; a build that lacks one answers 503 saying so.
import { readFileSync } from "node:fs";
import type { Hono } from "hono";
import type { RequestIdVariables } from "hono/request-id";

/** Headers every built file is served with, beside its page's own policy. */
export const BUILT_FILE_HEADERS = { "x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "cache-control": "no-cache" } as const;

/** A route's file (a URL its module resolved) and its content type. */
export type BuiltFiles = Record<string, { file: URL; type: string }>;

/** Serves `files` with `headers` on every answer; `what` names them in the 503 of a build that lacks one. */
export function serveBuiltFiles(app: Hono<{ Variables: RequestIdVariables }>, files: BuiltFiles, headers: Record<string, string>, what: string): void {
  const cache = new Map<string, Uint8Array<ArrayBuffer>>();
  for (const [route, { file, type }] of Object.entries(files)) {
    app.get(route, (c) => {
      let body = cache.get(route);
      if (!body) {
        try {
          body = new Uint8Array(readFileSync(file));
        } catch {
          const built = file.pathname.slice(file.pathname.lastIndexOf("/dist/") + 1);
          return c.text(`${what} is not built here (${built} is missing): run npm run build`, 503, headers);
        }
        cache.set(route, body);
      }
      return c.body(body, 200, { ...headers, "content-type": type });
    });
  }
}
