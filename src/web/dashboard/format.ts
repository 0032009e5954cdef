// How the page writes numbers (bit rates, bytes, milliseconds; "–" for absent) and text into HTML.

export const DASH = "–";

export function bits(bps: number | null): string {
  if (bps === null) return DASH;
  if (bps === 0) return "unlimited";
  const units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s"];
  let x = bps, u = 0;
  while (x >= 1000 && u < units.length - 1) (x /= 1000), u++;
  return `${Number(x.toPrecision(3))} ${units[u]}`;
}

export function bytes(n: number | null): string {
  if (n === null) return DASH;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let x = n, u = 0;
  while (x >= 1024 && u < units.length - 1) (x /= 1024), u++;
  return `${Number(x.toPrecision(3))} ${units[u]}`;
}

export const num = (x: number | null, digits = 2): string => (x === null ? DASH : String(Number(x.toFixed(digits))));

/** The colour of the k-th device in the placement and the lists. */
export const deviceColour = (k: number): string => `hsl(${(k * 137.5) % 360} 60% 55%)`;

/** Text for a string ECharts renders as HTML (its tooltips): device names are checked by the hub, and escaped here anyway. */
export const html = (text: string): string => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
