// A compute thread of the device page: a Web Worker (started by threads.ts) running the kernel pool's loop
// (kernels/wasm/compute-thread.ts). Its first message is its start; the next ones are arenas' memories,
// which it awaits when an adoption job asks (a Web Worker cannot take a message synchronously).
import { runComputeThread, type ArenaMessage, type ThreadInit } from "../../kernels/wasm/compute-thread.js";

const arenas: ArenaMessage[] = [];
let waiting: ((m: ArenaMessage) => void) | null = null;

function nextArena(): ArenaMessage | Promise<ArenaMessage> {
  return arenas.shift() ?? new Promise((resolve) => (waiting = resolve));
}

self.addEventListener("message", (e: MessageEvent) => {
  const init = e.data as ThreadInit;
  self.addEventListener("message", (m: MessageEvent) => {
    const arena = m.data as ArenaMessage;
    if (waiting) {
      waiting(arena);
      waiting = null;
    } else arenas.push(arena);
  });
  self.postMessage("started");
  void runComputeThread(init, nextArena);
}, { once: true });
