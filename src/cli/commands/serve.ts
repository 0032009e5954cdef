import type { Server as HttpServer } from "node:http";
import https, { type Server as HttpsServer } from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { mkdirSync } from "node:fs";
import { createAdaptorServer } from "@hono/node-server";
import { Command, InvalidArgumentError, Option } from "commander";
import { Identities } from "../../runtime/hub/identities.js";
import { JOIN_TOKEN, JOIN_TOKEN_RULE, JoinTokens } from "../../runtime/hub/join-tokens.js";
import { Engine, type EngineOptions } from "../../runtime/engine.js";
import { DeviceHub } from "../../runtime/device-hub.js";
import { spawnLocalDevices } from "../../runtime/local-cluster.js";
import { hubAdmin } from "../../server/admin.js";
import { plainToTls } from "../../server/plain-to-tls.js";
import { joinQr } from "../join-qr.js";
import { createApp, DEFAULT_MAX_BODY_BYTES, DEFAULT_REQUEST_TIMEOUT_MS } from "../../server/app.js";
import { ServerMetrics } from "../../server/metrics.js";
import { Health } from "../../server/health.js";
import { certificateNames, loadTls, selfSignedTls, type ServerTls } from "../../server/tls.js";
import { isLoopback } from "../../util/loopback.js";
import { addModelOptions, addPolicyOptions, addTierOptions, defaultStateDir, devicesDType, engineOptions, localDeviceArgs, nonNegativeInt, policySpec, positiveInt, tierSpec, type ModelCliOptions, type PolicyCliOptions, type TierCliOptions } from "../options.js";
import { POLL_WHEN_WAITING_ON_PEERS } from "../../kernels/select-backend.js";
import { adminKey, adminKeys, apiKey, bodySize, readKeys, requestTimeout, verifyRate, viewKey } from "../server-options.js";
import { LIVE_POLICIES, LivePolicy } from "../../server/dashboard/controls.js";
import { describePolicy, makePolicy } from "../../policies/registry.js";
import { dashboardSources } from "../../server/dashboard/sources.js";
import { DashboardFeed } from "../../server/dashboard/stream.js";
import type { LinkParams } from "../../channel/link.js";
import type { WeightDType } from "../../kernels/backend.js";
import type { ModelConfig } from "../../model/config.js";
import { openModel } from "../../model/open-model.js";
import { ExpertStore } from "../../tiers/expert-store.js";
import { budgetExperts, hubTiers } from "../../tiers/hub-tiers.js";
import type { TieredExecutor } from "../../tiers/tiered-executor.js";

interface ServeCliOptions extends ModelCliOptions, PolicyCliOptions, TierCliOptions {
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
  joinToken?: string;
  adminKey: string[];
  viewKey: string[];
  tls?: "self-signed";
  tlsCert?: string;
  tlsKey?: string;
  stateDir?: string;
  verifyRate: number;
  browserDevices?: boolean;
  qr?: boolean;
}

const NO_USAGE = { calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 };
const collect = (v: string, all: string[]) => [...all, v];
/** A host as a URL names it: an IPv6 address in brackets. */
const urlHost = (host: string) => (net.isIPv6(host) ? `[${host}]` : host);

function joinToken(v: string): string {
  if (!JOIN_TOKEN.test(v)) throw new InvalidArgumentError(JOIN_TOKEN_RULE);
  return v;
}

/**
 * The join tokens. The one given (--join-token, else $DISTMOE_JOIN_TOKEN) and those added through /admin
 * while this process runs; else those kept in the state directory (join-tokens.json), a new one made
 * there on first start, so devices that reconnect to a restarted BS are still admitted. `shown` is the
 * token the printed join command carries (null: the one given, which is not printed).
 */
function clusterTokens(given: string | undefined, stateDir: string, log: (line: string) => void): { tokens: JoinTokens; shown: string | null } {
  const env = process.env.DISTMOE_JOIN_TOKEN;
  if (given === undefined && env && !JOIN_TOKEN.test(env)) throw new Error(`DISTMOE_JOIN_TOKEN: ${JOIN_TOKEN_RULE}`);
  const explicit = given ?? (env || undefined);
  if (explicit !== undefined) return { tokens: new JoinTokens([explicit]), shown: null };
  const file = path.join(stateDir, "join-tokens.json");
  const tokens = new JoinTokens([], file);
  if (tokens.size === 0) {
    tokens.add();
    log(`made a join token, kept in ${file}`);
  }
  return { tokens, shown: tokens.all[0]! };
}

/**
 * The TLS the options ask for (null: none, plain HTTP and ws), its certificate checked, or made, before
 * the port opens; the fingerprint devices pin is logged.
 */
async function serverTls(o: ServeCliOptions, stateDir: string, log: (line: string) => void): Promise<ServerTls | null> {
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) throw new Error("--tls-cert and --tls-key go together: give both");
  if (o.tlsCert !== undefined) {
    const tls = loadTls(o.tlsCert, o.tlsKey!);
    log(`TLS: certificate ${o.tlsCert}, SHA-256 fingerprint ${tls.fingerprint}`);
    return tls;
  }
  if (o.tls !== "self-signed") return null;
  const dir = path.join(stateDir, "tls");
  const tls = await selfSignedTls(dir, certificateNames(o.host));
  log(`TLS: ${tls.made ? "made a self-signed certificate" : "the self-signed certificate kept"} in ${dir}, SHA-256 fingerprint ${tls.fingerprint}`);
  if (tls.unnamed.length > 0) {
    log(`note: the kept certificate does not name ${tls.unnamed.join(", ")}: clients that check names (curl --cacert) refuse it there, devices that pin its fingerprint do not (for a new one, remove ${dir} and re-pin every device)`);
  }
  return tls;
}

/**
 * The BS's store for MoNDE's copies: its own checkpoint, which it has since it streams experts to the
 * devices; null where copies must come from the devices instead (a GGUF file, or experts stored in
 * another dtype than the engine holds), with why logged.
 */
function bsStore(model: string, cfg: ModelConfig, dtype: WeightDType, log: (line: string) => void): ExpertStore | null {
  try {
    return ExpertStore.open(model, cfg, dtype);
  } catch (e) {
    log(`MoNDE tiers: copies come from the devices: ${(e as Error).message}`);
    return null;
  }
}

export function serveCommand(): Command {
  const command = new Command("serve").description("the base station: an OpenAI-compatible HTTP API; expert devices attach to the same port over WebSocket");
  return addTierOptions(addPolicyOptions(addModelOptions(command), LIVE_POLICIES, "expert selection policy to start with (the admin changes it live through /admin/policy); wlr and deadline weigh each expert by its devices' measured call times"))
    .option("-p, --port <n>", "port for HTTP and device connections", nonNegativeInt, 8080)
    .option("--host <address>", "address to listen on", "127.0.0.1")
    .option("--devices <n>", "wait for N devices (`distmoe device --bs ws://HOST:PORT`) and run the experts on them", nonNegativeInt, 0)
    .addOption(new Option("--max-batch <n>", "requests batched into one step at most").argParser(positiveInt).default(16))
    .addOption(new Option("--max-queue <n>", "requests waiting for a place in the batch at most; beyond it 429 with Retry-After").argParser(nonNegativeInt).default(64))
    .addOption(new Option("--tls <mode>", "serve HTTPS, and WSS to devices, with a self-signed certificate made on first start and kept in --state-dir (tls/); its SHA-256 fingerprint is printed for devices to pin").choices(["self-signed"]).conflicts(["tlsCert", "tlsKey"]))
    .option("--tls-cert <file>", "serve HTTPS, and WSS to devices, with this certificate (PEM, the chain after it); with --tls-key")
    .option("--tls-key <file>", "the private key of --tls-cert (PEM, unencrypted)")
    .option("--state-dir <dir>", "where the BS keeps what it finds again on later starts: its join tokens, the device identities it knows, the --tls self-signed certificate (default: $XDG_STATE_HOME/distmoe, else ~/.local/state/distmoe)")
    .option("--qr", "print the browser join link as a QR code too (the default where the log goes to a terminal)")
    .option("--no-qr", "do not print the browser join link as a QR code")
    .option("--browser-devices", "admit browser tabs as devices: serve the device page at /device and print the link that joins one (they count among --devices); a browser cannot bind its handshake to the TLS session, so they are admitted over TLS only (or on loopback)")
    .option("--join-token <token>", "devices must prove they hold this token to join (default: $DISTMOE_JOIN_TOKEN, else those kept in --state-dir, a new one made there on first start and printed with the command to join)", joinToken)
    .option("--admin-key <key>", "enable /admin (add and revoke join tokens, list and forget device identities) with `Authorization: Bearer KEY` (repeatable; default: $DISTMOE_ADMIN_KEY, else /admin is off)", adminKey, [])
    .addOption(new Option("--verify-rate <share>", "share of expert calls (0 to 1) also computed by a second holder (another replica, else this base station) and compared; a device that disagrees with the base station is taken out of service").argParser(verifyRate).default(0))
    .option("--api-key <key>", "require `Authorization: Bearer KEY` on /v1/* (repeatable)", apiKey, [])
    .option("--view-key <key>", "a key that may view the dashboard's live data (/dashboard/events) and nothing else (repeatable; API keys may view it too; with neither, it is open)", viewKey, [])
    .option("--api-key-file <file>", "API keys, one a line (# comments)")
    .option("--cors <origin>", "allow cross-origin requests from ORIGIN (repeatable; default: none)", collect, [])
    .addOption(new Option("--max-body <size>", "largest request body; beyond it 413").argParser(bodySize).default(DEFAULT_MAX_BODY_BYTES, "4MiB"))
    .addOption(new Option("--request-timeout <duration>", "a generation running longer ends with 504, e.g. 90s, 10m").argParser(requestTimeout).default(DEFAULT_REQUEST_TIMEOUT_MS, "10m"))
    .action(async (o: ServeCliOptions) => {
      const log = (l: string) => process.stderr.write(`${l}\n`);
      // a bug in one request's path must not end every other's: it is logged, the process goes on
      process.on("unhandledRejection", (e) => log(`internal error (unhandled): ${(e as Error)?.stack ?? String(e)}`));
      const apiKeys = [...o.apiKey, ...(o.apiKeyFile ? readKeys(o.apiKeyFile) : [])];
      const admins = adminKeys(o.adminKey, apiKeys);
      if (o.viewKey.some((k) => admins.includes(k))) throw new Error("a view key must not also be an admin key: every viewer could then change the policy and the links");
      const modelName = path.basename(path.resolve(o.model));
      const startPolicy = policySpec(o);
      makePolicy(startPolicy, 1); // a policy without its knob is refused before anything starts
      const remote = (o.localDevices ?? 0) + o.devices;
      if (o.verifyRate > 0 && remote === 0) throw new Error("--verify-rate checks the devices' results: give --devices N or --local-devices N");
      const tierAsk = tierSpec(o);
      if (tierAsk && remote === 0) throw new Error("--bs-budget keeps hot experts at the BS beside devices that hold them all: give --devices N or --local-devices N");
      // the model's shape for MoNDE's tiers: a budget that holds no expert is refused before anything starts
      let tierCfg: ModelConfig | null = null;
      if (tierAsk) {
        const opened = openModel(o.model);
        opened.store.close();
        tierCfg = opened.config;
        try {
          budgetExperts(tierCfg, tierAsk.budget);
        } catch (e) {
          throw new Error(`--bs-budget: ${(e as Error).message}`);
        }
      }
      if (o.browserDevices && o.devices === 0) throw new Error("--browser-devices admits browser tabs among the devices the BS waits for: give --devices N");
      const weightDType = remote > 0 ? devicesDType(o) : undefined;
      const stateDir = path.resolve(o.stateDir ?? defaultStateDir());
      if (remote > 0) mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      const join = remote > 0 ? clusterTokens(o.joinToken, stateDir, log) : null;
      const tls = await serverTls(o, stateDir, log);
      const [httpScheme, wsScheme] = tls ? ["https", "wss"] : ["http", "ws"];
      let engine: Engine | undefined;
      /** MoNDE's tiers, once set up (--bs-budget) */
      let tiers: TieredExecutor | null = null;
      let store: ExpertStore | null = null;
      /** the command that joins a device with a token, once the port is known */
      let joinCommand = (token: string) => `distmoe device --token ${token}`;
      const metrics = new ServerMetrics(() => engine?.scheduler.depth ?? { waiting: 0, active: 0 }, () => engine?.expertUsage() ?? NO_USAGE);
      // the app is made once the hub exists, and the hub needs the server: the server asks the app late
      let app: ReturnType<typeof createApp> | undefined;
      // the Node request and response ride along (env): the dashboard closes the socket of a client that stopped reading
      const handle = (req: Request, env: unknown) => app!.fetch(req, env);
      const server = (tls ? createAdaptorServer({ fetch: handle, createServer: https.createServer, serverOptions: { cert: tls.cert, key: tls.key, minVersion: "TLSv1.3" } }) : createAdaptorServer({ fetch: handle })) as HttpServer | HttpsServer;
      // the link emulation's settings, changed live through /admin/link
      let link: LinkParams | undefined = o.link;
      const hub = remote > 0
        ? DeviceHub.attach(server, {
            model: path.resolve(o.model),
            weightDType: weightDType!,
            wireDType: o.wireDtype,
            replicas: o.replicas,
            link: link && (() => link!),
            onCall: (device, ms, out, inn) => metrics.deviceCall(device, ms, out, inn),
            onDeviceGone: (device) => metrics.removeDevice(device),
            joinTokens: join!.tokens,
            identities: new Identities(path.join(stateDir, "devices.json")),
            verifyRate: o.verifyRate,
            browserDevices: o.browserDevices,
          })
        : null;
      if (hub) metrics.describeDevices(() => hub.status().devices);
      metrics.countEngineWork(() => engine?.work());
      if (tierAsk) metrics.countBsExperts(() => tiers?.resident() ?? null);
      const policy = new LivePolicy(() => engine, hub && ((layer) => hub.expertLatencyMs(layer)), startPolicy);
      const health = new Health();
      const feed = new DashboardFeed(dashboardSources({ modelName, metrics, engine: () => engine, hub, health, policy: () => policy.describe(), bsExperts: () => tiers?.resident() ?? null }), { log });
      /** the link a browser joins with, once the port is known (browser devices only) */
      let browserLink: string | null = null;
      app = createApp({
        engine: () => engine,
        modelName,
        metrics,
        health,
        devices: hub ? () => ({ ...hub.status() }) : undefined,
        apiKeys,
        admin: {
          keys: admins,
          devices: hub ? hubAdmin(hub, (token) => joinCommand(token)) : undefined,
        },
        devicePage: o.browserDevices,
        dashboard: {
          feed,
          viewKeys: o.viewKey,
          controls: { policy, link: link && { get: () => link!, set: (p) => void (link = p) }, joinLink: () => browserLink },
        },
        corsOrigins: o.cors,
        maxBodyBytes: o.maxBody,
        requestTimeoutMs: o.requestTimeout,
        log,
      });
      // over TLS the port answers plain requests too, with what to use instead
      const listener = tls ? plainToTls(server as HttpsServer) : server;
      await new Promise<void>((resolve, reject) => listener.once("error", reject).listen(o.port, o.host, () => {
        listener.off("error", reject);
        resolve();
      })).catch((e: NodeJS.ErrnoException) => {
        throw new Error(e.code === "EADDRINUSE" ? `cannot listen on ${o.host}:${o.port}: the port is in use` : `cannot listen on ${o.host}:${o.port}: ${e.message}`);
      });
      const address = listener.address() as { address: string; port: number };
      const here = `${urlHost(address.address)}:${address.port}`;
      log(`listening on ${httpScheme}://${here} (devices: ${wsScheme}://${here})`);
      // as kubeadm and k3s do: the exact command that joins a device (an address to reach this host by, where it listens on all)
      const reachable = ["0.0.0.0", "::"].includes(address.address) ? os.hostname() : urlHost(address.address);
      const pin = tls ? ` --fingerprint ${tls.fingerprint}` : "";
      joinCommand = (token) => `distmoe device --bs ${wsScheme}://${reachable}:${address.port}${pin} --token ${token}`;
      if (join) log(`devices join with: ${joinCommand(join.shown ?? "<the join token given>")}`);
      if (o.browserDevices) {
        // the fragment (#token=…) is never sent to a server: the page reads it
        const how = tls ? "over TLS (a browser cannot bind its handshake to the TLS session: its own check of this certificate protects it)" : "from this machine only (without TLS)";
        // without TLS only a loopback address makes the page a secure context (WebCrypto) and its link one the BS admits
        const pageHost = tls || !["0.0.0.0", "::"].includes(address.address) ? reachable : "127.0.0.1";
        const joinLink = `${httpScheme}://${pageHost}:${address.port}/device#token=${join!.shown ?? "<the join token given>"}`;
        // the admin's page gets the link with the token in it, the given one too (it is not logged)
        browserLink = `${httpScheme}://${pageHost}:${address.port}/device#token=${join!.shown ?? join!.tokens.all[0]}`;
        log(`browser devices: allowed ${how}; a browser joins by opening ${joinLink}`);
        if (o.qr ?? process.stderr.isTTY === true) log(`the same link for a phone's camera:\n${joinQr(joinLink)}`);
        if (tls && o.tls === "self-signed") {
          log(
            `a browser warns about this self-signed certificate: from the warning, open the certificate's details, check that its SHA-256 fingerprint is ${tls.fingerprint}, and continue ` +
              `(http://${pageHost}:${address.port}/device explains each browser's steps in plain words)`,
          );
        }
        if (!tls && !isLoopback(o.host)) log("warning: browser devices are admitted over TLS only, except on this machine: serve with --tls self-signed or --tls-cert/--tls-key for browsers elsewhere");
      }
      if (!isLoopback(o.host) && !tls) {
        log(
          `warning: ${o.host} is not a loopback address and TLS is off: anyone on the network between can read and alter all that crosses this port: ` +
            "the devices' join handshake and what they report (names, capabilities, experts held), the expert weights streamed to devices, " +
            "every user's hidden states sent to the devices and their results, and the API's requests and answers, API keys included; " +
            "serve with --tls self-signed (devices then join with wss:// and --fingerprint) or --tls-cert/--tls-key",
        );
      }
      if (!isLoopback(o.host) && apiKeys.length === 0) log(`warning: ${o.host} is not a loopback address and no --api-key is set: anyone who reaches this port can use the API`);
      // a local device that dies (a crash, an OOM kill) is started again, under the same name
      // over TLS they pin the certificate, like any device; they join with a token of their own, which no revocation through /admin touches;
      // their cache, and so their identities, live in the state directory beside the devices.json that knows them
      const localArgs = ["--cache", path.join(stateDir, "local-devices"), ...(tls ? ["--fingerprint", tls.fingerprint] : []), ...localDeviceArgs(o)];
      const local = o.localDevices ? spawnLocalDevices(`${wsScheme}://${here}`, join!.tokens.ownToken(), o.localDevices, 1, localArgs, { log }) : null;
      /** the engine, with the selection policy asked for at start */
      const loadEngine = (executor: EngineOptions["executor"]) => {
        engine = Engine.load(o.model, { ...engineOptions(o), ...(hub && { poll: o.poll ?? POLL_WHEN_WAITING_ON_PEERS }), executor, maxBatch: o.maxBatch, maxQueue: o.maxQueue });
        if (startPolicy.name !== "topk") {
          policy.set(startPolicy);
          log(`selection policy: ${describePolicy(startPolicy)}`);
        }
      };
      // with MoNDE's tiers the engine is loaded once the devices are placed: its cost model needs their speeds and links
      if (!tierAsk) loadEngine(hub?.executor);
      if (!hub) log(`ready: ${modelName}`);
      else {
        // the API answers 503 with the reason until every expert has a holder
        log(`waiting for ${remote} devices`);
        await Promise.race([hub.start(remote), ...(local ? [local.failed] : [])]);
        local?.settled();
        if (tierAsk) {
          store = bsStore(o.model, tierCfg!, weightDType!, log);
          // the link the cost model assumes: the emulation's at startup (with a rate), else measured over the devices' links
          const bs = await hubTiers(hub, tierCfg!, { policy: tierAsk.policy, budgetFraction: tierAsk.budget, window: tierAsk.window, weightDType: weightDType!, wireDType: o.wireDtype, link: link ?? null, store, storeGbps: tierAsk.storeGbps, log });
          loadEngine((backend, config) => (tiers = bs.executor(backend, config)));
        }
        log(`ready: ${modelName} on ${hub.placed.length} devices`);
      }
      const stop = async () => {
        // restarts end before the hub tells the devices to leave
        const devicesEnded = local?.exited();
        feed.close();
        listener.close();
        server.close();
        await hub?.close();
        await devicesEnded;
        engine?.close();
        store?.close();
        process.exit(0);
      };
      process.once("SIGINT", () => void stop());
      process.once("SIGTERM", () => void stop());
    });
}
