import { Command } from "commander";
import os from "node:os";
import { runDevice } from "../../runtime/device.js";
import { byteSize, duration, nonNegativeNumber, positiveInt } from "../options.js";

export function deviceCommand(): Command {
  return new Command("device")
    .description("run an expert device: connect to a base station, load the experts it assigns, serve expert calls; reconnect when the base station goes away or restarts, keeping the experts held")
    .requiredOption("--bs <url>", "the base station, e.g. ws://127.0.0.1:8080")
    .option("--name <name>", "this device's name", os.hostname())
    .option("--token <token>", "the cluster's join token, as `distmoe serve` printed it (default: $DISTMOE_JOIN_TOKEN); proven to the base station, never sent")
    .option("-t, --threads <n>", "compute threads (default: the cores available)", positiveInt)
    .option("--spin-ms <ms>", "how long idle compute threads spin before sleeping", nonNegativeNumber)
    .option("--memory <size>", "memory offered for expert weights, e.g. 2GiB (default: the memory free at start); the base station places no more than that here", byteSize)
    .option("--model <dir>", "this device's copy of the model (default: the base station's path, if it holds the same model here; otherwise the weights are streamed)")
    .option("--fetch-weights", "always stream the assigned experts' weights from the base station")
    .option("--cache <dir>", "where streamed weights are kept between runs (default ~/.cache/distmoe)")
    .option(
      "--retry-for <duration>",
      "how long the base station may stay out of reach before the device exits with an error, e.g. 30s, 5m, 1h (default: forever); " +
        "0: never reconnect: a base station that shuts down (says leave) ends the device with exit code 0, one that drops or cannot be reached with 1",
      duration,
    )
    .action(async (o: { bs: string; name: string; token?: string; threads?: number; spinMs?: number; memory?: number; model?: string; fetchWeights?: boolean; cache?: string; retryFor?: number }) => {
      // SIGINT/SIGTERM: say leave and end normally; a second signal ends the process at once
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once("SIGINT", onSignal).once("SIGTERM", onSignal);
      try {
        await runDevice({
          bs: o.bs, name: o.name, token: o.token ?? (process.env.DISTMOE_JOIN_TOKEN || undefined), threads: o.threads, spinMs: o.spinMs, memoryBytes: o.memory, model: o.model, fetchWeights: o.fetchWeights, cacheDir: o.cache,
          retryForMs: o.retryFor, signal: stop.signal,
        });
      } finally {
        process.off("SIGINT", onSignal).off("SIGTERM", onSignal);
      }
    });
}
