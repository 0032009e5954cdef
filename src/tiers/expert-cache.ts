// The fast tier's expert weights: a cache with a byte budget that is never exceeded. Copying an
// expert in when the cache is full evicts one first, by recency (parameter offloading's LRU) or by
// windowed load (MoNDE: the least used lately goes, so the hot set stays).
export type Eviction = "lru" | "load";

interface Entry<T> {
  layer: number;
  expert: number;
  value: T;
  lastUse: number;
}

export class ExpertCache<T> {
  /** experts the budget holds */
  readonly capacity: number;
  private readonly entries = new Map<string, Entry<T>>();
  private clock = 0;
  /** experts evicted so far */
  evictions = 0;

  constructor(
    readonly budgetBytes: number,
    readonly expertBytes: number,
    private readonly eviction: Eviction,
    /** what to free when an expert leaves */
    private readonly release: (value: T) => void,
    /** windowed load of (layer, expert), for eviction by load */
    private readonly load: (layer: number, expert: number) => number = () => 0,
  ) {
    this.capacity = Math.floor(budgetBytes / expertBytes);
  }

  get size(): number {
    return this.entries.size;
  }

  get bytes(): number {
    return this.entries.size * this.expertBytes;
  }

  has(layer: number, expert: number): boolean {
    return this.entries.has(`${layer}:${expert}`);
  }

  /** The expert's weights, marked as used now; undefined when not held. */
  use(layer: number, expert: number): T | undefined {
    const e = this.entries.get(`${layer}:${expert}`);
    if (e) e.lastUse = ++this.clock;
    return e?.value;
  }

  /** Windowed load of the expert a copy would push out now: 0 when there is room, Infinity when nothing can go. */
  displacedLoad(pinned: (layer: number, expert: number) => boolean = () => false): number {
    if (this.capacity < 1) return Infinity;
    if (this.entries.size < this.capacity) return 0;
    const victim = this.victim(pinned);
    return victim ? this.load(victim.layer, victim.expert) : Infinity;
  }

  /** The entry the cache's rule evicts next, leaving `pinned` ones; null when all are pinned. */
  private victim(pinned: (layer: number, expert: number) => boolean): Entry<T> | null {
    let victim: Entry<T> | null = null;
    for (const e of this.entries.values()) if (!pinned(e.layer, e.expert) && (!victim || this.before(e, victim))) victim = e;
    return victim;
  }

  /**
   * Makes room for (layer, expert), evicting by the cache's rule but never an expert `pinned` says is
   * still needed, then stores what `make` builds (called once there is room). Throws when no room can
   * be made: a budget below one expert, or everything pinned.
   */
  admit(layer: number, expert: number, make: () => T, pinned: (layer: number, expert: number) => boolean = () => false): T {
    const key = `${layer}:${expert}`;
    const have = this.entries.get(key);
    if (have) return (have.lastUse = ++this.clock), have.value;
    if (this.capacity < 1) throw new Error(`the fast tier's budget of ${this.budgetBytes} bytes holds no expert (one is ${this.expertBytes} bytes)`);
    while (this.entries.size >= this.capacity) {
      const victim = this.victim(pinned);
      if (!victim) throw new Error(`the fast tier is full of experts still in use (${this.capacity} fit its budget)`);
      this.entries.delete(`${victim.layer}:${victim.expert}`);
      this.release(victim.value);
      this.evictions++;
    }
    const value = make();
    this.entries.set(key, { layer, expert, value, lastUse: ++this.clock });
    return value;
  }

  /** Whether entry a goes before entry b: the least recently used, or the least loaded (then least recently used). */
  private before(a: Entry<T>, b: Entry<T>): boolean {
    if (this.eviction === "load") {
      const la = this.load(a.layer, a.expert), lb = this.load(b.layer, b.expert);
      if (la !== lb) return la < lb;
    }
    return a.lastUse < b.lastUse;
  }

  /** The experts held, as [layer, expert]. */
  held(): Array<[number, number]> {
    return [...this.entries.values()].map((e) => [e.layer, e.expert]);
  }

  clear(): void {
    for (const e of this.entries.values()) this.release(e.value);
    this.entries.clear();
  }
}
