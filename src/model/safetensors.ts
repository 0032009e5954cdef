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

/** What a header says of a tensor: where its bytes lie in the file, and how to read them. */
export type TensorLayout = Omit<TensorInfo, "file">;

/** A value from a header as an error message shows it: JSON-escaped, cut short, and never throwing. */
function show(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = "(a value nested too deep to show)"; // JSON.stringify overflows the stack
  }
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

/** A tensor name as an error message shows it: control characters escaped, cut short. */
const label = (name: string) => show(name).slice(1, -1);

/**
 * The length of the head of a safetensors file, the 8-byte header length and the header: what to read
 * before parseSafetensorsHeader. `prefix` holds the file's first 8 bytes (fewer if it is shorter).
 * Throws an Error naming `file` when the length cannot be right for a file of `fileSize` bytes.
 */
export function safetensorsHeadLength(file: string, prefix: Uint8Array, fileSize: number): number {
  if (fileSize < 8 || prefix.length < 8) throw new Error(`${file}: not a safetensors file: ${fileSize} bytes, shorter than the 8-byte header length`);
  const headerLen = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (headerLen > BigInt(MAX_HEADER_BYTES) || 8n + headerLen > BigInt(fileSize)) {
    throw new Error(`${file}: header length ${headerLen} exceeds the file (${fileSize} bytes): truncated or not a safetensors file`);
  }
  return 8 + Number(headerLen);
}

/**
 * The tensors and metadata that the head of a safetensors file (see safetensorsHeadLength) describes,
 * each entry checked against a file of `fileSize` bytes: a known dtype, a shape that fills its byte
 * range, data within the file, no overlaps. Throws an Error naming `file` and the problem.
 */
export function parseSafetensorsHeader(file: string, head: Uint8Array, fileSize: number): { tensors: TensorLayout[]; metadata: Record<string, string> } {
  const fail = (msg: string): never => {
    throw new Error(`${file}: ${msg}`);
  };
  const dataStart = safetensorsHeadLength(file, head, fileSize);
  if (head.length < dataStart) fail(`header cut short: ${head.length} of ${dataStart} bytes`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(head.subarray(8, dataStart)));
  } catch (e) {
    fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) fail("header is not a JSON object");
  const dataBytes = fileSize - dataStart;
  const tensors: TensorLayout[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (!raw || typeof raw !== "object" || Array.isArray(raw) || !Object.values(raw).every((v) => typeof v === "string")) fail(`__metadata__ ${show(raw)} is not a map of strings`);
      metadata = Object.fromEntries(Object.entries(raw as Record<string, string>)); // own keys, "__proto__" too, never a prototype
      continue;
    }
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!e || typeof e !== "object") fail(`tensor ${label(name)}: entry is not an object`);
    if (typeof e.dtype !== "string" || !Object.hasOwn(DTYPE_BYTES, e.dtype)) fail(`tensor ${label(name)}: unknown dtype ${show(e.dtype)}`);
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(`tensor ${label(name)}: shape ${show(e.shape)} is not a list of non-negative integers`);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0) || off[0] > off[1]) {
      fail(`tensor ${label(name)}: data_offsets ${show(off)} is not a [begin, end] byte range`);
    }
    const [begin, end] = off as [number, number];
    const shape = e.shape as number[];
    const dtype = e.dtype as string;
    const want = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype]!;
    if (end - begin !== want) fail(`tensor ${label(name)}: shape ${show(shape)} of ${dtype} needs ${want} bytes but data_offsets span ${end - begin}`);
    if (end > dataBytes) fail(`tensor ${label(name)}: data ends at byte ${end} of the data section, which holds only ${dataBytes} bytes (file truncated?)`);
    tensors.push({ name, dtype, shape, offset: dataStart + begin, bytes: want });
  }
  const byOffset = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byOffset.length; i++) {
    if (byOffset[i]!.offset < byOffset[i - 1]!.offset + byOffset[i - 1]!.bytes) fail(`tensors ${label(byOffset[i - 1]!.name)} and ${label(byOffset[i]!.name)} overlap`);
  }
  return { tensors, metadata };
}

export class SafetensorsFile {
  readonly tensors = new Map<string, TensorInfo>();
  readonly metadata: Record<string, string>;
  readonly size: number;
  private fdOrNull: number | null;

  private constructor(readonly path: string, fd: number) {
    this.fdOrNull = fd;
    this.size = fstatSync(fd).size;
    const head = this.readAt(safetensorsHeadLength(path, this.readAt(Math.min(8, this.size), 0), this.size), 0);
    const { tensors, metadata } = parseSafetensorsHeader(path, head, this.size);
    for (const t of tensors) this.tensors.set(t.name, { ...t, file: this });
    this.metadata = metadata;
  }

  get fd(): number {
    if (this.fdOrNull === null) throw new Error(`${this.path}: file already closed`);
    return this.fdOrNull;
  }

  static open(path: string): SafetensorsFile {
    const fd = openSync(path, "r");
    try {
      return new SafetensorsFile(path, fd);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  private fail(msg: string): never {
    throw new Error(`${this.path}: ${msg}`);
  }

  /** Up to `bytes` bytes of the file from `position` (fewer only where the file ends first). */
  private readAt(bytes: number, position: number): Uint8Array {
    const out = new Uint8Array(bytes);
    return out.subarray(0, readSync(this.fd, out, 0, bytes, position));
  }

  /** The raw bytes of a small tensor (metadata-sized reads; weights go straight to the backend). */
  read(name: string): Uint8Array {
    const t = this.tensors.get(name);
    if (!t) this.fail(`no tensor named ${name}`);
    const out = this.readAt(t.bytes, t.offset);
    if (out.length !== t.bytes) this.fail(`tensor ${name}: short read`);
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
  dtype: "F32" | "BF16" | "F16" | "I32" | "U8";
  shape: readonly number[];
}

/**
 * The header of a safetensors file holding `tensors` in order, their data following it back to back;
 * writing the header, then each tensor's bytes, makes the file without holding it all in memory.
 */
export function safetensorsHeader(tensors: readonly TensorEntry[], metadata: Record<string, string> = {}): Buffer {
  const header: Record<string, unknown> = Object.create(null); // a tensor may be named "__proto__"
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype]!;
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = Buffer.from(JSON.stringify(header));
  const padded = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, " ")]); // the data starts 8-aligned
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(padded.length));
  return Buffer.concat([len, padded]);
}
