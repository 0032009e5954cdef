// The sparse MoE block, as a seam with named parts:
//   router (gate logits → probabilities) → selection policy → dispatch plan → expert executors → combine.
// Executors are asynchronous and each gets all of the step's rows for one expert at once.
import type { Backend, Tensor } from "../kernels/backend.js";
import type { ModelConfig } from "../model/config.js";
import { FfnRunner } from "../model/ffn.js";
import type { LayerWeights } from "../model/weights.js";
import type { SelectionPolicy } from "../policies/selection.js";
import { combineInto, gatherRows, planDispatch } from "./dispatch.js";
import type { ExpertExecutor } from "./executor.js";
import { routerProbabilities } from "./router.js";
import type { RoutingTraceSink } from "./trace.js";

export interface MoeDeps {
  policy: SelectionPolicy;
  executor: ExpertExecutor;
  trace?: RoutingTraceSink;
}

export class MoeBlock {
  private readonly shared: FfnRunner;

  constructor(private readonly backend: Backend, private readonly cfg: ModelConfig, private readonly deps: MoeDeps) {
    this.shared = new FfnRunner(backend);
  }

  /** out[rows][hidden] = MoE(h) for layer `layer`; h is the post-attention-norm activation. */
  async forward(layer: number, w: LayerWeights, h: Tensor, out: Tensor, rows: number, step: number, positions: ArrayLike<number>): Promise<void> {
    const { backend, cfg } = this;
    const H = cfg.hidden, E = cfg.experts;
    const logitsBuf = backend.alloc(rows * E * 4);
    try {
      backend.matmul(logitsBuf, h, w.router!, rows);
      const logits = backend.f32(logitsBuf, 0, rows * E).slice();
      const router = { layer, rows, experts: E, logits, probs: routerProbabilities(logits, rows, E) };
      const decision = this.deps.policy(router, { topK: cfg.topK, normalize: cfg.normTopK });
      this.deps.trace?.record({ step, layer, positions, router, decision });
      const plan = planDispatch(decision, E);

      const x = backend.f32(h, 0, rows * H);
      const results = await Promise.all(
        plan.map((b) => this.deps.executor.run({ layer, expert: b.expert, rows: b.rows.length, input: gatherRows(x, H, b.rows) })),
      );
      const y = backend.f32(out, 0, rows * H);
      y.fill(0);
      plan.forEach((b, i) => combineInto(y, H, b, results[i]!));

      if (w.shared) this.addSharedExpert(w, h, out, rows, logitsBuf);
    } finally {
      backend.free(logitsBuf);
    }
  }

  /** Qwen2-MoE: out += sigmoid(h · w_gate) · FFN_shared(h), computed where the router runs. */
  private addSharedExpert(w: LayerWeights, h: Tensor, out: Tensor, rows: number, gateBuf: Tensor): void {
    const { backend } = this;
    const H = this.cfg.hidden;
    const sharedOut = backend.alloc(rows * H * 4);
    try {
      this.shared.run(w.shared!, h, sharedOut, rows);
      backend.matmul(gateBuf, h, w.sharedGate!, rows);
      const g = backend.f32(gateBuf, 0, rows);
      const s = backend.f32(sharedOut, 0, rows * H);
      const y = backend.f32(out, 0, rows * H);
      for (let r = 0; r < rows; r++) {
        const gate = 1 / (1 + Math.exp(-g[r]!));
        for (let j = 0; j < H; j++) y[r * H + j]! += gate * s[r * H + j]!;
      }
    } finally {
      backend.free(sharedOut);
    }
  }

  close(): void {
    this.shared.release();
  }
}
