// A single sequence's decode steps record their layers' ops once and replay them (Backend.beginTape /
// replayTape, the native backend): the same logits, bit for bit, as making the calls, and whatever ends a
// tape (another sequence, a policy, the attention span, a freed cache) records anew or fails as before. The
// backend's own checks (weights freed, memory read mid-tape) are in native-backend.test.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { initModel } from "./init-model.js";
import { Engine } from "../runtime/engine.js";
import { argmax } from "../runtime/sampler.js";
import { selectTopK, type SelectionPolicy } from "../policies/selection.js";
import { nativeSkip } from "../testing/backends.js";
import type { KVCache } from "./kv-cache.js";

const skip = nativeSkip();

/** An engine on one thread (bit-for-bit results), and how many of its steps replayed a tape. */
function open(dir: string, tapes: boolean): { engine: Engine; replays: () => number } {
  const engine = Engine.load(dir, { backend: "native", threads: 1 });
  const be = engine.backend as Engine["backend"] & { replayTape?(...args: unknown[]): boolean };
  let replays = 0;
  if (!tapes) be.beginTape = undefined;
  else {
    const replay = be.replayTape!.bind(be);
    be.replayTape = (...args: unknown[]) => {
      const ok = replay(...(args as Parameters<typeof replay>));
      if (ok) replays++;
      return ok;
    };
  }
  return { engine, replays: () => replays };
}

/** Greedy steps of one sequence; the logits of each. */
async function decode(engine: Engine, cache: KVCache, first: number, steps: number): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  let token = first;
  for (let i = 0; i < steps; i++) {
    const [logits] = await engine.model.forward([{ cache, tokens: [token], logits: "last" }]);
    out.push(logits!);
    token = argmax(logits!);
  }
  return out;
}

function withModel(fn: (dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-tape-"));
    try {
      initModel({ arch: "MixtralForCausalLM", layers: 2, hidden: 64, heads: 4, kvHeads: 2, experts: 4, topK: 2, ffn: 96, out: dir, seed: 5 });
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test(
  "decode steps replayed give the calls' logits bit for bit, across the 256-position attention span, with two sequences, a policy change and two steps at once between",
  { skip },
  withModel(async (dir) => {
    const runs = [open(dir, true), open(dir, false)];
    try {
      const results = [];
      for (const { engine } of runs) {
        const m = engine.model;
        const a = m.newSequence(400), b = m.newSequence(400);
        const got: Float32Array[] = [];
        await m.forward([{ cache: a, tokens: Array.from({ length: 200 }, (_, i) => 3 + (i % 50)), logits: "last" }]);
        got.push(...(await decode(engine, a, 7, 80))); // past position 256: the span grows
        await m.forward([{ cache: b, tokens: [4, 5, 6], logits: "last" }]);
        got.push(...(await decode(engine, b, 9, 5))); // another sequence: its own tape
        got.push(...(await decode(engine, a, 11, 5))); // back: a's tape is gone, recorded again
        // a policy that is top-k behind another function runs the seam's steps: no tape holds for them
        const sameTopK: SelectionPolicy = (router, ctx) => selectTopK(router, ctx);
        m.setPolicy(sameTopK);
        got.push(...(await decode(engine, a, 12, 4)));
        m.setPolicy(selectTopK);
        got.push(...(await decode(engine, a, 13, 6)));
        // two steps at once: b's begins recording, a's begins while b's awaits its MoE layers; neither leaves a tape
        const [lb, la] = await Promise.all([m.forward([{ cache: b, tokens: [14], logits: "last" }]), m.forward([{ cache: a, tokens: [15], logits: "last" }])]);
        got.push(lb[0]!, la[0]!);
        got.push(...(await decode(engine, a, 16, 3)));
        results.push({ got, stats: { ...m.expertStats }, routing: Array.from(m.routingStats.use) });
      }
      const [taped, called] = results as [(typeof results)[0], (typeof results)[0]];
      assert.equal(taped.got.length, called.got.length);
      taped.got.forEach((l, i) => assert.deepEqual(l, called.got[i], `step ${i}`));
      assert.deepEqual(taped.stats, called.stats, "one-job layers and expert calls counted alike");
      assert.deepEqual(taped.routing, called.routing, "routing counted alike");
      // recorded at a's second step (its first allocates the one-job layers' scratch, the prompt having run the
      // seam's steps, and a tape ends where the backend's memory moves) and where its span grew (start 256), at
      // b's first, back at a, after the seam's steps (which replay nothing), and after the two at once:
      // 77 + 4 + 4 + 0 + 5 + 2
      assert.equal(runs[0]!.replays(), 92);
      assert.equal(runs[1]!.replays(), 0);
    } finally {
      for (const { engine } of runs) engine.close();
    }
  }),
);

test(
  "a freed cache is not replayed: its step fails as it did",
  { skip },
  withModel(async (dir) => {
    const { engine, replays } = open(dir, true);
    try {
      const m = engine.model;
      const cache = m.newSequence(64);
      await m.forward([{ cache, tokens: [3, 4, 5], logits: "last" }]);
      await decode(engine, cache, 6, 4);
      assert.equal(replays(), 3);
      cache.free();
      await assert.rejects(() => m.forward([{ cache, tokens: [6], logits: "last" }]));
    } finally {
      engine.close();
    }
  }),
);
