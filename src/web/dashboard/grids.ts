// The layers × experts grids: the placement (each cell coloured by the device serving it; replicas
// counted and named on hover) and the routing heat map (each cell's share of its layer's expert use).
import type { Snapshot } from "../../server/dashboard/snapshot.js";
import { $ } from "./api.js";
import { chartIn } from "./charts.js";
import { deviceColour, DASH, num } from "./format.js";

/** Axis labels of a grid's rows (layers) or columns (experts), where one cell may cover several. */
const labels = (cells: number, per: number, total: number) =>
  Array.from({ length: cells }, (_, i) => (per === 1 ? String(i) : `${i * per}–${Math.min(total, (i + 1) * per) - 1}`));

export function gridViews(): (s: Snapshot) => void {
  const placement = chartIn($("placement"));
  const routing = chartIn($("routing"));
  const base = { animation: false, grid: { left: 48, right: 12, top: 8, bottom: 36 } };
  return (s) => {
    const g = s.grid;
    if (!g) return;
    const rows = s.placement?.length ?? s.routing.heat?.length ?? 0;
    const cols = (s.placement?.[0] ?? s.routing.heat?.[0])?.length ?? 0;
    const xAxis = { type: "category" as const, name: "expert", nameLocation: "middle" as const, nameGap: 22, data: labels(cols, g.experts_per_col, g.experts) };
    const yAxis = { type: "category" as const, name: "layer", nameLocation: "middle" as const, nameGap: 32, data: labels(rows, g.layers_per_row, g.layers) };
    const names = s.devices.map((d) => d.name);

    const cells = (s.placement ?? []).flatMap((row, r) => row.map((hosts, c) => ({ value: [c, r, hosts[0] ?? -1], hosts })));
    placement.setOption({
      ...base,
      tooltip: { formatter: (p: { data: { value: number[]; hosts: number[] } }) => `layer ${yAxis.data[p.data.value[1]!]}, expert ${xAxis.data[p.data.value[0]!]}: ${p.data.hosts.map((h) => names[h]).join(", ") || "the base station"}` },
      xAxis, yAxis,
      series: [{
        type: "heatmap",
        data: cells.map((cell) => ({ ...cell, itemStyle: { color: cell.hosts.length ? deviceColour(cell.hosts[0]!) : "#d0d7de" } })),
        label: { show: cols <= 16, formatter: (p: { data: { hosts: number[] } }) => (p.data.hosts.length > 1 ? `+${p.data.hosts.length - 1}` : "") },
      }],
    }, true);

    routing.setOption({
      ...base,
      grid: { ...base.grid, right: 56 },
      tooltip: { formatter: (p: { value: number[] }) => `layer ${yAxis.data[p.value[1]!]}, expert ${xAxis.data[p.value[0]!]}: ${num(100 * p.value[2]!, 1)} %` },
      visualMap: { min: 0, max: 1, calculable: false, orient: "vertical", right: 0, top: "middle", itemHeight: 120, inRange: { color: ["#f6f8fa", "#0969da"] } },
      xAxis, yAxis,
      series: [{ type: "heatmap", data: (s.routing.heat ?? []).flatMap((row, r) => row.map((v, c) => [c, r, v])) }],
    }, true);
    $("experts-per-token").textContent = num(s.routing.experts_per_token);
    $("experts-per-token").dataset.value = String(s.routing.experts_per_token ?? "");
    $("dropped").textContent = s.routing.dropped_gate_mass === null ? DASH : `${num(100 * s.routing.dropped_gate_mass, 1)} %`;
  };
}
