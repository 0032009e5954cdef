import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Command, Option } from "commander";
import type { JointQuality } from "../../policies/joint.js";
import { BANDWIDTH_MODES, type BandwidthMode } from "../../channel/cell-costs.js";
import { loadScenario, type Scenario } from "../../channel/scenario.js";
import { evaluateOnCluster } from "../../eval/cluster-eval.js";
import { openModel } from "../../model/open-model.js";
import { protocolTokens } from "../../eval/perplexity.js";
import { headlines, runSweep, sweepCsv, tradeoffPicture, type SweepPoint } from "../../eval/sweep.js";
import { BS_BUDGETS, runTierSweep, tierSweepCsv, tierSweepPicture, tierSweepTable } from "../../eval/tier-sweep.js";
import { WirelessEval, type EvalReport } from "../../eval/wireless-eval.js";
import { RoutingTraceFile } from "../../moe/trace.js";
import { describePolicy, POLICY_NAMES, type PolicySpec } from "../../policies/registry.js";
import { Engine } from "../../runtime/engine.js";
import { ProgressBar } from "../progress.js";
import { addModelOptions, addPolicyOptions, addTierOptions, devicesDType, engineOptions, nonNegativeNumber, policySpec, positiveInt, tierSpec, readTextFile, type ModelCliOptions, type PolicyCliOptions, type TierCliOptions } from "../options.js";

/** scenarios/cell-8.json of this package */
export const DEFAULT_SCENARIO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../scenarios/cell-8.json");

interface EvalCliOptions extends ModelCliOptions, TierCliOptions, PolicyCliOptions {
  text: string;
  tokens: number;
  scenario: string;
  bandwidth: BandwidthMode;
  jointQuality: JointQuality;
  tokenMs: number;
  sweep?: string;
  trace?: string;
  json?: boolean;
  tierSweep?: string;
}

export function evalCommand(): Command {
  return addPolicyOptions(addTierOptions(addModelOptions(
    new Command("eval").description(
      "WDMoE evaluation: the model over a text with an expert selection policy in the loop, each token priced on a wireless cell (perplexity, accuracy, experts per token, modelled latency)",
    ),
  )), POLICY_NAMES, "expert selection policy")
    .requiredOption("--text <file>", "UTF-8 text, one paragraph per line")
    .option("--tokens <n>", "number of predicted tokens", positiveInt, 4096)
    .option("--scenario <file>", "the cell (devices, distances, powers, bandwidth, fading)", DEFAULT_SCENARIO)
    .addOption(new Option("--bandwidth <mode>", "the band's split for policies that do not split it: equal (static 1/K each) or optimal (the called devices finish together)").choices(BANDWIDTH_MODES as string[]).default("equal"))
    .addOption(new Option("--joint-quality <mode>", "joint: price (dropped gate mass priced against latency, a budget per step) or token-mass (each token keeps ≥ 1 − θ of its top-k mass)").choices(["price", "token-mass"]).default("price"))
    .option("--token-ms <ms>", "time between tokens on the cell's clock (the fading moves on by this much per token)", nonNegativeNumber, 20)
    .option("--sweep <dir>", "run every policy across its knob and write sweep.csv, sweep.json and tradeoff.svg to <dir> (with --local-devices: top-k and wlr at θ = 0.3 and 0.7, measured against modelled)")
    .option("--tier-sweep <dir>", `the BS's tiers with --policy: all experts on the devices, then offload and monde at BS budgets of ${BS_BUDGETS.map((b) => `${100 * b}%`).join(", ")} for each store rate; writes tiers.csv, tiers.json and tiers.svg to <dir>`)
    .option("--trace <file>", "record every layer's routing decision as JSON Lines (single runs)")
    .option("--json", 'print {"policy", "theta", "perplexity", "accuracy", "experts_per_token", "dropped_gate_mass", "latency_ms", "breakdown_ms", …}')
    .action(async (o: EvalCliOptions) => {
      if (o.link) throw new Error("eval takes the links from --scenario's channel model; --link does not apply");
      if (o.sweep && o.trace) throw new Error("--trace records a single run; leave it out of --sweep");
      if (o.localDevices && o.trace) throw new Error("--trace records the modelled evaluation; leave out --local-devices");
      if ((o.bsBudget !== undefined || o.tierSweep) && (o.sweep || o.localDevices)) throw new Error("the BS's tiers are priced in the modelled evaluation, one policy at a time; leave out --sweep and --local-devices");
      if (o.tierSweep && o.bsBudget !== undefined) throw new Error("--tier-sweep runs its own BS budgets and tier policies; leave out --bs-budget");
      const tiers = o.tierSweep ? undefined : tierSpec(o);
      const spec: PolicySpec = { ...policySpec(o), quality: o.jointQuality };
      const text = readTextFile(o.text);
      const scenario = loadScenario(o.scenario);
      if (o.localDevices) return evalOnCluster(o, spec, text, scenario);
      const trace = o.trace ? new RoutingTraceFile(o.trace) : undefined;
      let harness: WirelessEval | null = null;
      const engine = Engine.load(o.model, { ...engineOptions(o), policy: (r, c) => harness!.policy(r, c), trace });
      try {
        harness = new WirelessEval({ cfg: engine.config, scenario, weightDType: engine.dtype, wireDType: o.wireDtype, replicas: o.replicas, tokenMs: o.tokenMs });
        const tokens = protocolTokens(engine.tokenizer, text, o.tokens + 1);
        const run = (s: PolicySpec, bandwidth: BandwidthMode, t = tiers) => {
          const bar = new ProgressBar(t ? `${describePolicy(s)}, ${t.policy} at BS budget ${(100 * t.budget).toFixed(1)}%` : describePolicy(s));
          return harness!.evaluate(engine.model, tokens, s, { bandwidth, tiers: t, onProgress: (d, n) => bar.update(d, n, "tokens") });
        };
        if (o.tierSweep) {
          const reports = await runTierSweep((t) => run(spec, o.bandwidth, t), o.bsStoreGbps ?? [scenario.bs.storeGbps], o.tierWindow);
          mkdirSync(o.tierSweep, { recursive: true });
          const files = { "tiers.csv": tierSweepCsv(reports), "tiers.json": JSON.stringify(reports, null, 1) + "\n", "tiers.svg": tierSweepPicture(reports, scenario.name) };
          for (const [name, body] of Object.entries(files)) writeFileSync(path.join(o.tierSweep, name), body);
          process.stdout.write(tierSweepTable(reports) + `wrote ${Object.keys(files).map((f) => path.join(o.tierSweep!, f)).join(", ")}\n`);
          return;
        }
        if (!o.sweep) {
          const r = await run(spec, o.bandwidth);
          process.stdout.write(o.json ? JSON.stringify(r) + "\n" : formatReport(r));
          return;
        }
        const points = await runSweep(run);
        mkdirSync(o.sweep, { recursive: true });
        writeFileSync(path.join(o.sweep, "sweep.csv"), sweepCsv(points));
        writeFileSync(path.join(o.sweep, "sweep.json"), JSON.stringify(points, null, 1) + "\n");
        writeFileSync(path.join(o.sweep, "tradeoff.svg"), tradeoffPicture(points, scenario.name));
        process.stdout.write(formatSweep(points) + `wrote ${["sweep.csv", "sweep.json", "tradeoff.svg"].map((f) => path.join(o.sweep!, f)).join(", ")}\n`);
      } finally {
        trace?.close();
        engine.close();
      }
    });
}

/** The runtime check: the policy (or top-k and wlr at θ = 0.3 and 0.7) decoded on local devices with links shaped by the cell. */
async function evalOnCluster(o: EvalCliOptions, spec: PolicySpec, text: string, scenario: Scenario): Promise<void> {
  const weightDType = devicesDType(o);
  const opened = openModel(o.model);
  const tokenizer = opened.tokenizer();
  opened.store.close();
  const tokens = protocolTokens(tokenizer, text, o.tokens + 1);
  const specs: PolicySpec[] = o.sweep ? [{ name: "topk" }, { name: "wlr", theta: 0.3 }, { name: "wlr", theta: 0.7 }] : [spec];
  const bars = new Map(specs.map((s) => [s, new ProgressBar(describePolicy(s))]));
  const reports = await evaluateOnCluster(
    { model: o.model, scenario, devices: o.localDevices!, weightDType, wireDType: o.wireDtype, threads: o.threads },
    tokens,
    specs,
    (s, d, t) => bars.get(s)!.update(d, t, "tokens"),
  );
  if (o.sweep) {
    mkdirSync(o.sweep, { recursive: true });
    writeFileSync(path.join(o.sweep, "runtime-sweep.json"), JSON.stringify(reports, null, 1) + "\n");
  }
  if (o.json) {
    process.stdout.write(JSON.stringify(o.sweep ? reports : reports[0]) + "\n");
    return;
  }
  const lines = [
    `${scenario.name}: the first ${o.localDevices} devices as local processes, links shaped by the channel model; tokens decoded one per step`,
    "",
    "| policy | perplexity | experts/token | measured mean / p50 / p95 (ms) | modelled mean / p50 / p95 (ms) | measured ÷ modelled | BS ms | transport ms per layer |",
    "|---|---|---|---|---|---|---|---|",
    ...reports.map((r) => `| ${r.policy}${r.theta !== null ? ` θ=${r.theta}` : ""} | ${r.perplexity.toFixed(3)} | ${r.experts_per_token.toFixed(3)} | ${[r.measured_ms.mean, r.measured_ms.p50, r.measured_ms.p95].map(ms).join(" / ")} | ${[r.modelled_ms.mean, r.modelled_ms.p50, r.modelled_ms.p95].map(ms).join(" / ")} | ${r.measured_over_modelled.toFixed(3)} | ${r.bs_ms.toFixed(3)} | ${r.transport_ms.toFixed(3)} |`),
  ];
  if (o.sweep) {
    const top = reports[0]!;
    for (const r of reports.slice(1)) lines.push(`wlr θ=${r.theta}: measured ${(100 * (1 - r.measured_ms.mean / top.measured_ms.mean)).toFixed(1)}% faster than top-k, modelled ${(100 * (1 - r.modelled_ms.mean / top.modelled_ms.mean)).toFixed(1)}%`);
  }
  process.stdout.write(lines.join("\n") + "\n");
}

const ms = (v: number) => v.toFixed(3);

function formatReport(r: EvalReport): string {
  const b = r.breakdown_ms;
  return [
    `policy           ${r.policy}${r.theta !== null ? ` (θ = ${r.theta})` : ""}${r.budget_ms !== null ? ` (budget ${r.budget_ms} ms)` : ""}, ${r.bandwidth} band, scenario ${r.scenario}`,
    `perplexity       ${r.perplexity.toFixed(4)} over ${r.tokens} tokens (next-token accuracy ${r.accuracy.toFixed(4)})`,
    `experts          ${r.experts_per_token.toFixed(3)} per token and MoE layer; dropped gate mass ${(100 * r.dropped_gate_mass).toFixed(2)}%`,
    `latency          mean ${ms(r.latency_ms.mean)} ms, p50 ${ms(r.latency_ms.p50)} ms, p95 ${ms(r.latency_ms.p95)} ms per token (modelled)`,
    `breakdown        BS compute ${ms(b.bs_compute)} + down ${ms(b.down)} + device compute ${ms(b.device_compute)} + up ${ms(b.up)}${r.tiers ? ` + BS experts ${ms(b.bs_experts)}` : ""} ms`,
    `policy cost      ${r.policy_us.toFixed(2)} µs per token and MoE layer`,
    ...(r.tiers ? [formatTiers(r.tiers)] : []),
  ].join("\n") + "\n";
}

function formatTiers(t: NonNullable<EvalReport["tiers"]>): string {
  return [
    `tiers            ${t.policy}, BS budget ${(100 * t.bs_budget).toFixed(1)}% (${t.bs_experts_per_layer} experts per layer); ${(100 * t.bs_share).toFixed(1)}% of expert calls at the BS`,
    `moved            ${t.copies_per_token.toFixed(3)} store reads waited for + ${t.prefetches_per_token.toFixed(3)} in the background per token (${(t.weight_bytes_per_token / 1024).toFixed(1)} KiB of weights); ${(t.radio_bytes_per_token / 1024).toFixed(2)} KiB of activations over the radio`,
  ].join("\n");
}

/** The sweep's table (Markdown) and its headline figures. */
export function formatSweep(points: readonly SweepPoint[]): string {
  const lines = [
    "| series | knob | perplexity | accuracy | experts/token | dropped mass | latency mean / p50 / p95 (ms) | policy µs |",
    "|---|---|---|---|---|---|---|---|",
  ];
  for (const { series, report: r } of points) {
    const knob = r.theta !== null ? `θ=${r.theta}` : r.budget_ms !== null ? `${r.budget_ms} ms` : "";
    lines.push(`| ${series} | ${knob} | ${r.perplexity.toFixed(3)} | ${r.accuracy.toFixed(4)} | ${r.experts_per_token.toFixed(3)} | ${(100 * r.dropped_gate_mass).toFixed(2)}% | ${ms(r.latency_ms.mean)} / ${ms(r.latency_ms.p50)} / ${ms(r.latency_ms.p95)} | ${r.policy_us.toFixed(1)} |`);
  }
  lines.push("", "Latency reduction against top-k on an equally split band, at most 1 % / 5 % more perplexity:", "");
  const pct = (h: { reduction: number } | null) => (h ? `${(100 * h.reduction).toFixed(1)}%` : "none");
  for (const h of headlines(points)) lines.push(`- ${h.series}: ${pct(h.within1pct)} / ${pct(h.within5pct)}`);
  return lines.join("\n") + "\n\n";
}
