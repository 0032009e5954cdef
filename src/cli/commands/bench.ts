import { Command } from "commander";
import { Engine } from "../../runtime/engine.js";
import { benchEngine, type OpShare } from "../../eval/bench.js";
import { addModelOptions, engineOptions, positiveInt, type ModelCliOptions } from "../options.js";
import { benchTiersCommand } from "./bench-tiers.js";

interface BenchCliOptions extends ModelCliOptions {
  promptTokens: number;
  decodeTokens: number;
  repeats: number;
  json?: boolean;
  ops?: boolean;
}

/** `bench` runs the engine benchmark (its default) or `bench tiers`. */
export function benchCommand(): Command {
  return new Command("bench")
    .description("benchmarks: the engine (default), or the memory tiers (bench tiers)")
    .addCommand(benchEngineCommand(), { isDefault: true })
    .addCommand(benchTiersCommand());
}

function benchEngineCommand(): Command {
  return addModelOptions(new Command("engine").description("prefill and decode tokens/s, and decode's effective weight bandwidth against the measured memory read bandwidth"))
    .option("--prompt-tokens <n>", "prefill length", positiveInt, 256)
    .option("--decode-tokens <n>", "decode steps timed", positiveInt, 64)
    .option("--repeats <n>", "timed repetitions; medians are reported", positiveInt, 3)
    .option("--ops", "native: then repeats the prefills and decode runs with each op a graph of its own, timed alone: where a step's time goes, op by op (each op paying a launch; means of the repetitions)")
    .option("--json", "print the figures as one JSON object")
    .action(async (o: BenchCliOptions) => {
      const engine = Engine.load(o.model, { ...engineOptions(o), contextLength: o.promptTokens + o.decodeTokens + 1 });
      try {
        const r = await benchEngine(engine, { promptTokens: o.promptTokens, decodeTokens: o.decodeTokens, repeats: o.repeats, ops: o.ops });
        if (o.json) {
          process.stdout.write(JSON.stringify(r) + "\n");
          return;
        }
        process.stdout.write(
          [
            `kernels          ${r.kernels}, ${r.threads} threads, weights ${engine.dtype} (medians of ${o.repeats} runs)`,
            `prefill          ${r.prefill_tokens_per_s.toFixed(1)} tokens/s (${o.promptTokens} tokens; ${r.prefill_gflops.toFixed(1)} GFLOP/s of weight products, ${((100 * r.prefill_gflops) / r.compute_gflops).toFixed(0)}% of the measured ${r.compute_gflops.toFixed(1)} GFLOP/s peak)`,
            `decode           ${r.decode_tokens_per_s.toFixed(1)} tokens/s (${(r.decode_weight_bytes_per_token / 2 ** 20).toFixed(1)} MiB of weights per token; ${r.decode_gflops.toFixed(1)} GFLOP/s)`,
            `weight bandwidth ${r.decode_weight_gbps.toFixed(1)} GB/s in decode vs ${r.memory_read_gbps.toFixed(1)} GB/s measured read bandwidth: ratio ${r.bandwidth_ratio.toFixed(2)}`,
            ...(r.prefill_host_ms === undefined
              ? []
              : [`prefill host time ${r.prefill_host_ms.toFixed(2)} ms per prefill outside the kernels' graphs (${r.prefill_graphs} graphs): JavaScript, mostly the MoE layers' routing`]),
            ...(r.decode_host_ms_per_token === undefined
              ? []
              : [`decode host time ${(r.decode_host_ms_per_token * 1000).toFixed(0)} µs per token outside the kernels' graphs (${r.decode_graphs_per_token!.toFixed(1)} graphs per token): JavaScript, the logits read, the greedy pick`]),
            ...(r.ops
              ? [
                  ...opLines(`prefill by op    each op a graph of its own: ${r.ops.prefill_ms.toFixed(2)} ms a prefill (${(1000 / (r.prefill_tokens_per_s / o.promptTokens)).toFixed(2)} ms timed)`, r.ops.prefill, "a prefill"),
                  ...opLines(`decode by op     likewise: ${r.ops.decode_ms_per_token.toFixed(3)} ms a token (${(1000 / r.decode_tokens_per_s).toFixed(3)} ms timed)`, r.ops.decode, "a token"),
                ]
              : []),
          ].join("\n") + "\n",
        );
      } finally {
        engine.close();
      }
    });
}

/** bench --ops' lines for one step kind: a heading, then each op's time, share and graphs per step. */
function opLines(heading: string, ops: readonly OpShare[], step: string): string[] {
  const total = ops.reduce((t, x) => t + x.ms, 0);
  return [heading, ...ops.map((x) => `  ${x.op.padEnd(9)} ${x.ms.toFixed(3).padStart(8)} ms ${((100 * x.ms) / total).toFixed(0).padStart(3)} %  ${x.graphs.toFixed(1)} graphs ${step}`)];
}
