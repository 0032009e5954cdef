// One shared WebAssembly.Memory and a first-fit allocator over it. A wasm32 memory holds at most
// 4 GiB, so a model larger than that spreads its weights over several arenas.
import { FirstFit } from "../first-fit.js";

export const PAGE = 65536;
export const MAX_PAGES = 65536;
// The first page is never handed out: address 0 is then never a valid tensor, which catches
// uninitialised pointers, and the kernels keep their chunk counter there (CHUNK_COUNTER in abi.ts).
const FIRST = PAGE;

export class Arena {
  readonly memory: WebAssembly.Memory;
  private readonly space: FirstFit;

  constructor(readonly maxPages: number) {
    this.memory = new WebAssembly.Memory({ initial: 1, maximum: maxPages, shared: true });
    this.space = new FirstFit(FIRST, maxPages * PAGE);
  }

  get capacity(): number {
    return this.maxPages * PAGE;
  }

  /** Bytes that alloc can still hand out without outgrowing the arena. */
  get available(): number {
    return this.space.available;
  }

  get used(): number {
    return this.space.used;
  }

  /** Returns an address, or -1 when the arena has no room. */
  alloc(bytes: number): number {
    const p = this.space.alloc(bytes);
    if (p < 0) return -1;
    const needPages = Math.ceil(this.space.top / PAGE);
    const havePages = this.memory.buffer.byteLength / PAGE;
    if (needPages > havePages) this.memory.grow(needPages - havePages);
    return p;
  }

  free(ptr: number, bytes: number): void {
    this.space.free(ptr, bytes);
  }

  bytes(ptr: number, length: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, ptr, length);
  }
}
