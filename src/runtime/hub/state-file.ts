// The files a base station keeps between runs (join tokens, known devices): read only when each is a
// regular file of bounded size (a symlink to /dev/zero must not hang the start), written whole,
// owner-only, and renamed into place so a crash never leaves half a file.
import { readFileSync, renameSync, statSync, writeFileSync } from "node:fs";

/** The largest state file read: far beyond what any cluster writes. */
const MAX_STATE_BYTES = 16 << 20;

/** The text of `file`, or null when there is none; `what` names it in errors. */
export function readStateFile(file: string, what: string): string | null {
  try {
    const stat = statSync(file);
    if (!stat.isFile()) throw new Error("not a regular file");
    if (stat.size > MAX_STATE_BYTES) throw new Error(`${stat.size} bytes, more than the ${MAX_STATE_BYTES} a state file may hold`);
    return readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new Error(`cannot read ${what} in ${file}: ${(e as Error).message}`);
  }
}

/** Writes `text` to `file` whole (owner-only), replacing what was there. */
export function writeStateFile(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, file);
}

/** JSON.parse, with undefined for text that is not JSON (the schema check then says what is wrong). */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
