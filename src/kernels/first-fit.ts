// A first-fit allocator over one address range [start, capacity): the bookkeeping behind the wasm
// backend's arenas and the native backend's activation buffers. It hands out offsets; the memory is the caller's.

const ALIGN = 64;

export class FirstFit {
  /** One past the highest byte handed out. */
  private topAt: number;
  /** Free ranges [start, end), sorted by start, coalesced. */
  private freeList: Array<[number, number]> = [];

  constructor(private readonly start: number, readonly capacity: number) {
    this.topAt = start;
  }

  get top(): number {
    return this.topAt;
  }

  /** Bytes that alloc can still hand out in one piece. */
  get available(): number {
    let free = this.capacity - this.topAt;
    for (const [s, e] of this.freeList) free = Math.max(free, e - s);
    return free;
  }

  get used(): number {
    let free = 0;
    for (const [s, e] of this.freeList) free += e - s;
    return this.topAt - this.start - free;
  }

  /** Returns a 64-byte aligned offset, or -1 when the range has no room. */
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
    if (this.topAt + size > this.capacity) return -1;
    const p = this.topAt;
    this.topAt += size;
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
    if (e === this.topAt) this.topAt = s;
    else list.splice(i, 0, [s, e]);
  }
}
