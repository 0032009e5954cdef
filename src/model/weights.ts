// Loads a checkpoint's tensors into backend memory, as the table in arch.ts names them. Every tensor
// that will be read is checked (present, a stored type the loader reads, shape the config implies) before any is loaded.
import { WEIGHT_DTYPES, type Backend, type FfnWeightSet, type SourceDType, type WeightDType, type WeightTensor } from "../kernels/backend.js";
import { dequantizeBlocks, f16ToF32, GGML_BLOCK_TYPES, isGgmlBlockType } from "../kernels/ggml-blocks.js";
import { dtypeOfBlocks, kQuantBlocks, layoutBytes } from "../kernels/weight-layout.js";
import { tensorName, type TensorNames } from "./arch.js";
import type { TensorStore } from "./checkpoint.js";
import type { ModelConfig } from "./config.js";

/** An FFN's weights as the loader fills them in (Backend.ffn takes them as they are). */
export type FfnWeights = { -readonly [K in keyof FfnWeightSet]: FfnWeightSet[K] };

export interface LayerWeights {
  attnNorm: WeightTensor;
  q: WeightTensor;
  k: WeightTensor;
  v: WeightTensor;
  o: WeightTensor;
  qBias?: WeightTensor;
  kBias?: WeightTensor;
  vBias?: WeightTensor;
  oBias?: WeightTensor;
  qNorm?: WeightTensor;
  kNorm?: WeightTensor;
  ffnNorm: WeightTensor;
  /** Sparse layers: the gating network and the experts this process holds (null for the others). */
  router?: WeightTensor;
  experts: Array<FfnWeights | null>;
  shared?: FfnWeights;
  sharedGate?: WeightTensor;
  /** Dense layers: the MLP. */
  dense?: FfnWeights;
}

export interface ModelWeights {
  embed: WeightTensor;
  outputNorm: WeightTensor;
  lmHead: WeightTensor;
  layers: LayerWeights[];
}

export interface LoadOptions {
  /** Storage of the weight matrices; vectors, routers and the shared-expert gate stay f32. */
  dtype: WeightDType;
  /**
   * Each matrix stays in the type its file holds it in (a GGUF file's Q4_K, Q6_K, Q8_0 … blocks, F32, BF16)
   * wherever the backend holds that type, as llama.cpp runs the file; `dtype` (or its nearest) for the others.
   */
  keepFileTypes?: boolean;
  /** Which experts this process holds; default all. */
  holdsExpert?: (layer: number, expert: number) => boolean;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** Told once, after loading, how each stored type was kept, e.g. "Q8_0 blocks kept as q8 (96 tensors)". */
  onKept?: (summary: string) => void;
}

/** How a tensor is kept: "vector" and "router" are always f32, "matrix" takes the requested dtype. */
export type TensorRole = "vector" | "router" | "matrix";

export interface TensorSpec {
  readonly name: string;
  readonly shape: readonly number[];
  readonly role: TensorRole;
  readonly expert: boolean;
  /** A layer's experts' matrices of one kind, when the process holds them all: their key and this one's place. */
  readonly stack?: { readonly key: string; readonly index: number };
  /** Only rows of it are read (an embedding that is not also the LM head). */
  readonly lookup?: boolean;
  /** Puts the loaded tensor in its place in the ModelWeights that `planTensors` builds. */
  readonly assign: (w: WeightTensor) => void;
}

export interface TensorPlan {
  readonly specs: TensorSpec[];
  /** The weights, once every spec has been assigned. */
  readonly weights: () => ModelWeights;
}

/**
 * Every tensor a process needs for `cfg`, named by the architecture table, with the shape the config
 * implies. `tiedHead`: the LM head is the embedding (no lm_head tensor).
 */
export function planTensors(cfg: ModelConfig, tiedHead: boolean, holds: (layer: number, expert: number) => boolean = () => true): TensorPlan {
  const specs: TensorSpec[] = [];
  const names: TensorNames = cfg.arch.tensors;
  const H = cfg.hidden, qDim = cfg.heads * cfg.headDim, kvDim = cfg.kvHeads * cfg.headDim;
  const top: Partial<ModelWeights> = {};
  const add = (name: string, shape: number[], role: TensorRole, assign: (w: WeightTensor) => void, expert = false, stack?: TensorSpec["stack"]) =>
    specs.push({ name, shape, role, assign, expert, ...(stack ? { stack } : {}) });

  // untied, the embedding is only looked up by rows
  specs.push({ name: names.embed, shape: [cfg.vocabSize, H], role: "matrix", assign: (w) => (top.embed = w), expert: false, lookup: !tiedHead });
  add(names.outputNorm, [H], "vector", (w) => (top.outputNorm = w));
  if (!tiedHead) add(names.lmHead, [cfg.vocabSize, H], "matrix", (w) => (top.lmHead = w));

  const layers: LayerWeights[] = [];
  const ffn = (l: number, gate: string, up: string, down: string, size: number, set: (f: FfnWeights) => void, e = 0, expert = false, stacked = false) => {
    const f = {} as FfnWeights;
    const stack = (kind: string) => (stacked ? { key: `${l}.${kind}`, index: e } : undefined);
    add(tensorName(gate, l, e), [size, H], "matrix", (w) => (f.gate = w), expert, stack("gate"));
    add(tensorName(up, l, e), [size, H], "matrix", (w) => (f.up = w), expert, stack("up"));
    add(tensorName(down, l, e), [H, size], "matrix", (w) => (f.down = w), expert, stack("down"));
    set(f);
  };
  for (let l = 0; l < cfg.layers; l++) {
    const L = { experts: [] as Array<FfnWeights | null> } as LayerWeights;
    layers.push(L);
    const t = (tmpl: string) => tensorName(tmpl, l);
    const bias = (tmpl: string) => t(tmpl).replace(/weight$/, "bias");
    add(t(names.attnNorm), [H], "vector", (w) => (L.attnNorm = w));
    add(t(names.q), [qDim, H], "matrix", (w) => (L.q = w));
    add(t(names.k), [kvDim, H], "matrix", (w) => (L.k = w));
    add(t(names.v), [kvDim, H], "matrix", (w) => (L.v = w));
    add(t(names.o), [H, qDim], "matrix", (w) => (L.o = w));
    if (cfg.qkvBias) {
      add(bias(names.q), [qDim], "vector", (w) => (L.qBias = w));
      add(bias(names.k), [kvDim], "vector", (w) => (L.kBias = w));
      add(bias(names.v), [kvDim], "vector", (w) => (L.vBias = w));
    }
    if (cfg.oBias) add(bias(names.o), [H], "vector", (w) => (L.oBias = w));
    if (cfg.arch.qkNorm !== "none") {
      const perHead = cfg.arch.qkNorm === "per-head";
      add(t(names.qNorm!), [perHead ? cfg.headDim : qDim], "vector", (w) => (L.qNorm = w));
      add(t(names.kNorm!), [perHead ? cfg.headDim : kvDim], "vector", (w) => (L.kNorm = w));
    }
    add(t(names.ffnNorm), [H], "vector", (w) => (L.ffnNorm = w));
    if (cfg.sparseLayers[l]) {
      add(t(names.router), [cfg.experts, H], "router", (w) => (L.router = w));
      const all = Array.from({ length: cfg.experts }, (_, e) => holds(l, e)).every(Boolean);
      for (let e = 0; e < cfg.experts; e++) {
        L.experts.push(null);
        if (holds(l, e)) ffn(l, names.expertGate, names.expertUp, names.expertDown, cfg.expertFfn, (f) => (L.experts[e] = f), e, true, all);
      }
      if (cfg.sharedExpertFfn > 0) {
        ffn(l, names.sharedGate!, names.sharedUp!, names.sharedDown!, cfg.sharedExpertFfn, (f) => (L.shared = f));
        add(t(names.sharedExpertGate!), [1, H], "router", (w) => (L.sharedGate = w));
      }
    } else {
      ffn(l, names.denseGate!, names.denseUp!, names.denseDown!, cfg.denseFfn, (f) => (L.dense = f));
    }
  }
  return {
    specs,
    weights: () => ({ ...(top as Omit<ModelWeights, "layers">), lmHead: tiedHead ? top.embed! : top.lmHead!, layers }),
  };
}

export function loadWeights(backend: Backend, ck: TensorStore, cfg: ModelConfig, opts: LoadOptions): ModelWeights {
  const tiedHead = cfg.tieEmbeddings && !ck.get(cfg.arch.tensors.lmHead);
  const plan = planTensors(cfg, tiedHead, opts.holdsExpert);
  loadSpecs(backend, ck, cfg, plan.specs, opts);
  return plan.weights();
}

/** Per layer, the experts this process holds (null for the others): what a device loads, and nothing else. */
export type ExpertTable = ReadonlyArray<ReadonlyArray<FfnWeights | null>>;

export function loadExperts(backend: Backend, ck: TensorStore, cfg: ModelConfig, opts: LoadOptions): ExpertTable {
  const plan = planTensors(cfg, true, opts.holdsExpert);
  // each expert in memory of its own: a device frees experts one by one (released, reassigned), and a layer's
  // stack (allocWeights) would hold a freed one's memory until the last of them went; only moeTopK needs stacks
  const own = ({ stack: _, ...spec }: TensorSpec): TensorSpec => spec;
  loadSpecs(backend, ck, cfg, plan.specs.filter((s) => s.expert).map(own), opts);
  return plan.weights().layers.map((l) => l.experts);
}

/** The stored types the loader reads: floats, or ggml's quantized blocks from GGUF. */
export const SOURCE_DTYPES: readonly SourceDType[] = ["F32", "BF16", "F16", ...(Object.keys(GGML_BLOCK_TYPES) as SourceDType[])];

export function isSourceDType(t: unknown): t is SourceDType {
  return SOURCE_DTYPES.includes(t as SourceDType);
}

/** The bytes a [rows, cols] tensor of `dtype` is stored in; null where its rows are not whole blocks. */
export function sourceBytes(dtype: SourceDType, rows: number, cols: number): number | null {
  if (!isGgmlBlockType(dtype)) return rows * cols * (dtype === "F32" ? 4 : 2);
  const { values, bytes } = GGML_BLOCK_TYPES[dtype];
  return cols % values === 0 ? rows * (cols / values) * bytes : null;
}

function loadSpecs(backend: Backend, ck: TensorStore, cfg: ModelConfig, specs: readonly TensorSpec[], opts: LoadOptions): void {
  // Check everything first: a missing or mis-shaped tensor is reported before any byte is loaded.
  const sources = specs.map((p) => {
    const info = ck.get(p.name);
    if (!info) throw new Error(`${ck.dir}: tensor ${p.name} is missing (required by ${cfg.arch.name})`);
    if (!isSourceDType(info.dtype)) throw new Error(`${info.file.path}: tensor ${p.name} has dtype ${info.dtype}; weights must be ${SOURCE_DTYPES.join(", ")}`);
    if (info.shape.length !== p.shape.length || info.shape.some((d, i) => d !== p.shape[i])) {
      throw new Error(`${info.file.path}: tensor ${p.name} has shape [${info.shape.join(", ")}] but config.json implies [${p.shape.join(", ")}]`);
    }
    return info;
  });

  // Non-expert tensors first, so that they share the first arena with the activations.
  const order = specs.map((_, i) => i).sort((a, b) => Number(specs[a]!.expert) - Number(specs[b]!.expert));
  const total = sources.reduce((s, x) => s + x.bytes, 0);
  let done = 0;
  const kept = new Map<string, number>();
  const dtypes = specs.map((p, i) => {
    const cols = p.shape[p.shape.length - 1]!;
    const own = opts.keepFileTypes ? ownDType(sources[i]!.dtype as SourceDType) : null;
    return p.role !== "matrix" ? "f32" : own && backend.supportsWeight(own, cols) ? own : storageDType(backend, opts.dtype, cols);
  });
  // a layer's experts' matrices of one kind and dtype are allocated together, where the backend can (allocWeights)
  const stacks = new Map<string, number[]>();
  specs.forEach((p, i) => p.stack && stacks.set(p.stack.key, [...(stacks.get(p.stack.key) ?? []), i]));
  const stacked = new Map<string, WeightTensor[]>();
  for (const i of order) {
    const p = specs[i]!, src = sources[i]!, dtype = dtypes[i]!;
    const rows = p.shape.length === 1 ? 1 : p.shape[0]!;
    const cols = p.shape[p.shape.length - 1]!;
    const members = p.stack && backend.allocWeights ? stacks.get(p.stack.key)! : null;
    if (members && !stacked.has(p.stack!.key) && members.every((m) => dtypes[m] === dtype)) stacked.set(p.stack!.key, backend.allocWeights!(dtype, members.length, rows, cols));
    const w = (members && stacked.get(p.stack!.key)?.[p.stack!.index]) || backend.allocWeight(dtype, rows, cols, p.lookup ? "lookup" : "products");
    backend.loadWeight(w, { fd: src.file.fd, data: src.file.data, offset: src.offset, dtype: src.dtype as SourceDType, file: src.file.path, rowOrder: src.rowOrder });
    p.assign(w);
    const how = keptAs(src.dtype as SourceDType, dtype);
    kept.set(how, (kept.get(how) ?? 0) + 1);
    done += src.bytes;
    opts.onProgress?.(done, total);
  }
  opts.onKept?.([...kept].map(([how, n]) => `${how} (${n} tensor${n === 1 ? "" : "s"})`).join(", "));
}

/** What loading does to a stored type, as a user reads it. */
function keptAs(src: SourceDType, d: WeightDType): string {
  if (isGgmlBlockType(src)) {
    if (dtypeOfBlocks(src) === d) return `${src} blocks kept as ${d}`;
    return d === "f32" || d === "bf16" ? `${src} dequantized to ${d}` : `${src} dequantized and requantized to ${d}`;
  }
  if ((src === "F32" && d === "f32") || (src === "BF16" && d === "bf16") || (src === "F16" && d === "f16")) return `${src} kept as ${d}`;
  if (d === "f32") return `${src} widened to f32`;
  return d === "bf16" || d === "f16" ? `${src} rounded to ${d}` : `${src} quantized to ${d}`;
}

/** The weight dtype that holds a stored type as it is. */
function ownDType(src: SourceDType): WeightDType {
  return isGgmlBlockType(src) ? dtypeOfBlocks(src) : src === "F32" ? "f32" : src === "BF16" ? "bf16" : "f16";
}

/**
 * Whether experts assigned to devices in `dtype` keep their file's own types (LoadOptions.keepFileTypes): an
 * assignment in a K-quant is a GGUF file's at its default dtype, whose matrices (Q4_K with Q6_K …) stay as they are.
 */
export function assignmentKeepsFileTypes(dtype: WeightDType): boolean {
  return kQuantBlocks(dtype) !== null;
}

/**
 * The requested dtype, or the nearest wider one that the kernels can hold for rows of `cols`: where the
 * kernels lack them (wasm), f16 as f32 (exactly) and a K-quant as q8, whose 8-bit requantization adds little
 * to the file's rounding.
 */
export function storageDType(backend: Backend, want: WeightDType, cols: number): WeightDType {
  const chain: WeightDType[] = want === "f32" ? ["f32"] : want === "bf16" || want === "f16" ? [want, "f32"] : kQuantBlocks(want) ? [want, "q8", "bf16", "f32"] : [want, "bf16", "f32"];
  return chain.find((d) => backend.supportsWeight(d, cols)) ?? "f32";
}

/**
 * The dtypes of an FFN's gate, up and down as one name for the wire: the dtype they share, or (a GGUF file's
 * experts may mix them, e.g. Q4_K gate and up with a Q6_K down) the three joined by "/".
 */
export function ffnDTypeName(w: FfnWeightSet): string {
  const { gate, up, down } = w;
  return gate.dtype === up.dtype && gate.dtype === down.dtype ? gate.dtype : `${gate.dtype}/${up.dtype}/${down.dtype}`;
}

/** The gate, up and down dtypes that ffnDTypeName named; throws on a name that is not that. */
export function ffnDTypes(name: string): [WeightDType, WeightDType, WeightDType] {
  const parts = name.split("/");
  if ((parts.length !== 1 && parts.length !== 3) || parts.some((d) => !WEIGHT_DTYPES.includes(d as WeightDType))) {
    throw new Error(`weight dtype ${JSON.stringify(name)} is not one of ${WEIGHT_DTYPES.join(", ")} (or three of them joined by "/")`);
  }
  const d = parts as WeightDType[];
  return d.length === 1 ? [d[0]!, d[0]!, d[0]!] : [d[0]!, d[1]!, d[2]!];
}

/**
 * A weight from bytes in the exchange layout of `dtype` (Backend.weightData), held as `dtype` where the
 * backend has it, else converted to the nearest dtype it has (a K-quant from a native device reaching wasm
 * kernels: q8). Throws when the bytes are not what dtype and shape imply.
 */
export function weightFromData(backend: Backend, dtype: WeightDType, rows: number, cols: number, data: Uint8Array): WeightTensor {
  const bytes = layoutBytes(dtype, rows, cols);
  if (bytes === null || data.length !== bytes) throw new Error(`${data.length} bytes for a ${rows}×${cols} ${dtype} weight${bytes === null ? ", which that dtype cannot hold" : ` of ${bytes}`}`);
  const held = storageDType(backend, dtype, cols);
  const w = backend.allocWeight(held, rows, cols);
  try {
    if (held === dtype) backend.setWeightData(w, data);
    else {
      const blocks = kQuantBlocks(dtype);
      // only f16 and the K-quants are ever converted here: every backend holds f32, bf16, q8 and q4
      const values = new Float32Array(rows * cols);
      if (blocks) dequantizeBlocks(blocks, data, values);
      else if (dtype === "f16") new Uint16Array(data.slice().buffer).forEach((h, i) => (values[i] = f16ToF32(h)));
      else throw new Error(`the kernels cannot hold ${dtype} weights of ${cols} columns`);
      backend.setWeight(w, values);
    }
  } catch (e) {
    backend.freeWeight(w);
    throw e;
  }
  return w;
}
