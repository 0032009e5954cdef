// A small line chart as SVG text: one polyline with markers per series, linear axes with round ticks,
// a legend. Enough for the trade-off pictures the evaluation writes, with no drawing dependency.

export interface PlotSeries {
  name: string;
  points: ReadonlyArray<{ x: number; y: number }>;
}

export interface PlotSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly PlotSeries[];
  /** points above this are left out, and a note says how many */
  yMax?: number;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const W = 720, H = 460, L = 70, R = 190, T = 40, B = 55;

/** About five round ticks covering [lo, hi]. */
function ticks(lo: number, hi: number): number[] {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / 5, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

export function linePlot(input: PlotSpec): string {
  const yMax = input.yMax ?? Infinity;
  const hidden = input.series.reduce((n, s) => n + s.points.filter((p) => p.y > yMax).length, 0);
  const spec = { ...input, series: input.series.map((s) => ({ ...s, points: s.points.filter((p) => p.y <= yMax) })) };
  const all = spec.series.flatMap((s) => s.points);
  if (all.length === 0) throw new Error("nothing to plot");
  const pad = (lo: number, hi: number) => (hi > lo ? [lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)] : [lo - 1, hi + 1]);
  const [x0, x1] = pad(Math.min(...all.map((p) => p.x)), Math.max(...all.map((p) => p.x))) as [number, number];
  const [y0, y1] = pad(Math.min(...all.map((p) => p.y)), Math.max(...all.map((p) => p.y))) as [number, number];
  const px = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const py = (y: number) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${(L + W - R) / 2}" y="22" text-anchor="middle" font-size="14">${esc(spec.title)}</text>`,
    `<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#444"/>`,
  ];
  for (const v of ticks(x0, x1)) {
    if (v < x0 || v > x1) continue;
    out.push(`<line x1="${px(v)}" y1="${T}" x2="${px(v)}" y2="${H - B}" stroke="#ddd"/>`, `<text x="${px(v)}" y="${H - B + 16}" text-anchor="middle">${v}</text>`);
  }
  for (const v of ticks(y0, y1)) {
    if (v < y0 || v > y1) continue;
    out.push(`<line x1="${L}" y1="${py(v)}" x2="${W - R}" y2="${py(v)}" stroke="#ddd"/>`, `<text x="${L - 6}" y="${py(v) + 4}" text-anchor="end">${v}</text>`);
  }
  out.push(
    `<text x="${(L + W - R) / 2}" y="${H - 14}" text-anchor="middle">${esc(spec.xLabel)}</text>`,
    `<text transform="translate(18 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${esc(spec.yLabel)}</text>`,
  );
  spec.series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length]!;
    const pts = s.points.map((p) => `${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`);
    if (pts.length > 1) out.push(`<polyline points="${pts.join(" ")}" fill="none" stroke="${c}" stroke-width="1.5"/>`);
    for (const p of s.points) out.push(`<circle cx="${px(p.x).toFixed(1)}" cy="${py(p.y).toFixed(1)}" r="3" fill="${c}"/>`);
    const ly = T + 10 + i * 18;
    out.push(`<circle cx="${W - R + 16}" cy="${ly}" r="4" fill="${c}"/>`, `<text x="${W - R + 26}" y="${ly + 4}">${esc(s.name)}</text>`);
  });
  if (hidden > 0) out.push(`<text x="${W - R + 6}" y="${H - B}" font-size="11">${hidden} point${hidden > 1 ? "s" : ""} above ${Number(yMax.toPrecision(4))} not shown</text>`);
  out.push("</svg>");
  return out.join("\n") + "\n";
}
