// The dashboard's snapshot: a pure function from what the base station exports (its metrics registry's
// values, read into a Reading), the hub's status and placement, the experts the BS holds under MoNDE's
// tiers, and the policy in use, to one compact JSON object. Rates, the routing heat map and call percentiles are differences between the reading now
// and one at the start of a window, so there is no bookkeeping besides the counters /metrics exports.
// Its size is bounded whatever the model or the cell: at most MAX_DEVICES devices, and the layers ×
// experts grids at most MAX_ROWS × MAX_COLS cells (neighbouring layers or experts share a cell beyond).
import type { MetricValue } from "prom-client";
import type { LinkParams } from "../../channel/link.js";
import type { DeviceStatus } from "../../runtime/hub/status.js";

export const MAX_DEVICES = 64;
export const MAX_ROWS = 64;
export const MAX_COLS = 64;
/** Hosts listed per placement cell at most. */
export const MAX_HOSTS = 4;
/** Reasons listed at most, and their length. */
const MAX_REASONS = 8;
const REASON_CHARS = 200;
/** How long a device that disconnected is still shown, as failed. */
export const FAILED_SHOWN_MS = 60_000;

/** The registry's series a Reading is made of. */
export const DASHBOARD_METRICS = [
  "distmoe_decoded_tokens_total",
  "distmoe_decode_steps_total",
  "distmoe_decode_seconds_total",
  "distmoe_gate_mass_total",
  "distmoe_expert_use_total",
  "distmoe_device_call_seconds",
  "distmoe_device_bytes_total",
  "distmoe_queue_depth",
] as const;

export const LATENCY_PARTS = ["bs_compute", "transfer", "device_compute", "waiting"] as const;
export type LatencyPart = (typeof LATENCY_PARTS)[number];

interface CallHistogram {
  count: number;
  sum: number;
  /** [upper bound s, calls at or below it], ascending, +Inf last */
  buckets: Array<[number, number]>;
}

/** The counters at one moment. */
export interface Reading {
  /** when, ms (monotonic clock) */
  at: number;
  decodedTokens: number;
  decodeSteps: number;
  decodeSeconds: Record<LatencyPart, number>;
  gateKept: number;
  gateDropped: number;
  /** "layer:expert" → (token, expert) pairs chosen */
  expertUse: Map<string, number>;
  deviceCalls: Map<string, CallHistogram>;
  deviceBytes: Map<string, { sent: number; received: number }>;
  queue: { waiting: number; active: number };
}

/** A series's values as prom-client's get() gives them (a histogram's with the name of each: _bucket, _sum, _count). */
export type Values = Partial<Record<(typeof DASHBOARD_METRICS)[number], ReadonlyArray<MetricValue<string> & { metricName?: string }>>>;

/** A Reading from the registry's values of DASHBOARD_METRICS (a series absent: zero). */
export function readingFrom(values: Values, at: number): Reading {
  const of = (name: keyof Values) => values[name] ?? [];
  const sum = (name: keyof Values, labels: Record<string, string> = {}) =>
    of(name).filter((v) => Object.entries(labels).every(([k, x]) => String(v.labels[k]) === x)).reduce((s, v) => s + v.value, 0);
  const expertUse = new Map<string, number>();
  for (const v of of("distmoe_expert_use_total")) expertUse.set(`${v.labels.layer}:${v.labels.expert}`, v.value);
  const deviceCalls = new Map<string, CallHistogram>();
  for (const v of of("distmoe_device_call_seconds")) {
    const device = String(v.labels.device);
    let h = deviceCalls.get(device);
    if (!h) deviceCalls.set(device, (h = { count: 0, sum: 0, buckets: [] }));
    if (v.metricName?.endsWith("_bucket")) h.buckets.push([v.labels.le === "+Inf" ? Infinity : Number(v.labels.le), v.value]);
    else if (v.metricName?.endsWith("_sum")) h.sum = v.value;
    else if (v.metricName?.endsWith("_count")) h.count = v.value;
  }
  for (const h of deviceCalls.values()) h.buckets.sort((a, b) => a[0] - b[0]);
  const deviceBytes = new Map<string, { sent: number; received: number }>();
  for (const v of of("distmoe_device_bytes_total")) {
    const device = String(v.labels.device);
    const b = deviceBytes.get(device) ?? { sent: 0, received: 0 };
    if (v.labels.direction === "sent") b.sent = v.value;
    else b.received = v.value;
    deviceBytes.set(device, b);
  }
  return {
    at,
    decodedTokens: sum("distmoe_decoded_tokens_total"),
    decodeSteps: sum("distmoe_decode_steps_total"),
    decodeSeconds: Object.fromEntries(LATENCY_PARTS.map((p) => [p, sum("distmoe_decode_seconds_total", { part: p })])) as Record<LatencyPart, number>,
    gateKept: sum("distmoe_gate_mass_total", { fate: "kept" }),
    gateDropped: sum("distmoe_gate_mass_total", { fate: "dropped" }),
    expertUse,
    deviceCalls,
    deviceBytes,
    queue: { waiting: sum("distmoe_queue_depth", { state: "waiting" }), active: sum("distmoe_queue_depth", { state: "active" }) },
  };
}

/** A device as the snapshot's input has it: its status, what it said of its memory and speed, and its emulated link (null: not shaped). */
export interface DeviceInput extends DeviceStatus {
  memoryBytes?: number;
  readGbps?: number;
  link: LinkParams | null;
}

export interface SnapshotInput {
  now: Reading;
  /** the reading at the window's start (null: none yet; rates are then absent) */
  base: Reading | null;
  /** wall-clock time, ms since the epoch */
  wallMs: number;
  model: { name: string; layers: number; experts: number; topK: number } | null;
  health: { state: string; reasons: readonly string[] };
  /** the connected devices (none: the base station runs every expert itself) */
  devices: readonly DeviceInput[];
  /** the placement in use: its devices by name and hosts[layer][expert] as indices among them */
  placement: { devices: readonly string[]; hosts: ReadonlyArray<ReadonlyArray<readonly number[]>> } | null;
  /** the experts the BS holds itself under MoNDE's tiers, as [layer, expert] (null: no tiers) */
  bsExperts: ReadonlyArray<readonly [number, number]> | null;
  /** the selection policy, described ("wlr θ=0.3") */
  policy: string;
  /** the snapshot before, for devices that have gone since */
  previous: Snapshot | null;
}

export type DeviceState = "ready" | "idle" | "loading" | "leaving" | "quarantined" | "failed";

export interface DeviceView {
  name: string;
  kind: string;
  compute: string | null;
  gflops: number;
  read_gbps: number | null;
  memory_bytes: number | null;
  experts: number;
  calls: number;
  state: DeviceState;
  reason: string | null;
  /** failed: since when (wall ms) */
  since: number | null;
  /**
   * emulated: the link emulation's settings (rates 0: unlimited; rtt twice the one-way delay); measured:
   * the traffic over the window each way and the mean call round trip (compute included), loss unknown
   */
  link: { emulated: boolean; down_bps: number | null; up_bps: number | null; rtt_ms: number | null; loss: number | null };
  /** expert call round trips over the window (from the latency histogram), null without calls */
  call_ms: { p50: number; p95: number } | null;
  battery: { level: number; charging: boolean } | null;
}

export interface Snapshot {
  at: number;
  model: string | null;
  policy: string;
  health: { state: string; reasons: string[] };
  devices: DeviceView[];
  /** devices beyond MAX_DEVICES, not listed */
  devices_omitted: number;
  /** the grids' shape: model layers and experts (and the model's experts per token), and how many of each one cell covers */
  grid: { layers: number; experts: number; top_k: number; layers_per_row: number; experts_per_col: number } | null;
  /** per cell, indices into devices of the devices holding its experts (first: the one serving) */
  placement: number[][][] | null;
  /** per cell, how many of its experts the BS holds itself (MoNDE's hot experts); null without tiers */
  bs_experts: number[][] | null;
  routing: {
    window_s: number;
    /** per cell, its share of its row's expert use over the window */
    heat: number[][] | null;
    experts_per_token: number | null;
    /** share of the top-k gate mass the selection policy dropped over the window */
    dropped_gate_mass: number | null;
  };
  /** per decode step over the window, ms */
  latency_ms: Record<LatencyPart, number> | null;
  tokens_per_s: number | null;
  queue: { waiting: number; active: number };
}

const round = (x: number, digits = 3) => Number(x.toFixed(digits));
const text = (s: string) => (s.length > REASON_CHARS ? `${s.slice(0, REASON_CHARS)}…` : s);

/** The q-quantile of the calls between two cumulative histograms, interpolated within its bucket (as Prometheus' histogram_quantile). */
export function histogramQuantile(q: number, now: CallHistogram, base: CallHistogram | undefined): number | null {
  const count = now.count - (base?.count ?? 0);
  if (count <= 0) return null;
  const rank = q * count;
  let lower = 0, below = 0;
  for (let i = 0; i < now.buckets.length; i++) {
    const [le, cum] = now.buckets[i]!;
    const n = cum - (base?.buckets[i]?.[1] ?? 0);
    if (n >= rank) {
      if (le === Infinity) return lower;
      return lower + ((le - lower) * (rank - below)) / (n - below);
    }
    lower = le;
    below = n;
  }
  return lower;
}

/** `unplaced`: a member of the placement in use that it gave no expert (it is sent none, so it never readies). */
function deviceState(d: DeviceStatus, unplaced: boolean): { state: DeviceState; reason: string | null } {
  if (d.quarantined) return { state: "quarantined", reason: text(d.outOfService ?? "out of service") };
  if (d.leaving) return { state: "leaving", reason: "said it is leaving" };
  if (d.ready) return { state: "ready", reason: null };
  return unplaced ? { state: "idle", reason: "the placement gives it no expert: the others hold every copy" } : { state: "loading", reason: null };
}

/** The placement's devices that hold no expert in it. */
function unplacedDevices(p: SnapshotInput["placement"]): Set<string> {
  if (!p) return new Set();
  const hosting = new Set(p.hosts.flatMap((layer) => layer.flat()));
  return new Set(p.devices.filter((_, k) => !hosting.has(k)));
}

export function buildSnapshot(i: SnapshotInput): Snapshot {
  const { now, base } = i;
  const seconds = base ? (now.at - base.at) / 1000 : 0;
  const rate = (x: number, x0: number | undefined) => (base && seconds > 0 ? Math.max(0, x - (x0 ?? 0)) / seconds : null);
  const bps = (bytes: number | undefined, bytes0: number | undefined) => {
    const r = bytes === undefined ? null : rate(bytes * 8, (bytes0 ?? 0) * 8);
    return r === null ? null : round(r, 0);
  };

  const unplaced = unplacedDevices(i.placement);
  const shown: DeviceView[] = i.devices.map((d) => {
    const calls = now.deviceCalls.get(d.name), callsBase = base?.deviceCalls.get(d.name);
    const bytes = now.deviceBytes.get(d.name), bytesBase = base?.deviceBytes.get(d.name);
    const dCount = calls ? calls.count - (callsBase?.count ?? 0) : 0;
    const p50 = calls ? histogramQuantile(0.5, calls, callsBase) : null, p95 = calls ? histogramQuantile(0.95, calls, callsBase) : null;
    const link = d.link
      ? { emulated: true, down_bps: d.link.downBps, up_bps: d.link.upBps, rtt_ms: round(2 * d.link.delayMs), loss: d.link.loss }
      : {
          emulated: false,
          down_bps: bps(bytes?.sent, bytesBase?.sent),
          up_bps: bps(bytes?.received, bytesBase?.received),
          rtt_ms: calls && dCount > 0 ? round((1000 * (calls.sum - (callsBase?.sum ?? 0))) / dCount) : null,
          loss: null,
        };
    return {
      name: d.name, kind: d.kind, compute: d.compute ?? null, gflops: round(d.gflops, 2), read_gbps: d.readGbps === undefined ? null : round(d.readGbps, 2), memory_bytes: d.memoryBytes ?? null,
      experts: d.experts, calls: d.calls, ...deviceState(d, unplaced.has(d.name)), since: null, link,
      call_ms: p50 === null || p95 === null ? null : { p50: round(p50 * 1000), p95: round(p95 * 1000) },
      battery: d.battery ? { level: d.battery.level, charging: d.battery.charging } : null,
    };
  });
  // devices that were there and are gone, and placed devices not connected, are shown failed for a while
  const here = new Set(shown.map((d) => d.name));
  const gone = new Map<string, DeviceView>();
  const failed = (name: string, was: DeviceView | undefined): DeviceView => ({
    ...(was ?? { name, kind: "node", compute: null, gflops: 0, read_gbps: null, memory_bytes: null, experts: 0, calls: 0, battery: null }),
    state: "failed", reason: "disconnected", since: was?.state === "failed" ? was.since : i.wallMs, call_ms: null,
    link: { emulated: false, down_bps: null, up_bps: null, rtt_ms: null, loss: null },
  });
  for (const d of i.previous?.devices ?? []) {
    if (here.has(d.name) || gone.has(d.name)) continue;
    const f = failed(d.name, d);
    if (i.wallMs - f.since! < FAILED_SHOWN_MS) gone.set(d.name, f);
  }
  for (const name of i.placement?.devices ?? []) if (!here.has(name) && !gone.has(name)) gone.set(name, failed(name, undefined));
  const all = [...shown, ...gone.values()];
  const devices = all.slice(0, MAX_DEVICES);
  const index = new Map(devices.map((d, k) => [d.name, k]));

  const m = i.model;
  const grid = m && m.layers > 0 && m.experts > 0 ? { layers: m.layers, experts: m.experts, top_k: m.topK, layers_per_row: Math.ceil(m.layers / MAX_ROWS), experts_per_col: Math.ceil(m.experts / MAX_COLS) } : null;
  const rows = grid ? Math.ceil(grid.layers / grid.layers_per_row) : 0, cols = grid ? Math.ceil(grid.experts / grid.experts_per_col) : 0;
  const cell = (layer: number, expert: number): [number, number] => [Math.floor(layer / grid!.layers_per_row), Math.floor(expert / grid!.experts_per_col)];

  let placement: number[][][] | null = null;
  if (grid && i.placement) {
    placement = Array.from({ length: rows }, () => Array.from({ length: cols }, () => [] as number[]));
    const names = i.placement.devices;
    i.placement.hosts.forEach((layer, l) =>
      layer.forEach((hosts, e) => {
        if (l >= grid.layers || e >= grid.experts) return;
        const [r, c] = cell(l, e);
        const at = placement![r]![c]!;
        for (const h of hosts) {
          const k = index.get(names[h] ?? "");
          if (k !== undefined && at.length < MAX_HOSTS && !at.includes(k)) at.push(k);
        }
      }),
    );
  }

  let bsExperts: number[][] | null = null;
  if (grid && i.bsExperts) {
    bsExperts = Array.from({ length: rows }, () => new Array<number>(cols).fill(0));
    for (const [l, e] of i.bsExperts) {
      if (!(l >= 0 && l < grid.layers && e >= 0 && e < grid.experts)) continue;
      const [r, c] = cell(l, e);
      bsExperts[r]![c]!++;
    }
  }

  let heat: number[][] | null = null, pairs = 0;
  if (grid) {
    const use = Array.from({ length: rows }, () => new Float64Array(cols));
    for (const [key, v] of now.expertUse) {
      const [l, e] = key.split(":").map(Number) as [number, number];
      if (!(l >= 0 && l < grid.layers && e >= 0 && e < grid.experts)) continue;
      const d = v - (base?.expertUse.get(key) ?? 0);
      if (d <= 0) continue;
      const [r, c] = cell(l, e);
      use[r]![c]! += d;
      pairs += d;
    }
    heat = use.map((row) => {
      const total = row.reduce((s, x) => s + x, 0);
      return Array.from(row, (x) => (total > 0 ? round(x / total) : 0));
    });
  }
  const routed = now.gateKept + now.gateDropped - (base ? base.gateKept + base.gateDropped : 0);
  const steps = now.decodeSteps - (base?.decodeSteps ?? 0);
  const tokensPerS = rate(now.decodedTokens, base?.decodedTokens);

  return {
    at: i.wallMs,
    model: m?.name ?? null,
    policy: i.policy,
    health: { state: i.health.state, reasons: i.health.reasons.slice(0, MAX_REASONS).map(text) },
    devices,
    devices_omitted: all.length - devices.length,
    grid,
    placement,
    bs_experts: bsExperts,
    routing: {
      window_s: round(seconds, 2),
      heat,
      experts_per_token: routed > 0 ? round(pairs / routed) : null,
      dropped_gate_mass: routed > 0 ? round((now.gateDropped - (base?.gateDropped ?? 0)) / routed, 4) : null,
    },
    latency_ms: steps > 0 ? (Object.fromEntries(LATENCY_PARTS.map((p) => [p, round((1000 * (now.decodeSeconds[p] - (base?.decodeSeconds[p] ?? 0))) / steps)])) as Record<LatencyPart, number>) : null,
    tokens_per_s: tokensPerS === null ? null : round(tokensPerS, 2),
    queue: now.queue,
  };
}
