// Prometheus metrics of the base station (prom-client): requests, tokens, queue depth, expert calls
// and their faults, per-device call latency and traffic, and what the steps did (expert use per layer,
// gate mass dropped by the selection policy, decode time split). The dashboard reads these same series.
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { EngineWork, ExpertUsage, GenerationResult, TokenLatency } from "../runtime/engine.js";
import type { DeviceStatus } from "../runtime/hub/status.js";

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({ name: "distmoe_requests_total", help: "Completion requests", labelNames: ["kind"], registers: [this.registry] });
  readonly tokens = new Counter({ name: "distmoe_generated_tokens_total", help: "Tokens generated", registers: [this.registry] });
  readonly promptTokens = new Counter({ name: "distmoe_prompt_tokens_total", help: "Prompt tokens processed", registers: [this.registry] });
  readonly requestSeconds = new Histogram({ name: "distmoe_request_seconds", help: "Request latency", buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers: [this.registry] });

  readonly deviceCallSeconds = new Histogram({
    name: "distmoe_device_call_seconds",
    help: "Expert call round trip per device",
    labelNames: ["device"],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  readonly deviceBytes = new Counter({ name: "distmoe_device_bytes_total", help: "Bytes exchanged with each device", labelNames: ["device", "direction"], registers: [this.registry] });

  /** queue: the scheduler's depth; usage: the engine's expert-call totals since it started. */
  constructor(queue: () => { waiting: number; active: number }, usage: () => ExpertUsage) {
    // expert counters follow the engine's totals (a request's own usage overlaps its neighbours')
    const totals: Array<[string, string, keyof ExpertUsage]> = [
      ["distmoe_expert_calls_total", "Expert calls (one per expert, layer and step)", "calls"],
      ["distmoe_expert_calls_failed_total", "Expert calls that failed after any failover; their experts were dropped", "failed_calls"],
      ["distmoe_dropped_expert_slots_total", "(token, expert) pairs dropped", "dropped_slots"],
      ["distmoe_expert_retries_total", "Expert calls served by a replica instead of their first host", "retries"],
      ["distmoe_expert_results_rejected_total", "Expert results refused as implausible (non-finite or out of bounds) and failed like a lost device", "rejected_results"],
      ["distmoe_expert_calls_verified_total", "Expert calls whose result was compared with a second holder's (spot checks, --verify-rate)", "verified_calls"],
      ["distmoe_expert_results_mismatched_total", "Expert results that disagreed with the base station's own in a spot check; their devices were taken out of service", "mismatched_results"],
    ];
    for (const [name, help, field] of totals) {
      let seen = 0;
      new Counter({
        name,
        help,
        registers: [this.registry],
        collect() {
          const now = usage()[field] ?? 0;
          this.inc(now - seen);
          seen = now;
        },
      });
    }
    new Gauge({
      name: "distmoe_queue_depth",
      help: "Requests waiting for a place in the batch, and in it",
      labelNames: ["state"],
      registers: [this.registry],
      collect() {
        const d = queue();
        this.set({ state: "waiting" }, d.waiting);
        this.set({ state: "active" }, d.active);
      },
    });
  }

  /** Adds what each connected device is (node or browser, a browser's user agent), what computes its experts and how fast, and its battery where it reports one. */
  describeDevices(devices: () => readonly DeviceStatus[]): void {
    new Gauge({
      name: "distmoe_device_info",
      help: "A connected device: what it is (kind node or browser) and, for a browser, the user agent it reports; always 1",
      labelNames: ["device", "kind", "user_agent"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const d of devices()) this.set({ device: d.name, kind: d.kind, user_agent: d.userAgent ?? "" }, 1);
      },
    });
    new Gauge({
      name: "distmoe_device_compute_gflops",
      help: "A connected device's measured compute rate in GFLOP/s, with what computes its experts (wasm, native, webgpu; empty: not said) and, for WebGPU, the adapter it reports",
      labelNames: ["device", "compute", "adapter"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const d of devices()) this.set({ device: d.name, compute: d.compute ?? "", adapter: d.adapter ?? "" }, d.gflops);
      },
    });
    new Gauge({
      name: "distmoe_device_battery_level",
      help: "Battery level (0..1) of a device that reports one, and whether it is charging",
      labelNames: ["device", "charging"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const d of devices()) if (d.battery) this.set({ device: d.name, charging: String(d.battery.charging) }, d.battery.level);
      },
    });
  }

  /** Adds how many experts of each MoE layer the BS holds itself under MoNDE's tiers (`held`: their [layer, expert], read at each scrape). */
  countBsExperts(held: () => ReadonlyArray<readonly [number, number]> | null): void {
    new Gauge({
      name: "distmoe_bs_experts",
      help: "Experts of each layer the base station holds itself (MoNDE's hot experts, --bs-budget)",
      labelNames: ["layer"],
      registers: [this.registry],
      collect() {
        this.reset();
        const perLayer = new Map<number, number>();
        for (const [l] of held() ?? []) perLayer.set(l, (perLayer.get(l) ?? 0) + 1);
        for (const [l, n] of perLayer) this.set({ layer: String(l) }, n);
      },
    });
  }

  /**
   * Adds what the engine's steps did: expert use per (layer, expert) — at most the model's layers ×
   * experts series, only those used so far —, the top-k gate mass kept and dropped by the selection
   * policy, and the decode steps with their time split. Each follows the engine's own totals.
   */
  countEngineWork(work: () => EngineWork | undefined): void {
    let seenUse = new Float64Array(0);
    new Counter({
      name: "distmoe_expert_use_total",
      help: "(token, expert) pairs the selection policy chose, per MoE layer and expert",
      labelNames: ["layer", "expert"],
      registers: [this.registry],
      collect() {
        const w = work();
        if (!w) return;
        if (seenUse.length !== w.expertUse.length) seenUse = new Float64Array(w.expertUse.length);
        for (let i = 0; i < w.expertUse.length; i++) {
          const now = w.expertUse[i]!;
          if (now === seenUse[i]) continue;
          this.inc({ layer: String(Math.floor(i / w.experts)), expert: String(i % w.experts) }, Math.max(0, now - seenUse[i]!));
          seenUse[i] = now;
        }
      },
    });
    const follow = (name: string, help: string, labelNames: string[], values: (w: EngineWork) => Array<[Record<string, string>, number]>) => {
      const seen = new Map<string, number>();
      new Counter({
        name,
        help,
        labelNames,
        registers: [this.registry],
        collect() {
          const w = work();
          if (!w) return;
          for (const [labels, now] of values(w)) {
            const key = JSON.stringify(labels);
            this.inc(labels, Math.max(0, now - (seen.get(key) ?? 0)));
            seen.set(key, now);
          }
        },
      });
    };
    follow("distmoe_gate_mass_total", "Top-k gate mass of (token, MoE layer) pairs, in shares of each pair's own (one per pair): kept, or dropped by the selection policy", ["fate"], (w) => [
      [{ fate: "kept" }, w.routedRows - w.droppedGateMass],
      [{ fate: "dropped" }, w.droppedGateMass],
    ]);
    follow("distmoe_decode_steps_total", "Decode steps: steps in which some request decoded a token (one token per request in the batch)", [], (w) => [[{}, w.decode.steps]]);
    follow("distmoe_decoded_tokens_total", "Tokens decoded after each request's first, counted as they are (distmoe_generated_tokens_total counts a request's when it ends)", [], (w) => [[{}, w.decode.tokens]]);
    const parts: Array<keyof TokenLatency> = ["bs_compute_ms", "transfer_ms", "device_compute_ms", "waiting_ms"];
    follow(
      "distmoe_decode_seconds_total",
      "Decode steps' time by part: the base station's compute, and the MoE layers' waits on their experts split by each layer's slowest call into transfer, device compute and the rest (waiting)",
      ["part"],
      (w) => parts.map((p) => [{ part: p.replace(/_ms$/, "") }, w.decode[p] / 1000]),
    );
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  observe(r: GenerationResult, ms: number): void {
    this.tokens.inc(r.tokens.length);
    this.promptTokens.inc(r.promptTokens.length);
    this.requestSeconds.observe(ms / 1000);
  }

  /** Drops a departed device's series, so names that come and go do not add series forever. */
  removeDevice(device: string): void {
    this.deviceCallSeconds.remove({ device });
    for (const direction of ["sent", "received"]) this.deviceBytes.remove({ device, direction });
  }

  /** One answered expert call of a device. */
  deviceCall(device: string, ms: number, bytesOut: number, bytesIn: number): void {
    this.deviceCallSeconds.observe({ device }, ms / 1000);
    this.deviceBytes.inc({ device, direction: "sent" }, bytesOut);
    this.deviceBytes.inc({ device, direction: "received" }, bytesIn);
  }
}
