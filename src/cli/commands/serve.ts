import path from "node:path";
import { readFileSync } from "node:fs";
import type { Server } from "node:http";
import { createAdaptorServer } from "@hono/node-server";
import { Command, InvalidArgumentError, Option } from "commander";
import { Engine } from "../../runtime/engine.js";
import { DeviceHub } from "../../runtime/device-hub.js";
import { spawnLocalDevices } from "../../runtime/local-cluster.js";
import { createApp, DEFAULT_MAX_BODY_BYTES, DEFAULT_REQUEST_TIMEOUT_MS } from "../../server/app.js";
import { ServerMetrics } from "../../server/metrics.js";
import { addModelOptions, byteSize, engineOptions, nonNegativeInt, positiveInt, positiveNumber, type ModelCliOptions } from "../options.js";

interface ServeCliOptions extends ModelCliOptions {
  port: number;
  host: string;
  devices: number;
  maxBatch: number;
  maxQueue: number;
  apiKey: string[];
  apiKeyFile?: string;
  cors: string[];
  maxBody: number;
  requestTimeout: number;
}

const NO_USAGE = { calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 };
const collect = (v: string, all: string[]) => [...all, v];

/** What `Authorization: Bearer` can carry (RFC 6750's b64token, as bearerAuth matches it): a key outside it could never be used. */
const API_KEY = /^(?=.{8,256}$)[A-Za-z0-9._~+/-]+=*$/;
const API_KEY_RULE = "an API key is 8 to 256 characters of A-Z a-z 0-9 . _ ~ + / - (then = padding)";

/** Keys from a file: one a line; blank lines and # comments skipped. */
function readKeys(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new Error(`--api-key-file ${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const keys = text.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  if (keys.length === 0) throw new Error(`--api-key-file ${file}: holds no key`);
  const bad = keys.findIndex((k) => !API_KEY.test(k));
  if (bad >= 0) throw new Error(`--api-key-file ${file}: key ${bad + 1}: ${API_KEY_RULE}`);
  return keys;
}

function apiKey(v: string, all: string[]): string[] {
  if (!API_KEY.test(v)) throw new InvalidArgumentError(API_KEY_RULE);
  return [...all, v];
}

/** The longest request timeout, s: what a timer holds (2^31 - 1 ms); AbortSignal.timeout throws beyond it, on every request. */
const MAX_REQUEST_TIMEOUT_S = Math.floor((2 ** 31 - 1) / 1000);

function requestTimeout(v: string): number {
  const s = positiveNumber(v);
  if (s > MAX_REQUEST_TIMEOUT_S) throw new InvalidArgumentError(`expected at most ${MAX_REQUEST_TIMEOUT_S} seconds (about 24 days), got "${v}"`);
  return s;
}

/** A body limit: a size of at least 1KiB (below it no completion request fits). */
function bodySize(v: string): number {
  const n = byteSize(v);
  if (n < 1024) throw new InvalidArgumentError(`expected at least 1KiB, got "${v}"`);
  return n;
}

const isLoopback = (host: string) => host === "localhost" || host === "::1" || host.startsWith("127.");

export function serveCommand(): Command {
  return addModelOptions(new Command("serve").description("the base station: an OpenAI-compatible HTTP API; expert devices attach to the same port over WebSocket"))
    .option("-p, --port <n>", "port for HTTP and device connections", nonNegativeInt, 8080)
    .option("--host <address>", "address to listen on", "127.0.0.1")
    .option("--devices <n>", "wait for N devices (`distmoe device --bs ws://HOST:PORT`) and run the experts on them", nonNegativeInt, 0)
    .addOption(new Option("--max-batch <n>", "requests batched into one step at most").argParser(positiveInt).default(16))
    .addOption(new Option("--max-queue <n>", "requests waiting for a place in the batch at most; beyond it 429 with Retry-After").argParser(nonNegativeInt).default(64))
    .option("--api-key <key>", "require `Authorization: Bearer KEY` on /v1/* (repeatable)", apiKey, [])
    .option("--api-key-file <file>", "API keys, one a line (# comments)")
    .option("--cors <origin>", "allow cross-origin requests from ORIGIN (repeatable; default: none)", collect, [])
    .addOption(new Option("--max-body <size>", "largest request body; beyond it 413").argParser(bodySize).default(DEFAULT_MAX_BODY_BYTES, "4MiB"))
    .addOption(new Option("--request-timeout <seconds>", "a generation running longer ends with 504").argParser(requestTimeout).default(DEFAULT_REQUEST_TIMEOUT_MS / 1000))
    .action(async (o: ServeCliOptions) => {
      const log = (l: string) => process.stderr.write(`${l}\n`);
      // a bug in one request's path must not end every other's: it is logged, the process goes on
      process.on("unhandledRejection", (e) => log(`internal error (unhandled): ${(e as Error)?.stack ?? String(e)}`));
      const apiKeys = [...o.apiKey, ...(o.apiKeyFile ? readKeys(o.apiKeyFile) : [])];
      const modelName = path.basename(path.resolve(o.model));
      const remote = (o.localDevices ?? 0) + o.devices;
      let engine: Engine | undefined;
      const metrics = new ServerMetrics(() => engine?.scheduler.depth ?? { waiting: 0, active: 0 }, () => engine?.expertUsage() ?? NO_USAGE);
      // the app is made once the hub exists, and the hub needs the server: the server asks the app late
      let app: ReturnType<typeof createApp> | undefined;
      const server = createAdaptorServer({ fetch: (req: Request) => app!.fetch(req) }) as Server;
      const hub = remote > 0
        ? DeviceHub.attach(server, {
            model: path.resolve(o.model),
            weightDType: o.dtype,
            wireDType: o.wireDtype,
            replicas: o.replicas,
            link: o.link && (() => o.link!),
            onCall: (device, ms, out, inn) => metrics.deviceCall(device, ms, out, inn),
            onDeviceGone: (device) => metrics.removeDevice(device),
          })
        : null;
      app = createApp({
        engine: () => engine,
        modelName,
        metrics,
        devices: hub ? () => ({ ...hub.status() }) : undefined,
        apiKeys,
        corsOrigins: o.cors,
        maxBodyBytes: o.maxBody,
        requestTimeoutMs: o.requestTimeout * 1000,
        log,
      });
      await new Promise<void>((resolve, reject) => server.once("error", reject).listen(o.port, o.host, () => {
        server.off("error", reject);
        resolve();
      })).catch((e: NodeJS.ErrnoException) => {
        throw new Error(e.code === "EADDRINUSE" ? `cannot listen on ${o.host}:${o.port}: the port is in use` : `cannot listen on ${o.host}:${o.port}: ${e.message}`);
      });
      const address = server.address() as { address: string; port: number };
      log(`listening on http://${address.address}:${address.port} (devices: ws://${address.address}:${address.port})`);
      if (!isLoopback(o.host) && apiKeys.length === 0) log(`warning: ${o.host} is not a loopback address and no --api-key is set: anyone who reaches this port can use the API`);
      // a local device that dies (a crash, an OOM kill) is started again, under the same name
      const local = o.localDevices ? spawnLocalDevices(`ws://${address.address}:${address.port}`, o.localDevices, 1, [], { log }) : null;
      engine = Engine.load(o.model, { ...engineOptions(o), executor: hub?.executor, maxBatch: o.maxBatch, maxQueue: o.maxQueue });
      if (!hub) log(`ready: ${modelName}`);
      else {
        // the API answers 503 with the reason until every expert has a holder
        log(`waiting for ${remote} devices`);
        await Promise.race([hub.start(remote), ...(local ? [local.failed] : [])]);
        local?.settled();
        log(`ready: ${modelName} on ${hub.placed.length} devices`);
      }
      const stop = async () => {
        // restarts end before the hub tells the devices to leave
        const devicesEnded = local?.exited();
        server.close();
        await hub?.close();
        await devicesEnded;
        engine?.close();
        process.exit(0);
      };
      process.once("SIGINT", () => void stop());
      process.once("SIGTERM", () => void stop());
    });
}
