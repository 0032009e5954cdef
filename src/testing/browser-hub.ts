// A base station for browser-device tests: the app serving the device page over TLS (self-signed, as
// `serve --tls self-signed` does) with a device hub on the same server that admits browser devices; its
// /health and /metrics say what the hub's devices are, as `serve` wires them.
import https from "node:https";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import { DeviceHub, type HubOptions } from "../runtime/device-hub.js";
import { Engine } from "../runtime/engine.js";
import { createApp } from "../server/app.js";
import { ServerMetrics } from "../server/metrics.js";
import { makeSelfSigned } from "../server/tls.js";

const NO_USAGE = { calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 };

export interface BrowserHub {
  hub: DeviceHub;
  /** the app on the server (its /health, /metrics) */
  app: ReturnType<typeof createApp>;
  metrics: ServerMetrics;
  port: number;
  /** the certificate's fingerprint, for Node devices (--fingerprint) */
  fingerprint: string;
  close(): Promise<void>;
}

/**
 * `engine`: the engine serving through the hub, once there is one (for /health and the expert counters).
 * `page.isolated` false: the device page comes without the headers that make it cross-origin isolated.
 */
export async function startBrowserHub(hubOptions: Omit<HubOptions, "browserDevices">, engine: () => Engine | undefined = () => undefined, page: { isolated?: boolean } = {}): Promise<BrowserHub> {
  const metrics = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => engine()?.expertUsage() ?? NO_USAGE);
  const app = createApp({ engine, modelName: "test", metrics, devicePage: page.isolated === false ? "not-isolated" : true, devices: () => ({ ...hub.status() }) });
  const tls = await makeSelfSigned(["127.0.0.1"]);
  const server = createAdaptorServer({ fetch: app.fetch, createServer: https.createServer, serverOptions: { cert: tls.cert, key: tls.key, minVersion: "TLSv1.3" } }) as https.Server;
  const hub = DeviceHub.attach(server, { ...hubOptions, browserDevices: true });
  metrics.describeDevices(() => hub.status().devices);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    hub,
    app,
    metrics,
    port: (server.address() as AddressInfo).port,
    fingerprint: tls.fingerprint,
    /** closes the hub (its devices are told the base station leaves) and the server */
    close: async () => {
      await hub.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

/** The browser tests' prompt on brown-moe. */
export const BROWSER_TEST_PROMPT = "The jury said it did find that many of Georgia's registration and election laws";

/** The engine's greedy tokens for BROWSER_TEST_PROMPT: what the single-process engine and a cell of devices must agree on. */
export async function greedyTokens(engine: Engine, maxTokens = 24): Promise<number[]> {
  return (await engine.generate(engine.tokenizer.encode(BROWSER_TEST_PROMPT), { temperature: 0, maxTokens })).tokens;
}

/** The single-process engine's greedy tokens on `model` (f32 activations): what a cell of devices must give. */
export async function singleProcessTokens(model: string, maxTokens = 24): Promise<number[]> {
  const single = Engine.load(model, { dtype: "f32" });
  try {
    return await greedyTokens(single, maxTokens);
  } finally {
    single.close();
  }
}
