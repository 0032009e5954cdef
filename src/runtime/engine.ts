// The single-process engine: a loaded model, its tokenizer and the generate loop (prefill of the whole
// prompt in one pass, then one token per step, streamed to the caller).
import type { Backend, WeightDType } from "../kernels/backend.js";
import { WasmBackend } from "../kernels/wasm/wasm-backend.js";
import type { SimdVariant } from "../kernels/wasm/module.js";
import { Checkpoint } from "../model/checkpoint.js";
import { readModelConfig, type ModelConfig } from "../model/config.js";
import { Transformer } from "../model/forward.js";
import { TextTokenizer } from "../model/tokenizer.js";
import { loadWeights, type ModelWeights } from "../model/weights.js";
import type { ExpertExecutor } from "../moe/executor.js";
import { LocalExpertExecutor } from "../moe/local-executor.js";
import type { RoutingTraceSink } from "../moe/trace.js";
import { selectTopK, type SelectionPolicy } from "../policies/selection.js";
import { Sampler, type SamplingOptions } from "./sampler.js";
import { TextStream } from "./text-stream.js";

export interface EngineOptions {
  dtype?: WeightDType;
  threads?: number;
  simd?: SimdVariant | "auto";
  /** How long idle compute threads spin before sleeping, in ms (see ThreadPool). */
  spinMs?: number;
  /** Longest sequence (prompt + generated); default min(model positions, 4096). */
  contextLength?: number;
  policy?: SelectionPolicy;
  /** Where experts run; default in-process. */
  executor?: ExpertExecutor;
  trace?: RoutingTraceSink;
  onLoadProgress?: (doneBytes: number, totalBytes: number) => void;
}

export interface GenerateOptions extends SamplingOptions {
  maxTokens: number;
}

/** What happened to a request's expert calls. */
export interface ExpertUsage {
  calls: number;
  failed_calls: number;
  dropped_slots: number;
  dropped_weight: number;
  retries: number;
}

export interface GenerationResult {
  promptTokens: number[];
  tokens: number[];
  text: string;
  stopReason: "eos" | "length" | "context";
  prefillMs: number;
  /** Time of the decode loop, and the forward passes it ran (one per token after the first). */
  decodeMs: number;
  decodeSteps: number;
  experts: ExpertUsage;
}

export class Engine {
  private constructor(
    readonly config: ModelConfig,
    readonly tokenizer: TextTokenizer,
    readonly backend: Backend,
    readonly weights: ModelWeights,
    readonly model: Transformer,
    private readonly local: LocalExpertExecutor,
    private readonly executor: ExpertExecutor,
  ) {}

  /** Expert-call counters since load; a request's usage is the difference over its run. */
  private usageNow(): ExpertUsage {
    const s = this.model.expertStats;
    return { calls: s.calls, failed_calls: s.failedCalls, dropped_slots: s.droppedSlots, dropped_weight: s.droppedWeight, retries: this.executor.retries ?? 0 };
  }

  static load(dir: string, opts: EngineOptions = {}): Engine {
    const config = readModelConfig(dir);
    const tokenizer = TextTokenizer.load(dir);
    const ck = Checkpoint.open(dir);
    const backend = new WasmBackend({ threads: opts.threads, simd: opts.simd, spinMs: opts.spinMs });
    try {
      // with another executor (remote devices), this process holds no experts
      const holdsExpert = opts.executor ? () => false : undefined;
      const weights = loadWeights(backend, ck, config, { dtype: opts.dtype ?? "f32", holdsExpert, onProgress: opts.onLoadProgress });
      const local = new LocalExpertExecutor(backend, weights.layers.map((l) => l.experts), config.hidden);
      const ctx = opts.contextLength ?? Math.min(config.maxPositions, 4096);
      const executor = opts.executor ?? local;
      const model = new Transformer(backend, config, weights, { policy: opts.policy ?? selectTopK, executor, trace: opts.trace }, ctx);
      return new Engine(config, tokenizer, backend, weights, model, local, executor);
    } catch (e) {
      backend.close();
      throw e;
    } finally {
      ck.close();
    }
  }

  get eosTokenIds(): readonly number[] {
    const fromTokenizer = this.tokenizer.tokenId(this.tokenizer.eosToken);
    return this.config.eosTokenIds.length > 0 ? this.config.eosTokenIds : fromTokenizer !== undefined ? [fromTokenizer] : [];
  }

  /** Generates up to maxTokens after the prompt; `onText` receives each piece of text as it is decoded. */
  async generate(prompt: readonly number[], opts: GenerateOptions, onText?: (piece: string, token: number) => void): Promise<GenerationResult> {
    if (prompt.length === 0) throw new Error("the prompt is empty");
    const sampler = new Sampler(opts);
    const cache = this.model.newSequence();
    const stream = new TextStream(this.tokenizer);
    const eos = new Set(this.eosTokenIds);
    const tokens: number[] = [];
    const before = this.usageNow();
    let decodeSteps = 0;
    let stopReason: GenerationResult["stopReason"] = "length";
    try {
      if (prompt.length >= cache.capacity) throw new Error(`the prompt has ${prompt.length} tokens; the context holds ${cache.capacity}`);
      const t0 = performance.now();
      let [logits] = await this.model.forward([{ cache, tokens: prompt, logits: "last" }]);
      const prefillMs = performance.now() - t0;
      const t1 = performance.now();
      while (tokens.length < opts.maxTokens) {
        const next = sampler.sample(logits!);
        if (eos.has(next)) {
          stopReason = "eos";
          break;
        }
        tokens.push(next);
        const piece = stream.push(next);
        if (piece) onText?.(piece, next);
        if (tokens.length >= opts.maxTokens) break;
        if (cache.length >= cache.capacity) {
          stopReason = "context";
          break;
        }
        [logits] = await this.model.forward([{ cache, tokens: [next], logits: "last" }]);
        decodeSteps++;
      }
      const rest = stream.flush();
      if (rest) onText?.(rest, tokens[tokens.length - 1]!);
      return { promptTokens: [...prompt], tokens, text: stream.text, stopReason, prefillMs, decodeMs: performance.now() - t1, decodeSteps, experts: usageSince(before, this.usageNow()) };
    } finally {
      cache.free();
    }
  }

  close(): void {
    this.model.close();
    this.local.close();
    this.backend.close();
  }
}

function usageSince(before: ExpertUsage, now: ExpertUsage): ExpertUsage {
  return {
    calls: now.calls - before.calls,
    failed_calls: now.failed_calls - before.failed_calls,
    dropped_slots: now.dropped_slots - before.dropped_slots,
    dropped_weight: now.dropped_weight - before.dropped_weight,
    retries: now.retries - before.retries,
  };
}
