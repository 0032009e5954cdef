// Where each decode step's time goes, as a live stacked chart over the last minutes; tokens/s, the queue,
// and each device's expert call round trips (p50/p95 over the window).
import { LATENCY_PARTS, type Snapshot } from "../../server/dashboard/snapshot.js";
import { $, el } from "./api.js";
import { chartIn } from "./charts.js";
import { num } from "./format.js";

/** Points kept: a few minutes at a few snapshots a second. */
const POINTS = 600;
const NAMES = { bs_compute: "BS compute", transfer: "transfer", device_compute: "device compute", waiting: "waiting" } as const;

export function latencyView(): (s: Snapshot) => void {
  const chart = chartIn($("latency"));
  const series = Object.fromEntries(LATENCY_PARTS.map((p) => [p, [] as Array<[number, number]>]));
  return (s) => {
    for (const p of LATENCY_PARTS) {
      const points = series[p]!;
      points.push([s.at, s.latency_ms?.[p] ?? 0]);
      if (points.length > POINTS) points.shift();
    }
    chart.setOption({
      animation: false,
      grid: { left: 44, right: 12, top: 30, bottom: 24 },
      legend: { top: 0, type: "scroll" },
      tooltip: { trigger: "axis" },
      xAxis: { type: "time", axisLabel: { hideOverlap: true } },
      yAxis: { type: "value" },
      series: LATENCY_PARTS.map((p) => ({ name: NAMES[p], type: "line", stack: "step", areaStyle: {}, showSymbol: false, data: series[p] })),
    });
    $("tokens-per-s").textContent = num(s.tokens_per_s);
    $("queue-waiting").textContent = String(s.queue.waiting);
    $("queue-active").textContent = String(s.queue.active);
    $("calls").replaceChildren(...[...s.devices].sort((a, b) => a.name.localeCompare(b.name)).map((d) => {
      const row = el("tr");
      row.append(el("td", d.name), el("td", String(d.calls)), el("td", num(d.call_ms?.p50 ?? null)), el("td", num(d.call_ms?.p95 ?? null)));
      return row;
    }));
  };
}
