// The memory a device page offers: the user's setting where valid, else a quarter of navigator.deviceMemory, else 1 GiB.
import { test } from "node:test";
import assert from "node:assert/strict";
import { offeredMemory, parseSetting } from "./memory-offer.js";

const MIB = 2 ** 20, GIB = 2 ** 30;

test("a page offers its setting, else a quarter of the device's memory (within bounds), else 1 GiB", () => {
  assert.deepEqual(offeredMemory("512", 8), { bytes: 512 * MIB, from: "this page's setting" });
  assert.equal(offeredMemory(null, 8).bytes, 2 * GIB);
  assert.equal(offeredMemory(null, 0.25).bytes, 64 * MIB, "at least the smallest setting");
  assert.equal(offeredMemory(null, 64).bytes, 4 * GIB, "at most 4 GiB by default");
  assert.equal(offeredMemory(null, undefined).bytes, GIB);
  for (const bad of ["", "abc", "12", "100000", "-512", "1e3", "512.5"]) {
    assert.equal(parseSetting(bad), null, bad);
    assert.equal(offeredMemory(bad, 4).bytes, GIB, `${bad}: the default`);
  }
  assert.equal(parseSetting(" 2048 "), 2048);
});
