// The single-process engine: a loaded model, its tokenizer and the generate loop (prefill of the whole
// prompt in one pass, then one token per step, streamed to the caller).
import path from "node:path";
import type { Backend, WeightDType } from "../kernels/backend.js";
import { openBackend, type BackendChoice } from "../kernels/select-backend.js";
import type { SimdVariant } from "../kernels/wasm/module.js";
import type { ModelConfig } from "../model/config.js";
import { openModel } from "../model/open-model.js";
import { Transformer } from "../model/forward.js";
import type { TextTokenizer } from "../model/tokenizer.js";
import { loadWeights, storageDType, type ModelWeights } from "../model/weights.js";
import type { ExpertExecutor } from "../moe/executor.js";
import { LocalExpertExecutor } from "../moe/local-executor.js";
import type { TokenRouting } from "../moe/token-routing.js";
import type { RoutingTraceSink } from "../moe/trace.js";
import { selectTopK, type SelectionPolicy } from "../policies/selection.js";
import { Scheduler, type DecodeTime, type ExpertUsage, type GenerateOptions, type GenerationResult } from "./scheduler.js";

export interface EngineOptions {
  /** The weights' dtype in memory; default the model's own (see OpenedModel.dtype). */
  dtype?: WeightDType;
  /** Which kernels (see openBackend); default $DISTMOE_BACKEND, else native where it loads, wasm otherwise. */
  backend?: BackendChoice;
  threads?: number;
  /** native: how long idle pool workers poll before sleeping (0–100; see NativeBackendOptions.poll). */
  poll?: number;
  /** native: map weights held as the file stores them from the file (default true). */
  mmap?: boolean;
  simd?: SimdVariant | "auto";
  /** How long idle compute threads spin before sleeping, in ms (see ThreadPool). */
  spinMs?: number;
  /** Longest sequence (prompt + generated); default min(model positions, 4096). */
  contextLength?: number;
  policy?: SelectionPolicy;
  /** Where experts run; default in-process (this process loads them all). An executor built from the engine's backend (a fast tier computing some experts here) is given as a function. */
  executor?: ExpertExecutor | ((backend: Backend, config: ModelConfig) => ExpertExecutor);
  trace?: RoutingTraceSink;
  /** Requests batched into one step at most (continuous batching; default 16). */
  maxBatch?: number;
  /** Requests waiting for a place in the batch at most; beyond it submit refuses (default: no bound). */
  maxQueue?: number;
  onLoadProgress?: (doneBytes: number, totalBytes: number) => void;
  /** Told after loading: which kernels and why, then the dtype, why, and how each stored type was kept. */
  onLoaded?: (line: string) => void;
}

export type { DecodeTime, ExpertUsage, GenerateOptions, GenerationResult, TokenLatency } from "./scheduler.js";

/** What the engine's steps did, counted since it loaded: the counters /metrics exports beside the expert calls. */
export interface EngineWork {
  layers: number;
  experts: number;
  /** (token, expert) pairs the selection policy chose, at [layer × experts + expert] */
  expertUse: Float64Array;
  /** (token, MoE layer) pairs routed, and the share of their top-k gate mass the policy dropped, summed */
  routedRows: number;
  droppedGateMass: number;
  decode: DecodeTime;
}

export class Engine {
  private constructor(
    readonly config: ModelConfig,
    /** The weight matrices' dtype in memory (where the kernels cannot hold a shape in it, a wider one). */
    readonly dtype: WeightDType,
    readonly tokenizer: TextTokenizer,
    readonly backend: Backend,
    readonly weights: ModelWeights,
    readonly model: Transformer,
    private readonly local: LocalExpertExecutor,
    private readonly executor: ExpertExecutor,
    batching: Pick<EngineOptions, "maxBatch" | "maxQueue">,
  ) {
    this.scheduler = new Scheduler(this, batching.maxBatch, batching.maxQueue);
  }

  /** Continuous batching over every request submitted to this engine. */
  readonly scheduler: Scheduler;

  /** Expert-call counters since load; a request's usage is the difference over its run. */
  expertUsage(): ExpertUsage {
    const s = this.model.expertStats;
    const x = this.executor;
    return {
      calls: s.calls, failed_calls: s.failedCalls, dropped_slots: s.droppedSlots, dropped_weight: s.droppedWeight,
      retries: x.retries ?? 0, rejected_results: x.rejectedResults ?? 0, verified_calls: x.verifiedCalls ?? 0, mismatched_results: x.mismatchedResults ?? 0,
    };
  }

  /** What the steps did since load (live views: read, not kept). */
  work(): EngineWork {
    const r = this.model.routingStats;
    return { layers: this.config.layers, experts: this.config.experts, expertUse: r.use, routedRows: r.rows, droppedGateMass: r.droppedGateMass, decode: this.scheduler.decodeTime };
  }

  /** Selects experts with `policy` from the next step on (a step in flight finishes with the one it started with). */
  setPolicy(policy: SelectionPolicy): void {
    this.model.setPolicy(policy);
  }

  static load(dir: string, opts: EngineOptions = {}): Engine {
    const opened = openModel(dir), { config, store: ck } = opened;
    const dtype = opts.dtype ?? opened.dtype;
    const why = opts.dtype ? "as asked" : opened.dtypeReason;
    let backend: Backend | undefined;
    try {
      const tokenizer = opened.tokenizer();
      const kernels = openBackend({ backend: opts.backend, threads: opts.threads, poll: opts.poll, mmap: opts.mmap, simd: opts.simd, spinMs: opts.spinMs });
      backend = kernels.backend;
      opts.onLoaded?.(kernels.why);
      // with another executor (remote devices), this process holds no experts
      const holdsExpert = opts.executor ? () => false : undefined;
      const weights = loadWeights(backend, ck, config, {
        dtype, keepFileTypes: !opts.dtype && opened.keepFileTypes, holdsExpert, onProgress: opts.onLoadProgress,
        onKept: (kept) => opts.onLoaded?.(`${path.basename(dir)}: weights ${dtype} (${why}): ${kept}`),
      });
      const local = new LocalExpertExecutor(backend, weights.layers.map((l) => l.experts), config.hidden);
      const ctx = opts.contextLength ?? Math.min(config.maxPositions, 4096);
      const executor = typeof opts.executor === "function" ? opts.executor(backend, config) : (opts.executor ?? local);
      const localExperts = executor === local ? weights.layers.map((l) => l.experts) : undefined;
      const model = new Transformer(backend, config, weights, { policy: opts.policy ?? selectTopK, executor, trace: opts.trace, localExperts }, ctx);
      // the dtype the matrices are held in here (a K-quant asked of kernels that lack it is held as q8)
      return new Engine(config, storageDType(backend, dtype, config.hidden), tokenizer, backend, weights, model, local, executor, opts);
    } catch (e) {
      backend?.close();
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
  generate(prompt: readonly number[], opts: GenerateOptions, onText?: (piece: string, token: number, routing?: readonly TokenRouting[]) => void): Promise<GenerationResult> {
    return this.scheduler.submit({ ...opts, prompt, onText });
  }

  close(): void {
    this.model.close();
    if (this.executor !== this.local) this.executor.close?.();
    this.local.close();
    this.backend.close();
  }
}

