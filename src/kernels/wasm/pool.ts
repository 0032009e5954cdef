// The host side of the thread pool. The calling thread is thread 0 and computes its own share while
// the workers compute theirs, so a job costs one handoff, not two. Workers spin for a while after a job
// (a spinning worker wakes in ~2.5 µs, a sleeping one in ~70 µs) and then sleep in Atomics.wait. The
// host never waits for a worker that has not started: once its own share is done it closes the job to
// newcomers and computes the shares nobody took, so a sleeping or descheduled worker (another process
// on its core) costs at most the single-thread time, never a wake-up or a scheduling delay on top.
// The job protocol is the same for Node's worker threads and a browser's Web Workers (compute-thread.ts);
// only how a thread is started and gets an arena's memory differs (StartThread). A browser page's own
// thread may not block in Atomics.wait: there the host spins instead, which costs little, as it only ever
// waits for workers already inside their share of a job (or adopting an arena, rare).
import { Worker, MessageChannel } from "node:worker_threads";
import { CTRL, OP_ADOPT, ARGS_OFFSET, MAX_ARGS, CTRL_BYTES, KERNELS, CHUNK_COUNTER, CHUNKED, TICKET_CLOSED, TICKET_GEN, TICKET_JOINED, instantiate, type KernelFn, type KernelName } from "./abi.js";
import type { ArenaMessage, ThreadInit } from "./compute-thread.js";

const KERNEL_INDEX = new Map<KernelName, number>(KERNELS.map((k, i) => [k, i]));

/** How long the host spins for the workers that joined a job to finish before it sleeps, in ms. */
const CALLER_SPIN_MS = 0.05;

/** A started compute thread, as the host sees it. */
export interface ComputeThread {
  /** Sends an arena's memory (the thread takes it when the adoption job asks). */
  post(message: ArenaMessage): void;
  /** Resolves once the thread runs the loop; rejects if it could not start. */
  readonly started: Promise<void>;
  terminate(): void;
}

/** Starts compute thread `init.tid` (1 … nt-1). */
export type StartThread = (init: ThreadInit) => ComputeThread;

/** Node: a worker_threads Worker (worker.ts) with its own port for arenas; it runs without the host yielding. */
export const startNodeThread: StartThread = (init) => {
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(new URL("./worker.js", import.meta.url), { workerData: { ...init, port: port2 }, transferList: [port2] });
  worker.unref();
  return {
    post: (m) => port1.postMessage(m),
    started: Promise.resolve(),
    terminate: () => {
      void worker.terminate();
      port1.close();
    },
  };
};

export interface PoolOptions {
  threads: number;
  /** Milliseconds a worker spins on the control block after a job before sleeping (default 0.5). */
  spinMs?: number;
  /**
   * How a thread starts (default: a Node worker thread). Threads that run only once the host yields (a
   * browser's Web Workers) must have started (`started`) before the pool is given its first arena.
   */
  start?: StartThread;
}

export class ThreadPool {
  readonly threads: number;
  private readonly ctrl: Int32Array;
  private readonly args: Float64Array;
  private readonly workers: ComputeThread[] = [];
  private readonly local: KernelFn[][] = [];
  private readonly counters: Int32Array[] = [];
  private readonly call: number[] = [];
  private readonly spinMs: number;
  /** 1 when a worker that was awake failed to join a job before the host finished its share, × 0.9 for each job joined since. */
  private late = 0;
  /** Whether this thread may block in Atomics.wait (a browser page's own thread may not). */
  private readonly mayWait: boolean;
  /** Shares of jobs that the workers computed (the others ran on the calling thread): whether they take part. */
  workerShares = 0;
  /** Resolves once every worker runs. */
  readonly started: Promise<void>;

  constructor(private readonly module: WebAssembly.Module, opts: PoolOptions) {
    this.threads = Math.max(1, Math.floor(opts.threads));
    this.spinMs = opts.spinMs ?? 0.5;
    // one thread shares nothing: a page that is not cross-origin isolated has no SharedArrayBuffer
    const sab = this.threads > 1 ? new SharedArrayBuffer(CTRL_BYTES) : new ArrayBuffer(CTRL_BYTES);
    this.ctrl = new Int32Array(sab, 0, ARGS_OFFSET / 4);
    this.args = new Float64Array(sab, ARGS_OFFSET, MAX_ARGS);
    this.mayWait = this.threads === 1 || mayBlock(this.ctrl);
    const start = opts.start ?? startNodeThread;
    for (let tid = 1; tid < this.threads; tid++) this.workers.push(start({ module, ctrl: sab as SharedArrayBuffer, tid, nt: this.threads, spinMs: this.spinMs }));
    this.started = Promise.all(this.workers.map((w) => w.started)).then(() => undefined);
  }

  /** Make a memory usable by every thread; returns the arena's index. */
  addArena(memory: WebAssembly.Memory): number {
    const index = this.local.length;
    this.local.push(instantiate(this.module, memory, this.mayWait));
    this.counters.push(new Int32Array(memory.buffer, CHUNK_COUNTER, 2));
    for (const w of this.workers) w.post({ index, memory });
    if (this.workers.length > 0) this.dispatch(OP_ADOPT, index, 0);
    return index;
  }

  /**
   * Whether the workers are lately kept from running by other processes: an awake worker missed one of
   * the last ~22 parallel jobs. Jobs should then stay on the calling thread, but for a few that find out
   * when the machine is free again.
   */
  get crowded(): boolean {
    return this.late > 0.1;
  }

  /** Runs a kernel on the calling thread alone. */
  single(arena: number, kernel: KernelName, ...args: number[]): void {
    this.local[arena]![KERNEL_INDEX.get(kernel)!]!(...args, 0, 1);
  }

  /** Runs a kernel split over every thread. */
  parallel(arena: number, kernel: KernelName, ...args: number[]): void {
    const op = KERNEL_INDEX.get(kernel)!;
    if (this.workers.length === 0) {
      this.local[arena]![op]!(...args, 0, 1);
      return;
    }
    if (CHUNKED.has(kernel)) {
      Atomics.store(this.counters[arena]!, 0, 0);
      Atomics.store(this.counters[arena]!, 1, 0);
    }
    this.args.set(args);
    this.dispatch(op, arena, args.length);
  }

  /** Raw call of a kernel without the (tid, nt) pair, on the calling thread. */
  direct(arena: number, kernel: KernelName, ...args: number[]): void {
    this.local[arena]![KERNEL_INDEX.get(kernel)!]!(...args);
  }

  private dispatch(op: number, arena: number, nargs: number): void {
    const c = this.ctrl;
    c[CTRL.OP] = op;
    c[CTRL.ARENA] = arena;
    c[CTRL.NARGS] = nargs;
    Atomics.store(c, CTRL.DONE, 0);
    Atomics.store(c, CTRL.TICKET, ((c[CTRL.GEN]! + 1) & TICKET_GEN) << 8);
    Atomics.add(c, CTRL.GEN, 1);
    const sleepers = Atomics.load(c, CTRL.SLEEPERS);
    if (sleepers > 0) Atomics.notify(c, CTRL.GEN);
    let failure: unknown;
    // an arena's adoption needs every worker; a kernel only the workers that joined before the close
    let want = this.threads - 1;
    if (op !== OP_ADOPT) {
      const call = this.call;
      call.length = nargs + 2;
      for (let i = 0; i < nargs; i++) call[i] = this.args[i]!;
      call[nargs + 1] = this.threads;
      try {
        call[nargs] = 0;
        this.local[arena]![op]!(...call);
        want = Atomics.or(c, CTRL.TICKET, TICKET_CLOSED) & TICKET_JOINED;
        for (let share = want + 1; share < this.threads; share++) {
          call[nargs] = share;
          this.local[arena]![op]!(...call);
        }
      } catch (e) {
        failure = e;
        want = Atomics.or(c, CTRL.TICKET, TICKET_CLOSED) & TICKET_JOINED;
      }
    }
    // the workers that joined are inside their share: spin briefly, then sleep rather than take the core
    // from one of them that the OS descheduled (another process on the machine)
    let spins = 0;
    const deadline = performance.now() + Math.min(this.spinMs, CALLER_SPIN_MS);
    let done: number;
    while ((done = Atomics.load(c, CTRL.DONE)) !== want) {
      if ((++spins & 255) === 0 && this.mayWait && performance.now() > deadline) Atomics.wait(c, CTRL.DONE, done, 1000);
    }
    // a sleeping worker missing a job is expected (it takes ~70 µs to wake); an awake one was descheduled
    if (op !== OP_ADOPT) {
      this.late = want < this.threads - 1 - sleepers ? 1 : this.late * 0.9;
      this.workerShares += want;
    }
    if (failure) throw failure;
    if (Atomics.exchange(c, CTRL.ERROR, 0)) throw new Error(`kernel ${op === OP_ADOPT ? "setup" : KERNELS[op]} failed in a worker thread`);
  }

  close(): void {
    if (this.workers.length === 0) return;
    Atomics.store(this.ctrl, CTRL.EXIT, 1);
    Atomics.add(this.ctrl, CTRL.GEN, 1);
    Atomics.notify(this.ctrl, CTRL.GEN);
    for (const w of this.workers) w.terminate();
    this.workers.length = 0;
  }
}

/** Whether Atomics.wait may block this thread: on a browser page's own thread it throws. `ctrl` is shared and its EXIT slot 0 (a zero-timeout wait returns at once). */
function mayBlock(ctrl: Int32Array): boolean {
  try {
    Atomics.wait(ctrl, CTRL.EXIT, 0, 0);
    return true;
  } catch {
    return false;
  }
}
