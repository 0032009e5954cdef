import { test } from "node:test";
import assert from "node:assert/strict";
import { median, quantile } from "./stats.js";

test("median: the middle one, or the mean of the middle two; the input is left unsorted", () => {
  const xs = [5, 1, 4, 2];
  assert.equal(median(xs), 3);
  assert.equal(median([7, 1, 3]), 3);
  assert.deepEqual(xs, [5, 1, 4, 2]);
});

test("quantile: the nearest rank of the sorted numbers; no quantile of nothing, nor outside 0..1", () => {
  const xs = [0.9, 1.1, 1.0, 0.8, 1.2];
  assert.equal(quantile(xs, 0), 0.8);
  assert.equal(quantile(xs, 0.25), 0.9);
  assert.equal(quantile(xs, 0.5), 1.0);
  assert.equal(quantile(xs, 0.75), 1.1);
  assert.equal(quantile(xs, 1), 1.2);
  assert.equal(quantile([1, 2, 3, 4], 0.5), 3);
  assert.throws(() => quantile([], 0.5), /quantile 0.5 of 0 numbers/);
  assert.throws(() => quantile([1], 1.5), /quantile 1.5/);
  assert.throws(() => quantile([1], NaN), /quantile NaN/);
});
