// A compute thread: waits for jobs in the shared control block and runs its share of each kernel.
import { workerData, receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { CTRL, OP_ADOPT, ARGS_OFFSET, MAX_ARGS, instantiate, type KernelFn } from "./abi.js";

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
  try {
    const op = ctrl[CTRL.OP]!;
    if (op === OP_ADOPT) adopt(ctrl[CTRL.ARENA]!);
    else {
      const n = ctrl[CTRL.NARGS]!;
      call.length = n + 2;
      for (let i = 0; i < n; i++) call[i] = args[i]!;
      call[n] = tid;
      call[n + 1] = nt;
      arenas[ctrl[CTRL.ARENA]!]![op]!(...call);
    }
  } catch {
    Atomics.store(ctrl, CTRL.ERROR, 1);
  }
  if (Atomics.add(ctrl, CTRL.DONE, 1) + 1 === nt - 1) Atomics.notify(ctrl, CTRL.DONE);
}
