// The latency–quality sweep: every policy across its knob on one scenario, a CSV/JSON of the points, the
// picture, and the headline figures (latency saved against the model's own top-k routing at ≤ 1 % and
// ≤ 5 % more perplexity).
import type { BandwidthMode } from "../channel/cell-costs.js";
import type { PolicySpec } from "../policies/registry.js";
import { linePlot } from "./svg-plot.js";
import type { EvalReport } from "./wireless-eval.js";

export const SWEEP_THETAS = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
/** deadline budgets as multiples of top-k's mean time in the experts (its mean latency less the BS's part) */
export const SWEEP_BUDGET_FACTORS = [2, 1.6, 1.4, 1.2, 1, 0.8, 0.6];

export interface SweepPoint {
  series: string;
  report: EvalReport;
}

export type SweepRun = (spec: PolicySpec, bandwidth: BandwidthMode) => Promise<EvalReport>;

/** The baseline the headline figures are against: top-k routing on a statically, equally split band. */
export const BASELINE_SERIES = "topk, equal band";

export async function runSweep(run: SweepRun): Promise<SweepPoint[]> {
  const points: SweepPoint[] = [];
  const add = async (series: string, spec: PolicySpec, bandwidth: BandwidthMode) => {
    const report = await run(spec, bandwidth);
    points.push({ series, report });
    return report;
  };
  const base = await add(BASELINE_SERIES, { name: "topk" }, "equal");
  await add("topk, optimal band", { name: "topk" }, "optimal");
  for (const bandwidth of ["equal", "optimal"] as const) for (const theta of SWEEP_THETAS) await add(`wlr, ${bandwidth} band`, { name: "wlr", theta }, bandwidth);
  for (const theta of SWEEP_THETAS) await add("joint (optimal band)", { name: "joint", theta }, "optimal");
  const expertMs = base.latency_ms.mean - base.breakdown_ms.bs_compute;
  for (const f of SWEEP_BUDGET_FACTORS) await add("deadline, equal band", { name: "deadline", budgetMs: Number((f * expertMs).toPrecision(4)) }, "equal");
  return points;
}

const CSV_COLUMNS = ["series", "policy", "theta", "budget_ms", "bandwidth", "perplexity", "accuracy", "experts_per_token", "dropped_gate_mass", "latency_mean_ms", "latency_p50_ms", "latency_p95_ms", "bs_compute_ms", "down_ms", "device_compute_ms", "up_ms", "policy_us"];

export function sweepCsv(points: readonly SweepPoint[]): string {
  const rows = points.map(({ series, report: r }) =>
    [series, r.policy, r.theta ?? "", r.budget_ms ?? "", r.bandwidth, r.perplexity, r.accuracy, r.experts_per_token, r.dropped_gate_mass, r.latency_ms.mean, r.latency_ms.p50, r.latency_ms.p95, r.breakdown_ms.bs_compute, r.breakdown_ms.down, r.breakdown_ms.device_compute, r.breakdown_ms.up, r.policy_us]
      .map((v) => (typeof v === "number" ? Number(v.toPrecision(6)) : v.includes(",") ? `"${v}"` : v))
      .join(","),
  );
  return [CSV_COLUMNS.join(","), ...rows].join("\n") + "\n";
}

export interface Headline {
  series: string;
  /** the largest latency reduction against the baseline among the series' points within the perplexity limit */
  within1pct: { reduction: number; point: EvalReport } | null;
  within5pct: { reduction: number; point: EvalReport } | null;
}

export function headlines(points: readonly SweepPoint[]): Headline[] {
  const base = points.find((p) => p.series === BASELINE_SERIES)?.report;
  if (!base) throw new Error("the sweep has no baseline");
  const best = (series: string, limit: number) => {
    let out: { reduction: number; point: EvalReport } | null = null;
    for (const p of points) {
      if (p.series !== series || p.report.perplexity > base.perplexity * (1 + limit)) continue;
      const reduction = 1 - p.report.latency_ms.mean / base.latency_ms.mean;
      if (!out || reduction > out.reduction) out = { reduction, point: p.report };
    }
    return out;
  };
  return [...new Set(points.map((p) => p.series))].map((series) => ({ series, within1pct: best(series, 0.01), within5pct: best(series, 0.05) }));
}

/** The picture shows perplexity up to this factor over the baseline's, where the trade-off is worth reading. */
const PICTURE_PPL_RANGE = 1.1;

export function tradeoffPicture(points: readonly SweepPoint[], scenario: string): string {
  const base = points.find((p) => p.series === BASELINE_SERIES)?.report.perplexity ?? Infinity;
  const series = [...new Set(points.map((p) => p.series))].map((name) => ({
    name,
    points: points.filter((p) => p.series === name).map((p) => ({ x: p.report.latency_ms.mean, y: p.report.perplexity })),
  }));
  return linePlot({ title: `Latency–quality trade-off on ${scenario}`, xLabel: "modelled latency per token, mean (ms)", yLabel: "perplexity", series, yMax: base * PICTURE_PPL_RANGE });
}
