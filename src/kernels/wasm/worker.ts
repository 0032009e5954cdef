// A compute thread in Node: a worker_threads Worker started by the pool (pool.ts), running the shared loop
// (compute-thread.ts). An arena's memory comes on its own port, taken off synchronously.
import { workerData, receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { runComputeThread, type ArenaMessage, type ThreadInit } from "./compute-thread.js";

const { port, ...init } = workerData as ThreadInit & { port: MessagePort };

await runComputeThread(init, () => {
  for (;;) {
    const msg = receiveMessageOnPort(port);
    if (msg) return msg.message as ArenaMessage;
    // the host posted before raising the job; it is on its way
  }
});
port.close();
