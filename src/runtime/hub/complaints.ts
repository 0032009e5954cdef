// Log lines about what peers do wrong, rate-limited per peer and reason: a peer that repeats a mistake
// (or floods with it) costs a few lines, then a count in a periodic summary.

/** `s` with control and non-ASCII characters escaped and cut to `max` characters: safe in a log line. */
export function printable(s: string, max = 200): string {
  const escaped = s.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  return escaped.length > max ? `${escaped.slice(0, max)}...` : escaped;
}

export class Complaints {
  /** complaints per "peer\0reason" in the current period */
  private readonly counts = new Map<string, { who: string; reason: string; n: number; logged: number }>();
  private readonly timer: NodeJS.Timeout;

  /**
   * `logged` complaints per peer and reason are written in each period of `summaryMs`; the rest are
   * counted, and the count summarised at the end of the period.
   */
  constructor(private readonly log: (line: string) => void, private readonly logged: number, summaryMs: number) {
    this.timer = setInterval(() => this.summarise(), summaryMs).unref();
  }

  /**
   * Logs "who: message" unless `who` has complained of `reason` more than `logged` times this period;
   * true when it was logged (the caller may then answer the peer too). `who` and `message` are made
   * printable here.
   */
  report(who: string, reason: string, message: string, logged = this.logged): boolean {
    const key = `${who}\0${reason}`;
    const c = this.counts.get(key) ?? this.counts.set(key, { who, reason, n: 0, logged }).get(key)!;
    if (++c.n > c.logged) return false;
    this.log(`${printable(who, 80)}: ${printable(message)}`);
    return true;
  }

  /** Logs how many complaints of each peer and reason went unlogged this period, and starts a new one. */
  summarise(): void {
    for (const { who, reason, n, logged } of this.counts.values()) {
      if (n > logged) this.log(`${printable(who, 80)}: ${n - logged} more ${reason}`);
    }
    this.counts.clear();
  }

  close(): void {
    clearInterval(this.timer);
    this.summarise();
  }
}
