// A Hugging Face checkpoint converted to GGUF as llama.cpp's convert_hf_to_gguf.py writes it for the
// architectures in arch.ts: tensors in the converter's order (shards by file name, each shard's tensors
// by name, a layer's experts merged into one 3-D tensor where its last expert tensor comes), llama.cpp's
// names, q/k rows permuted for llama's interleaved rotary pairs, the converter's choice of type per tensor
// (norms, biases and routers F32; Q8_0 falling back to F16 for rows that are not whole blocks), its
// metadata keys in its order, and its layout (gguf-writer.ts). Tensors are streamed a chunk of rows at a
// time, so a model larger than memory converts.
import { readdirSync, readSync, renameSync, rmSync } from "node:fs";
import path from "node:path";
import { tensorName, type ArchSpec, type TensorNames } from "./arch.js";
import { readModelConfig } from "./config.js";
import { encodeValues, f16Value, GGML_TYPE_ID, rowBytes, type EncodedType } from "./ggml-encode.js";
import { isGgufPath } from "./gguf-model.js";
import { GGUF_TYPE, GgufStreamWriter, type GgufTensorEntry } from "./gguf-writer.js";
import { addVocabMetadata, type Metadata } from "./gguf-vocab.js";
import { SafetensorsFile, type TensorInfo } from "./safetensors.js";
import { readJson } from "./tokenizer.js";
import { planTensors as loaderPlan } from "./weights.js";

export const OUT_TYPES = ["auto", "f32", "f16", "bf16", "q8_0"] as const;
export type OutType = (typeof OUT_TYPES)[number];

const OUT: Record<Exclude<OutType, "auto">, { type: EncodedType; fileType: number }> = {
  // gguf-py LlamaFileType: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7, MOSTLY_BF16 32
  f32: { type: "F32", fileType: 0 },
  f16: { type: "F16", fileType: 1 },
  q8_0: { type: "Q8_0", fileType: 7 },
  bf16: { type: "BF16", fileType: 32 },
};

export interface ConvertOptions {
  /** auto: the checkpoint's own 16-bit type, f16 when its first tensor is F16 and bf16 otherwise (the converter's default). */
  outtype: OutType;
  /** general.name; absent: the converter's title of the directory's name ("brown-moe" → "Brown Moe"). */
  name?: string;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** Notes on what was chosen (a pre-tokenizer by its regex, a tensor kept F16 …). */
  log?: (msg: string) => void;
}

export interface ConvertSummary {
  readonly tensors: number;
  readonly bytes: number;
  readonly types: Record<string, number>;
}

interface PlannedTensor {
  entry: GgufTensorEntry;
  out: EncodedType;
  /** One source, or a layer's experts in order (merged along a new outer dimension). */
  sources: TensorInfo[];
  /** Rows of each source and their length (the last Hugging Face dimension). */
  rows: number;
  cols: number;
  /** q/k: heads whose rows are interleaved (rotate-half → pairs). */
  permuteHeads?: number;
}

/** HF tensors that the converter drops without a word. */
const DROPPED = [".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq"];
const BIASED: ReadonlySet<keyof TensorNames> = new Set(["q", "k", "v", "o"]);

interface Matcher {
  key: keyof TensorNames;
  bias: boolean;
  re: RegExp;
  layered: boolean;
  expert: boolean;
}

function matchers(arch: ArchSpec): Matcher[] {
  const out: Matcher[] = [];
  for (const [key, template] of Object.entries(arch.tensors) as Array<[keyof TensorNames, string | undefined]>) {
    if (!template) continue;
    const variants = BIASED.has(key) ? [false, true] : [false];
    for (const bias of variants) {
      const t = bias ? template.replace(/\.weight$/, ".bias") : template;
      const re = new RegExp(`^${t.replace(/[.]/g, "\\.").replace("{l}", "(\\d+)").replace("{e}", "(\\d+)")}$`);
      out.push({ key, bias, re, layered: t.includes("{l}"), expert: t.includes("{e}") });
    }
  }
  return out;
}

/** The safetensors files the converter reads: model*.safetensors in the directory, by name (get_model_part_names). */
function partFiles(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    throw new Error(`${dir}: cannot read the directory (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const parts = names.filter((n) => n.startsWith("model") && n.endsWith(".safetensors")).sort();
  if (parts.length === 0) throw new Error(`${dir}: no model*.safetensors files`);
  return parts;
}

/** Python's str.title() of an all-lowercase word: each run of letters starts upper case. */
function title(w: string): string {
  return w.replace(/\p{L}+/gu, (run) => run[0]!.toUpperCase() + run.slice(1));
}

/** gguf-py Metadata.id_to_title of the directory's name (the converter's general.name without a model card). */
export function defaultModelName(dir: string): string {
  const id = path.basename(path.resolve(dir));
  return id.trim().replace(/-/g, " ").split(/\s+/).filter(Boolean)
    .map((w) => (w === w.toLowerCase() && w !== w.toUpperCase() && !/^(v\d+(?:\.\d+)*|\d.*)$/.test(w) ? title(w) : w)).join(" ");
}

/** Python's f"{x:.{digits}f}": the exact binary value rounded half to even (JS toFixed rounds exact ties up). */
function pyFixed(x: number, digits: number): string {
  const s = x.toFixed(digits);
  const exact = x.toFixed(Math.min(100, digits + 30));
  const tail = exact.slice(exact.indexOf(".") + 1 + digits);
  if (!/^50*$/.test(tail)) return s;
  const down = (Math.trunc(x * 10 ** digits) / 10 ** digits).toFixed(digits);
  return Number(down.replace(".", "").slice(-1)) % 2 === 0 ? down : s;
}

/** gguf-py utility.size_label: "8x4.5M" for 8 experts and 4.5 M parameters per expert path. */
export function sizeLabel(total: number, shared: number, expert: number, experts: number): string {
  const rounded = (n: number): string => {
    const [scale, suffix] = n > 1e12 ? [1e-12, "T"] : n > 1e9 ? [1e-9, "B"] : n > 1e6 ? [1e-6, "M"] : [1e-3, "K"];
    const v = n * scale;
    const r = Math.round(v) === v + 0.5 && Math.round(v) % 2 === 1 ? Math.round(v) - 1 : Math.round(v); // Python's round(): half to even
    const fix = Math.max(2 - String(r).replace(/^0+/, "").length, 0);
    return `${pyFixed(v, fix)}${suffix}`;
  };
  return experts > 0 ? `${experts}x${rounded(shared + expert)}` : rounded(total);
}

export function convertToGguf(dir: string, out: string, opts: ConvertOptions): ConvertSummary {
  // a careless `convert DIR DIR/model.safetensors` would replace the checkpoint it reads; distmoe tells a GGUF model by its name
  if (!isGgufPath(out)) throw new Error(`${out}: the GGUF file to write must be named *.gguf (--model tells a GGUF file by that), not over another file`);
  const log = opts.log ?? (() => {});
  const configJson = readJson(path.join(dir, "config.json"));
  const cfg = readModelConfig(dir);
  const arch = cfg.arch, spec = arch.gguf;
  if (!spec) throw new Error(`${dir}: ${arch.name} has no GGUF layout here`);
  if (cfg.sparseLayers.includes(false)) throw new Error(`${dir}: layers with a dense MLP (mlp_only_layers, decoder_sparse_step) have no tensors in llama.cpp's ${spec.arch}`);
  if (cfg.clipQkv !== null) throw new Error(`${dir}: clip_qkv is not written by llama.cpp's converter; the GGUF file would compute something else`);
  if (spec.kvHeadsAreHeads && cfg.kvHeads !== cfg.heads) throw new Error(`${dir}: ${cfg.kvHeads} key/value heads for ${cfg.heads} query heads: llama.cpp's ${spec.arch} sizes the k norm by the hidden size, so it has no grouped-query attention`);
  const fixedNorm = spec.fixedConfig?.norm_topk_prob;
  if (typeof fixedNorm === "boolean" && fixedNorm !== cfg.normTopK) throw new Error(`${dir}: norm_topk_prob is ${cfg.normTopK}, but llama.cpp's ${spec.arch} always ${fixedNorm ? "renormalises" : "leaves"} the top-k weights${fixedNorm ? "" : " as they are"}; the GGUF file would compute something else`);
  const files = partFiles(dir).map((f) => SafetensorsFile.open(path.join(dir, f)));
  try {
    const firstDtype = files[0]!.tensors.get([...files[0]!.tensors.keys()].sort()[0] ?? "")?.dtype;
    const { type: wanted, fileType } = OUT[opts.outtype === "auto" ? (firstDtype === "F16" ? "f16" : "bf16") : opts.outtype];
    // the tensors and shapes the engine's loader expects of this config: anything else is not this model
    const hasHead = files.some((f) => f.tensors.has(arch.tensors.lmHead));
    const expected = new Map(loaderPlan(cfg, !hasHead).specs.map((t) => [t.name, t.shape] as const));
    const plan = planTensors(dir, files, arch, cfg.experts, cfg.heads, cfg.kvHeads, wanted, expected, log);

    // gguf-py GGUFWriter.get_total_parameter_count over the tensors as written
    let total = 0, shared = 0, expert = 0, expertSum = 0, expertTensors = 0;
    for (const t of plan) {
      const size = t.entry.dims.reduce((a, b) => a * b, 1);
      total += size;
      if (t.entry.name.includes("_exps.") && t.entry.dims.length >= 3) {
        const count = t.entry.dims[t.entry.dims.length - 1]!;
        expert += size / count;
        expertSum += count;
        expertTensors++;
      } else shared += size;
    }
    const meta: Metadata = new Map();
    const u32 = (key: string, v: number) => meta.set(key, [GGUF_TYPE.u32, v]);
    const f32 = (key: string, v: number) => meta.set(key, [GGUF_TYPE.f32, v]);
    const a = spec.arch;
    meta.set("general.architecture", [GGUF_TYPE.string, a]);
    meta.set("general.type", [GGUF_TYPE.string, "model"]);
    meta.set("general.name", [GGUF_TYPE.string, opts.name ?? defaultModelName(dir)]);
    meta.set("general.size_label", [GGUF_TYPE.string, sizeLabel(total, shared, expert, expertTensors ? Math.floor(expertSum / expertTensors) : 0)]);
    // TextModel.set_gguf_parameters
    u32(`${a}.block_count`, cfg.layers);
    const ctx = configJson.max_position_embeddings;
    if (typeof ctx === "number") u32(`${a}.context_length`, ctx);
    u32(`${a}.embedding_length`, cfg.hidden);
    if (typeof configJson.intermediate_size === "number") u32(`${a}.feed_forward_length`, configJson.intermediate_size);
    u32(`${a}.attention.head_count`, cfg.heads);
    if (typeof configJson.num_key_value_heads === "number") u32(`${a}.attention.head_count_kv`, cfg.kvHeads);
    if (typeof configJson.rope_theta === "number") f32(`${a}.rope.freq_base`, configJson.rope_theta);
    if (typeof configJson.rms_norm_eps === "number") f32(`${a}.attention.layer_norm_rms_epsilon`, configJson.rms_norm_eps);
    u32(`${a}.expert_count`, cfg.experts);
    u32(`${a}.expert_used_count`, cfg.topK);
    if (typeof configJson.head_dim === "number") {
      u32(`${a}.attention.key_length`, cfg.headDim);
      u32(`${a}.attention.value_length`, cfg.headDim);
    }
    u32("general.file_type", fileType);
    // the model classes' own parameters
    if (a === "llama") {
      u32(`${a}.vocab_size`, cfg.vocabSize);
      u32(`${a}.rope.dimension_count`, cfg.headDim);
    }
    if (typeof configJson.moe_intermediate_size === "number") u32(`${a}.expert_feed_forward_length`, configJson.moe_intermediate_size);
    if (typeof configJson.shared_expert_intermediate_size === "number") u32(`${a}.expert_shared_feed_forward_length`, configJson.shared_expert_intermediate_size);
    if (spec.writesRmsEps !== undefined) f32(`${a}.attention.layer_norm_rms_epsilon`, spec.writesRmsEps);
    addVocabMetadata(meta, dir, typeof configJson.vocab_size === "number" ? configJson.vocab_size : undefined, a === "llama", log);
    u32("general.quantization_version", 2);

    return writeTensors(out, meta, plan, opts.onProgress);
  } finally {
    for (const f of files) f.close();
  }
}

function planTensors(dir: string, files: SafetensorsFile[], arch: ArchSpec, experts: number, heads: number, kvHeads: number, wanted: EncodedType, expected: Map<string, readonly number[]>, log: (msg: string) => void): PlannedTensor[] {
  const spec = arch.gguf!;
  const ms = matchers(arch);
  const seen = new Set<string>();
  const pending = new Map<number, Map<string, TensorInfo>>();
  const plan: PlannedTensor[] = [];

  const add = (key: keyof TensorNames, ggufName: string, sources: TensorInfo[], merged: boolean, permuteHeads?: number) => {
    const first = sources[0]!;
    for (const s of sources) {
      if (!["F32", "F16", "BF16"].includes(s.dtype)) throw new Error(`${s.file.path}: tensor ${s.name} is ${s.dtype}; only F32, F16 and BF16 checkpoints convert`);
      if (s.dtype !== first.dtype || s.shape.join() !== first.shape.join()) throw new Error(`${s.file.path}: expert tensor ${s.name} is ${s.dtype} [${s.shape.join(", ")}], unlike ${first.name} (${first.dtype} [${first.shape.join(", ")}])`);
    }
    const hfShape = merged ? [sources.length, ...first.shape] : [...first.shape];
    // the February 2025 converter squeezes size-1 dimensions away (a [1, hidden] shared-expert gate is written 1-D)
    const squeezed = hfShape.filter((d) => d !== 1);
    const dims = (squeezed.length ? squeezed : [1]).reverse();
    const cols = first.shape.length ? first.shape[first.shape.length - 1]! : 1;
    const rows = first.shape.slice(0, -1).reduce((p, d) => p * d, 1);
    // F32: vectors, norms, biases, and the routers (ffn_gate_inp, ffn_gate_inp_shexp), as the converter keeps them
    const matrix = dims.length > 1 && !ggufName.endsWith("_norm.weight") && ggufName.endsWith(".weight") && key !== "router" && key !== "sharedExpertGate";
    let out: EncodedType = matrix ? wanted : "F32";
    if (out === "Q8_0" && dims[0]! % 32 !== 0) {
      out = "F16";
      log(`${ggufName}: rows of ${dims[0]} are not whole Q8_0 blocks of 32; written F16 (as the converter does)`);
    }
    const bytes = sources.length * rows * rowBytes(out, cols);
    plan.push({ entry: { name: ggufName, dims, type: GGML_TYPE_ID[out], bytes }, out, sources, rows, cols, permuteHeads });
  };

  for (const file of files) {
    for (const name of [...file.tensors.keys()].sort()) {
      if (seen.has(name)) throw new Error(`${file.path}: tensor ${name} is also in another shard`);
      seen.add(name);
      const info = file.tensors.get(name)!;
      if (DROPPED.some((d) => name.endsWith(d))) continue;
      const shape = expected.get(name);
      if (!shape) throw new Error(`${file.path}: tensor ${name} is not part of this ${arch.name} configuration (config.json and the weights disagree)`);
      if (shape.join() !== info.shape.join()) throw new Error(`${file.path}: tensor ${name} has shape [${info.shape.join(", ")}]; config.json implies [${shape.join(", ")}]`);
      expected.delete(name);
      let m: Matcher | undefined, match: RegExpExecArray | null = null;
      for (const c of ms) if ((match = c.re.exec(name))) { m = c; break; }
      if (!m || !match || !spec.tensors[m.key]) throw new Error(`${file.path}: tensor ${name} has no name in llama.cpp's ${spec.arch} (convert_hf_to_gguf.py cannot map it either)`);
      const layer = m.layered ? Number(match[1]) : 0;
      if (m.expert) {
        const got = pending.get(layer) ?? new Map<string, TensorInfo>();
        pending.set(layer, got);
        got.set(name, info);
        if (got.size < experts * 3) continue;
        for (const key of spec.expertOrder) {
          const slices = Array.from({ length: experts }, (_, x) => {
            const n = tensorName(arch.tensors[key]!, layer, x);
            const t = got.get(n);
            if (!t) throw new Error(`${dir}: layer ${layer} lacks ${n}`);
            return t;
          });
          add(key, tensorName(spec.tensors[key]!, layer), slices, true);
        }
        pending.delete(layer);
        continue;
      }
      let ggufName = tensorName(spec.tensors[m.key]!, layer);
      if (m.bias) ggufName = ggufName.replace(/\.weight$/, ".bias");
      const permute = spec.permutesQK && (m.key === "q" || m.key === "k") ? (m.key === "q" ? heads : kvHeads) : undefined;
      add(m.key, ggufName, [info], false, permute);
    }
  }
  for (const [layer, got] of pending) throw new Error(`${dir}: layer ${layer} has ${got.size} of its ${experts * 3} expert tensors`);
  const missing = [...expected.keys()];
  if (missing.length) throw new Error(`${dir}: ${missing.length} tensor(s) that config.json implies are missing, such as ${missing[0]}`);
  return plan;
}

/** Rows [start, start + count) of a safetensors tensor with `cols` values per row, as float32. */
function readRows(t: TensorInfo, start: number, count: number, cols: number): Float32Array {
  const size = t.dtype === "F32" ? 4 : 2;
  const bytes = new Uint8Array(count * cols * size);
  let done = 0;
  while (done < bytes.length) {
    const n = readSync(t.file.fd, bytes, done, bytes.length - done, t.offset + start * cols * size + done);
    if (n === 0) throw new Error(`${t.file.path}: tensor ${t.name}: short read`);
    done += n;
  }
  if (t.dtype === "F32") return new Float32Array(bytes.buffer);
  const u16 = new Uint16Array(bytes.buffer);
  const out = new Float32Array(u16.length);
  if (t.dtype === "BF16") {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < u16.length; i++) bits[i] = u16[i]! << 16;
  } else for (let i = 0; i < u16.length; i++) out[i] = f16Value(u16[i]!);
  return out;
}

/** LlamaModel.permute: each head's rows (first half, second half) become interleaved pairs. */
function permuteRows(v: Float32Array, heads: number, rows: number, cols: number): Float32Array {
  const out = new Float32Array(v.length);
  const headRows = rows / heads, half = headRows / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const dst = h * headRows + 2 * i + j, src = h * headRows + j * half + i;
        out.set(v.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return out;
}

const CHUNK_VALUES = 1 << 22;

function writeTensors(out: string, meta: Metadata, plan: PlannedTensor[], onProgress?: (done: number, total: number) => void): ConvertSummary {
  const total = plan.reduce((s, t) => s + t.entry.bytes, 0);
  // written beside the destination and renamed when whole: a failed conversion leaves no partial file
  const partial = `${out}.partial`;
  const w = new GgufStreamWriter(partial, [...meta.entries()], plan.map((t) => t.entry));
  const types: Record<string, number> = {};
  let done = 0;
  let whole = false;
  try {
    for (const t of plan) {
      types[t.out] = (types[t.out] ?? 0) + 1;
      for (const src of t.sources) {
        const step = t.permuteHeads !== undefined ? t.rows : Math.max(1, Math.floor(CHUNK_VALUES / t.cols));
        for (let r = 0; r < t.rows; r += step) {
          const n = Math.min(step, t.rows - r);
          let values = readRows(src, r, n, t.cols);
          if (t.permuteHeads !== undefined) values = permuteRows(values, t.permuteHeads, t.rows, t.cols);
          const bytes = new Uint8Array(n * rowBytes(t.out, t.cols));
          encodeValues(values, t.out, bytes);
          w.write(bytes);
          done += bytes.length;
          onProgress?.(done, total);
        }
      }
    }
    w.finish();
    renameSync(partial, out);
    whole = true;
  } finally {
    w.close();
    if (!whole) rmSync(partial, { force: true });
  }
  return { tensors: plan.length, bytes: total, types };
}
