import { test } from "node:test";
import assert from "node:assert/strict";
import { placeExperts } from "./placement.js";

test("equal devices get equal shares; every expert has its replicas on distinct devices", () => {
  const p = placeExperts([true, true, false, true], 8, [{ readGbps: 10 }, { readGbps: 10 }, { readGbps: 10 }, { readGbps: 10 }], 2);
  assert.deepEqual(p.experts.map((e) => e.length), [12, 12, 12, 12]);
  assert.equal(p.hosts[2]!.length, 0, "dense layer");
  for (const layer of p.hosts) for (const hosts of layer) assert.equal(new Set(hosts).size, 2);
  const firsts = [0, 0, 0, 0];
  for (const layer of p.hosts) for (const hosts of layer) firsts[hosts[0]!]!++;
  assert.deepEqual(firsts, [6, 6, 6, 6], "each device is the first host of an equal share");
});

test("a device twice as fast holds about twice the experts", () => {
  const p = placeExperts([true, true, true, true], 8, [{ readGbps: 20 }, { readGbps: 10 }, { readGbps: 10 }]);
  assert.deepEqual(p.experts.map((e) => e.length), [16, 8, 8]);
  assert.throws(() => placeExperts([true], 8, []), /no devices/);
});
