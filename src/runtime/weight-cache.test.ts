// The weight cache builds paths only inside itself, whatever names reach it (the protocol refuses such
// names first; this is the second line).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { WeightCache } from "./weight-cache.js";

test("a weight cache refuses a model id or tensor name that is not one entry of its folder", () => {
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
      assert.throws(() => cache.put(name, "F32", [1, 1], new Uint8Array(4)), /refusing the name/, JSON.stringify(name));
    }
    cache.put("model.layers.0.w1.weight", "F32", [1, 1], new Uint8Array(4));
    assert.deepEqual(Object.keys(cache.checksums(["model.layers.0.w1.weight"])), ["model.layers.0.w1.weight"]);
    assert.deepEqual(readdirSync(tmp, { recursive: true }).map(String).sort(), ["cache", path.join("cache", "m"), path.join("cache", "m", "model.layers.0.w1.weight.safetensors")]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
