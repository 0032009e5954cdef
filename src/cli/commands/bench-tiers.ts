import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { parseLink, type LinkParams } from "../../channel/link.js";
import { benchTiers, type TierBenchResult } from "../../eval/tier-bench.js";
import { linePlot } from "../../eval/svg-plot.js";
import { WEIGHT_DTYPES, type WeightDType } from "../../kernels/backend.js";
import { parseModelConfig } from "../../model/config.js";
import { openModel } from "../../model/open-model.js";
import { TIER_POLICIES, type TierPolicyName } from "../../policies/tiers.js";
import { WIRE_DTYPES, wireBytes, type WireDType } from "../../protocol/activations.js";
import { simulateTiers, TIER_HARDWARE, type TierSimResult } from "../../tiers/tier-sim.js";
import { COPY_SOURCES, type CopySource } from "../../tiers/tiered-runtime.js";
import { fileURLToPath } from "node:url";
import { Random } from "../../util/random.js";
import { expertShare, positiveInt, readTextFile } from "../options.js";

interface BenchTiersCliOptions {
  model?: string;
  simulate?: boolean;
  config: string;
  hardware: string;
  text?: string;
  fastBudget: number;
  policy: TierPolicyName | "all";
  promptTokens: number;
  genTokens: number;
  link: Array<LinkParams | null>;
  copyFrom: CopySource;
  dtype: WeightDType;
  wireDtype: WireDType;
  window: number;
  threads: number;
  repeats: number;
  sweep?: string;
  verbose?: boolean;
  json?: boolean;
}

/** "loopback" or a link spec; repeatable. */
function links(v: string, prev: Array<LinkParams | null> | undefined): Array<LinkParams | null> {
  let link: LinkParams | null = null;
  if (v !== "loopback") {
    try {
      link = parseLink(v);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
    if (!(link.downBps > 0 && link.upBps > 0)) throw new InvalidArgumentError(`the link between the tiers needs a rate, e.g. "rate=1gbit,delay=0.05ms" (got "${v}")`);
  }
  return [...(prev ?? []), link];
}

const SWEEP_BUDGETS = [0.125, 0.25, 0.5];
const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const linkName = (l: LinkParams | null) => (l ? `${(l.downBps / 1e9).toPrecision(3)} Gbit/s, ${l.delayMs} ms` : "loopback");

export function benchTiersCommand(): Command {
  return new Command("tiers")
    .description("MoNDE vs parameter offloading on this machine: a fast tier with a weight budget here, the near tier in its own process; prefill and decode tokens/s and the bytes moved per token")
    .option("-m, --model <dir>", "Hugging Face model directory, or a .gguf file (the real runtime)")
    .option("--simulate", "instead, the cost model on published hardware (an H100 beside PCIe and DDR5 of several kinds) and a model's config")
    .option("--config <file>", "--simulate: the model's config.json", path.join(PACKAGE_ROOT, "configs/mixtral-8x7b.json"))
    .addOption(new Option("--hardware <name>", "--simulate: a hardware preset, or all").choices([...TIER_HARDWARE.map((h) => h.name), "all"]).default("all"))
    .option("--text <file>", "the prompt is this text's first tokens (default: seeded random tokens)")
    .option("--fast-budget <share>", "expert weights the fast tier may hold, as a share of all experts (25% or 0.25)", expertShare, 0.25)
    .addOption(new Option("--policy <name>", "tier policy").choices([...TIER_POLICIES, "all"]).default("all"))
    .option("--prompt-tokens <n>", "prefill length", positiveInt, 448)
    .option("--gen-tokens <n>", "tokens generated after it", positiveInt, 64)
    .option("--link <spec>", 'the link between the tiers: "loopback" (as it is) or shaped, e.g. "rate=2gbit,delay=0.05ms"; repeat for several', links)
    .addOption(new Option("--copy-from <source>", "where the fast tier copies experts from: near (the near tier sends them over the link) or store (read from the checkpoint on disk)").choices(COPY_SOURCES as unknown as string[]).default("near"))
    .addOption(new Option("--dtype <dtype>", "expert weights as both tiers hold them").choices(WEIGHT_DTYPES as string[]).default("bf16"))
    .addOption(new Option("--wire-dtype <dtype>", "activations on the link (f32 keeps every policy's tokens identical)").choices(WIRE_DTYPES as string[]).default("f32"))
    .option("--window <steps>", "steps of routing statistics MoNDE keeps its hot set by", positiveInt, 16)
    .option("-t, --threads <n>", "the fast tier's compute threads (the near tier has one: a core each on a small machine)", positiveInt, 1)
    .option("--repeats <n>", "timed runs per policy (interleaved across policies), each from an empty fast tier; medians are reported", positiveInt, 5)
    .option("--sweep <dir>", `every policy at fast budgets of ${SWEEP_BUDGETS.map((b) => `${100 * b}%`).join(", ")} on each --link; writes tiers.json, tiers.csv, speedup-prefill.svg and speedup-decode.svg`)
    .option("--verbose", "print every layer's hot/cold split")
    .option("--json", "print the results as JSON")
    .action(async (o: BenchTiersCliOptions) => {
      if (o.simulate && o.copyFrom === "store") throw new Error("--simulate models copies over the link; --copy-from store runs on the real runtime");
      if (o.simulate) return simulated(o);
      if (!o.model) throw new Error("bench tiers needs --model DIR (or --simulate)");
      const model = o.model;
      const opened = openModel(model);
      opened.store.close();
      const cfg = opened.config;
      if (o.promptTokens + o.genTokens > cfg.maxPositions) throw new Error(`${model} holds ${cfg.maxPositions} positions: --prompt-tokens ${o.promptTokens} + --gen-tokens ${o.genTokens} do not fit`);
      const prompt = promptTokens(o, cfg.vocabSize);
      const policies = o.policy === "all" ? [...TIER_POLICIES] : [o.policy];
      const linkList = o.link?.length ? o.link : [null];
      const budgets = o.sweep ? SWEEP_BUDGETS : [o.fastBudget];
      const results: TierBenchResult[] = [];
      for (const link of linkList) {
        for (const budget of budgets) {
          process.stderr.write(`bench tiers: ${policies.join(", ")}, fast budget ${(100 * budget).toFixed(1)}%, link ${linkName(link)}\n`);
          results.push(
            ...(await benchTiers({
              model, policies, budgetFraction: budget, link, copyFrom: o.copyFrom, prompt, genTokens: o.genTokens, weightDType: o.dtype, wireDType: o.wireDtype, window: o.window, threads: o.threads, repeats: o.repeats,
              log: () => undefined,
              onLayer: o.verbose ? (r) => process.stderr.write(`  step ${r.step} layer ${r.layer}: fast [${r.fast.join(" ")}] (copied [${r.copied.join(" ")}]) near [${r.near.join(" ")}] prefetch [${r.prefetched.join(" ")}]; ${r.weightBytes} weight B, ${r.activationBytes} activation B; fast ${r.fastMs.toFixed(2)} ms, near ${r.nearMs.toFixed(2)} ms (model ${r.predicted.ms.toFixed(2)})\n`) : undefined,
            })),
          );
        }
      }
      const same = results.every((r) => JSON.stringify(r.tokens) === JSON.stringify(results[0]!.tokens));
      if (o.sweep) writeSweep(o.sweep, results);
      if (o.json) {
        process.stdout.write(JSON.stringify(results.length === 1 ? results[0] : results) + "\n");
        return;
      }
      process.stdout.write(tierTable(results) + `\nsame greedy tokens under every policy: ${same ? "yes" : "NO"}\n`);
    });
}

function promptTokens(o: BenchTiersCliOptions, vocab: number): number[] {
  if (!o.text) {
    const rng = new Random(1);
    return Array.from({ length: o.promptTokens }, () => 3 + Math.floor(rng.next() * (vocab - 3)));
  }
  const opened = openModel(o.model!);
  const tokenizer = opened.tokenizer();
  opened.store.close();
  const tokens = tokenizer.encode(readTextFile(o.text));
  if (tokens.length < o.promptTokens) throw new Error(`${o.text} has ${tokens.length} tokens, fewer than --prompt-tokens ${o.promptTokens}`);
  return tokens.slice(0, o.promptTokens);
}

/** The simulated mode: every preset (or one), budget and policy, with ratios to offload. */
function simulated(o: BenchTiersCliOptions): void {
  const cfg = parseModelConfig(JSON.parse(readTextFile(o.config)) as Record<string, unknown>, o.config);
  const policies = o.policy === "all" ? [...TIER_POLICIES] : [o.policy];
  const hardware = o.hardware === "all" ? TIER_HARDWARE : TIER_HARDWARE.filter((h) => h.name === o.hardware);
  const budgets = o.sweep ? SWEEP_BUDGETS : [o.fastBudget];
  const results: TierSimResult[] = [];
  for (const hw of hardware)
    for (const budget of budgets)
      for (const policy of policies)
        results.push(simulateTiers({ cfg, hardware: hw, policy, budgetFraction: budget, promptTokens: o.promptTokens, genTokens: o.genTokens, weightDType: o.dtype, wireBytes: wireBytes(o.wireDtype), window: o.window }));
  const rows = withSpeedups(results, (a, b) => a.hardware === b.hardware);
  if (o.sweep) {
    mkdirSync(o.sweep, { recursive: true });
    writeFileSync(path.join(o.sweep, "simulated.json"), JSON.stringify(rows, null, 1) + "\n");
  }
  if (o.json) {
    process.stdout.write(JSON.stringify(rows.length === 1 ? rows[0] : rows) + "\n");
    return;
  }
  const mb = (b: number) => (b / 2 ** 20).toFixed(1);
  process.stdout.write(
    `${path.basename(o.config)} (${cfg.layers} layers, ${cfg.experts} experts, top-${cfg.topK}), ${o.dtype} weights, prompt ${o.promptTokens} + ${o.genTokens} tokens at batch 1, synthetic routing\n\n` +
      hardware.map((h) => `- ${h.name}: ${h.about}`).join("\n") +
      "\n\n| hardware | fast budget | policy | prefill tok/s | decode tok/s | × offload (prefill / decode) | weight MiB/token | activation KiB/token |\n|---|---|---|---|---|---|---|---|\n" +
      rows.map((r) => `| ${r.hardware} | ${(100 * r.fast_budget).toFixed(1)}% | ${r.policy} | ${r.prefill_tokens_per_s.toFixed(0)} | ${r.decode_tokens_per_s.toFixed(2)} | ${r.prefill_speedup.toFixed(2)} / ${r.decode_speedup.toFixed(2)} | ${mb(r.weight_bytes_per_token)} | ${(r.activation_bytes_per_token / 1024).toFixed(1)} |`).join("\n") +
      "\n",
  );
}

/** Each result beside offload's at the same budget and link. */
interface PolicyRates {
  policy: TierPolicyName;
  fast_budget: number;
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
}

/** Each result with its ratios to offload's in the same setting (`same`: the budget and the link or hardware). */
export function withSpeedups<T extends PolicyRates>(results: readonly T[], same: (a: T, b: T) => boolean): Array<T & { prefill_speedup: number; decode_speedup: number }> {
  return results.map((r) => {
    const base = results.find((b) => b.policy === "offload" && b.fast_budget === r.fast_budget && same(b, r));
    return { ...r, prefill_speedup: base ? r.prefill_tokens_per_s / base.prefill_tokens_per_s : NaN, decode_speedup: base ? r.decode_tokens_per_s / base.decode_tokens_per_s : NaN };
  });
}

/** The same link and copy source: loopback's rate is measured per run, so it matches by kind. */
const sameLink = (a: TierBenchResult, b: TierBenchResult) => a.copy_from === b.copy_from && a.link.shaped === b.link.shaped && (!b.link.shaped || a.link.gbps === b.link.gbps);

/** The link, and where copies came from when not over it. */
function linkLabel(r: TierBenchResult): string {
  const link = r.link.shaped ? `${(8 * r.link.gbps).toPrecision(3)} Gbit/s, ${r.link.delay_ms} ms` : `loopback (${(8 * r.link.gbps).toPrecision(3)} Gbit/s)`;
  return r.store_gbps === null ? link : `${link}; copies from the store (${(8 * r.store_gbps).toPrecision(3)} Gbit/s)`;
}

function tierTable(results: readonly TierBenchResult[]): string {
  const kb = (b: number) => (b / 1024).toFixed(1);
  return (
    "| link | fast budget | policy | prefill tok/s | decode tok/s | × offload (prefill / decode) | weight KiB/token | activation KiB/token | hot experts per layer (prefill / decode) | break-even tokens |\n|---|---|---|---|---|---|---|---|---|---|\n" +
    withSpeedups(results, sameLink)
      .map(
        (r) =>
          `| ${linkLabel(r)} | ${(100 * r.fast_budget).toFixed(1)}% (${r.budget_experts}) | ${r.policy} | ${r.prefill_tokens_per_s.toFixed(0)} | ${r.decode_tokens_per_s.toFixed(1)} | ${r.prefill_speedup.toFixed(2)} / ${r.decode_speedup.toFixed(2)} | ${kb(r.weight_bytes_per_token)} | ${kb(r.activation_bytes_per_token)} | ${r.prefill.hot_per_layer.toFixed(1)} / ${r.decode.hot_per_layer.toFixed(2)} | ${r.break_even_tokens} |`,
      )
      .join("\n") +
    "\n"
  );
}

function writeSweep(dir: string, results: readonly TierBenchResult[]): void {
  mkdirSync(dir, { recursive: true });
  const rows = withSpeedups(results, sameLink);
  writeFileSync(path.join(dir, "tiers.json"), JSON.stringify(rows, null, 1) + "\n");
  const head = ["link_gbps", "link_shaped", "copy_from", "store_gbps", "fast_budget", "policy", "prefill_tokens_per_s", "decode_tokens_per_s", "prefill_speedup", "decode_speedup", "weight_bytes_per_token", "activation_bytes_per_token"];
  writeFileSync(
    path.join(dir, "tiers.csv"),
    [head.join(","), ...rows.map((r) => [r.link.gbps, r.link.shaped, r.copy_from, r.store_gbps ?? "", r.fast_budget, r.policy, r.prefill_tokens_per_s, r.decode_tokens_per_s, r.prefill_speedup, r.decode_speedup, r.weight_bytes_per_token, r.activation_bytes_per_token].join(","))].join("\n") + "\n",
  );
  for (const phase of ["prefill", "decode"] as const) writeFileSync(path.join(dir, `speedup-${phase}.svg`), speedupPicture(rows, phase));
}

/** A phase's speedup over offload against the fast budget: one line per policy and link. */
export function speedupPicture(rows: ReadonlyArray<TierBenchResult & { prefill_speedup: number; decode_speedup: number }>, phase: "prefill" | "decode"): string {
  const series = new Map<string, Array<{ x: number; y: number }>>();
  for (const r of rows) {
    if (r.policy === "offload") continue;
    const name = `${r.policy}, ${r.link.shaped ? `${(8 * r.link.gbps).toPrecision(3)} Gbit/s link` : "loopback"}${r.copy_from === "store" ? ", store copies" : ""}`;
    (series.get(name) ?? series.set(name, []).get(name)!).push({ x: 100 * r.fast_budget, y: phase === "prefill" ? r.prefill_speedup : r.decode_speedup });
  }
  return linePlot({ title: `${phase === "prefill" ? "Prefill" : "Decode"}: speedup over parameter offloading`, xLabel: "fast-tier budget (% of the experts)", yLabel: "× offload tokens/s", series: [...series].map(([name, points]) => ({ name, points })) });
}
