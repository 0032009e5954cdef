// A binary min-heap of (time, id) events for the discrete-event simulator: typed arrays, no allocation
// per event.

export class EventQueue {
  private times = new Float64Array(64);
  private ids = new Int32Array(64);
  private n = 0;

  get size(): number {
    return this.n;
  }

  push(time: number, id: number): void {
    if (this.n === this.times.length) {
      const t = new Float64Array(this.n * 2), i = new Int32Array(this.n * 2);
      t.set(this.times);
      i.set(this.ids);
      this.times = t;
      this.ids = i;
    }
    let at = this.n++;
    while (at > 0) {
      const parent = (at - 1) >> 1;
      if (this.times[parent]! <= time) break;
      this.times[at] = this.times[parent]!;
      this.ids[at] = this.ids[parent]!;
      at = parent;
    }
    this.times[at] = time;
    this.ids[at] = id;
  }

  /** The earliest event's time (Infinity when empty). */
  peekTime(): number {
    return this.n > 0 ? this.times[0]! : Infinity;
  }

  /** Removes the earliest event and returns its id. */
  pop(): number {
    if (this.n === 0) throw new Error("pop from an empty event queue");
    const top = this.ids[0]!;
    const time = this.times[--this.n]!, id = this.ids[this.n]!;
    let at = 0;
    for (;;) {
      let child = 2 * at + 1;
      if (child >= this.n) break;
      if (child + 1 < this.n && this.times[child + 1]! < this.times[child]!) child++;
      if (this.times[child]! >= time) break;
      this.times[at] = this.times[child]!;
      this.ids[at] = this.ids[child]!;
      at = child;
    }
    this.times[at] = time;
    this.ids[at] = id;
    return top;
  }
}
