// The topology: the base station and each device with what it is, what it offers and how its link is
// doing; the state sets its colour, and hovering shows why a device failed, was quarantined or is idle.
import type { DeviceView, Snapshot } from "../../server/dashboard/snapshot.js";
import { $, el } from "./api.js";
import { bits, bytes, deviceColour, DASH, num } from "./format.js";

function deviceCard(d: DeviceView, k: number): HTMLElement {
  const card = el("div", "", { class: "device", "data-device": d.name, "data-state": d.state });
  if (d.reason) card.title = d.reason;
  const name = el("b", d.name);
  name.style.borderLeft = `0.6rem solid ${deviceColour(k)}`;
  name.style.paddingLeft = ".3rem";
  card.append(el("span", d.state, { class: "state" }), name);
  const l = d.link;
  const lines = [
    `${d.kind}${d.compute ? ` · ${d.compute}` : ""} · ${num(d.gflops)} GFLOP/s${d.read_gbps === null ? "" : ` · reads ${num(d.read_gbps)} GB/s`}`,
    `memory ${bytes(d.memory_bytes)} · ${d.experts} experts · ${d.calls} calls`,
    `${l.emulated ? "emulated link" : "measured"}: ↓ ${bits(l.down_bps)} ↑ ${bits(l.up_bps)}`,
    `RTT ${l.rtt_ms === null ? DASH : `${num(l.rtt_ms)} ms`} · loss ${l.loss === null ? DASH : `${num(100 * l.loss)} %`}`,
  ];
  if (d.battery) lines.push(`battery ${Math.round(100 * d.battery.level)} %${d.battery.charging ? " (charging)" : ""}`);
  if (d.reason) lines.push(d.reason);
  for (const line of lines) card.append(el("div", line));
  return card;
}

export function showTopology(s: Snapshot): void {
  const bs = el("div", "", { class: "device bs", "data-state": s.health.state === "ok" ? "ready" : "loading" });
  bs.append(el("span", s.health.state, { class: "state" }), el("b", "base station"), el("div", `${s.model ?? "no model yet"} · ${s.policy}`));
  for (const r of s.health.reasons) bs.append(el("div", r));
  // listed by name; each keeps its index in the snapshot, which its colour in the placement follows
  const cards = s.devices.map((d, k) => [d, k] as const).sort(([a], [b]) => a.name.localeCompare(b.name)).map(([d, k]) => deviceCard(d, k));
  if (s.devices_omitted > 0) cards.push(el("div", `+ ${s.devices_omitted} more devices`, { class: "device" }));
  $("devices").replaceChildren(bs, ...cards);
  if (s.devices.length === 0) $("devices").append(el("p", "No devices: the base station runs every expert itself.", { class: "note" }));
}
