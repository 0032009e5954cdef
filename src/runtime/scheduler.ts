// Continuous batching: every request in flight is a sequence, and each step runs all of them as one
// batch of rows — new prompts prefill beside the other sequences' next decode tokens — so the matrix
// products and, with remote devices, the round trips of a step are shared by every request.
import type { Transformer } from "../model/forward.js";
import type { KVCache } from "../model/kv-cache.js";
import type { TextTokenizer } from "../model/tokenizer.js";
import { RoutingTap, type TokenRouting } from "../moe/token-routing.js";
import { Sampler, type SamplingOptions } from "./sampler.js";
import { TextStream } from "./text-stream.js";
import { findStop, heldBack } from "./stop-strings.js";

/** What happened to a request's expert calls (while other requests were in flight too, shared with them). */
export interface ExpertUsage {
  calls: number;
  failed_calls: number;
  dropped_slots: number;
  dropped_weight: number;
  retries: number;
  /** results refused as implausible (non-finite or out of bounds), each failed like a lost device (absent: not checked) */
  rejected_results?: number;
  /** calls whose result was compared with a second holder's (spot checks; absent: none are made) */
  verified_calls?: number;
  /** results that disagreed with the base station's own in a spot check; their devices were taken out of service */
  mismatched_results?: number;
}

/**
 * Where a decode token's time went, in ms, averaged over the request's decode steps (steps are
 * shared by every request in the batch): the base station's own work, and the MoE layers' waits on
 * their experts, split by the slowest call of each layer into its transfer (protocol included), its
 * device's compute, and the rest of the wait.
 */
export interface TokenLatency {
  bs_compute_ms: number;
  transfer_ms: number;
  device_compute_ms: number;
  waiting_ms: number;
}

/** Decode steps (steps in which some request decoded a token), the tokens they decoded and their time split, in ms, summed since the scheduler started. */
export interface DecodeTime extends TokenLatency {
  steps: number;
  tokens: number;
}

export interface GenerateOptions extends SamplingOptions {
  maxTokens: number;
  /** Generation ends before the first of these appears; it is not part of the text. */
  stop?: readonly string[];
  /** Record which experts ran where for each generated token (GenerationResult.routing, and beside each piece of text). */
  routing?: boolean;
}

export interface GenerationResult {
  promptTokens: number[];
  tokens: number[];
  text: string;
  stopReason: "eos" | "stop" | "length" | "context" | "cancelled";
  prefillMs: number;
  /** Time from the end of the prefill to the last token, and the steps it took (one per token after the first). */
  decodeMs: number;
  decodeSteps: number;
  experts: ExpertUsage;
  latency: TokenLatency;
  /** per token of `tokens`, the experts that ran to produce it (only when the request asked for routing and took no pieces: theirs carried it) */
  routing?: TokenRouting[];
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
  /** `routing` (when asked): the tokens generated since the last piece, with what ran for each. */
  onText?: (piece: string, token: number, routing?: readonly TokenRouting[]) => void;
  /** Aborting it ends the request at the next step (its result says "cancelled"). */
  signal?: AbortSignal;
}

class Sequence {
  readonly stream: TextStream;
  /** its KV cache, from when it enters the batch */
  cache: KVCache | null = null;
  done = false;
  /** stops listening for its cancellation */
  detach: () => void = () => undefined;
  readonly tokens: number[] = [];
  readonly usageBefore: ExpertUsage;
  readonly submitted = performance.now();
  prefillMs = 0;
  decodeStart = 0;
  decodeSteps = 0;
  /** sums over this sequence's decode steps */
  readonly latency: TokenLatency = { bs_compute_ms: 0, transfer_ms: 0, device_compute_ms: 0, waiting_ms: 0 };
  /** the next tokens to feed: the prompt, then each sampled token */
  pending: readonly number[];
  /** the text so far, and how much of it the caller has been given */
  text = "";
  emitted = 0;
  stopReason: GenerationResult["stopReason"] | null = null;
  /**
   * when the request asked for its routing: the tap its rows are watched by, and its tokens' routing not
   * given with a piece yet (a request that takes pieces keeps none it was given: a long stream holds a piece's)
   */
  readonly tap: RoutingTap | null;
  routing: TokenRouting[] = [];

  constructor(
    readonly req: Request,
    readonly sampler: Sampler,
    tokenizer: TextTokenizer,
    usage: ExpertUsage,
    readonly resolve: (r: GenerationResult) => void,
    readonly reject: (e: Error) => void,
  ) {
    this.stream = new TextStream(tokenizer, req.prompt);
    this.pending = req.prompt;
    this.usageBefore = usage;
    this.tap = req.routing ? new RoutingTap() : null;
  }
}

/** Why a request was not admitted: it is invalid, or the queue is full (try again later). */
export class RequestRejected extends Error {
  constructor(readonly reason: "invalid" | "queue_full", message: string) {
    super(message);
  }
}

export class Scheduler {
  private readonly waiting: Sequence[] = [];
  private readonly active: Sequence[] = [];
  private running = false;
  private readonly eos: Set<number>;
  /** Every decode step's time split (as each request's own latency adds it up), summed. */
  readonly decodeTime: DecodeTime = { steps: 0, tokens: 0, bs_compute_ms: 0, transfer_ms: 0, device_compute_ms: 0, waiting_ms: 0 };

  /** maxBatch: sequences in one step at most; maxWaiting: requests queued for a place at most. */
  constructor(private readonly host: SchedulerHost, private readonly maxBatch = 16, private readonly maxWaiting = Infinity) {
    this.eos = new Set(host.eosTokenIds);
  }

  /** Requests waiting for a place in the batch, and requests in it. */
  get depth(): { waiting: number; active: number } {
    return { waiting: this.waiting.length, active: this.active.length };
  }

  /**
   * Queues a request for the batch. Throws RequestRejected at once when it cannot be admitted (invalid,
   * or the queue is full); the promise rejects only when its generation fails (a step that throws).
   */
  submit(req: Request): Promise<GenerationResult> {
    const cap = this.host.model.contextLength;
    if (req.prompt.length === 0) throw new RequestRejected("invalid", "the prompt is empty");
    if (!(Number.isInteger(req.maxTokens) && req.maxTokens >= 0)) throw new RequestRejected("invalid", `max tokens must be a non-negative integer, got ${req.maxTokens}`);
    if (req.prompt.length >= cap) throw new RequestRejected("invalid", `the prompt has ${req.prompt.length} tokens; the context holds ${cap}`);
    if (this.waiting.length >= this.maxWaiting) throw new RequestRejected("queue_full", `${this.waiting.length} requests are waiting already (the queue holds ${this.maxWaiting})`);
    // validates the sampling options before anything is allocated
    const sampler = new Sampler(req);
    return new Promise((resolve, reject) => {
      const seq = new Sequence(req, sampler, this.host.tokenizer, this.host.expertUsage(), resolve, reject);
      // nothing to generate, or cancelled already: done without a step
      if (req.maxTokens === 0 || req.signal?.aborted) return this.finish(seq, req.maxTokens === 0 ? "length" : "cancelled");
      // a request cancelled while it waits leaves the queue at once
      const onAbort = () => {
        const i = this.waiting.indexOf(seq);
        if (i >= 0) {
          this.waiting.splice(i, 1);
          this.finish(seq, "cancelled");
        }
      };
      req.signal?.addEventListener("abort", onAbort, { once: true });
      seq.detach = () => req.signal?.removeEventListener("abort", onAbort);
      this.waiting.push(seq);
      if (!this.running) void this.run();
    });
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (this.waiting.length > 0 || this.active.length > 0) {
        while (this.active.length < this.maxBatch && this.waiting.length > 0) this.admit(this.waiting.shift()!);
        await this.step();
        // between steps, sockets and timers get their turn: new requests, cancellations, timeouts
        await new Promise(setImmediate);
      }
    } finally {
      this.running = false;
    }
  }

  /** Gives a waiting sequence its place in the batch and its KV cache; a failure fails it alone. */
  private admit(s: Sequence): void {
    try {
      s.cache = this.host.model.newSequence();
      this.active.push(s);
    } catch (e) {
      this.finish(s, e as Error);
    }
  }

  /** One forward pass over every active sequence, then one sampled token for each. */
  private async step(): Promise<void> {
    const batch = [...this.active];
    const model = this.host.model;
    const before = { ...model.expertTiming };
    const t0 = performance.now();
    let logits: Float32Array[];
    try {
      logits = await model.forward(batch.map((s) => ({ cache: s.cache!, tokens: s.pending, logits: "last" as const, routing: s.tap ?? undefined })));
    } catch (e) {
      // a step that throws fails the requests in it; the scheduler goes on with the others
      for (const s of batch) this.finish(s, e as Error);
      return;
    }
    const now = performance.now();
    const t = model.expertTiming;
    const step: TokenLatency = {
      bs_compute_ms: now - t0 - (t.waitMs - before.waitMs),
      transfer_ms: t.transferMs - before.transferMs,
      device_compute_ms: t.deviceComputeMs - before.deviceComputeMs,
      waiting_ms: t.waitingMs - before.waitingMs,
    };
    const decoding = batch.filter((s) => s.decodeStart !== 0).length;
    if (decoding > 0) {
      this.decodeTime.steps++;
      this.decodeTime.tokens += decoding;
      for (const k of Object.keys(step) as Array<keyof TokenLatency>) this.decodeTime[k] += step[k];
    }
    batch.forEach((s, i) => {
      if (s.decodeStart === 0) {
        s.prefillMs = now - s.submitted;
        s.decodeStart = now;
      } else {
        s.decodeSteps++;
        for (const k of Object.keys(step) as Array<keyof TokenLatency>) s.latency[k] += step[k];
      }
      try {
        this.advance(s, logits[i]!);
      } catch (e) {
        this.finish(s, e as Error);
      }
    });
  }

  private advance(s: Sequence, logits: Float32Array): void {
    const layers = s.tap?.take();
    if (s.req.signal?.aborted) return this.finish(s, "cancelled");
    if (s.tokens.length >= s.req.maxTokens) return this.finish(s, "length");
    const next = s.sampler.sample(logits);
    if (this.eos.has(next)) return this.finish(s, "eos");
    s.tokens.push(next);
    if (layers) s.routing.push({ token: next, layers });
    s.text += s.stream.push(next);
    const stops = s.req.stop ?? [];
    const longest = stops.reduce((m, x) => Math.max(m, x.length), 0);
    const at = stops.length > 0 ? findStop(s.text, stops, s.emitted - longest) : -1;
    if (at >= 0) {
      s.text = s.text.slice(0, at);
      return this.finish(s, "stop");
    }
    // what could still turn into a stop sequence waits for the next tokens
    this.emit(s, s.text.length - heldBack(s.text, stops), next);
    if (s.tokens.length >= s.req.maxTokens) return this.finish(s, "length");
    if (s.cache!.length >= s.cache!.capacity) return this.finish(s, "context");
    s.pending = [next];
  }

  /**
   * Gives the caller the text up to `upTo` that it has not had yet, with the routing of the tokens since
   * the last piece; the `last` piece goes out with no text too when some tokens' routing is not given yet.
   */
  private emit(s: Sequence, upTo: number, token: number, last = false): void {
    if (upTo <= s.emitted && !(last && s.req.onText && s.routing.length > 0)) return;
    const routing = s.tap && s.req.onText ? s.routing : undefined;
    if (routing) s.routing = [];
    s.req.onText?.(s.text.slice(s.emitted, upTo), token, routing);
    s.emitted = Math.max(s.emitted, upTo);
  }

  /** Ends a sequence (once): frees its place and cache, and settles its promise. Never throws. */
  private finish(s: Sequence, outcome: GenerationResult["stopReason"] | Error): void {
    if (s.done) return;
    s.done = true;
    s.detach();
    const at = this.active.indexOf(s);
    if (at >= 0) this.active.splice(at, 1);
    s.cache?.free();
    if (outcome instanceof Error) return s.reject(outcome);
    try {
      if (outcome !== "stop") s.text += s.stream.flush();
      this.emit(s, s.text.length, s.tokens.at(-1) ?? -1, true);
    } catch (e) {
      return s.reject(e as Error);
    }
    const now = this.host.expertUsage();
    const b = s.usageBefore;
    s.resolve({
      promptTokens: [...s.req.prompt],
      tokens: s.tokens,
      text: s.text,
      stopReason: outcome,
      prefillMs: s.prefillMs,
      decodeMs: s.decodeStart > 0 ? performance.now() - s.decodeStart : 0,
      decodeSteps: s.decodeSteps,
      ...(s.tap && !s.req.onText && { routing: s.routing }),
      latency: Object.fromEntries(Object.entries(s.latency).map(([k, v]) => [k, s.decodeSteps > 0 ? v / s.decodeSteps : 0])) as unknown as TokenLatency,
      experts: {
        calls: now.calls - b.calls,
        failed_calls: now.failed_calls - b.failed_calls,
        dropped_slots: now.dropped_slots - b.dropped_slots,
        dropped_weight: now.dropped_weight - b.dropped_weight,
        retries: now.retries - b.retries,
        rejected_results: (now.rejected_results ?? 0) - (b.rejected_results ?? 0),
        verified_calls: (now.verified_calls ?? 0) - (b.verified_calls ?? 0),
        mismatched_results: (now.mismatched_results ?? 0) - (b.mismatched_results ?? 0),
      },
    });
  }
}
