// The distmoe command as a real process in tests: started with its stderr gathered, and the device
// processes a `serve --local-devices` base station started, found by name.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import path from "node:path";
import { REPO_ROOT } from "./shared.js";

export const BIN = path.join(REPO_ROOT, "bin/distmoe.js");

/** A process of ours with its stderr gathered, killed at the end of the test. */
export function start(args: string[], env: NodeJS.ProcessEnv = {}): { child: ChildProcess; err: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, ...env } });
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  return { child, err: () => err, exited: new Promise((r) => child.once("exit", (code) => r(code))) };
}

/** The `distmoe device` processes whose parent is `ppid`, by the name each was given. */
export function deviceChildren(ppid: number): Map<string, number> {
  const ps = spawnSync("ps", ["-A", "-o", "pid=", "-o", "ppid=", "-o", "args="], { encoding: "utf8" });
  const found = new Map<string, number>();
  for (const line of ps.stdout.split("\n")) {
    const m = /^\s*(\d+)\s+(\d+)\s+.* device .*--name (\S+)/.exec(line);
    if (m && Number(m[2]) === ppid) found.set(m[3]!, Number(m[1]));
  }
  return found;
}
