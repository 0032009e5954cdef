// `bench tiers`: MoNDE against parameter offloading on the real runtime. One run per policy, each
// from an empty fast tier after a short warm-up: a prefill of the prompt, then greedy decoding; the
// prefill's and the decode's tokens/s, and the weight and activation bytes the link carried per
// token. The setup is tiers/tiered-runtime.ts (fast tier here, near tier in its own process).
import type { LinkParams } from "../channel/link.js";
import type { WeightDType } from "../kernels/backend.js";
import { breakEvenTokens } from "../tiers/cost-model.js";
import type { TierPolicyName } from "../policies/tiers.js";
import type { WireDType } from "../protocol/activations.js";
import type { TierLayerReport } from "../tiers/tiered-executor.js";
import { startTiered } from "../tiers/tiered-runtime.js";
import { median } from "../util/stats.js";

export interface TierBenchOptions {
  model: string;
  policy: TierPolicyName;
  budgetFraction: number;
  /** null: loopback as it is */
  link: LinkParams | null;
  /** the prompt's tokens (prefill) and how many to generate after it */
  prompt: readonly number[];
  genTokens: number;
  weightDType: WeightDType;
  wireDType: WireDType;
  window?: number;
  threads?: number;
  /** timed runs, each from an empty fast tier; medians are reported (default 3) */
  repeats?: number;
  onLayer?: (r: TierLayerReport) => void;
  log?: (line: string) => void;
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

export async function benchTiers(o: TierBenchOptions): Promise<TierBenchResult> {
  let phases = { prefill: emptyPhase(), decode: emptyPhase() };
  let layers = { prefill: 0, decode: 0 };
  let timing = false;
  const setup = await startTiered({
    model: o.model, policy: o.policy, budgetFraction: o.budgetFraction, weightDType: o.weightDType, wireDType: o.wireDType, link: o.link, window: o.window, threads: o.threads, log: o.log,
    onLayer: (r) => {
      o.onLayer?.(r);
      if (!timing) return;
      // step 0 is the prompt's one pass; every later step decodes a token
      const phase = r.step === 0 ? "prefill" : "decode";
      const p = phases[phase];
      p.weight_bytes_per_token += r.weightBytes;
      p.activation_bytes_per_token += r.activationBytes;
      p.fast_calls += r.fast.length;
      p.near_calls += r.near.length;
      p.copies += r.copied.length;
      p.hot_per_layer += r.fast.length;
      layers[phase]++;
    },
  });
  try {
    const { engine, tiers } = setup;
    // warm-up (JIT, first touches of the link); each timed run starts from an empty fast tier, and
    // medians resist a shared machine's noise (every run moves the same bytes)
    await engine.generate(o.prompt.slice(0, 16), { temperature: 0, maxTokens: 4 });
    const prefillMs: number[] = [], decodeMs: number[] = [];
    let r: Awaited<ReturnType<typeof engine.generate>> | null = null;
    for (let rep = 0; rep < (o.repeats ?? 3); rep++) {
      tiers.reset();
      phases = { prefill: emptyPhase(), decode: emptyPhase() };
      layers = { prefill: 0, decode: 0 };
      timing = true;
      r = await engine.generate(o.prompt, { temperature: 0, maxTokens: o.genTokens });
      await new Promise((resolve) => setImmediate(resolve));
      timing = false;
      prefillMs.push(r.prefillMs);
      decodeMs.push(r.decodeMs);
    }
    const finish = (p: TierPhase, tokens: number, ms: number, n: number): TierPhase => ({
      ...p,
      tokens,
      tokens_per_s: tokens / (ms / 1000),
      weight_bytes_per_token: p.weight_bytes_per_token / Math.max(1, tokens),
      activation_bytes_per_token: p.activation_bytes_per_token / Math.max(1, tokens),
      hot_per_layer: p.hot_per_layer / Math.max(1, n),
    });
    const prefill = finish(phases.prefill, o.prompt.length, median(prefillMs), layers.prefill);
    const decode = finish(phases.decode, r!.decodeSteps, median(decodeMs), layers.decode);
    const all = prefill.tokens + decode.tokens;
    return {
      policy: o.policy,
      fast_budget: o.budgetFraction,
      budget_experts: tiers.budget.experts,
      link: { gbps: setup.link.gbps, delay_ms: setup.link.delayMs, shaped: o.link !== null },
      break_even_tokens: breakEvenTokens(tiers.costs),
      prefill_tokens_per_s: prefill.tokens_per_s,
      decode_tokens_per_s: decode.tokens_per_s,
      weight_bytes_per_token: (phases.prefill.weight_bytes_per_token + phases.decode.weight_bytes_per_token) / all,
      activation_bytes_per_token: (phases.prefill.activation_bytes_per_token + phases.decode.activation_bytes_per_token) / all,
      prefill,
      decode,
      tokens: r!.tokens,
    };
  } finally {
    await setup.close();
  }
}


function emptyPhase(): TierPhase {
  return { tokens: 0, tokens_per_s: 0, weight_bytes_per_token: 0, activation_bytes_per_token: 0, fast_calls: 0, near_calls: 0, copies: 0, hot_per_layer: 0 };
}
