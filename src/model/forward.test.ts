// Every supported architecture, generated small and random by init-model, against the float64
// reference in src/testing: logits and selected experts. Also: a batch of sequences equals the
// sequences run alone, and prefill + step-by-step decode equals one prefill of everything.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { initModel, type InitModelOptions } from "./init-model.js";
import { Engine } from "../runtime/engine.js";
import { ReferenceModel } from "../testing/reference-model.js";
import type { RoutingRecord } from "../moe/trace.js";
import { testBackends } from "../testing/backends.js";

const variants: Array<{ label: string; opts: Omit<InitModelOptions, "out"> }> = [
  { label: "Mixtral", opts: { arch: "MixtralForCausalLM", layers: 2, hidden: 64, heads: 4, kvHeads: 2, experts: 4, topK: 2, ffn: 96 } },
  {
    label: "Mixtral, tied embeddings, f16 file, 3 shards, MHA",
    opts: { arch: "MixtralForCausalLM", layers: 2, hidden: 64, heads: 4, kvHeads: 4, experts: 3, topK: 1, tieEmbeddings: true, fileDType: "f16", shards: 3 },
  },
  {
    label: "Qwen2-MoE: shared expert, q/k/v bias, no top-k renormalisation, a dense layer",
    opts: { arch: "Qwen2MoeForCausalLM", layers: 3, hidden: 64, heads: 4, kvHeads: 2, experts: 6, topK: 2, ffn: 32, sharedFfn: 64, denseLayers: [1], normTopK: false },
  },
  { label: "OLMoE: q/k RMSNorm, top-k renormalised", opts: { arch: "OlmoeForCausalLM", layers: 2, hidden: 64, heads: 4, kvHeads: 4, experts: 8, topK: 2, ffn: 32, normTopK: true } },
  { label: "OLMoE: clip_qkv, attention bias", opts: { arch: "OlmoeForCausalLM", layers: 2, hidden: 64, heads: 4, experts: 4, topK: 2, clipQkv: 0.5, attentionBias: true, fileDType: "f32" } },
  {
    label: "Qwen3-MoE: per-head q/k norm, head_dim ≠ hidden/heads, a dense layer",
    opts: { arch: "Qwen3MoeForCausalLM", layers: 2, hidden: 64, heads: 4, kvHeads: 2, headDim: 32, experts: 4, topK: 2, ffn: 48, denseLayers: [0], normTopK: true },
  },
];

function withModel(opts: Omit<InitModelOptions, "out">, fn: (dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-arch-"));
    try {
      initModel({ ...opts, out: dir, seed: 11 });
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

const PROMPT = "Hello, experts!";

for (const { backend, skip } of testBackends()) {
  for (const { label, opts } of variants) {
    test(
      `${label}: logits and routing match the float64 reference (${backend} kernels)`,
      { skip },
      withModel(opts, async (dir) => {
        const records: RoutingRecord[] = [];
        const engine = Engine.load(dir, { dtype: "f32", threads: 2, backend, trace: { record: (r) => records.push(r) } });
        const ref = new ReferenceModel(dir);
        try {
          const ids = engine.tokenizer.encode(PROMPT);
          assert.equal(ids[0], 1, "BOS first");
          const want = ref.forward(ids);
          const cache = engine.model.newSequence();
          const [got] = await engine.model.forward([{ cache, tokens: ids, logits: "all" }]);
          let maxErr = 0;
          for (let i = 0; i < want.logits.length; i++) maxErr = Math.max(maxErr, Math.abs(got![i]! - want.logits[i]!));
          assert.ok(maxErr <= 1e-3, `logits max abs error ${maxErr}`);
          for (const r of records) {
            const refLayer = want.experts[r.layer]!;
            for (let t = 0; t < ids.length; t++) {
              const chosen = Array.from(r.decision.experts.subarray(r.decision.offsets[t]!, r.decision.offsets[t + 1]!));
              // compare where the reference's choice is not a near-tie between the k-th and next expert
              const p = [...want.probs[r.layer]![t]!].sort((a, b) => b - a);
              const k = chosen.length;
              if (k < p.length && p[k - 1]! - p[k]! < 1e-5) continue;
              assert.deepEqual(chosen, refLayer[t], `layer ${r.layer} token ${t}`);
            }
          }
          assert.equal(new Set(records.map((r) => r.layer)).size, want.experts.filter((l) => l.length > 0).length, "one routing record per MoE layer");
          cache.free();
        } finally {
          ref.close();
          engine.close();
        }
      }),
    );
  }

  test(
    `a batch of sequences gives each the logits it gets alone; prefill + decode equals one prefill (${backend} kernels)`,
    { skip },
    withModel(variants[2]!.opts, async (dir) => {
      const engine = Engine.load(dir, { dtype: "f32", threads: 2, backend });
      try {
        const m = engine.model;
        const a = engine.tokenizer.encode("first sequence"), b = engine.tokenizer.encode("second, longer sequence of text");
        const V = engine.config.vocabSize;
        const alone = async (ids: number[]) => {
          const c = m.newSequence();
          const [l] = await m.forward([{ cache: c, tokens: ids, logits: "all" }]);
          c.free();
          return l!;
        };
        const [la, lb] = [await alone(a), await alone(b)];
        const ca = m.newSequence(), cb = m.newSequence();
        const [ba, bb] = await m.forward([{ cache: ca, tokens: a, logits: "all" }, { cache: cb, tokens: b, logits: "last" }]);
        const close = (x: Float32Array, y: Float32Array, what: string) => {
          assert.equal(x.length, y.length, what);
          for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i]! - y[i]!) < 1e-4, `${what}[${i}]: ${x[i]} vs ${y[i]}`);
        };
        close(ba!, la, "batched a");
        close(bb!, lb.subarray((b.length - 1) * V), "batched b (last row)");
        // incremental: prefill part of b, then feed the rest one token at a time, batched beside a
        const c2 = m.newSequence();
        await m.forward([{ cache: c2, tokens: b.slice(0, 3), logits: "none" }]);
        for (let i = 3; i < b.length; i++) {
          const [, step] = await m.forward([{ cache: ca, tokens: [7], logits: "none" }, { cache: c2, tokens: [b[i]!], logits: "last" }]);
          close(step!, lb.subarray(i * V, (i + 1) * V), `decode step ${i}`);
        }
        for (const c of [ca, cb, c2]) c.free();
      } finally {
        engine.close();
      }
    }),
  );
}
