import { test } from "node:test";
import assert from "node:assert/strict";
import { median, quantile } from "./stats.js";

test("median: the middle one, or the mean of the middle two; NaN for none; the input is left unsorted", () => {
  const xs = [5, 1, 4, 2];
  assert.equal(median(xs), 3);
  assert.equal(median([7, 1, 3]), 3);
  assert.ok(Number.isNaN(median([])));
  assert.deepEqual(xs, [5, 1, 4, 2]);
});

test("quantile: interpolated between the sorted numbers; quartiles of 3 about the median; none of nothing, nor outside 0..1", () => {
  const xs = [0.9, 1.1, 1.0, 0.8, 1.2];
  assert.equal(quantile(xs, 0), 0.8);
  assert.equal(quantile(xs, 0.25), 0.9);
  assert.equal(quantile(xs, 0.5), 1.0);
  assert.equal(quantile(xs, 0.75), 1.1);
  assert.equal(quantile(xs, 1), 1.2);
  assert.equal(quantile([1, 2, 3, 4], 0.5), 2.5);
  // three rounds: the quartiles halfway to each end, not the median and the maximum
  assert.equal(quantile([1, 3, 2], 0.25), 1.5);
  assert.equal(quantile([1, 3, 2], 0.75), 2.5);
  assert.equal(quantile([7], 0.25), 7);
  assert.throws(() => quantile([], 0.5), /quantile 0.5 of 0 numbers/);
  assert.throws(() => quantile([1], 1.5), /quantile 1.5/);
  assert.throws(() => quantile([1], NaN), /quantile NaN/);
});
