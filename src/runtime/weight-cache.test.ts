// The weight cache builds paths only inside itself, whatever names reach it (the protocol refuses such
// names first; this is the second line).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { readStoredTensor } from "../model/checkpoint.js";
import { WeightCache } from "./weight-cache.js";

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
