// A compute thread's loop, the same in a Node worker thread (worker.ts) and a browser's Web Worker
// (web/device/kernel-thread.ts): it waits for jobs in the shared control block and runs a share of each
// kernel it joins in time. A job it reaches after the host has closed it (the host ran the missing shares
// itself) is skipped, so a worker that was asleep or descheduled never holds the host up. Only how an
// arena's memory arrives differs: a Node worker takes the message off its port synchronously, a Web Worker
// cannot and awaits it (the loop then returns to the worker's event loop for that moment).
import { CTRL, OP_ADOPT, ARGS_OFFSET, MAX_ARGS, TICKET_CLOSED, TICKET_GEN, TICKET_JOINED, instantiate, type KernelFn } from "./abi.js";

/** What a compute thread is started with. */
export interface ThreadInit {
  module: WebAssembly.Module;
  ctrl: SharedArrayBuffer;
  tid: number;
  nt: number;
  spinMs: number;
}

/** An arena's memory, sent to every thread when the host makes one (before it raises the adoption job). */
export interface ArenaMessage {
  index: number;
  memory: WebAssembly.Memory;
}

/** Runs jobs until the host says exit. `nextArena` gives the next arena message the host posted (it is on its way when asked for). */
export async function runComputeThread(init: ThreadInit, nextArena: () => ArenaMessage | Promise<ArenaMessage>): Promise<void> {
  const { module, ctrl: sab, nt, spinMs } = init;
  const ctrl = new Int32Array(sab, 0, ARGS_OFFSET / 4);
  const args = new Float64Array(sab, ARGS_OFFSET, MAX_ARGS);
  const arenas: KernelFn[][] = [];
  const call: number[] = [];

  /** Takes the next share of job `gen` if the host still takes helpers (always, for an adoption); -1 when it is closed or gone. */
  const join = (gen: number): number => {
    const tag = (gen & TICKET_GEN) << 8;
    for (;;) {
      const t = Atomics.load(ctrl, CTRL.TICKET);
      if ((t & ~255) !== tag || t & TICKET_CLOSED) return -1;
      if (Atomics.compareExchange(ctrl, CTRL.TICKET, t, t + 1) === t) return (t & TICKET_JOINED) + 1;
    }
  };

  // Generation 0 is the pool's start: a job raised before this thread got here is still run.
  let seen = 0;
  for (;;) {
    let spins = 0;
    let deadline = performance.now() + spinMs;
    while (Atomics.load(ctrl, CTRL.GEN) === seen) {
      if ((++spins & 255) !== 0 || performance.now() < deadline) continue;
      Atomics.add(ctrl, CTRL.SLEEPERS, 1);
      Atomics.wait(ctrl, CTRL.GEN, seen);
      Atomics.sub(ctrl, CTRL.SLEEPERS, 1);
      deadline = performance.now() + spinMs;
    }
    seen = Atomics.load(ctrl, CTRL.GEN);
    if (Atomics.load(ctrl, CTRL.EXIT)) break;
    // join before reading the job: a worker that saw this generation late must not run the next job's
    // arguments under it (the host does not wait for it, so it may be on to another job already)
    const share = join(seen);
    if (share < 0) continue;
    try {
      const op = ctrl[CTRL.OP]!;
      if (op === OP_ADOPT) {
        for (const upTo = ctrl[CTRL.ARENA]!; arenas.length <= upTo; ) {
          const { index, memory } = await nextArena();
          arenas[index] = instantiate(module, memory);
        }
      } else {
        const n = ctrl[CTRL.NARGS]!;
        call.length = n + 2;
        for (let i = 0; i < n; i++) call[i] = args[i]!;
        call[n] = share;
        call[n + 1] = nt;
        arenas[ctrl[CTRL.ARENA]!]![op]!(...call);
      }
    } catch {
      Atomics.store(ctrl, CTRL.ERROR, 1);
    }
    const done = Atomics.add(ctrl, CTRL.DONE, 1) + 1;
    // the host sleeps only once it waits for every worker (an arena's adoption), or has closed the job
    // and counted who joined
    const ticket = Atomics.load(ctrl, CTRL.TICKET);
    if (done === nt - 1 || (ticket & TICKET_CLOSED && done === (ticket & TICKET_JOINED))) Atomics.notify(ctrl, CTRL.DONE);
  }
}
