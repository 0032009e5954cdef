// The base station's own answers to expert calls, from its copy of the checkpoint: the second opinion
// of a spot check when no other replica can give one, and the referee when two replicas disagree. An
// expert's weights are loaded when first needed and kept in a small cache, the least recently used
// dropped first; the experts are computed on one thread, beside the engine's.
import type { Backend, WeightDType } from "../../kernels/backend.js";
import { openBackend } from "../../kernels/select-backend.js";
import type { TensorStore } from "../../model/checkpoint.js";
import type { ModelConfig } from "../../model/config.js";
import { assignmentKeepsFileTypes, loadExperts, type FfnWeights } from "../../model/weights.js";
import type { ExpertCall } from "../../moe/executor.js";
import { LocalExpertExecutor } from "../../moe/local-executor.js";
import { pairKey } from "./device.js";

/** Expert weight bytes the referee keeps at most (and always the expert in use): all of brown-moe's at f32. */
export const DEFAULT_REFEREE_CACHE_BYTES = 64 * 2 ** 20;

export class Referee {
  /** per layer, the experts loaded (null for the others): what the executor computes from */
  private readonly table: Array<Array<FfnWeights | null>>;
  /** the experts loaded, least recently used first */
  private readonly held = new Map<string, { layer: number; expert: number; bytes: number }>();
  private heldBytes = 0;
  /** its own kernels, made when first needed */
  private local: { backend: Backend; executor: LocalExpertExecutor } | null = null;
  /** Experts loaded so far (one dropped and needed again counts again). */
  loads = 0;

  constructor(private readonly checkpoint: TensorStore, private readonly cfg: ModelConfig, private readonly dtype: WeightDType, private readonly cacheBytes = DEFAULT_REFEREE_CACHE_BYTES) {
    this.table = Array.from({ length: cfg.layers }, () => new Array<FfnWeights | null>(cfg.experts).fill(null));
  }

  /** The call's output rows, as this base station computes them. */
  answer(call: ExpertCall): Float32Array {
    const { executor } = this.take(call.layer, call.expert);
    return executor.compute(call).output;
  }

  /** Bytes of expert weights held now. */
  get bytes(): number {
    return this.heldBytes;
  }

  close(): void {
    this.local?.executor.close();
    this.local?.backend.close();
    this.local = null;
  }

  /** The local kernels, with the expert's weights loaded (and others dropped to stay within the cache). */
  private take(layer: number, expert: number): { backend: Backend; executor: LocalExpertExecutor } {
    if (!this.local) {
      // the default kernels ($DISTMOE_BACKEND, else native where it loads), on one thread
      const { backend } = openBackend({ threads: 1, spinMs: 0 });
      this.local = { backend, executor: new LocalExpertExecutor(backend, this.table, this.cfg.hidden) };
    }
    const key = pairKey([layer, expert]);
    const h = this.held.get(key);
    this.held.delete(key);
    if (h) this.held.set(key, h);
    else {
      const w = loadExperts(this.local.backend, this.checkpoint, this.cfg, { dtype: this.dtype, keepFileTypes: assignmentKeepsFileTypes(this.dtype), holdsExpert: (l, e) => l === layer && e === expert })[layer]![expert]!;
      const bytes = w.gate.bytes + w.up.bytes + w.down.bytes;
      for (const [k, old] of this.held) {
        if (this.heldBytes + bytes <= this.cacheBytes) break;
        this.free(old.layer, old.expert);
        this.held.delete(k);
        this.heldBytes -= old.bytes;
      }
      this.table[layer]![expert] = w;
      this.held.set(key, { layer, expert, bytes });
      this.heldBytes += bytes;
      this.loads++;
    }
    return this.local;
  }

  private free(layer: number, expert: number): void {
    const w = this.table[layer]![expert]!;
    for (const t of [w.gate, w.up, w.down]) this.local!.backend.freeWeight(t);
    this.table[layer]![expert] = null;
  }
}
