import { test } from "node:test";
import assert from "node:assert/strict";
import { cacheEvictions, type CachedTensor } from "./cache-eviction.js";

const t = (model: string, name: string, bytes: number, writtenAt: number): CachedTensor => ({ model, name, bytes, writtenAt });
const names = (es: CachedTensor[]) => es.map((e) => `${e.model}/${e.name}`);

test("within budget nothing goes; over it, the oldest entries not in use go until the rest fit", () => {
  const cache = [t("m", "a", 100, 3), t("m", "b", 100, 1), t("old", "c", 100, 2), t("m", "d", 100, 4)];
  assert.deepEqual(cacheEvictions(cache, () => false, 400), []);
  assert.deepEqual(names(cacheEvictions(cache, () => false, 250)), ["m/b", "old/c"]);
  // b is in use: the next oldest go instead
  assert.deepEqual(names(cacheEvictions(cache, (e) => e.name === "b", 250)), ["old/c", "m/a"]);
});

test("what is in use stays even where it alone exceeds the budget; everything else goes", () => {
  const cache = [t("m", "a", 300, 1), t("m", "b", 300, 2), t("x", "c", 10, 3)];
  assert.deepEqual(names(cacheEvictions(cache, (e) => e.model === "m", 100)), ["x/c"]);
});
