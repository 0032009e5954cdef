// The weight cache builds paths only inside itself, whatever names reach it (the protocol refuses such
// names first; this is the second line), and stays within its budget.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { readStoredTensor } from "../model/checkpoint.js";
import { trimWeightCache, WeightCache } from "./weight-cache.js";
import { DeviceHub } from "./device-hub.js";
import { defaultCacheBytes } from "./device.js";
import { initModel } from "../model/init-model.js";
import { newJoinToken } from "../protocol/handshake.js";
import { deviceProcess } from "../testing/device-peers.js";
import { until } from "../testing/until.js";

test("a weight cache refuses a model id or tensor name that is not one entry of its folder", async () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "distmoe-cache-"));
  try {
    const root = path.join(tmp, "cache");
    mkdirSync(root);
    for (const id of ["..", ".", "", "../escape", "a/b", path.join(tmp, "escape"), "x\0"]) {
      assert.throws(() => new WeightCache(root, id), /refusing the name .*: it is not one entry of/, JSON.stringify(id));
    }
    const cache = new WeightCache(root, "m");
    assert.equal(cache.dir, path.join(root, "m"));
    for (const name of ["../escape", "../../escape", "a/b", path.join(tmp, "escape"), "x\0"]) {
      await assert.rejects(cache.put(name, "F32", [1, 1], new Uint8Array(4)), /refusing the name/, JSON.stringify(name));
    }
    await cache.put("model.layers.0.w1.weight", "F32", [1, 1], new Uint8Array(4));
    assert.deepEqual(Object.keys(await cache.checksums(["model.layers.0.w1.weight"])), ["model.layers.0.w1.weight"]);
    assert.deepEqual(readdirSync(tmp, { recursive: true }).map(String).sort(), ["cache", path.join("cache", "m"), path.join("cache", "m", "model.layers.0.w1.weight.safetensors")]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test("ggml blocks are cached with their type and shape and read back as them; an entry whose bytes do not fit them is neither reported held nor opened", async () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "distmoe-cache-"));
  try {
    const cache = new WeightCache(tmp, "m");
    const blocks = new Uint8Array(2 * 2 * 34).map((_, i) => i);
    await cache.put("q", "Q8_0", [2, 64], blocks);
    await cache.put("f", "BF16", [2, 2], new Uint8Array(8));
    const store = await cache.open(["q", "f"]);
    try {
      const q = store.get("q")!;
      assert.deepEqual([q.dtype, q.shape, q.bytes], ["Q8_0", [2, 64], blocks.length]);
      assert.deepEqual(readStoredTensor(q), blocks);
      assert.deepEqual([store.get("f")!.dtype, store.get("f")!.shape], ["BF16", [2, 2]]);
    } finally {
      store.close();
    }
    assert.deepEqual(Object.keys(await cache.checksums(["q", "f"])).sort(), ["f", "q"]);
    // the same bytes claiming another block type: 136 bytes are not [2, 64] of Q4_0
    const file = cache.file("q");
    writeFileSync(file, readFileSync(file).toString("latin1").replace('"Q8_0"', '"Q4_0"'), "latin1");
    assert.deepEqual(Object.keys(await cache.checksums(["q"])), [], "fetched again");
    await assert.rejects(cache.open(["q"]), /q\.safetensors: \[2, 64\] Q4_0 needs 72 bytes, got 136/);
    writeFileSync(file, readFileSync(file).toString("latin1").replace('"Q4_0"', '"Q2_K"'), "latin1");
    await assert.rejects(cache.open(["q"]), /bytes of type "Q2_K", not a ggml block type/);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test("the cache is kept within its budget across models: the oldest tensors go first, those held stay, other files and folders are left alone", async () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "distmoe-cache-"));
  try {
    const put = async (model: string, name: string, at: number) => {
      const c = new WeightCache(tmp, model);
      await c.put(name, "F32", [64, 4], new Uint8Array(1024));
      utimesSync(c.file(name), at, at);
      return statSync(c.file(name)).size;
    };
    const size = await put("old-model", "a", 1000);
    await put("old-model", "b", 1001);
    await put("m", "c", 1002);
    await put("m", "d", 1003);
    await put("m", "e", 1004);
    mkdirSync(path.join(tmp, ".identity"));
    writeFileSync(path.join(tmp, ".identity", "dev.key"), "a key");
    const left = () => readdirSync(tmp, { recursive: true }).map(String).filter((f) => f.includes(".")).sort();

    assert.deepEqual(trimWeightCache(tmp, "m", ["c", "d", "e"], 5 * size), [], "within budget nothing goes");
    // c is held: the oldest others go until 3 tensors are left, and the emptied model folder with them
    const gone = trimWeightCache(tmp, "m", ["c"], 3 * size);
    assert.deepEqual(gone.map((e) => `${e.model}/${e.name}`), ["old-model/a", "old-model/b"]);
    assert.deepEqual(left(), [".identity", path.join(".identity", "dev.key"), path.join("m", "c.safetensors"), path.join("m", "d.safetensors"), path.join("m", "e.safetensors")]);
    assert.deepEqual(trimWeightCache(tmp, "m", ["c"], size).map((e) => e.name), ["d", "e"]);
    assert.deepEqual(trimWeightCache(tmp, "m", ["c"], 0), [], "what is held stays, whatever the budget");
    assert.deepEqual(Object.keys(await new WeightCache(tmp, "m").checksums(["c"])), ["c"]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test("a cache shared by two device processes: one's trim that empties the other's model folder leaves the other able to store there", async () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "distmoe-cache-"));
  try {
    // the first process streams model m; the second, serving another model, trims everything of m away, and m's folder with it
    const first = new WeightCache(tmp, "m");
    await first.put("a", "F32", [64, 4], new Uint8Array(1024));
    assert.deepEqual(trimWeightCache(tmp, "other", [], 0).map((e) => `${e.model}/${e.name}`), ["m/a"]);
    assert.equal(existsSync(first.dir), false);
    // the first goes on streaming into it
    await first.put("b", "F32", [64, 4], new Uint8Array(1024));
    assert.deepEqual(Object.keys(await first.checksums(["a", "b"])), ["b"]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test("a device process trims its cache after loading what it is assigned: another model's old tensors go to make room, its own stay", async () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "distmoe-cache-"));
  const token = newJoinToken();
  const model = path.join(tmp, "model"), cache = path.join(tmp, "cache");
  initModel({ arch: "MixtralForCausalLM", layers: 2, hidden: 64, experts: 4, topK: 2, seed: 3, out: model });
  const old = new WeightCache(cache, "an-old-model");
  for (const name of ["x", "y"]) {
    await old.put(name, "F32", [256, 256], new Uint8Array(256 * 256 * 4));
    utimesSync(old.file(name), 1000, 1000);
  }
  const hub = await DeviceHub.listen({ model, weightDType: "f32", wireDType: "f32", port: 0, joinTokens: [token], log: () => undefined });
  // 2 layers × 4 experts × 3 tensors, bf16 as the model file has them: 0.4 MiB streamed; the budget leaves no room for the old 0.5 MiB
  const device = deviceProcess(["--bs", hub.url, "--token", token, "--name", "d", "--fetch-weights", "--cache", cache, "--cache-max", "600KiB"]);
  try {
    await hub.start(1);
    await until(() => /removed \d+ cached tensors/.test(device.stderr()), "the device to trim its cache");
    assert.match(device.stderr(), /removed 2 cached tensors \(0\.5 MiB, the oldest not held\) to keep the cache within 0\.6 MiB\n/);
    assert.equal(existsSync(path.join(cache, "an-old-model")), false, "the old model's folder went with its tensors");
    const models = readdirSync(cache).filter((d) => !d.startsWith("."));
    assert.equal(models.length, 1);
    assert.equal(readdirSync(path.join(cache, models[0]!)).length, 24, "every tensor it holds stays");
  } finally {
    await hub.close();
    device.child.kill("SIGTERM");
    await device.exit;
    rmSync(tmp, { recursive: true, force: true });
  }
});

test("the default cache budget is twice the memory offered, or twice the memory free where the offer is unlimited (--memory 0), never 0", () => {
  assert.equal(defaultCacheBytes(4 << 20, 2 ** 30), 8 << 20);
  assert.equal(defaultCacheBytes(undefined, 2 ** 30), 2 ** 31);
  assert.equal(defaultCacheBytes(0, 2 ** 30), 2 ** 31);
});
