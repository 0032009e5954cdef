import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Command, Option } from "commander";
import { loadScenario } from "../../channel/scenario.js";
import { WEIGHT_DTYPES, type WeightDType } from "../../kernels/backend.js";
import { parseModelConfig } from "../../model/config.js";
import { WIRE_DTYPES, type WireDType } from "../../protocol/activations.js";
import { describePolicy, POLICY_NAMES, type PolicySpec } from "../../policies/registry.js";
import { availableParallelism } from "node:os";
import { simulateAll } from "../../sim/parallel.js";
import { scaleScenario, type SimOptions } from "../../sim/simulator.js";
import { SWEEP_THETAS } from "../../eval/sweep.js";
import { DEFAULT_SCENARIO } from "./eval.js";
import { addPolicyOptions, addTierOptions, nonNegativeNumber, policySpec, positiveInt, tierSpec, type PolicyCliOptions, type TierCliOptions } from "../options.js";

const SIM_POLICIES = POLICY_NAMES.filter((p) => p !== "joint");
const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

interface SimulateCliOptions extends TierCliOptions, PolicyCliOptions {
  config: string;
  scenario: string;
  devices?: number;
  users: number;
  tokens: number;
  trace?: string;
  skew: number;
  seed: number;
  slotMs: number;
  dtype: WeightDType;
  wireDtype: WireDType;
  replicas: number;
  sweep?: boolean;
  jobs: number;
  json?: boolean;
}

export function simulateCommand(): Command {
  return addPolicyOptions(addTierOptions(new Command("simulate")), SIM_POLICIES, "expert selection policy (joint splits the band per layer for one step in the air, which the shared cell of many users does not do)")
    .description("discrete-event simulation of the cell at scale: many users, queues at the devices, the same selection policies; latency distribution and throughput")
    .option("--config <file>", "a model's config.json, or its directory (the model's sizes; no weights needed)", path.join(PACKAGE_ROOT, "configs/mixtral-8x7b.json"))
    .option("--scenario <file>", "the cell", DEFAULT_SCENARIO)
    .option("--devices <n>", "scale the scenario to n devices (kinds in turn, distances over its range)", positiveInt)
    .option("--users <n>", "concurrent users, each decoding tokens back to back", positiveInt, 16)
    .option("--tokens <n>", "tokens per user", positiveInt, 256)
    .option("--trace <file>", "router outputs from a routing trace (distmoe eval --policy topk --trace FILE) instead of a synthetic router")
    .option("--skew <s>", "synthetic router: expert popularity skew (0: uniform)", nonNegativeNumber, 0.5)
    .option("--seed <n>", "synthetic router's seed", positiveInt, 1)
    .option("--slot-ms <ms>", "the channel is redrawn every slot of this length (well under the coherence time: 42 ms at 10 Hz Doppler)", nonNegativeNumber, 5)
    .addOption(new Option("--dtype <dtype>", "weights as the devices hold them").choices(WEIGHT_DTYPES as string[]).default("bf16"))
    .addOption(new Option("--wire-dtype <dtype>", "activations on the air").choices(WIRE_DTYPES as string[]).default("bf16"))
    .option("--replicas <n>", "devices holding each expert (a call goes to the one with the better channel)", positiveInt, 1)
    .option("--sweep", "run top-k, and wlr at θ = 0.1, …, 0.9, and print a table")
    .option("--jobs <n>", "simulations run at once in a sweep, one per process (default: the cores)", positiveInt, availableParallelism())
    .option("--json", "print the report(s) as JSON")
    .action(async (o: SimulateCliOptions) => {
      const file = statSync(o.config, { throwIfNoEntry: false })?.isDirectory() ? path.join(o.config, "config.json") : o.config;
      let json: Record<string, unknown>;
      try {
        json = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
      } catch (e) {
        throw new Error(`cannot read the model config ${file}: ${(e as Error).message}`);
      }
      const cfg = parseModelConfig(json, file);
      const base = loadScenario(o.scenario);
      const scenario = o.devices ? scaleScenario(base, o.devices) : base;
      const run = (spec: PolicySpec): SimOptions => ({
        cfg, scenario, spec, weightDType: o.dtype, wireDType: o.wireDtype, replicas: o.replicas, users: o.users, tokensPerUser: o.tokens, slotMs: Math.max(o.slotMs, 1e-3),
        routing: o.trace ? { trace: o.trace } : { synthetic: { skew: o.skew, seed: o.seed } },
        tiers: tierSpec(o),
      });
      const specs: PolicySpec[] = o.sweep
        ? [{ name: "topk" }, ...SWEEP_THETAS.filter((t) => t > 0).map((theta) => ({ name: "wlr" as const, theta }))]
        : [policySpec(o)];
      const wall0 = performance.now();
      const reports = await simulateAll(specs.map(run), o.jobs);
      const wallS = (performance.now() - wall0) / 1000, calls = reports.reduce((a, r) => a + r.expert_calls, 0);
      if (o.json) {
        process.stdout.write(JSON.stringify(o.sweep ? reports : reports[0]) + "\n");
        return;
      }
      process.stdout.write(
        `${path.basename(file)} (${cfg.layers} layers, ${cfg.experts} experts, top-${cfg.topK}) on ${scenario.name} (${scenario.devices.length} devices), ${o.users} users × ${o.tokens} tokens, ${o.trace ? `routing from ${o.trace}` : `synthetic routing (skew ${o.skew})`}\n\n` +
          "| policy | experts/token | dropped mass | latency mean / p50 / p95 / p99 (ms) | tokens/s | busiest device | expert calls | calls at the BS | calls/s simulated |\n|---|---|---|---|---|---|---|---|---|\n" +
          reports
            .map((r) => `| ${describePolicy(r.policy)}${r.tiers ? `, ${r.tiers.policy} at BS budget ${(100 * r.tiers.bs_budget).toFixed(1)}%` : ""} | ${r.experts_per_token.toFixed(3)} | ${(100 * r.dropped_gate_mass).toFixed(2)}% | ${[r.latency_ms.mean, r.latency_ms.p50, r.latency_ms.p95, r.latency_ms.p99].map((v) => v.toFixed(2)).join(" / ")} | ${r.tokens_per_s.toFixed(1)} | ${(100 * Math.max(...r.device_busy)).toFixed(0)}% busy | ${r.expert_calls} | ${r.tiers ? `${(100 * r.tiers.bs_share).toFixed(1)}%` : "0%"} | ${(r.calls_per_wall_s / 1e6).toFixed(2)} M |`)
            .join("\n") +
          "\n" +
          (o.sweep ? `\nsweep: ${calls} expert calls in ${wallS.toFixed(2)} s on ${Math.min(o.jobs, specs.length)} process(es), ${(calls / wallS / 1e6).toFixed(2)} M calls/s\n` : ""),
      );
    });
}
