// A base-station hub plus N device processes on this machine: real child processes talking to the
// hub over real sockets on loopback. What `--local-devices N` runs.
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { WeightDType } from "../kernels/backend.js";
import type { WireDType } from "../protocol/activations.js";
import type { LinkModel } from "../channel/link.js";
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
  /** More arguments for every `distmoe device` (e.g. --fetch-weights --cache DIR). */
  deviceArgs?: string[];
  log?: (line: string) => void;
}

export interface LocalCluster {
  hub: DeviceHub;
  /** The device processes, in the order of their names local-0, local-1, … */
  devices: readonly ChildProcess[];
  close(): Promise<void>;
}

export interface LocalDevices {
  children: ChildProcess[];
  /** Rejects when a device process exits with an error before `settled` is called. */
  failed: Promise<never>;
  settled(): void;
  /** Waits for the processes to end (after the hub told them to leave), killing stragglers. */
  exited(): Promise<void>;
}

/** N device processes connecting to the hub at `url`; they end when it leaves (they do not reconnect). */
export function spawnLocalDevices(url: string, count: number, threads = 1, extraArgs: readonly string[] = []): LocalDevices {
  const children: ChildProcess[] = [];
  let failure: ((e: Error) => void) | null = null;
  const failed = new Promise<never>((_, reject) => (failure = reject));
  failed.catch(() => undefined);
  for (let i = 0; i < count; i++) {
    const child = spawn(process.execPath, [BIN, "device", "--bs", url, "--name", `local-${i}`, "--threads", String(threads), "--spin-ms", "0", "--retry-for", "0", ...extraArgs], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => {
      stderr += d.toString();
      if (process.env.DISTMOE_DEBUG) process.stderr.write(d);
    });
    child.on("exit", (code) => {
      if (code) failure?.(new Error(`device local-${i} exited with code ${code}: ${stderr.trim().split("\n").pop() ?? ""}`));
    });
    children.push(child);
  }
  const exited = () =>
    Promise.all(
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
  return { children, failed, settled: () => (failure = null), exited };
}

export async function startLocalCluster(o: LocalClusterOptions): Promise<LocalCluster> {
  const hub = await DeviceHub.listen({ model: o.model, weightDType: o.weightDType, wireDType: o.wireDType, replicas: o.replicas, link: o.link, log: o.log });
  const devices = spawnLocalDevices(hub.url, o.devices, o.threadsPerDevice, o.deviceArgs);
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
