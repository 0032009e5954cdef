// MoNDE's tiers in the cell, swept: plain WDMoE (every expert on the devices), then parameter
// offloading and monde at several BS budgets, for each store read rate asked for, all with the same
// selection policy on the same fading. A CSV of the points, a Markdown table, and latency against the
// budget as a picture.
import { linePlot } from "./svg-plot.js";
import type { BsTierSpec } from "../tiers/cell-tiers.js";
import type { EvalReport } from "./wireless-eval.js";

export const BS_BUDGETS = [0.125, 0.25, 0.5];

/** One evaluation with the BS keeping experts by `tiers` (undefined: none). */
export type TierSweepRun = (tiers: BsTierSpec | undefined) => Promise<EvalReport>;

export async function runTierSweep(run: TierSweepRun, storeGbps: readonly number[], window: number): Promise<EvalReport[]> {
  const reports = [await run(undefined)];
  for (const store of storeGbps) for (const budget of BS_BUDGETS) for (const policy of ["offload", "monde"] as const) reports.push(await run({ policy, budget, window, storeGbps: store }));
  return reports;
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** Where each report's experts ran, for the table and the CSV. */
function setting(r: EvalReport): { tiers: string; budget: string; store: string } {
  const t = r.tiers;
  return t ? { tiers: t.policy, budget: pct(t.bs_budget), store: String(t.store_gbps) } : { tiers: "devices only", budget: "0%", store: "" };
}

export function tierSweepCsv(reports: readonly EvalReport[]): string {
  const head = ["tiers", "bs_budget", "store_gbps", "policy", "theta", "perplexity", "latency_mean_ms", "latency_p50_ms", "latency_p95_ms", "bs_experts_ms", "bs_share", "copies_per_token", "prefetches_per_token", "weight_bytes_per_token", "radio_bytes_per_token"];
  const rows = reports.map((r) => {
    const t = r.tiers;
    return [t?.policy ?? "devices-only", t?.bs_budget ?? 0, t?.store_gbps ?? "", r.policy, r.theta ?? "", r.perplexity, r.latency_ms.mean, r.latency_ms.p50, r.latency_ms.p95, r.breakdown_ms.bs_experts, t?.bs_share ?? 0, t?.copies_per_token ?? 0, t?.prefetches_per_token ?? 0, t?.weight_bytes_per_token ?? 0, t?.radio_bytes_per_token ?? ""].join(",");
  });
  return [head.join(","), ...rows].join("\n") + "\n";
}

/** The table, each latency beside plain WDMoE's (the first report). */
export function tierSweepTable(reports: readonly EvalReport[]): string {
  const base = reports[0]!.latency_ms.mean;
  const lines = [
    "| tiers | BS budget | store GB/s | latency mean / p50 / p95 (ms) | × devices only | calls at the BS | store reads per token (waited / background) | weights KiB/token |",
    "|---|---|---|---|---|---|---|---|",
  ];
  for (const r of reports) {
    const s = setting(r), t = r.tiers, l = r.latency_ms;
    lines.push(`| ${s.tiers} | ${s.budget} | ${s.store} | ${l.mean.toFixed(3)} / ${l.p50.toFixed(3)} / ${l.p95.toFixed(3)} | ${(l.mean / base).toFixed(3)} | ${pct(t?.bs_share ?? 0)} | ${t ? `${t.copies_per_token.toFixed(3)} / ${t.prefetches_per_token.toFixed(3)}` : ""} | ${t ? (t.weight_bytes_per_token / 1024).toFixed(1) : ""} |`);
  }
  return lines.join("\n") + "\n";
}

/** Mean latency against the BS's budget, a line per tier policy and store rate, plain WDMoE at 0%; points above twice plain WDMoE's are left out. */
export function tierSweepPicture(reports: readonly EvalReport[], scenario: string): string {
  const base = reports.find((r) => !r.tiers)!;
  const series = new Map<string, Array<{ x: number; y: number }>>();
  for (const r of reports) {
    if (!r.tiers) continue;
    const name = `${r.tiers.policy}, store ${r.tiers.store_gbps} GB/s`;
    const points = series.get(name) ?? series.set(name, [{ x: 0, y: base.latency_ms.mean }]).get(name)!;
    points.push({ x: 100 * r.tiers.bs_budget, y: r.latency_ms.mean });
  }
  return linePlot({ title: `${scenario}: the BS keeps hot experts (0%: all on the devices)`, xLabel: "BS budget (% of each layer's experts)", yLabel: "mean token latency (ms, modelled)", yMax: 2 * base.latency_ms.mean, series: [...series].map(([name, points]) => ({ name, points })) });
}
