// A page's life on a phone: hidden or frozen, it leaves the base station (which lets its calls in flight
// finish first) and waits to be shown again, then rejoins; while it serves it holds a Screen Wake Lock
// where the browser grants one, so that the screen going dark does not hide it.

/** Whether the page may serve: not while hidden or frozen. */
export class PageLife {
  private away = document.visibilityState === "hidden";
  private readonly waiting: Array<() => void> = [];

  /** `onAway`: the page was hidden or frozen (why, in words); it should leave the base station. */
  constructor(private readonly onAway: (why: string) => void) {
    document.addEventListener("visibilitychange", () => (document.visibilityState === "hidden" ? this.leave("the page was hidden") : this.back()));
    document.addEventListener("freeze", () => this.leave("the page was frozen"));
    // a page resumed while still hidden stays away until it is shown
    document.addEventListener("resume", () => document.visibilityState !== "hidden" && this.back());
  }

  get isAway(): boolean {
    return this.away;
  }

  /** Resolves at once while the page is shown, else once it is shown again. */
  shown(): Promise<void> {
    return this.away ? new Promise((resolve) => this.waiting.push(resolve)) : Promise.resolve();
  }

  private leave(why: string): void {
    if (this.away) return;
    this.away = true;
    this.onAway(why);
  }

  private back(): void {
    if (!this.away) return;
    this.away = false;
    for (const resolve of this.waiting.splice(0)) resolve();
  }
}

/** A Screen Wake Lock held while serving; `state` says in words how it stands (a refusal is fine, and shown). */
export class ScreenWakeLock {
  state = "not requested";
  private sentinel: WakeLockSentinel | null = null;
  private asking = false;

  async hold(): Promise<void> {
    if (this.asking || (this.sentinel && !this.sentinel.released)) return;
    if (!("wakeLock" in navigator)) {
      this.state = "not offered by this browser";
      return;
    }
    this.asking = true;
    try {
      const sentinel = await navigator.wakeLock.request("screen");
      sentinel.addEventListener("release", () => (this.state = "released"));
      this.sentinel = sentinel;
      this.state = "held";
    } catch (e) {
      this.state = `refused (${(e as Error).message})`;
    } finally {
      this.asking = false;
    }
  }

  release(): void {
    void this.sentinel?.release().catch(() => undefined);
    this.sentinel = null;
  }
}
