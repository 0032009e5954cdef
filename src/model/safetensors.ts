// Reader for the safetensors format: 8-byte little-endian header length, a JSON header naming each
// tensor's dtype, shape and byte range, then the raw data. The header is checked against the file
// before anything is read, and tensors are read by offset, so a process reads only what it needs.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";

export const DTYPE_BYTES: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

export interface TensorInfo {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  /** Absolute byte offset in the file. */
  readonly offset: number;
  readonly bytes: number;
  readonly file: SafetensorsFile;
}

const MAX_HEADER_BYTES = 100 << 20;

export class SafetensorsFile {
  readonly tensors = new Map<string, TensorInfo>();
  readonly metadata: Record<string, string> = {};
  readonly size: number;
  private fdOrNull: number | null;

  private constructor(readonly path: string, fd: number) {
    this.fdOrNull = fd;
    this.size = fstatSync(fd).size;
  }

  get fd(): number {
    if (this.fdOrNull === null) throw new Error(`${this.path}: file already closed`);
    return this.fdOrNull;
  }

  static open(path: string): SafetensorsFile {
    const fd = openSync(path, "r");
    const f = new SafetensorsFile(path, fd);
    try {
      f.parseHeader();
    } catch (e) {
      f.close();
      throw e;
    }
    return f;
  }

  private fail(msg: string): never {
    throw new Error(`${this.path}: ${msg}`);
  }

  private parseHeader(): void {
    if (this.size < 8) this.fail(`not a safetensors file: ${this.size} bytes, shorter than the 8-byte header length`);
    const lenBuf = Buffer.alloc(8);
    readSync(this.fd, lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen > MAX_HEADER_BYTES || 8 + headerLen > this.size) {
      this.fail(`header length ${headerLen} exceeds the file (${this.size} bytes): truncated or not a safetensors file`);
    }
    const headerBuf = Buffer.alloc(headerLen);
    readSync(this.fd, headerBuf, 0, headerLen, 8);
    let header: unknown;
    try {
      header = JSON.parse(headerBuf.toString("utf8"));
    } catch (e) {
      this.fail(`header is not valid JSON (${(e as Error).message})`);
    }
    if (typeof header !== "object" || header === null || Array.isArray(header)) this.fail("header is not a JSON object");
    const dataStart = 8 + headerLen;
    const dataBytes = this.size - dataStart;
    const ranges: Array<[number, number, string]> = [];
    for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
      if (name === "__metadata__") {
        if (raw && typeof raw === "object") Object.assign(this.metadata, raw);
        continue;
      }
      const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (!e || typeof e !== "object") this.fail(`tensor ${name}: entry is not an object`);
      if (typeof e.dtype !== "string" || !(e.dtype in DTYPE_BYTES)) this.fail(`tensor ${name}: unknown dtype ${JSON.stringify(e.dtype)}`);
      if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) this.fail(`tensor ${name}: shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`);
      const off = e.data_offsets;
      if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0) || off[0] > off[1]) {
        this.fail(`tensor ${name}: data_offsets ${JSON.stringify(off)} is not a [begin, end] byte range`);
      }
      const [begin, end] = off as [number, number];
      const shape = e.shape as number[];
      const want = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[e.dtype]!;
      if (end - begin !== want) this.fail(`tensor ${name}: shape ${JSON.stringify(shape)} of ${e.dtype} needs ${want} bytes but data_offsets span ${end - begin}`);
      if (end > dataBytes) this.fail(`tensor ${name}: data ends at byte ${end} of the data section, which holds only ${dataBytes} bytes (file truncated?)`);
      ranges.push([begin, end, name]);
      this.tensors.set(name, { name, dtype: e.dtype, shape, offset: dataStart + begin, bytes: want, file: this });
    }
    ranges.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < ranges.length; i++) {
      if (ranges[i]![0] < ranges[i - 1]![1]) this.fail(`tensors ${ranges[i - 1]![2]} and ${ranges[i]![2]} overlap`);
    }
  }

  /** The raw bytes of a small tensor (metadata-sized reads; weights go straight to the backend). */
  read(name: string): Uint8Array {
    const t = this.tensors.get(name);
    if (!t) this.fail(`no tensor named ${name}`);
    const out = new Uint8Array(t.bytes);
    const got = readSync(this.fd, out, 0, t.bytes, t.offset);
    if (got !== t.bytes) this.fail(`tensor ${name}: short read`);
    return out;
  }

  readF32(name: string): Float32Array {
    const t = this.tensors.get(name);
    if (t?.dtype !== "F32") this.fail(`tensor ${name} is ${t?.dtype ?? "missing"}, not F32`);
    return new Float32Array(this.read(name).buffer);
  }

  readI32(name: string): Int32Array {
    const t = this.tensors.get(name);
    if (t?.dtype !== "I32") this.fail(`tensor ${name} is ${t?.dtype ?? "missing"}, not I32`);
    return new Int32Array(this.read(name).buffer);
  }

  close(): void {
    if (this.fdOrNull !== null) closeSync(this.fdOrNull);
    this.fdOrNull = null;
  }
}

export interface TensorEntry {
  name: string;
  dtype: "F32" | "BF16" | "F16" | "I32";
  shape: readonly number[];
}

/**
 * The header of a safetensors file holding `tensors` in order, their data following it back to back;
 * writing the header, then each tensor's bytes, makes the file without holding it all in memory.
 */
export function safetensorsHeader(tensors: readonly TensorEntry[], metadata: Record<string, string> = {}): Buffer {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype]!;
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((8 + json.length) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([len, Buffer.from(json)]);
}
