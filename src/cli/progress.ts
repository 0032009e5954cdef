// A progress bar on stderr for long work (loading, perplexity), shown only on a terminal so that piped
// and JSON output stay clean.

export class ProgressBar {
  private last = 0;
  private readonly enabled: boolean;

  constructor(private readonly label: string, enabled = process.stderr.isTTY === true) {
    this.enabled = enabled;
  }

  update(done: number, total: number, unit: "bytes" | "tokens" = "bytes"): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.last < 100 && done < total) return;
    this.last = now;
    const frac = total > 0 ? done / total : 1;
    const width = 30;
    const fill = Math.round(frac * width);
    const fmt = (n: number) => (unit === "bytes" ? `${(n / 2 ** 20).toFixed(0)} MiB` : String(n));
    process.stderr.write(`\r${this.label} [${"#".repeat(fill)}${"-".repeat(width - fill)}] ${(frac * 100).toFixed(0).padStart(3)}% ${fmt(done)}/${fmt(total)}`);
    if (done >= total) process.stderr.write("\n");
  }
}
