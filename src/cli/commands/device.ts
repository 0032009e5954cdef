import { Command } from "commander";
import os from "node:os";
import { runDevice } from "../../runtime/device.js";
import { byteSize, nonNegativeNumber, positiveInt } from "../options.js";

export function deviceCommand(): Command {
  return new Command("device")
    .description("run an expert device: connect to a base station, load the experts it assigns, serve expert calls")
    .requiredOption("--bs <url>", "the base station, e.g. ws://127.0.0.1:8080")
    .option("--name <name>", "this device's name", os.hostname())
    .option("-t, --threads <n>", "compute threads (default: the cores available)", positiveInt)
    .option("--spin-ms <ms>", "how long idle compute threads spin before sleeping", nonNegativeNumber)
    .option("--memory <size>", "memory offered for expert weights, e.g. 2GiB (default: the memory free at start); the base station places no more than that here", byteSize)
    .option("--model <dir>", "this device's copy of the model (default: the base station's path, if it exists here; otherwise the weights are streamed)")
    .option("--fetch-weights", "always stream the assigned experts' weights from the base station")
    .option("--cache <dir>", "where streamed weights are kept between runs (default ~/.cache/distmoe)")
    .action((o: { bs: string; name: string; threads?: number; spinMs?: number; memory?: number; model?: string; fetchWeights?: boolean; cache?: string }) =>
      runDevice({ bs: o.bs, name: o.name, threads: o.threads, spinMs: o.spinMs, memoryBytes: o.memory, model: o.model, fetchWeights: o.fetchWeights, cacheDir: o.cache }),
    );
}
