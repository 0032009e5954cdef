// A worker process of simulateAll (parallel.ts): runs each simulation it is sent and answers its
// report, until its parent ends it.
import type { WorkerAnswer } from "./parallel.js";
import { simulate, type SimOptions } from "./simulator.js";

if (!process.send) throw new Error("simulate-worker.js runs as a child process of simulateAll");
process.on("message", (run: SimOptions) => {
  let answer: WorkerAnswer;
  try {
    answer = { report: simulate(run) };
  } catch (e) {
    answer = { error: (e as Error).message };
  }
  process.send!(answer);
});
