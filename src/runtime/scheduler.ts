// Continuous batching: every request in flight is a sequence, and each step runs all of them as one
// batch of rows — new prompts prefill beside the other sequences' next decode tokens — so the matrix
// products and, with remote devices, the round trips of a step are shared by every request.
import type { Transformer } from "../model/forward.js";
import type { KVCache } from "../model/kv-cache.js";
import type { TextTokenizer } from "../model/tokenizer.js";
import { Sampler, type SamplingOptions } from "./sampler.js";
import { TextStream } from "./text-stream.js";

/** What happened to a request's expert calls (while other requests were in flight too, shared with them). */
export interface ExpertUsage {
  calls: number;
  failed_calls: number;
  dropped_slots: number;
  dropped_weight: number;
  retries: number;
}

export interface GenerateOptions extends SamplingOptions {
  maxTokens: number;
}

export interface GenerationResult {
  promptTokens: number[];
  tokens: number[];
  text: string;
  stopReason: "eos" | "length" | "context";
  prefillMs: number;
  /** Time from the end of the prefill to the last token, and the steps it took (one per token after the first). */
  decodeMs: number;
  decodeSteps: number;
  experts: ExpertUsage;
}

/** What the scheduler needs of an engine. */
export interface SchedulerHost {
  readonly model: Transformer;
  readonly tokenizer: TextTokenizer;
  readonly eosTokenIds: readonly number[];
  expertUsage(): ExpertUsage;
}

export interface Request extends GenerateOptions {
  prompt: readonly number[];
  onText?: (piece: string, token: number) => void;
}

class Sequence {
  readonly sampler: Sampler;
  readonly stream: TextStream;
  readonly tokens: number[] = [];
  readonly usageBefore: ExpertUsage;
  readonly submitted = performance.now();
  prefillMs = 0;
  decodeStart = 0;
  decodeSteps = 0;
  /** the next tokens to feed: the prompt, then each sampled token */
  pending: readonly number[];
  stopReason: GenerationResult["stopReason"] | null = null;

  constructor(
    readonly req: Request,
    readonly cache: KVCache,
    tokenizer: TextTokenizer,
    usage: ExpertUsage,
    readonly resolve: (r: GenerationResult) => void,
    readonly reject: (e: Error) => void,
  ) {
    this.sampler = new Sampler(req);
    this.stream = new TextStream(tokenizer);
    this.pending = req.prompt;
    this.usageBefore = usage;
  }
}

export class Scheduler {
  private readonly waiting: Sequence[] = [];
  private readonly active: Sequence[] = [];
  private running = false;
  private readonly eos: Set<number>;

  constructor(private readonly host: SchedulerHost, private readonly maxBatch = 16) {
    this.eos = new Set(host.eosTokenIds);
  }

  /** Requests waiting for a place in the batch, and requests in it. */
  get depth(): { waiting: number; active: number } {
    return { waiting: this.waiting.length, active: this.active.length };
  }

  submit(req: Request): Promise<GenerationResult> {
    return new Promise((resolve, reject) => {
      if (req.prompt.length === 0) return reject(new Error("the prompt is empty"));
      if (!(Number.isInteger(req.maxTokens) && req.maxTokens >= 0)) return reject(new Error(`max tokens must be a non-negative integer, got ${req.maxTokens}`));
      const cap = this.host.model.contextLength;
      if (req.prompt.length >= cap) return reject(new Error(`the prompt has ${req.prompt.length} tokens; the context holds ${cap}`));
      let seq: Sequence;
      try {
        seq = new Sequence(req, this.host.model.newSequence(), this.host.tokenizer, this.host.expertUsage(), resolve, reject);
      } catch (e) {
        return reject(e as Error);
      }
      this.waiting.push(seq);
      if (!this.running) void this.run();
    });
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (this.waiting.length > 0 || this.active.length > 0) {
        while (this.active.length < this.maxBatch && this.waiting.length > 0) this.active.push(this.waiting.shift()!);
        await this.step();
      }
    } finally {
      this.running = false;
    }
  }

  /** One forward pass over every active sequence, then one sampled token for each. */
  private async step(): Promise<void> {
    const batch = [...this.active];
    let logits: Float32Array[];
    try {
      logits = await this.host.model.forward(batch.map((s) => ({ cache: s.cache, tokens: s.pending, logits: "last" as const })));
    } catch (e) {
      for (const s of batch) this.finish(s, e as Error);
      return;
    }
    const now = performance.now();
    batch.forEach((s, i) => {
      if (s.decodeStart === 0) {
        s.prefillMs = now - s.submitted;
        s.decodeStart = now;
      } else s.decodeSteps++;
      this.advance(s, logits[i]!);
    });
  }

  private advance(s: Sequence, logits: Float32Array): void {
    if (s.tokens.length >= s.req.maxTokens) return this.finish(s, "length");
    const next = s.sampler.sample(logits);
    if (this.eos.has(next)) return this.finish(s, "eos");
    s.tokens.push(next);
    const piece = s.stream.push(next);
    if (piece) s.req.onText?.(piece, next);
    if (s.tokens.length >= s.req.maxTokens) return this.finish(s, "length");
    if (s.cache.length >= s.cache.capacity) return this.finish(s, "context");
    s.pending = [next];
  }

  private finish(s: Sequence, outcome: GenerationResult["stopReason"] | Error): void {
    this.active.splice(this.active.indexOf(s), 1);
    s.cache.free();
    if (outcome instanceof Error) return s.reject(outcome);
    const rest = s.stream.flush();
    if (rest) s.req.onText?.(rest, s.tokens[s.tokens.length - 1]!);
    const now = this.host.expertUsage();
    const b = s.usageBefore;
    s.resolve({
      promptTokens: [...s.req.prompt],
      tokens: s.tokens,
      text: s.stream.text,
      stopReason: outcome,
      prefillMs: s.prefillMs,
      decodeMs: performance.now() - s.decodeStart,
      decodeSteps: s.decodeSteps,
      experts: {
        calls: now.calls - b.calls,
        failed_calls: now.failed_calls - b.failed_calls,
        dropped_slots: now.dropped_slots - b.dropped_slots,
        dropped_weight: now.dropped_weight - b.dropped_weight,
        retries: now.retries - b.retries,
      },
    });
  }
}
