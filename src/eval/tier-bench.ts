// `bench tiers`: MoNDE against parameter offloading on the real runtime. Runs per policy, each from
// an empty fast tier after a short warm-up: a prefill of the prompt, then greedy decoding; the
// prefill's and the decode's tokens/s, and the weight and activation bytes the link carried per
// token. The setup is tiers/tiered-runtime.ts (fast tier here, near tier in its own process).
import { breakEvenTokens } from "../tiers/cost-model.js";
import type { TierPolicyName } from "../policies/tiers.js";
import type { GenerationResult } from "../runtime/engine.js";
import { startTiered, type CopySource, type TieredSetupOptions } from "../tiers/tiered-runtime.js";
import { median } from "../util/stats.js";

/** The setup's options (tiers/tiered-runtime.ts) for every policy of `policies`, and the workload. */
export interface TierBenchOptions extends Omit<TieredSetupOptions, "policy"> {
  policies: readonly TierPolicyName[];
  /** the prompt's tokens (prefill) and how many to generate after it */
  prompt: readonly number[];
  genTokens: number;
  /** timed runs, each from an empty fast tier; medians are reported (default 3) */
  repeats?: number;
}

/** One phase's traffic and split. */
export interface TierPhase {
  tokens: number;
  tokens_per_s: number;
  weight_bytes_per_token: number;
  activation_bytes_per_token: number;
  fast_calls: number;
  near_calls: number;
  copies: number;
  /** expert calls per (layer, step) that ran in the fast tier, on average */
  hot_per_layer: number;
}

export interface TierBenchResult {
  policy: TierPolicyName;
  fast_budget: number;
  budget_experts: number;
  link: { gbps: number; delay_ms: number; shaped: boolean };
  /** where copies came from, and the store's measured read rate when it served them */
  copy_from: CopySource;
  store_gbps: number | null;
  break_even_tokens: number;
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
  weight_bytes_per_token: number;
  activation_bytes_per_token: number;
  prefill: TierPhase;
  decode: TierPhase;
  /** the greedy tokens generated, which every policy must agree on */
  tokens: number[];
}

/** One policy's setup and what its timed runs gathered. */
interface PolicyRun {
  policy: TierPolicyName;
  setup: Awaited<ReturnType<typeof startTiered>>;
  phases: { prefill: TierPhase; decode: TierPhase };
  layers: { prefill: number; decode: number };
  timing: boolean;
  prefillMs: number[];
  decodeMs: number[];
  last: GenerationResult | null;
}

/**
 * Every policy of `policies` on its own setup, their timed runs interleaved (run 1 of each, then run 2
 * of each, …) so that a shared machine's drift falls on all of them alike.
 */
export async function benchTiers(o: TierBenchOptions): Promise<TierBenchResult[]> {
  const runs: PolicyRun[] = [];
  try {
    for (const policy of o.policies) {
      const run: PolicyRun = { policy, setup: null!, phases: { prefill: emptyPhase(), decode: emptyPhase() }, layers: { prefill: 0, decode: 0 }, timing: false, prefillMs: [], decodeMs: [], last: null };
      run.setup = await startTiered({
        ...o,
        policy,
        onLayer: (r) => {
          o.onLayer?.(r);
          if (!run.timing) return;
          // step 0 is the prompt's one pass; every later step decodes a token
          const phase = r.step === 0 ? "prefill" : "decode";
          const p = run.phases[phase];
          p.weight_bytes_per_token += r.weightBytes;
          p.activation_bytes_per_token += r.activationBytes;
          p.fast_calls += r.fast.length;
          p.near_calls += r.near.length;
          p.copies += r.copied.length;
          p.hot_per_layer += r.fast.length;
          run.layers[phase]++;
        },
      });
      runs.push(run);
      // warm-up: JIT, first touches of the link
      await run.setup.engine.generate(o.prompt.slice(0, 16), { temperature: 0, maxTokens: 4 });
    }
    // each timed run starts from an empty fast tier; medians resist the noise (every run moves the same bytes)
    for (let rep = 0; rep < (o.repeats ?? 3); rep++) {
      for (const run of runs) {
        run.setup.tiers.reset();
        run.phases = { prefill: emptyPhase(), decode: emptyPhase() };
        run.layers = { prefill: 0, decode: 0 };
        run.timing = true;
        const r = await run.setup.engine.generate(o.prompt, { temperature: 0, maxTokens: o.genTokens });
        await new Promise((resolve) => setImmediate(resolve));
        run.timing = false;
        run.prefillMs.push(r.prefillMs);
        run.decodeMs.push(r.decodeMs);
        run.last = r;
      }
    }
    return runs.map((run) => result(o, run));
  } finally {
    for (const run of runs) await run.setup.close();
  }
}

function result(o: TierBenchOptions, run: PolicyRun): TierBenchResult {
  const { tiers, link, store } = run.setup;
  const finish = (p: TierPhase, tokens: number, ms: number, n: number): TierPhase => ({
    ...p,
    tokens,
    tokens_per_s: tokens / (ms / 1000),
    weight_bytes_per_token: p.weight_bytes_per_token / Math.max(1, tokens),
    activation_bytes_per_token: p.activation_bytes_per_token / Math.max(1, tokens),
    hot_per_layer: p.hot_per_layer / Math.max(1, n),
  });
  const prefill = finish(run.phases.prefill, o.prompt.length, median(run.prefillMs), run.layers.prefill);
  const decode = finish(run.phases.decode, run.last!.decodeSteps, median(run.decodeMs), run.layers.decode);
  const all = prefill.tokens + decode.tokens;
  return {
    policy: run.policy,
    fast_budget: o.budgetFraction,
    budget_experts: tiers.budget.experts,
    link: { gbps: link.gbps, delay_ms: link.delayMs, shaped: o.link !== null },
    copy_from: o.copyFrom ?? "near",
    store_gbps: store?.gbps ?? null,
    // as the policy saw the link at the end (its rate follows what copies took)
    break_even_tokens: breakEvenTokens(tiers.costs),
    prefill_tokens_per_s: prefill.tokens_per_s,
    decode_tokens_per_s: decode.tokens_per_s,
    weight_bytes_per_token: (run.phases.prefill.weight_bytes_per_token + run.phases.decode.weight_bytes_per_token) / all,
    activation_bytes_per_token: (run.phases.prefill.activation_bytes_per_token + run.phases.decode.activation_bytes_per_token) / all,
    prefill,
    decode,
    tokens: run.last!.tokens,
  };
}

function emptyPhase(): TierPhase {
  return { tokens: 0, tokens_per_s: 0, weight_bytes_per_token: 0, activation_bytes_per_token: 0, fast_calls: 0, near_calls: 0, copies: 0, hot_per_layer: 0 };
}
