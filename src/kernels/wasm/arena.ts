// One shared WebAssembly.Memory and a first-fit allocator over it. A wasm32 memory holds at most
// 4 GiB, so a model larger than that spreads its weights over several arenas.

export const PAGE = 65536;
export const MAX_PAGES = 65536;
const ALIGN = 64;
// The first page is never handed out: address 0 is then never a valid tensor, which catches
// uninitialised pointers, and the kernels keep their chunk counter there (CHUNK_COUNTER in abi.ts).
const FIRST = PAGE;

export class Arena {
  readonly memory: WebAssembly.Memory;
  private top = FIRST;
  /** Free ranges [start, end), sorted by start, coalesced. */
  private freeList: Array<[number, number]> = [];

  constructor(readonly maxPages: number) {
    this.memory = new WebAssembly.Memory({ initial: 1, maximum: maxPages, shared: true });
  }

  get capacity(): number {
    return this.maxPages * PAGE;
  }

  /** Bytes that alloc can still hand out without outgrowing the arena. */
  get available(): number {
    let free = this.capacity - this.top;
    for (const [s, e] of this.freeList) free = Math.max(free, e - s);
    return free;
  }

  get used(): number {
    let free = 0;
    for (const [s, e] of this.freeList) free += e - s;
    return this.top - FIRST - free;
  }

  /** Returns an address, or -1 when the arena has no room. */
  alloc(bytes: number): number {
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    for (let i = 0; i < this.freeList.length; i++) {
      const [s, e] = this.freeList[i]!;
      if (e - s >= size) {
        if (e - s === size) this.freeList.splice(i, 1);
        else this.freeList[i] = [s + size, e];
        return s;
      }
    }
    if (this.top + size > this.capacity) return -1;
    const p = this.top;
    this.top += size;
    const needPages = Math.ceil(this.top / PAGE);
    const havePages = this.memory.buffer.byteLength / PAGE;
    if (needPages > havePages) this.memory.grow(needPages - havePages);
    return p;
  }

  free(ptr: number, bytes: number): void {
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    let s = ptr, e = ptr + size;
    const list = this.freeList;
    let i = 0;
    while (i < list.length && list[i]![0] < s) i++;
    if (i > 0 && list[i - 1]![1] === s) { s = list[i - 1]![0]; list.splice(--i, 1); }
    if (i < list.length && list[i]![0] === e) { e = list[i]![1]; list.splice(i, 1); }
    if (e === this.top) this.top = s;
    else list.splice(i, 0, [s, e]);
  }

  bytes(ptr: number, length: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, ptr, length);
  }
}
