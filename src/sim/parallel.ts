// Several simulations at once, one per child process: the points of a sweep are independent and each
// simulation is single-threaded, so a sweep runs as fast as the machine has cores. Processes rather
// than worker threads: tearing a worker thread down while V8 still compiles in the background can
// abort the whole process in Node 20 (nodejs/node#56312); a process ends cleanly.
import { fork, type ChildProcess } from "node:child_process";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { simulate, type SimOptions, type SimReport } from "./simulator.js";

/** What the worker answers for one run. */
export type WorkerAnswer = { report: SimReport } | { error: string };

const WORKER = fileURLToPath(new URL("./simulate-worker.js", import.meta.url));

/** Runs `runs` on up to `jobs` processes (1: here, one after another); the reports come back in the runs' order. */
export async function simulateAll(runs: readonly SimOptions[], jobs = availableParallelism()): Promise<SimReport[]> {
  if (jobs <= 1 || runs.length <= 1) return runs.map(simulate);
  const reports: SimReport[] = new Array(runs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    const child = fork(WORKER, [], { serialization: "advanced", stdio: ["ignore", "inherit", "inherit", "ipc"] });
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    try {
      for (let i = next++; i < runs.length; i = next++) reports[i] = await ask(child, exited, runs[i]!);
    } finally {
      // idle now (or failed): nothing of it is left to lose
      child.kill();
      await exited;
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, runs.length) }, worker));
  return reports;
}

function ask(child: ChildProcess, exited: Promise<number | null>, run: SimOptions): Promise<SimReport> {
  return new Promise((resolve, reject) => {
    const onMessage = (a: WorkerAnswer): void => {
      child.off("message", onMessage);
      if ("error" in a) reject(new Error(a.error));
      else resolve(a.report);
    };
    child.on("message", onMessage);
    void exited.then((code) => reject(new Error(`a simulation process ended (exit code ${code}) before answering`)));
    child.send(run);
  });
}
