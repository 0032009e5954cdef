// Reading a model's small files (config, tokenizer) whole: only regular files. A symlink to /dev/zero or a
// named pipe in a model directory would otherwise be read forever (or block), not refused.
import { readFileSync, statSync } from "node:fs";

/** The whole of `file`, which must be a regular file (symlinks followed); errors keep fs's code (ENOENT …). */
export function readRegularFile(file: string): Buffer {
  if (!statSync(file).isFile()) throw new Error("not a regular file");
  return readFileSync(file);
}
