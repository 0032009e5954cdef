// Option parsers and the options every model command shares.
import { readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { InvalidArgumentError, Option, type Command } from "commander";
import { WEIGHT_DTYPES, type WeightDType } from "../kernels/backend.js";
import { BACKEND_CHOICES, BACKEND_ENV, POLL_WHEN_WAITING_ON_PEERS, type BackendChoice } from "../kernels/select-backend.js";
import { GGML_MAX_THREADS } from "../kernels/native/ggml.js";
import { Engine, type EngineOptions } from "../runtime/engine.js";
import { onCluster, startLocalCluster } from "../runtime/local-cluster.js";
import { openModel } from "../model/open-model.js";
import { WIRE_DTYPES, type WireDType } from "../protocol/activations.js";
import { parseLink, type LinkParams } from "../channel/link.js";
import { TIER_POLICIES, type TierPolicyName } from "../policies/tiers.js";
import type { PolicyName, PolicySpec } from "../policies/registry.js";
import type { BsTierSpec } from "../tiers/cell-tiers.js";
import { ProgressBar } from "./progress.js";

export function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`expected a positive integer, got "${v}"`);
  return n;
}

/** "512MiB", "2GiB", "1.5GB", "1000000" → bytes. */
export function byteSize(v: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?$/i.exec(v.trim());
  const units: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30 };
  if (!m) throw new InvalidArgumentError(`expected a size such as 512MiB or 2GiB, got "${v}"`);
  return Math.floor(Number(m[1]) * units[(m[2] ?? "b").toLowerCase()]!);
}

/** "250ms", "30s", "5m", "1.5h", "0" → milliseconds. */
export function duration(v: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)$/i.exec(v.trim());
  const units: Record<string, number> = { ms: 1, s: 1e3, m: 60e3, h: 3600e3 };
  if (v.trim() === "0") return 0;
  if (!m) throw new InvalidArgumentError(`expected a duration such as 30s, 5m or 1h (units ms, s, m, h), got "${v}"`);
  return Number(m[1]) * units[m[2]!.toLowerCase()]!;
}

export function nonNegativeInt(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`expected a non-negative integer, got "${v}"`);
  return n;
}

export function nonNegativeNumber(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`expected a non-negative number, got "${v}"`);
  return n;
}

export function positiveNumber(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`expected a number above 0, got "${v}"`);
  return n;
}

/** A policy knob θ in [0, 1] (wlr's range, as /admin/policy takes it; joint refuses 1 itself). */
export function unitTheta(v: string): number {
  const n = Number(v);
  if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError(`expected a number in [0, 1], got "${v}"`);
  return n;
}

export function unitInterval(v: string): number {
  const n = Number(v);
  if (!(n > 0 && n <= 1)) throw new InvalidArgumentError(`expected a number in (0, 1], got "${v}"`);
  return n;
}

/** A share of the experts: "25%" or 0.25. */
export function expertShare(v: string): number {
  const n = v.trim().endsWith("%") ? Number(v.trim().slice(0, -1)) / 100 : Number(v);
  if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError(`expected a share of the experts such as 25% or 0.25, got "${v}"`);
  return n;
}

export interface PolicyCliOptions {
  policy: PolicyName;
  theta?: number;
  budget?: number;
}

/** --policy (one of `names`), --theta, --budget: the expert selection policy and its knob. */
export function addPolicyOptions(cmd: Command, names: readonly PolicyName[], about: string): Command {
  const theta = names.includes("joint")
    ? "wlr: the WLR threshold; joint: the price of dropped gate mass against latency (0: top-k; default 0.3 for both)"
    : "wlr: the WLR threshold (0: top-k; default 0.3)";
  return cmd
    .addOption(new Option("--policy <name>", about).choices(names as string[]).default("topk"))
    .option("--theta <x>", theta, unitTheta)
    .option("--budget <ms>", "deadline: each token's latency budget for its expert round trips, ms", positiveNumber);
}

/** The policy the options name; wlr and joint without --theta take θ = 0.3. A knob of another policy is refused: it would do nothing. */
export function policySpec(o: PolicyCliOptions): PolicySpec {
  if (o.theta !== undefined && o.policy !== "wlr" && o.policy !== "joint") throw new Error(`--theta is wlr's knob (and joint's): with --policy ${o.policy} it would do nothing`);
  if (o.budget !== undefined && o.policy !== "deadline") throw new Error(`--budget is the deadline policy's knob: with --policy ${o.policy} it would do nothing`);
  return { name: o.policy, theta: o.theta ?? (o.policy === "wlr" || o.policy === "joint" ? 0.3 : undefined), budgetMs: o.budget };
}

export interface TierCliOptions {
  bsBudget?: number;
  tiers: TierPolicyName;
  tierWindow: number;
  bsStoreGbps?: number[];
}

/** --bs-budget, --tiers, --tier-window, --bs-store-gbps: MoNDE at the BS, modelled in the cell (tiers/cell-tiers.ts) for eval and simulate, and run by serve (tiers/hub-tiers.ts) */
export function addTierOptions(cmd: Command): Command {
  return cmd
    .option("--bs-budget <share>", "MoNDE: the BS keeps hot experts itself within this share of the experts (25% or 0.25; eval and simulate: of each layer's), read from its store; cold experts' rows go to the devices", expertShare)
    .addOption(new Option("--tiers <policy>", "with --bs-budget: monde (hot experts at the BS by cost and statistics), offload (every called expert read into the BS, LRU) or near (all on the devices)").choices(TIER_POLICIES as unknown as string[]).default("monde"))
    .option("--tier-window <tokens>", "tokens of routing statistics monde keeps the BS's hot set by", positiveInt, 64)
    .option("--bs-store-gbps <rate>", "the BS store's read rate, GB/s, instead of the scenario's (serve: instead of measuring it; repeatable with eval --tier-sweep)", (v: string, prev: number[] | undefined) => [...(prev ?? []), positiveNumber(v)]);
}

/** The BS's tiers the options ask for, or undefined without --bs-budget. */
export function tierSpec(o: TierCliOptions): BsTierSpec | undefined {
  if ((o.bsStoreGbps?.length ?? 0) > 1) throw new Error("give --bs-store-gbps once (several only with eval --tier-sweep)");
  if (o.bsBudget === undefined && o.bsStoreGbps !== undefined) throw new Error("--bs-store-gbps is the rate of the store the BS's hot experts are read from: without --bs-budget it would do nothing");
  return o.bsBudget === undefined ? undefined : { policy: o.tiers, budget: o.bsBudget, window: o.tierWindow, storeGbps: o.bsStoreGbps?.[0] };
}

/**
 * Where distmoe keeps what it makes for itself and finds again on later runs (e.g. the BS's self-signed
 * certificate, under tls/): $XDG_STATE_HOME/distmoe, else ~/.local/state/distmoe (the XDG base directory spec).
 */
export function defaultStateDir(): string {
  const xdg = process.env.XDG_STATE_HOME;
  // the spec: a relative path there is invalid and ignored
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), ".local", "state"), "distmoe");
}

/** A UTF-8 text file named on the command line, with the error naming it. */
export function readTextFile(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (e) {
    throw new Error(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

export interface ModelCliOptions {
  model: string;
  /** absent: the model's own (f32 for a directory, a GGUF file's type where the kernels have it) */
  dtype?: WeightDType;
  backend?: BackendChoice;
  threads?: number;
  poll?: number;
  /** commander's --no-mmap: false */
  mmap?: boolean;
  simd: "auto" | "simd" | "relaxed";
  ctx?: number;
  localDevices?: number;
  wireDtype: WireDType;
  replicas: number;
  link?: LinkParams;
}

/** --backend, --threads, --poll: the kernels' options (engines and devices alike) */
export function addKernelOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option("--backend <kernels>", `kernels: ggml's native CPU kernels, the WebAssembly ones, or auto: native where they load, wasm otherwise (default: $${BACKEND_ENV}, else auto)`).choices(BACKEND_CHOICES as string[]))
    .option("-t, --threads <n>", `compute threads, 1 to ${GGML_MAX_THREADS} (default: the cores available)`, (v: string) => {
      const n = positiveInt(v);
      if (n > GGML_MAX_THREADS) throw new InvalidArgumentError(`expected at most ${GGML_MAX_THREADS} threads (ggml's limit), got ${n}`);
      return n;
    })
    .option("--poll <level>", "native: how long idle compute threads poll before sleeping, 0 (sleep at once) to 100 (level 1 spins 1–2 ms after a graph, 10 about 25–35 ms) (default: 1; 0 for devices and where experts are on devices, which a spinning thread would take a core from; llama.cpp's default is 50)", (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 100) throw new InvalidArgumentError("expected an integer from 0 to 100");
      return n;
    });
}

/** --model, --dtype, --backend, --threads, --poll, --simd, --ctx */
export function addModelOptions(cmd: Command): Command {
  return addKernelOptions(cmd)
    .requiredOption("-m, --model <dir>", "Hugging Face model directory (config.json, *.safetensors, tokenizer.json), or a .gguf file")
    .addOption(new Option("--dtype <dtype>", "weights in memory (default: f32; for a .gguf file its own type where the kernels have it: Q8_0 → q8, Q4_0 → q4, Q4_K → q4_k, Q5_K → q5_k, Q6_K → q6_k, BF16 → bf16, F16 → f16, F32 → f32, each tensor kept in its own type where the kernels hold it; the wasm kernels hold f16 as f32 and the K-quants as q8)").choices(WEIGHT_DTYPES as string[]))
    .option("--no-mmap", "native: read every weight into memory instead of mapping the ones the file holds as they are kept (F32, BF16, Q8_0, Q4_0 in GGUF)")
    .addOption(new Option("--simd <variant>", "wasm kernel build: relaxed SIMD where supported, or plain SIMD128").choices(["auto", "simd", "relaxed"]).default("auto"))
    .option("--ctx <n>", "context length (prompt + generated tokens)", positiveInt)
    .option("--local-devices <n>", "run the experts on N device processes on this machine (over loopback sockets)", positiveInt)
    .addOption(new Option("--wire-dtype <dtype>", "activations sent to devices").choices(WIRE_DTYPES as string[]).default("f32"))
    .option("--replicas <n>", "devices holding each expert; a call fails over to the next", positiveInt, 1)
    .option("--link <spec>", 'emulate every device link, e.g. "rate=20mbit,delay=5ms,jitter=1ms,loss=0.5%"', (v: string) => {
      try {
        return parseLink(v);
      } catch (e) {
        throw new InvalidArgumentError((e as Error).message);
      }
    });
}

/** The engine the options ask for: in-process, or with its experts on a local cluster. */
export async function openEngine(o: ModelCliOptions, extra: Partial<EngineOptions> = {}): Promise<{ engine: Engine; close: () => Promise<void> }> {
  const opts = { ...engineOptions(o), ...extra };
  if (!o.localDevices) {
    const engine = Engine.load(o.model, opts);
    return { engine, close: async () => engine.close() };
  }
  const link = o.link;
  const cluster = await startLocalCluster({ model: o.model, devices: o.localDevices, weightDType: devicesDType(o), wireDType: o.wireDtype, replicas: o.replicas, link: link && (() => link), deviceArgs: localDeviceArgs(o) });
  return onCluster(cluster, () => ({ engine: Engine.load(o.model, { ...opts, poll: o.poll ?? POLL_WHEN_WAITING_ON_PEERS, executor: cluster.hub.executor }) }));
}

/** What local device processes inherit from this command's options: the kernels asked for. */
export function localDeviceArgs(o: Pick<ModelCliOptions, "backend">): string[] {
  return o.backend ? ["--backend", o.backend] : [];
}

/** The weights' dtype where devices hold experts: --dtype, else the model's own (f32 for a directory, a GGUF file's type where the kernels have it), as the engine's. */
export function devicesDType(o: ModelCliOptions): WeightDType {
  if (o.dtype) return o.dtype;
  const m = openModel(o.model);
  m.store.close();
  return m.dtype;
}

export function engineOptions(o: ModelCliOptions): EngineOptions {
  const bar = new ProgressBar("loading");
  return {
    dtype: o.dtype,
    backend: o.backend,
    threads: o.threads,
    poll: o.poll,
    mmap: o.mmap,
    simd: o.simd,
    contextLength: o.ctx,
    onLoadProgress: (done, total) => bar.update(done, total),
    onLoaded: (line) => process.stderr.write(`${line}\n`),
  };
}
