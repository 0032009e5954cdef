// The cell at scale, as a discrete-event simulation: many users decode tokens through a model's layers;
// at every MoE layer the BS runs the selection policy (the same functions as the engine) on a router
// output from a recorded trace or a synthetic router, and sends each called device one frame with the
// token's rows. Every device is three FIFO servers in a row (its share of the downlink, its compute,
// its uplink) with the propagation delay between them, so calls queue behind each other; the channel
// moves on in slots of `slotMs`, and a transfer goes at each slot's rate. A frame's stages are FIFO in the order frames are sent (one link per
// device, one delay), so its finishing time is known when it is sent: the simulator needs one event
// per token and layer, not one per stage, which is what makes it fast enough to sweep.
// Simplifications, stated: the band is split statically and equally among the devices (the joint
// policy's per-layer split assumes one step in the air at a time, which many users break, so the
// command line does not offer it here); the BS's own work is not queued (an edge server batches it).
// With a BS budget (tiers/cell-tiers.ts) the BS keeps hot experts itself: the tier policy splits each
// token's experts, the devices get only the cold ones, and the layer ends when both sides are done;
// the BS's expert calls and its store reads are priced as in `eval`, not queued across users.
import { CellCosts } from "../channel/cell-costs.js";
import { ChannelModel } from "../channel/channel-model.js";
import { callMs, deviceCost } from "../channel/latency.js";
import type { Scenario } from "../channel/scenario.js";
import type { WeightDType } from "../kernels/backend.js";
import type { ModelConfig } from "../model/config.js";
import { bsLayerWork, expertWork, headWork } from "../model/work-shape.js";
import { placeExperts } from "../policies/placement.js";
import { makePolicy, type PolicySpec } from "../policies/registry.js";
import type { SelectionContext } from "../policies/selection.js";
import { wireBytes, type WireDType } from "../protocol/activations.js";
import { CellTiers, type BsTierReport, type BsTierSpec } from "../tiers/cell-tiers.js";
import { Random } from "../util/random.js";
import { EventQueue } from "./event-queue.js";
import { routingSource, type RoutingSpec } from "./routing-source.js";

export interface SimOptions {
  cfg: ModelConfig;
  scenario: Scenario;
  weightDType: WeightDType;
  wireDType: WireDType;
  replicas: number;
  spec: PolicySpec;
  routing: RoutingSpec;
  /** concurrent users, each decoding tokens back to back */
  users: number;
  tokensPerUser: number;
  /** the channel is redrawn every slotMs of simulated time */
  slotMs: number;
  /** the BS keeps hot experts itself (absent: every expert on the devices) */
  tiers?: BsTierSpec;
}

export interface SimReport {
  policy: PolicySpec;
  devices: number;
  users: number;
  tokens: number;
  expert_calls: number;
  simulated_s: number;
  tokens_per_s: number;
  latency_ms: { mean: number; p50: number; p95: number; p99: number };
  experts_per_token: number;
  dropped_gate_mass: number;
  /** per device: the share of the simulated time its compute was busy */
  device_busy: number[];
  /** device channel states drawn (one per device and slot that a token's costs or a transfer reads) */
  channel_draws: number;
  /** the simulator's own speed */
  wall_s: number;
  calls_per_wall_s: number;
  /** with a BS budget: where the experts ran and what moved */
  tiers: BsTierReport | null;
}

/** A cell of `n` devices like `scenario`'s: kinds taken in turn, distances drawn uniformly over its range. */
export function scaleScenario(scenario: Scenario, n: number, seed = scenario.seed): Scenario {
  const rng = new Random(seed);
  const d = scenario.devices.map((x) => x.distanceM);
  const lo = Math.min(...d), hi = Math.max(...d);
  const devices = Array.from({ length: n }, (_, i) => {
    const kind = scenario.devices[i % scenario.devices.length]!;
    return { ...kind, name: `${kind.name}#${i}`, distanceM: lo + rng.next() * (hi - lo) };
  });
  return { ...scenario, name: `${scenario.name}×${n}`, devices };
}

export function simulate(o: SimOptions): SimReport {
  const wall0 = performance.now();
  const { cfg, scenario } = o;
  const K = scenario.devices.length;
  const moeLayers = cfg.sparseLayers.map((s, l) => (s ? l : -1)).filter((l) => l >= 0);
  const hosts = placeExperts(cfg.sparseLayers, cfg.experts, scenario.devices, { replicas: o.replicas }).hosts;
  const rowBytes = cfg.hidden * wireBytes(o.wireDType);
  const expert = expertWork(cfg, o.weightDType);
  const costs = new CellCosts(new ChannelModel(scenario), { expert, rowBytes, hosts, bandwidth: "equal" });
  // the policies that choose among a token's top-k read only the candidates' costs, which is all the live cell keeps current
  if (o.spec.name === "joint") throw new Error("simulate: the joint policy splits the band per layer for one step in the air, which a cell shared by many users does not do");
  const policy = makePolicy(o.spec, moeLayers.length);
  const tiers = o.tiers ? CellTiers.forCell(cfg, scenario, o.weightDType, o.tiers) : null;
  /** per expert of the layer being dispatched: whether its call goes to a device */
  const toDevice = new Uint8Array(cfg.experts).fill(1);
  const routing = routingSource(o.routing, cfg.experts, { topK: cfg.topK, normalize: cfg.normTopK });
  // one context object, its costs and top-k swapped per token and layer (a fresh object per call costs more than the policy)
  const ctx: { -readonly [K in keyof SelectionContext]: SelectionContext[K] } = { topK: cfg.topK, normalize: cfg.normTopK, costs: undefined, top: undefined };
  const bsMs = (w: ReturnType<typeof headWork>) => callMs(deviceCost(w, scenario.bs, null), 1);
  // the BS's time before each MoE layer's dispatch: its own layers since the last one
  const bsBefore = moeLayers.map((l, i) => {
    let t = 0;
    for (let j = i === 0 ? 0 : moeLayers[i - 1]! + 1; j <= l; j++) t += bsMs(bsLayerWork(cfg, o.weightDType, j));
    return t;
  });
  let bsTail = bsMs(headWork(cfg, o.weightDType));
  for (let j = (moeLayers.at(-1) ?? -1) + 1; j < cfg.layers; j++) bsTail += bsMs(bsLayerWork(cfg, o.weightDType, j));
  const compute = scenario.devices.map((d) => deviceCost(expert, d, null));

  // the channel, one slot at a time
  const slotStart = (ms: number) => Math.floor(ms / o.slotMs) * o.slotMs;

  const downFree = new Float64Array(K), computeFree = new Float64Array(K), upFree = new Float64Array(K), busy = new Float64Array(K);
  const rowsOnDevice = new Int32Array(K), callMsOnDevice = new Float64Array(K), usedDevices = new Int32Array(K);
  const delay = scenario.delayMs, rowBits = rowBytes * 8;
  const userLayer = new Int32Array(o.users), userTokens = new Int32Array(o.users), tokenStart = new Float64Array(o.users);
  const latencies: number[] = [];
  const queue = new EventQueue();
  let calls = 0, pairs = 0, dropped = 0, end = 0;

  /** When `bits` sent from `start` on device k's link are through: at each slot's rate, so a fade slows only the slots it lasts. */
  const transferEnd = (k: number, start: number, bits: number, direction: "down" | "up"): number => {
    let t = start, left = bits;
    for (;;) {
      const slot = slotStart(t);
      const bps = costs.equalRateAt(k, slot, direction);
      const end = t + (left * 1000) / bps;
      if (end <= slot + o.slotMs) return end;
      left -= (bps * (slot + o.slotMs - t)) / 1000;
      t = slot + o.slotMs;
    }
  };

  /** Dispatches user u's MoE layer i at `now`; returns when its last frame is back. */
  const dispatch = (now: number, i: number): number => {
    const { router, top } = routing.next(moeLayers[i]!);
    ctx.top = top;
    const lc = costs.layerCostsAt(slotStart(now), moeLayers[i]!, top.experts);
    ctx.costs = lc;
    const d = policy(router, ctx);
    const sent = now + bsBefore[i]!;
    const expertDevice = lc.radio!.expertDevice;
    let done = sent;
    if (tiers) {
      const t = tiers.step(moeLayers[i]!, sent, d, lc, costs);
      toDevice.fill(0);
      for (const e of t.plan.near) toDevice[e] = 1;
      done = sent + t.fastMs;
    }
    // the devices this token calls, each with its rows and its calls' compute
    let used = 0;
    for (const e of d.experts) {
      if (!toDevice[e]) continue;
      const k = expertDevice[e]!;
      if (rowsOnDevice[k] === 0) usedDevices[used++] = k;
      rowsOnDevice[k]!++;
      callMsOnDevice[k]! += callMs(compute[k]!, 1);
    }
    for (let j = 0; j < used; j++) {
      const k = usedDevices[j]!;
      const bits = rowsOnDevice[k]! * rowBits;
      const downEnd = transferEnd(k, Math.max(sent, downFree[k]!), bits, "down");
      downFree[k] = downEnd;
      const computeStart = Math.max(downEnd + delay, computeFree[k]!);
      computeFree[k] = computeStart + callMsOnDevice[k]!;
      busy[k]! += callMsOnDevice[k]!;
      const upEnd = transferEnd(k, Math.max(computeFree[k]!, upFree[k]!), bits, "up");
      upFree[k] = upEnd;
      done = Math.max(done, upEnd + delay);
      rowsOnDevice[k] = 0;
      callMsOnDevice[k] = 0;
    }
    calls += d.experts.length;
    pairs++;
    let keptMass = 0, topMass = 0;
    for (const e of d.experts) keptMass += router.probs[e]!;
    for (const e of top.experts) topMass += router.probs[e]!;
    dropped += 1 - keptMass / topMass;
    return done;
  };

  for (let u = 0; u < o.users; u++) queue.push(dispatch(0, 0), u);
  while (queue.size > 0) {
    const now = queue.peekTime();
    const u = queue.pop();
    const next = userLayer[u]! + 1;
    if (next < moeLayers.length) {
      userLayer[u] = next;
      queue.push(dispatch(now, next), u);
      continue;
    }
    const finished = now + bsTail;
    latencies.push(finished - tokenStart[u]!);
    end = Math.max(end, finished);
    if (++userTokens[u]! < o.tokensPerUser) {
      userLayer[u] = 0;
      tokenStart[u] = finished;
      queue.push(dispatch(finished, 0), u);
    }
  }
  const wall = (performance.now() - wall0) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
  return {
    policy: o.spec,
    devices: K,
    users: o.users,
    tokens: latencies.length,
    expert_calls: calls,
    simulated_s: end / 1000,
    tokens_per_s: latencies.length / (end / 1000),
    latency_ms: { mean: latencies.reduce((a, b) => a + b, 0) / latencies.length, p50: pct(0.5), p95: pct(0.95), p99: pct(0.99) },
    experts_per_token: calls / pairs,
    dropped_gate_mass: dropped / pairs,
    device_busy: Array.from(busy, (b) => b / end),
    channel_draws: costs.draws,
    wall_s: wall,
    calls_per_wall_s: calls / wall,
    tiers: tiers ? tiers.report(latencies.length, rowBytes) : null,
  };
}

