import { Command, InvalidArgumentError } from "commander";
import os from "node:os";
import { parseBsUrl, runDevice } from "../../runtime/device.js";
import { parseFingerprint } from "../../protocol/tls-pin.js";
import type { BackendChoice } from "../../kernels/select-backend.js";
import { addKernelOptions, byteSize, duration, nonNegativeNumber } from "../options.js";

export function deviceCommand(): Command {
  return addKernelOptions(new Command("device"))
    .description("run an expert device: connect to a base station, load the experts it assigns, serve expert calls; reconnect when the base station goes away or restarts, keeping the experts held")
    .requiredOption("--bs <url>", "the base station, e.g. ws://127.0.0.1:8080, or wss://HOST:PORT when it serves TLS", optionParser((v) => {
      parseBsUrl(v);
      return v;
    }))
    .option("--fingerprint <sha256>", "with wss://: the SHA-256 fingerprint of the base station's certificate, as `distmoe serve` printed it (AB:CD:…, or plain hex); the device refuses any other before sending anything. Without it, the certificate must verify against this machine's CAs", optionParser(parseFingerprint))
    .option("--name <name>", "this device's name", os.hostname())
    .option("--token <token>", "the cluster's join token, as `distmoe serve` printed it (default: $DISTMOE_JOIN_TOKEN); proven to the base station, never sent")
    .option("--spin-ms <ms>", "wasm: how long idle compute threads spin before sleeping", nonNegativeNumber)
    .option("--memory <size>", "memory offered for expert weights, e.g. 2GiB (default: the memory free at start); the base station places no more than that here", byteSize)
    .option("--model <dir>", "this device's copy of the model: a directory or a .gguf file (default: the base station's path, if it holds the same model here; otherwise the weights are streamed)")
    .option("--fetch-weights", "always stream the assigned experts' weights from the base station")
    .option("--cache <dir>", "where streamed weights are kept between runs (default ~/.cache/distmoe)")
    .option("--cache-max <size>", "the most the cache of streamed weights keeps, across models, e.g. 8GiB; the oldest tensors not held go first (default: twice --memory, or twice the memory free where --memory is 0 or not given)", byteSize)
    .option("--identity <file>", "this device's key (Ed25519, PEM), made when missing; the base station knows the device by it (default: .identity/NAME.key in the cache directory)")
    .option(
      "--retry-for <duration>",
      "how long the base station may stay out of reach before the device exits with an error, e.g. 30s, 5m, 1h (default: forever); " +
        "0: never reconnect: a base station that shuts down (says leave) ends the device with exit code 0, one that drops or cannot be reached with 1",
      duration,
    )
    .action(async (o: { bs: string; fingerprint?: string; name: string; token?: string; backend?: BackendChoice; threads?: number; poll?: number; spinMs?: number; memory?: number; model?: string; fetchWeights?: boolean; cache?: string; cacheMax?: number; identity?: string; retryFor?: number }) => {
      // SIGINT/SIGTERM: say leave and end normally; a second signal ends the process at once
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once("SIGINT", onSignal).once("SIGTERM", onSignal);
      try {
        await runDevice({
          bs: o.bs, fingerprint: o.fingerprint, name: o.name, token: o.token ?? (process.env.DISTMOE_JOIN_TOKEN || undefined), backend: o.backend, threads: o.threads, poll: o.poll, spinMs: o.spinMs, memoryBytes: o.memory, model: o.model, fetchWeights: o.fetchWeights, cacheDir: o.cache, cacheBytes: o.cacheMax, identityFile: o.identity,
          retryForMs: o.retryFor, signal: stop.signal,
        });
      } finally {
        process.off("SIGINT", onSignal).off("SIGTERM", onSignal);
      }
    });
}

/** `parse` as an option's parser: its error is reported as that option's. */
function optionParser<T>(parse: (v: string) => T): (v: string) => T {
  return (v) => {
    try {
      return parse(v);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  };
}
