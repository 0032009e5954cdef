// A compute thread: waits for jobs in the shared control block and runs a share of each kernel it
// joins in time. A job it reaches after the host has closed it (the host ran the missing shares itself)
// is skipped, so a worker that was asleep or descheduled never holds the host up.
import { workerData, receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { CTRL, OP_ADOPT, ARGS_OFFSET, MAX_ARGS, TICKET_CLOSED, TICKET_GEN, TICKET_JOINED, instantiate, type KernelFn } from "./abi.js";

interface WorkerInit {
  module: WebAssembly.Module;
  ctrl: SharedArrayBuffer;
  tid: number;
  nt: number;
  port: MessagePort;
  spinMs: number;
}

const { module, ctrl: sab, tid, nt, port, spinMs } = workerData as WorkerInit;
const ctrl = new Int32Array(sab, 0, ARGS_OFFSET / 4);
const args = new Float64Array(sab, ARGS_OFFSET, MAX_ARGS);
const arenas: KernelFn[][] = [];
const call: number[] = [];

function adopt(upTo: number): void {
  while (arenas.length <= upTo) {
    const msg = receiveMessageOnPort(port);
    if (!msg) continue; // the host posted before raising the job; it is on its way
    const { index, memory } = msg.message as { index: number; memory: WebAssembly.Memory };
    arenas[index] = instantiate(module, memory);
  }
}

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
    if (op === OP_ADOPT) adopt(ctrl[CTRL.ARENA]!);
    else {
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

/** Takes the next share of job `gen` if the host still takes helpers (always, for an adoption); -1 when it is closed or gone. */
function join(gen: number): number {
  const tag = (gen & TICKET_GEN) << 8;
  for (;;) {
    const t = Atomics.load(ctrl, CTRL.TICKET);
    if ((t & ~255) !== tag || t & TICKET_CLOSED) return -1;
    if (Atomics.compareExchange(ctrl, CTRL.TICKET, t, t + 1) === t) return (t & TICKET_JOINED) + 1;
  }
}
