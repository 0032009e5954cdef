// Windowed expert load, in the spirit of EPLB's: tokens routed to each (layer, expert) over the last
// `window` steps. MoNDE's fast tier keeps the experts with the most recent load and evicts by it, so
// the hot set follows the traffic without flapping on one step's counts.
export class LoadWindow {
  /** ring of per-step counts: slot s holds step (s mod window)'s layers × experts counts */
  private readonly ring: Int32Array;
  private readonly totals: Float64Array;
  private step = 0;

  constructor(private readonly layers: number, private readonly experts: number, readonly window: number) {
    if (!Number.isInteger(window) || window < 1) throw new Error(`the load window must be a whole number of steps ≥ 1, got ${window}`);
    this.ring = new Int32Array(window * layers * experts);
    this.totals = new Float64Array(layers * experts);
  }

  /** Adds `tokens` routed to (layer, expert) in the current step. */
  add(layer: number, expert: number, tokens: number): void {
    const i = layer * this.experts + expert;
    this.ring[(this.step % this.window) * this.layers * this.experts + i]! += tokens;
    this.totals[i]! += tokens;
  }

  /** Ends the current step: the oldest step in the window drops out. */
  nextStep(): void {
    this.step++;
    const slot = (this.step % this.window) * this.layers * this.experts;
    for (let i = 0; i < this.layers * this.experts; i++) {
      this.totals[i]! -= this.ring[slot + i]!;
      this.ring[slot + i] = 0;
    }
  }

  /** Tokens routed to (layer, expert) in the last `window` steps, the current one included. */
  load(layer: number, expert: number): number {
    return this.totals[layer * this.experts + expert]!;
  }
}
