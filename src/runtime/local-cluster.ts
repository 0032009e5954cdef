// A base-station hub plus N device processes on this machine: real child processes talking to the
// hub over real sockets on loopback. What `--local-devices N` runs.
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { WeightDType } from "../kernels/backend.js";
import type { WireDType } from "../protocol/activations.js";
import type { LinkModel } from "../channel/link.js";
import { newJoinToken } from "../protocol/handshake.js";
import { Backoff, type BackoffOptions } from "./backoff.js";
import { DeviceHub } from "./device-hub.js";
import type { Engine } from "./engine.js";

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../bin/distmoe.js");

export interface LocalClusterOptions {
  model: string;
  devices: number;
  weightDType: WeightDType;
  wireDType: WireDType;
  replicas?: number;
  link?: LinkModel;
  /** Compute threads per device process (default 1: the devices share this machine's cores). */
  threadsPerDevice?: number;
  /** Share of expert calls spot-checked (HubOptions.verifyRate). */
  verifyRate?: number;
  /** Whether results are checked at all (HubOptions.resultChecks; default true). */
  resultChecks?: boolean;
  /** More arguments for every `distmoe device` (e.g. --fetch-weights --cache DIR). */
  deviceArgs?: string[];
  log?: (line: string) => void;
}

export interface LocalCluster {
  hub: DeviceHub;
  /** The join token the hub asks of its devices (generated for this cluster). */
  joinToken: string;
  /** The device processes, in the order of their names local-0, local-1, … */
  devices: readonly ChildProcess[];
  close(): Promise<void>;
}

export interface LocalDevices {
  /** The device processes, local-0, local-1, …: each one's current process (a restart replaces it). */
  children: ChildProcess[];
  /** Rejects when a device process exits with an error before `settled` is called. */
  failed: Promise<never>;
  settled(): void;
  /** Restarts no more; waits for the processes to end (after the hub told them to leave), killing stragglers. */
  exited(): Promise<void>;
}

/** Restarting the local devices that exit unexpectedly (a crash, an OOM kill, `kill -9`). */
export interface Supervision {
  /** Told of every exit and restart, one line each. */
  log: (line: string) => void;
  /** Delays before a restart (default: first 1 s, at most 30 s). */
  backoff?: BackoffOptions;
  /** A process that ran this long before it exited restarts after the first delay again (default 60 s). */
  stableMs?: number;
}

/** Last bytes of a device's stderr kept, for the line that says why it exited. */
const STDERR_TAIL = 4096;

/**
 * N device processes connecting to the hub at `url` with `joinToken` (passed in their environment, not
 * on their command line, where any local user could read it); they end when it leaves (they do not
 * reconnect). With `supervise`, one that exits before `exited()` is called is started again under the
 * same name.
 */
export function spawnLocalDevices(url: string, joinToken: string, count: number, threads = 1, extraArgs: readonly string[] = [], supervise?: Supervision): LocalDevices {
  const children: ChildProcess[] = [];
  const restarts = new Set<NodeJS.Timeout>();
  let stopping = false;
  let failure: ((e: Error) => void) | null = null;
  const failed = new Promise<never>((_, reject) => (failure = reject));
  failed.catch(() => undefined);
  const run = (i: number, backoff: Backoff) => {
    const name = `local-${i}`;
    const started = performance.now();
    const child = spawn(process.execPath, [BIN, "device", "--bs", url, "--name", name, "--threads", String(threads), "--spin-ms", "0", "--retry-for", "0", ...extraArgs], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, DISTMOE_JOIN_TOKEN: joinToken },
    });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-STDERR_TAIL);
      if (process.env.DISTMOE_DEBUG) process.stderr.write(d);
    });
    child.on("exit", (code, signal) => {
      const lastLine = stderr.trim().split("\n").pop() ?? "";
      if (code && failure) return failure(new Error(`device ${name} exited with code ${code}: ${lastLine}`));
      if (!supervise || stopping) return;
      if (performance.now() - started >= (supervise.stableMs ?? 60_000)) backoff.reset();
      const delay = backoff.next();
      const why = signal ? `signal ${signal}` : `code ${code}${code && lastLine ? `: ${lastLine}` : ""}`;
      supervise.log(`${name} exited (${why}); restarting in ${(delay / 1000).toFixed(1)} s`);
      const timer = setTimeout(() => {
        restarts.delete(timer);
        run(i, backoff);
        supervise.log(`${name} restarted (pid ${children[i]!.pid})`);
      }, delay);
      restarts.add(timer);
    });
    children[i] = child;
  };
  for (let i = 0; i < count; i++) run(i, new Backoff({ firstMs: 1000, capMs: 30_000, ...supervise?.backoff }));
  const exited = () => {
    stopping = true;
    for (const t of restarts) clearTimeout(t);
    restarts.clear();
    return Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            const timer = setTimeout(() => c.kill("SIGKILL"), 5000);
            c.once("exit", () => {
              clearTimeout(timer);
              resolve();
            });
          }),
      ),
    ).then(() => undefined);
  };
  return { children, failed, settled: () => (failure = null), exited };
}

/** A hub with a join token of its own and N device processes that hold it. */
export async function startLocalCluster(o: LocalClusterOptions): Promise<LocalCluster> {
  const joinToken = newJoinToken();
  const hub = await DeviceHub.listen({ model: o.model, weightDType: o.weightDType, wireDType: o.wireDType, replicas: o.replicas, link: o.link, joinTokens: [joinToken], verifyRate: o.verifyRate, resultChecks: o.resultChecks, log: o.log });
  const devices = spawnLocalDevices(hub.url, joinToken, o.devices, o.threadsPerDevice, o.deviceArgs);
  try {
    await Promise.race([hub.start(o.devices), devices.failed]);
  } catch (e) {
    for (const c of devices.children) c.kill("SIGKILL");
    await hub.close();
    throw e;
  }
  devices.settled();
  return {
    hub,
    joinToken,
    devices: devices.children,
    close: async () => {
      await hub.close();
      await devices.exited();
    },
  };
}

/**
 * Builds what runs on `cluster` (an engine with the cluster as its executor, and whatever goes with
 * it); if that fails, the cluster is closed. Closing the result ends the engine, then the cluster.
 */
export async function onCluster<T extends { engine: Engine }>(cluster: LocalCluster, build: () => T | Promise<T>): Promise<T & { close(): Promise<void> }> {
  try {
    const built = await build();
    return {
      ...built,
      close: async () => {
        built.engine.close();
        await cluster.close();
      },
    };
  } catch (e) {
    await cluster.close();
    throw e;
  }
}
