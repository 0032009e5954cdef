// Fuzz test of a device against a hostile base station: after the handshake, any frames a base station
// may send — assignments of any model id, model path, config, dtype and experts; weights of any name,
// shape and checksum; releases, calls, pulls — intact, damaged or as text. The device never throws,
// writes nothing outside its cache, and loads an honest assignment afterwards.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import { runDevice } from "./device.js";
import { tensorName } from "../model/arch.js";
import { readModelConfig } from "../model/config.js";
import { initModel } from "../model/init-model.js";
import { encodeActivations } from "../protocol/activations.js";
import { encodeFrame, type Message } from "../protocol/frames.js";
import { byteDamage, damage, fuzzParams } from "../testing/fuzz.js";
import { scriptedBs } from "../testing/device-peers.js";

const LAYERS = 2, EXPERTS = 4, HIDDEN = 64;
/** The probe that ends each case: its answer says the device has read every frame before it. */
const PROBE = 999_999;

test("fuzz: a device survives any frames from its base station and writes nothing outside its cache", { timeout: 300_000 }, async () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "distmoe-device-fuzz-"));
  const model = path.join(tmp, "model");
  const home = path.join(tmp, "home");
  const cache = path.join(home, "cache");
  initModel({ arch: "MixtralForCausalLM", layers: LAYERS, hidden: HIDDEN, experts: EXPERTS, topK: 2, seed: 41, out: model });
  mkdirSync(home);
  const config = JSON.parse(readFileSync(path.join(model, "config.json"), "utf8")) as Record<string, unknown>;
  const t = readModelConfig(model).arch.tensors;
  const names = Array.from({ length: LAYERS * EXPERTS }, (_, i) => [t.expertGate, t.expertUp, t.expertDown].map((tmpl) => tensorName(tmpl, Math.floor(i / EXPERTS), i % EXPERTS))).flat();

  /** Mostly the model's experts, some beyond it. */
  const index = (n: number) => fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: n }) }, { weight: 1, arbitrary: fc.constant(1 << 16) });
  const pairs = fc.array(fc.tuple(index(LAYERS), index(EXPERTS)), { maxLength: 9 });
  /** Mostly `usual`, sometimes one of `hostile`. */
  const mostly = <T>(usual: fc.Arbitrary<T>, hostile: fc.Arbitrary<T>) => fc.oneof({ weight: 6, arbitrary: usual }, { weight: 1, arbitrary: hostile });
  const assign = fc.record({
    type: fc.constant("assign" as const),
    model: fc.constantFrom(model, `${model}/../model`, "model", "/nowhere", "", "\\\\host\\share", "//host/share", `${model}\0`, home),
    modelId: mostly(fc.constantFrom("m", "m2"), fc.oneof(fc.constantFrom("..", ".", "../escape", path.join(tmp, "escape"), "a/b", "a\\b", "x\0", "w".repeat(600), ".hidden"), fc.string({ unit: "binary", maxLength: 12 }))),
    config: fc.oneof(
      { weight: 3, arbitrary: fc.constant(config) },
      fc.tuple(
        fc.constantFrom("hidden_size", "intermediate_size", "num_hidden_layers", "num_local_experts", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "architectures", "num_experts_per_tok"),
        fc.constantFrom<unknown>(0, -1, 1, 3, 63, 1 << 16, 1 << 20, 2 ** 40, 1e9, 1.5, "x", null, [], {}),
      ).map(([k, v]) => ({ ...config, [k]: v })),
      fc.constant({}),
    ),
    weightDType: mostly(fc.constant("f32"), fc.constantFrom("bf16", "q8", "q4", "x")),
    wireDType: fc.constant("f32" as const),
    experts: pairs,
  }) as fc.Arbitrary<Message>;
  const weights = fc
    .record({
      name: mostly(fc.constantFrom(...names), fc.oneof(fc.constantFrom("../escape", "a/b", "x\0", "w".repeat(600), ".."), fc.string({ maxLength: 12 }))),
      shape: fc.constantFrom<[number, number]>([128, 64], [64, 128], [1, 1], [64, 64]),
      dtype: fc.constantFrom("F32" as const, "BF16" as const, "F16" as const),
      honest: fc.boolean(),
    })
    .map(({ name, shape, dtype, honest }): Message => {
      const payload = new Uint8Array(shape[0] * shape[1] * (dtype === "F32" ? 4 : 2));
      return { type: "weights", name, dtype, shape, sha256: honest ? createHash("sha256").update(payload).digest("hex") : "0".repeat(64), payload };
    });
  const call = fc.tuple(fc.nat(LAYERS), fc.array(fc.tuple(fc.nat(EXPERTS), fc.integer({ min: 1, max: 2 })), { minLength: 1, maxLength: 3 }), fc.constantFrom(HIDDEN, 32)).map(([layer, experts, hidden]): Message => {
    const rows = experts.reduce((s, [, r]) => s + r, 0);
    return { type: "call", id: 1, layer, experts, hidden, dtype: "f32", payload: encodeActivations(new Float32Array(rows * hidden).fill(0.5), "f32") };
  });
  const message: fc.Arbitrary<Message> = fc.oneof(
    { weight: 4, arbitrary: assign },
    { weight: 4, arbitrary: weights },
    { weight: 2, arbitrary: call },
    { weight: 1, arbitrary: fc.record({ type: fc.constant("release" as const), experts: pairs }) as fc.Arbitrary<Message> },
    { weight: 1, arbitrary: fc.record({ type: fc.constant("fetched" as const), sent: fc.nat(), bytes: fc.nat() }) },
    { weight: 1, arbitrary: fc.record({ type: fc.constant("pull" as const), id: fc.nat(100), layer: fc.nat(LAYERS), expert: fc.nat(EXPERTS) }) },
    { weight: 1, arbitrary: fc.constantFrom<Message>({ type: "challenge", nonce: "0".repeat(64) }, { type: "welcome" }, { type: "leave", reason: "x" }, { type: "error", message: "\u001b[31mred" }, { type: "ready", experts: [] }) },
  );
  /** What a case sends: frames, damaged frames, text; each maybe followed by a pause (so that an assignment's fetch is under way when what follows comes). */
  const sent = fc.oneof(
    { weight: 16, arbitrary: message.map(encodeFrame) },
    { weight: 1, arbitrary: fc.tuple(message.map(encodeFrame), byteDamage).map(([f, d]) => damage(f, d)) },
    { weight: 1, arbitrary: fc.string({ maxLength: 16 }) },
  ).chain((f) => fc.record({ send: fc.constant(f), pauseMs: fc.constantFrom(0, 0, 5) }));

  /** Everything under `dir`, relative to it. */
  const listing = (dir: string): string[] => readdirSync(dir, { recursive: true }).map(String).sort();
  const onlyTheCache = () => {
    assert.deepEqual(readdirSync(tmp).sort(), ["home", "model"]);
    for (const entry of listing(home)) {
      const parts = entry.split(path.sep);
      const identity = entry === path.join("cache", ".identity") || entry === path.join("cache", ".identity", "fuzzed.key");
      const ok = identity || parts[0] === "cache" && (parts.length === 1 || (parts.length === 2 && statSync(path.join(home, entry)).isDirectory() && /^[\w-][\w.-]*$/.test(parts[1]!)) || (parts.length === 3 && parts[2]!.endsWith(".safetensors")));
      assert.ok(ok, `the device wrote ${entry}`);
    }
  };

  const bs = await scriptedBs();
  const stop = new AbortController();
  let ended: string | null = null;
  const running = runDevice({ bs: bs.url, name: "fuzzed", threads: 1, cacheDir: cache, memoryBytes: 512 << 10, backoff: { firstMs: 2, capMs: 4 }, signal: stop.signal, log: () => undefined });
  running.then(() => (ended = "returned"), (e: Error) => (ended = e.message));
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(sent, { minLength: 1, maxLength: 6 }), async (frames) => {
        const c = await bs.next();
        assert.equal((await c.frames()).type, "hello");
        for (const { send, pauseMs } of frames) {
          c.ws.send(send);
          if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
        }
        c.ws.send(encodeFrame({ type: "pull", id: PROBE, layer: 0, expert: 0 }));
        // every frame before the probe has been read once it is answered, or the device has closed the connection
        for (;;) {
          const m = await c.frames().catch(() => null);
          if (m === null || ("id" in m && m.id === PROBE)) break;
        }
        c.ws.close();
        assert.equal(ended, null, "the device keeps running");
        onlyTheCache();
      }),
      fuzzParams(150),
    );
    // and it still serves an honest base station
    const c = await bs.next();
    assert.equal((await c.frames()).type, "hello");
    c.ws.send(encodeFrame({ type: "assign", model, modelId: "m", config, weightDType: "f32", wireDType: "f32", experts: [[0, 0], [1, 3]] }));
    for (;;) {
      const m = await c.frames();
      if (m.type === "ready") break;
    }
    stop.abort();
    await running;
    onlyTheCache();
  } finally {
    stop.abort();
    await running.catch(() => undefined);
    await bs.close();
    rmSync(tmp, { recursive: true, force: true });
  }
});
