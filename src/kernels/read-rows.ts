// Reading a weight's rows from its file, in the order the weight wants them (GGUF's q/k rows are permuted).
import { readSync } from "node:fs";
import type { WeightSource } from "./backend.js";

/** Rows r0 … r0+count of a weight from its file (each `rowBytes` long), in the source's row order, into dst. */
export function readRows(src: WeightSource, rowBytes: number, r0: number, count: number, dst: Uint8Array): void {
  const order = src.rowOrder;
  if (!order) return readExact(src, dst, src.offset + r0 * rowBytes);
  for (let r = 0; r < count; ) {
    // a run of rows consecutive in the file is one read
    let run = 1;
    while (r + run < count && order[r0 + r + run] === order[r0 + r]! + run) run++;
    readExact(src, dst.subarray(r * rowBytes, (r + run) * rowBytes), src.offset + order[r0 + r]! * rowBytes);
    r += run;
  }
}

function readExact(src: WeightSource, dst: Uint8Array, position: number): void {
  if (src.data) {
    if (position + dst.length > src.data.length) throw new Error(`${src.file}: unexpected end of data at byte ${src.data.length} (tensor data truncated)`);
    dst.set(src.data.subarray(position, position + dst.length));
    return;
  }
  let done = 0;
  while (done < dst.length) {
    const len = Math.min(dst.length - done, 1 << 30);
    const got = readSync(src.fd, dst, done, len, position + done);
    if (got === 0) throw new Error(`${src.file}: unexpected end of file at byte ${position + done} (tensor data truncated)`);
    done += got;
  }
}
