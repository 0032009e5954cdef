import { test } from "node:test";
import assert from "node:assert/strict";
import type { EngineWork } from "../../runtime/engine.js";
import { ServerMetrics } from "../metrics.js";
import { buildSnapshot, FAILED_SHOWN_MS, histogramQuantile, MAX_COLS, MAX_DEVICES, MAX_ROWS, readingFrom, type DeviceInput, type SnapshotInput } from "./snapshot.js";
import { readValues } from "./stream.js";

const ZERO_USAGE = { calls: 0, failed_calls: 0, dropped_slots: 0, dropped_weight: 0, retries: 0 };

function work(layers: number, experts: number): EngineWork {
  return {
    layers, experts, expertUse: new Float64Array(layers * experts), routedRows: 0, droppedGateMass: 0,
    decode: { steps: 0, tokens: 0, bs_compute_ms: 0, transfer_ms: 0, device_compute_ms: 0, waiting_ms: 0 },
  };
}

const status = (name: string, extra: Partial<DeviceInput> = {}): DeviceInput => ({
  name, ready: true, quarantined: false, calls: 0, experts: 2, weightBytes: 0, kind: "node", gflops: 10, leaving: false, link: null, ...extra,
});

const input = (over: Partial<SnapshotInput>): SnapshotInput => ({
  now: readingFrom({}, 0), base: null, wallMs: 1_000_000, model: { name: "m", layers: 2, experts: 4, topK: 2 }, health: { state: "ok", reasons: [] },
  devices: [], placement: null, bsExperts: null, policy: "topk", previous: null, ...over,
});

test("a snapshot from the counters /metrics exports: rates, routing heat, experts per token, dropped gate mass, the time split per decode step, call percentiles, measured traffic", async () => {
  const w = work(2, 4);
  const m = new ServerMetrics(() => ({ waiting: 3, active: 1 }), () => ZERO_USAGE);
  m.countEngineWork(() => w);
  // what happened before the window: not in the snapshot's figures
  w.expertUse[0] = 100;
  w.routedRows = 50;
  m.deviceCall("d0", 1000, 1, 1);
  const base = readingFrom(await readValues(m.registry), 0);

  // over 2 s: layer 0 used expert 1 thrice and expert 2 once; layer 1 expert 3 four times; 6 (token, layer) rows, 1.5 of their top-k mass dropped
  w.expertUse[1] = 3;
  w.expertUse[2] = 1;
  w.expertUse[4 + 3] = 4;
  w.routedRows += 6;
  w.droppedGateMass = 1.5;
  Object.assign(w.decode, { steps: 4, tokens: 8, bs_compute_ms: 40, transfer_ms: 20, device_compute_ms: 12, waiting_ms: 4 });
  for (let i = 0; i < 18; i++) m.deviceCall("d0", 3, 1000, 500);
  for (let i = 0; i < 2; i++) m.deviceCall("d0", 200, 1000, 500);
  const now = readingFrom(await readValues(m.registry), 2000);

  const s = buildSnapshot(input({ now, base, devices: [status("d0")], placement: { devices: ["d0"], hosts: [[[0], [0], [0], [0]], [[0], [0], [0], [0]]] } }));
  assert.deepEqual(s.routing.heat, [[0, 0.75, 0.25, 0], [0, 0, 0, 1]], "each cell's share of its layer's use over the window");
  assert.equal(s.routing.experts_per_token, round3(8 / 6));
  assert.equal(s.routing.dropped_gate_mass, 0.25);
  assert.equal(s.routing.window_s, 2);
  assert.deepEqual(s.latency_ms, { bs_compute: 10, transfer: 5, device_compute: 3, waiting: 1 });
  assert.equal(s.tokens_per_s, 4);
  assert.deepEqual(s.queue, { waiting: 3, active: 1 });
  const d = s.devices[0]!;
  assert.equal(d.state, "ready");
  // 20 calls in the window: the median in the 2.5–5 ms bucket, the 95th in the 100–250 ms one (the 1 s call before the window is not counted)
  assert.ok(d.call_ms && d.call_ms.p50 > 2.5 && d.call_ms.p50 <= 5, `p50 ${d.call_ms?.p50}`);
  assert.ok(d.call_ms && d.call_ms.p95 > 100 && d.call_ms.p95 <= 250, `p95 ${d.call_ms?.p95}`);
  assert.deepEqual(d.link, { emulated: false, down_bps: (20 * 1000 * 8) / 2, up_bps: (20 * 500 * 8) / 2, rtt_ms: round3((18 * 3 + 2 * 200) / 20), loss: null });
  assert.deepEqual(s.placement, [[[0], [0], [0], [0]], [[0], [0], [0], [0]]]);
});

const round3 = (x: number) => Number(x.toFixed(3));

test("without a window yet there are no rates; the emulated link is shown as set; a quarantined device says why", () => {
  const link = { downBps: 20e6, upBps: 5e6, delayMs: 5, jitterMs: 1, loss: 0.01 };
  const s = buildSnapshot(input({ devices: [status("a", { link }), status("b", { ready: false, quarantined: true, outOfService: "after 3 failed calls" }), status("c", { leaving: true, ready: true })] }));
  assert.equal(s.tokens_per_s, null);
  assert.equal(s.latency_ms, null);
  assert.equal(s.routing.experts_per_token, null);
  assert.deepEqual(s.devices[0]!.link, { emulated: true, down_bps: 20e6, up_bps: 5e6, rtt_ms: 10, loss: 0.01 });
  assert.deepEqual([s.devices[1]!.state, s.devices[1]!.reason], ["quarantined", "after 3 failed calls"]);
  assert.equal(s.devices[2]!.state, "leaving");
});

test("a device the placement in use gives no expert is idle, with why; one not yet ready that holds a share is loading", () => {
  const placement = { devices: ["a", "b", "c"], hosts: [[[0], [0], [1], [1]], [[0], [1], [0], [1]]] };
  const s = buildSnapshot(input({ devices: [status("a"), status("b", { ready: false }), status("c", { ready: false, experts: 0 })], placement }));
  assert.deepEqual(s.devices.map((d) => d.state), ["ready", "loading", "idle"]);
  assert.match(s.devices[2]!.reason ?? "", /no expert/);
  // not in the placement yet: loading, whatever it holds
  assert.equal(buildSnapshot(input({ devices: [status("d", { ready: false, experts: 0 })], placement })).devices[0]!.state, "loading");
});

test("a device that disconnects is shown failed (kept from the snapshot before, and while the placement names it), then forgotten", () => {
  const first = buildSnapshot(input({ devices: [status("a"), status("b")], placement: { devices: ["a", "b"], hosts: [[[0], [1], [0], [1]], []] } }));
  const gone = buildSnapshot(input({ wallMs: 1_000_500, devices: [status("a")], placement: { devices: ["a", "b"], hosts: [[[0], [1], [0], [1]], []] }, previous: first }));
  const b = gone.devices.find((d) => d.name === "b")!;
  assert.deepEqual([b.state, b.reason, b.since, b.experts], ["failed", "disconnected", 1_000_500, 2], "what it was, failed since it went");
  assert.deepEqual(gone.placement![0], [[0], [1], [0], [1]], "its experts still point at it");
  const later = buildSnapshot(input({ wallMs: 1_000_500 + FAILED_SHOWN_MS - 1, devices: [status("a")], placement: { devices: ["a"], hosts: [[[0], [0], [0], [0]], []] }, previous: gone }));
  assert.equal(later.devices.find((d) => d.name === "b")?.since, 1_000_500, "failed since it went, not since the last snapshot");
  const forgotten = buildSnapshot(input({ wallMs: 1_000_500 + FAILED_SHOWN_MS, devices: [status("a")], placement: { devices: ["a"], hosts: [[[0], [0], [0], [0]], []] }, previous: later }));
  assert.deepEqual(forgotten.devices.map((d) => d.name), ["a"]);
  const back = buildSnapshot(input({ devices: [status("a"), status("b", { ready: false })], previous: gone }));
  assert.deepEqual(back.devices.map((d) => [d.name, d.state]), [["a", "ready"], ["b", "loading"]], "back under its name: no longer failed");
});

test("the snapshot is bounded whatever the model and the cell: grids (the BS's experts too) of at most MAX_ROWS × MAX_COLS cells, MAX_DEVICES devices, a few hosts per cell", async () => {
  const layers = 1000, experts = 300, count = 200;
  const w = work(layers, experts);
  const m = new ServerMetrics(() => ({ waiting: 0, active: 0 }), () => ZERO_USAGE);
  m.countEngineWork(() => w);
  const base = readingFrom(await readValues(m.registry), 0);
  w.expertUse.fill(1);
  w.routedRows = layers * 10;
  const now = readingFrom(await readValues(m.registry), 1000);
  const names = Array.from({ length: count }, (_, i) => `device-${i}`);
  const hosts = Array.from({ length: layers }, (_, l) => Array.from({ length: experts }, (_, e) => [(l + e) % count, (l + e + 1) % count]));
  // the BS holds every expert: each cell counts the 16 × 5 it covers
  const bsExperts = hosts.flatMap((row, l) => row.map((_, e) => [l, e] as const));
  const s = buildSnapshot(input({ now, base, model: { name: "big", layers, experts, topK: 8 }, devices: names.map((n) => status(n, { outOfService: "x".repeat(10_000) })), placement: { devices: names, hosts }, bsExperts }));
  assert.equal(s.routing.heat!.length, Math.ceil(layers / Math.ceil(layers / MAX_ROWS)));
  assert.ok(s.routing.heat!.length <= MAX_ROWS && s.routing.heat!.every((r) => r.length <= MAX_COLS));
  assert.ok(s.placement!.length <= MAX_ROWS && s.placement!.every((r) => r.length <= MAX_COLS && r.every((c) => c.length <= 4 && c.every((k) => k < MAX_DEVICES))));
  assert.deepEqual(s.grid, { layers, experts, top_k: 8, layers_per_row: 16, experts_per_col: 5 });
  assert.ok(s.bs_experts!.length === s.placement!.length && s.bs_experts!.every((r) => r.length <= MAX_COLS));
  assert.equal(s.bs_experts![0]![0], 16 * 5);
  assert.equal(s.bs_experts!.flat().reduce((a, b) => a + b, 0), layers * experts, "every expert counted once");
  assert.equal(s.devices.length, MAX_DEVICES);
  assert.equal(s.devices_omitted, count - MAX_DEVICES);
  const bytes = JSON.stringify(s).length;
  assert.ok(bytes < 200_000, `${bytes} bytes`);
});

test("the experts the BS holds under MoNDE's tiers: counted per cell of the grid, out-of-range ones ignored; none without tiers", () => {
  const placement = { devices: ["a"], hosts: [[[0], [0], [0], [0]], [[0], [0], [0], [0]]] };
  assert.equal(buildSnapshot(input({ devices: [status("a")], placement })).bs_experts, null, "no tiers");
  const s = buildSnapshot(input({ devices: [status("a")], placement, bsExperts: [[0, 1], [1, 3], [1, 0], [2, 0], [0, 9], [-1, 0]] }));
  assert.deepEqual(s.bs_experts, [[0, 1, 0, 0], [1, 0, 0, 1]]);
  assert.deepEqual(s.placement![0]![1], [0], "the devices holding it are still shown");
  assert.deepEqual(buildSnapshot(input({ bsExperts: [] })).bs_experts, [[0, 0, 0, 0], [0, 0, 0, 0]], "tiers holding nothing yet");
});

test("a histogram's quantile between two readings, interpolated within its bucket", () => {
  const h = (counts: number[]) => ({ count: counts.at(-1)!, sum: 0, buckets: [[0.01, counts[0]!], [0.1, counts[1]!], [Infinity, counts[2]!]] as Array<[number, number]> });
  assert.equal(histogramQuantile(0.5, h([10, 10, 10]), undefined), 0.005);
  assert.equal(round3(histogramQuantile(0.5, h([10, 30, 30]), h([10, 10, 10]))!), 0.055, "only the 20 calls since: all in 10–100 ms");
  assert.equal(histogramQuantile(0.99, h([0, 0, 5]), undefined), 0.1, "beyond the last bound: the last bound");
  assert.equal(histogramQuantile(0.5, h([1, 1, 1]), h([1, 1, 1])), null, "no calls in the window");
});
