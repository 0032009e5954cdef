import http from "node:http";
import path from "node:path";
import { Command, Option } from "commander";
import { Engine } from "../../runtime/engine.js";
import { DeviceHub } from "../../runtime/device-hub.js";
import { spawnLocalDevices } from "../../runtime/local-cluster.js";
import { createApiHandler, startingHandler } from "../../server/http.js";
import { ServerMetrics } from "../../server/metrics.js";
import { addModelOptions, engineOptions, nonNegativeInt, positiveInt, type ModelCliOptions } from "../options.js";

interface ServeCliOptions extends ModelCliOptions {
  port: number;
  host: string;
  devices: number;
  maxBatch: number;
}

export function serveCommand(): Command {
  return addModelOptions(new Command("serve").description("the base station: an OpenAI-compatible HTTP API; expert devices attach to the same port over WebSocket"))
    .option("-p, --port <n>", "port for HTTP and device connections", nonNegativeInt, 8080)
    .option("--host <address>", "address to listen on", "127.0.0.1")
    .option("--devices <n>", "wait for N devices (`distmoe device --bs ws://HOST:PORT`) and run the experts on them", nonNegativeInt, 0)
    .addOption(new Option("--max-batch <n>", "requests batched into one step at most").argParser(positiveInt).default(16))
    .action(async (o: ServeCliOptions) => {
      const remote = (o.localDevices ?? 0) + o.devices;
      const server = http.createServer();
      let handler: http.RequestListener = startingHandler;
      server.on("request", (req, res) => handler(req, res));
      let metrics: ServerMetrics | null = null;
      const hub = remote > 0
        ? DeviceHub.attach(server, {
            model: path.resolve(o.model),
            weightDType: o.dtype,
            wireDType: o.wireDtype,
            replicas: o.replicas,
            link: o.link && (() => o.link!),
            onCall: (device, ms, out, inn) => metrics?.deviceCall(device, ms, out, inn),
          })
        : null;
      await new Promise<void>((resolve, reject) => server.once("error", reject).listen(o.port, o.host, resolve));
      const address = server.address() as { address: string; port: number };
      process.stderr.write(`listening on http://${address.address}:${address.port} (devices: ws://${address.address}:${address.port})\n`);
      const local = o.localDevices ? spawnLocalDevices(`ws://${address.address}:${address.port}`, o.localDevices) : null;
      if (hub) {
        process.stderr.write(`waiting for ${remote} devices\n`);
        await Promise.race([hub.start(remote), ...(local ? [local.failed] : [])]);
        local?.settled();
      }
      const engine = Engine.load(o.model, { ...engineOptions(o), executor: hub?.executor, maxBatch: o.maxBatch });
      metrics = new ServerMetrics(() => engine.scheduler.depth, () => engine.expertUsage());
      handler = createApiHandler(engine, {
        modelName: path.basename(path.resolve(o.model)),
        metrics,
        health: () => (hub ? { devices: hub.deviceCalls(), placed: hub.placed } : {}),
        log: (l) => process.stderr.write(`${l}\n`),
      });
      process.stderr.write(`ready: ${path.basename(path.resolve(o.model))}\n`);
      const stop = async () => {
        await hub?.close();
        await local?.exited();
        server.close();
        engine.close();
        process.exit(0);
      };
      process.once("SIGINT", () => void stop());
      process.once("SIGTERM", () => void stop());
    });
}
