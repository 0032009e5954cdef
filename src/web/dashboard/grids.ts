// The layers × experts grids: the placement (each cell coloured by the device serving it; replicas
// counted and named on hover; the experts the BS holds itself under MoNDE's tiers outlined) and the routing heat map (each cell's share of its layer's expert use).
import type { Snapshot } from "../../server/dashboard/snapshot.js";
import { $ } from "./api.js";
import { chartIn } from "./charts.js";
import { deviceColour, DASH, html, num } from "./format.js";

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

    // bs: how many of the cell's experts the BS holds itself (MoNDE's tiers), marked by a dark outline and "BS"
    const cells = (s.placement ?? []).flatMap((row, r) => row.map((hosts, c) => ({ value: [c, r, hosts[0] ?? -1], hosts, bs: s.bs_experts?.[r]?.[c] ?? 0 })));
    type Cell = (typeof cells)[number];
    const perCell = g.layers_per_row * g.experts_per_col;
    const held = (bs: number) => (bs === 0 ? "" : perCell === 1 ? "; the BS holds it too" : `; the BS holds ${bs} of them too`);
    placement.setOption({
      ...base,
      tooltip: { formatter: (p: { data: Cell }) => `layer ${yAxis.data[p.data.value[1]!]}, expert ${xAxis.data[p.data.value[0]!]}: ${p.data.hosts.map((h) => html(names[h] ?? "")).join(", ") || "the base station"}${held(p.data.bs)}` },
      xAxis, yAxis,
      series: [{
        type: "heatmap",
        data: cells.map((cell) => ({ ...cell, itemStyle: { color: cell.hosts.length ? deviceColour(cell.hosts[0]!) : "#d0d7de", ...(cell.bs > 0 && { borderColor: "#1f2328", borderWidth: 3 }) } })),
        label: { show: cols <= 16, color: "#1f2328", fontWeight: "bold", formatter: (p: { data: Cell }) => [p.data.bs > 0 ? "BS" : "", p.data.hosts.length > 1 ? `+${p.data.hosts.length - 1}` : ""].filter(Boolean).join(" ") },
      }],
    }, true);
    const bsHeld = s.bs_experts?.flat().reduce((a, b) => a + b, 0) ?? null;
    $("bs-legend").hidden = bsHeld === null;
    $("bs-experts").textContent = bsHeld === null ? DASH : `${bsHeld} expert${bsHeld === 1 ? "" : "s"}`;
    $("bs-experts").dataset.value = String(bsHeld ?? "");

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
