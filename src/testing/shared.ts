// Where tests find ../shared (the real model, golden outputs, corpus), and the reason to skip when absent.
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (this file is dist/testing/shared.js once built). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

export const SHARED_DIR = process.env.DISTMOE_SHARED ?? path.resolve(REPO_ROOT, "../shared");

/** The path of something in ../shared, or a skip reason if it is not there. */
export function sharedPath(rel: string): { path: string; skip: false } | { path: string; skip: string } {
  const p = path.join(SHARED_DIR, rel);
  return existsSync(p) ? { path: p, skip: false } : { path: p, skip: `${p} is not present (tests that need ../shared run only where it exists)` };
}
