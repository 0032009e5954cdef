import { Command } from "commander";
import { Engine } from "../../runtime/engine.js";
import { benchEngine } from "../../eval/bench.js";
import { addModelOptions, engineOptions, positiveInt, type ModelCliOptions } from "../options.js";
import { benchTiersCommand } from "./bench-tiers.js";

interface BenchCliOptions extends ModelCliOptions {
  promptTokens: number;
  decodeTokens: number;
  repeats: number;
  json?: boolean;
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
    .option("--json", "print the figures as one JSON object")
    .action(async (o: BenchCliOptions) => {
      const engine = Engine.load(o.model, { ...engineOptions(o), contextLength: o.promptTokens + o.decodeTokens + 1 });
      try {
        const r = await benchEngine(engine, { promptTokens: o.promptTokens, decodeTokens: o.decodeTokens, repeats: o.repeats });
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
          ].join("\n") + "\n",
        );
      } finally {
        engine.close();
      }
    });
}
