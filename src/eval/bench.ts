// Engine throughput against the machine's floors. Decode at batch 1 must read every active weight
// once per token, so its floor is (weight bytes per token) / (memory read bandwidth): the effective
// weight bandwidth is reported beside the measured read bandwidth, as a ratio.
import type { KVCache } from "../model/kv-cache.js";
import type { WeightTensor } from "../kernels/backend.js";
import type { Engine } from "../runtime/engine.js";
import { argmax } from "../runtime/sampler.js";
import { Random } from "../util/random.js";
import { median } from "../util/stats.js";

export interface BenchOptions {
  promptTokens: number;
  decodeTokens: number;
  /** Timed repetitions of the prefill and of the decode run; the median is reported (default 3). */
  repeats?: number;
  seed?: number;
  /** Bytes read by the bandwidth probe; well above the last-level cache. */
  probeBytes?: number;
  /** Warm-up time before timing (default WARM_UP_MS; the warm-up runs at least once). */
  warmUpMs?: number;
  /** After the timed runs, the prefills and decode runs repeated with each op timed alone (see BenchResult.ops). */
  ops?: boolean;
}

/** An op's share of a step: its name (Backend.opTime), its graphs' wall time and how many ran, per step. */
export interface OpShare {
  op: string;
  ms: number;
  graphs: number;
}

export interface BenchResult {
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
  decode_weight_gbps: number;
  memory_read_gbps: number;
  bandwidth_ratio: number;
  /** Measured peak multiply-add rate of the kernels' instruction set, every thread. */
  compute_gflops: number;
  /** Weight-product FLOPs of the prefill (the LM head once) divided by its whole time. */
  prefill_gflops: number;
  /** Weight-product FLOPs per decode token divided by its time. */
  decode_gflops: number;
  decode_weight_bytes_per_token: number;
  /**
   * Where the backend computes in graphs (Backend.graphTime): per decode token, the graphs run and the time
   * outside them, the host's (JavaScript, reading the logits, the greedy pick), medians over the decode runs.
   */
  decode_graphs_per_token?: number;
  decode_host_ms_per_token?: number;
  /** Likewise per prefill (the whole prompt): the graphs run, and the time outside them (the MoE seam's JavaScript, mostly). */
  prefill_graphs?: number;
  prefill_host_ms?: number;
  /**
   * With BenchOptions.ops: per prefill and per decode token (means of the repetitions), each op's time run as a
   * graph of its own (Backend.profileOps), largest first, and the step's whole time so run: not the timed time, as
   * each op pays a launch and runs on the pool or one thread by its own size.
   */
  ops?: { prefill: OpShare[]; prefill_ms: number; decode: OpShare[]; decode_ms_per_token: number };
  threads: number;
  kernels: string;
}

/**
 * Weight bytes and multiply-adds one decode token touches: all dense weights, the router's top-k
 * experts, one embedding row. `headMacs` is the LM head's share, which a prefill pays once, not per token.
 */
export function decodeFootprint(engine: Engine): { bytes: number; macs: number; headMacs: number } {
  const { weights: w, config: c } = engine;
  let bytes = w.embed.bytes / w.embed.rows + w.outputNorm.bytes + w.lmHead.bytes;
  const headMacs = w.lmHead.rows * w.lmHead.cols;
  let macs = headMacs;
  const mat = (t: WeightTensor | undefined) => {
    if (!t) return;
    bytes += t.bytes;
    if (t.rows > 1) macs += t.rows * t.cols;
  };
  for (const L of w.layers) {
    for (const t of [L.attnNorm, L.q, L.k, L.v, L.o, L.qBias, L.kBias, L.vBias, L.oBias, L.qNorm, L.kNorm, L.ffnNorm, L.router, L.sharedGate]) mat(t);
    for (const f of [L.shared, L.dense]) if (f) [f.gate, f.up, f.down].forEach(mat);
    const held = L.experts.filter((e) => e !== null);
    if (held.length > 0) {
      const e = held[0]!;
      const perExpert = e.gate.bytes + e.up.bytes + e.down.bytes;
      bytes += c.topK * perExpert;
      macs += c.topK * (e.gate.rows * e.gate.cols + e.up.rows * e.up.cols + e.down.rows * e.down.cols);
    }
  }
  return { bytes, macs, headMacs };
}

/** How long bench warms up before timing (see benchEngine). */
export const WARM_UP_MS = 2000;

export async function benchEngine(engine: Engine, o: BenchOptions): Promise<BenchResult> {
  const { model, config, backend } = engine;
  if (o.ops && !(backend.profileOps && backend.opTime)) throw new Error(`--ops: the ${backend.name} kernels do not run their ops as graphs (the native ones do)`);
  const rng = new Random(o.seed ?? 1);
  // Every prefill takes a prompt of its own, as llama-bench's do (random tokens each time): a prompt routed
  // otherwise runs its MoE layers' experts on other row counts, which a backend's graphs may be built for
  // (the native one's are), so one prompt repeated would time graphs built once and leave out their building.
  const newPrompt = () => Array.from({ length: o.promptTokens }, () => 3 + Math.floor(rng.next() * (config.vocabSize - 3)));

  // Warm-up, as llama-bench's (the whole prompt, then a few tokens), repeated for WARM_UP_MS: page in the
  // weights, let V8 tier up the kernels' callers (measured on brown-moe: the first two seconds' prefills take
  // up to 2.5× as long as later ones), and let a backend that builds its graphs build those of the run's shapes.
  // It runs in the timed run's own cache, as llama-bench warms up in its own context: the same addresses, so
  // the graphs a backend builds over them are the timed run's (those of decode steps within the first
  // 256-position attention span: all of them for a prompt of 256 and 64 decoded).
  const cache = model.newSequence(o.promptTokens + o.decodeTokens + 1);
  try {
    // The read bandwidth is probed before the warm-up and after the timed runs, never between them: streaming
    // the probe's buffer evicts the weights a small model keeps in cache (llama-bench's runs find them there),
    // and allocating it moves memory around (measured with `distmoe bench --model brown-moe-q8_0.gguf
    // --threads 2`: prefill 8.9–9.1 k tok/s in two runs with the probe between runs, 12.1–15.3 k in three without).
    const readBefore = backend.measureReadBandwidth(o.probeBytes ?? 512 << 20);
    await warmUp(engine, o, newPrompt, cache, o.warmUpMs ?? WARM_UP_MS);
    return await timed(engine, o, newPrompt, cache, readBefore);
  } finally {
    cache.free();
  }
}

/** benchEngine's warm-up, for `ms` and at least once: a fresh prompt prefilled, then a few tokens decoded. */
async function warmUp(engine: Engine, o: BenchOptions, newPrompt: () => number[], cache: KVCache, ms: number): Promise<void> {
  const steps = Math.min(4, o.decodeTokens + 1), start = performance.now();
  do {
    cache.clear();
    const prompt = newPrompt();
    await engine.model.forward([{ cache, tokens: prompt, logits: "last" }]);
    for (let i = 0; i < steps; i++) await engine.model.forward([{ cache, tokens: [prompt[i % prompt.length]!], logits: "last" }]);
  } while (performance.now() - start < ms);
}

/** The timed repetitions of benchEngine, in the cache it warmed up. */
async function timed(engine: Engine, o: BenchOptions, newPrompt: () => number[], cache: KVCache, readBefore: number): Promise<BenchResult> {
  const { model } = engine;
  const footprint = decodeFootprint(engine);

  // As llama-bench's two tests: the prefills back to back, each from an empty cache; then the decode runs, each
  // decodeTokens greedy steps after the prompt, which is prefilled untimed (llama-bench -d fills its context so).
  // A prefill timed right after a decode run measured up to 2× slower on brown-moe, with some repetitions as fast
  // as back to back (ad hoc, this VM): the decode graphs had left the caches and the pool's threads elsewhere,
  // a cost llama-bench's prefill never pays. Medians resist the noise of a shared machine better than one run.
  const prefillRates: number[] = [], decodeRates: number[] = [], graphsPerToken: number[] = [], hostMs: number[] = [];
  const prefillGraphs: number[] = [], prefillHostMs: number[] = [];
  const graphTime = engine.backend.graphTime;
  const reps = o.repeats ?? 3;
  for (let rep = 0; rep < reps; rep++) {
    cache.clear();
    const prompt = newPrompt();
    const graphs = graphTime?.graphs ?? 0, graphMs = graphTime?.ms ?? 0;
    const t0 = performance.now();
    await model.forward([{ cache, tokens: prompt, logits: "last" }]);
    const ms = performance.now() - t0;
    prefillRates.push(o.promptTokens / (ms / 1000));
    if (graphTime) {
      prefillGraphs.push(graphTime.graphs - graphs);
      prefillHostMs.push(ms - (graphTime.ms - graphMs));
    }
  }
  for (let rep = 0; rep < reps; rep++) {
    cache.clear();
    let [logits] = await model.forward([{ cache, tokens: newPrompt(), logits: "last" }]);
    const graphs = graphTime?.graphs ?? 0, graphMs = graphTime?.ms ?? 0;
    const t1 = performance.now();
    for (let i = 0; i < o.decodeTokens; i++) [logits] = await model.forward([{ cache, tokens: [argmax(logits!)], logits: "last" }]);
    const ms = performance.now() - t1;
    decodeRates.push(o.decodeTokens / (ms / 1000));
    if (graphTime) {
      graphsPerToken.push((graphTime.graphs - graphs) / o.decodeTokens);
      hostMs.push((ms - (graphTime.ms - graphMs)) / o.decodeTokens);
    }
  }
  const prefillTps = median(prefillRates), decodeTps = median(decodeRates);
  // before the probes, which leave the caches and memory otherwise than the timed runs found them (see benchEngine)
  const ops = o.ops ? await opProfile(engine, o, newPrompt, cache) : undefined;
  // on a shared host the bandwidth drifts over seconds: the mean of the probes on either side of the runs
  const read = (readBefore + engine.backend.measureReadBandwidth(o.probeBytes ?? 512 << 20)) / 2;
  return {
    prefill_tokens_per_s: prefillTps,
    decode_tokens_per_s: decodeTps,
    decode_weight_gbps: (footprint.bytes * decodeTps) / 1e9,
    memory_read_gbps: read,
    bandwidth_ratio: (footprint.bytes * decodeTps) / 1e9 / read,
    compute_gflops: engine.backend.measureComputeRate(),
    // prefill runs the experts its tokens pick (topK of E per token, as decode does) and the LM head once
    prefill_gflops: (2 * ((footprint.macs - footprint.headMacs) * o.promptTokens + footprint.headMacs) * (prefillTps / o.promptTokens)) / 1e9,
    decode_gflops: (2 * footprint.macs * decodeTps) / 1e9,
    decode_weight_bytes_per_token: footprint.bytes,
    ...(graphTime ? { decode_graphs_per_token: median(graphsPerToken), decode_host_ms_per_token: median(hostMs), prefill_graphs: median(prefillGraphs), prefill_host_ms: median(prefillHostMs) } : {}),
    ...(ops ? { ops } : {}),
    threads: engine.backend.threads,
    kernels: engine.backend.name,
  };
}

/** BenchResult.ops: the timed runs again (as many, as long), each op a graph of its own and timed alone. */
async function opProfile(engine: Engine, o: BenchOptions, newPrompt: () => number[], cache: KVCache): Promise<NonNullable<BenchResult["ops"]>> {
  const { model, backend } = engine;
  const opTime = backend.opTime!, reps = o.repeats ?? 3;
  const snapshot = () => new Map([...opTime].map(([op, t]) => [op, { ...t }]));
  const sums = { prefill: new Map<string, { ms: number; graphs: number }>(), decode: new Map<string, { ms: number; graphs: number }>() };
  const add = (into: Map<string, { ms: number; graphs: number }>, before: ReadonlyMap<string, { ms: number; graphs: number }>) => {
    for (const [op, t] of opTime) {
      const b = before.get(op), s = into.get(op) ?? { ms: 0, graphs: 0 };
      into.set(op, { ms: s.ms + t.ms - (b?.ms ?? 0), graphs: s.graphs + t.graphs - (b?.graphs ?? 0) });
    }
  };
  let prefillMs = 0, decodeMs = 0;
  backend.profileOps!(true);
  try {
    // warmed up again, for half as long (the weights are in and V8 has tiered up): each op's graph alone is built,
    // and the prefills find the caches and threads as a prefill after prefills does, not as the decode runs left them
    await warmUp(engine, o, newPrompt, cache, (o.warmUpMs ?? WARM_UP_MS) / 2);
    for (let rep = 0; rep < reps; rep++) {
      cache.clear();
      const before = snapshot(), t0 = performance.now();
      await model.forward([{ cache, tokens: newPrompt(), logits: "last" }]);
      prefillMs += performance.now() - t0;
      add(sums.prefill, before);
    }
    for (let rep = 0; rep < reps; rep++) {
      cache.clear();
      let [logits] = await model.forward([{ cache, tokens: newPrompt(), logits: "last" }]);
      const before = snapshot(), t0 = performance.now();
      for (let i = 0; i < o.decodeTokens; i++) [logits] = await model.forward([{ cache, tokens: [argmax(logits!)], logits: "last" }]);
      decodeMs += performance.now() - t0;
      add(sums.decode, before);
    }
  } finally {
    backend.profileOps!(false);
  }
  const shares = (m: Map<string, { ms: number; graphs: number }>, steps: number): OpShare[] =>
    [...m].filter(([, t]) => t.graphs > 0).map(([op, t]) => ({ op, ms: t.ms / steps, graphs: t.graphs / steps })).sort((a, b) => b.ms - a.ms);
  return { prefill: shares(sums.prefill, reps), prefill_ms: prefillMs / reps, decode: shares(sums.decode, reps * o.decodeTokens), decode_ms_per_token: decodeMs / (reps * o.decodeTokens) };
}
