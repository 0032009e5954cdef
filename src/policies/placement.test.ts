import { test } from "node:test";
import assert from "node:assert/strict";
import { placeExperts, type Placement } from "./placement.js";

const sparse4 = [true, true, true, true];
const counts = (p: Placement) => p.experts.map((e) => e.length);

test("equal devices get equal shares; every expert has its replicas on distinct devices", () => {
  const p = placeExperts([true, true, false, true], 8, [{ readGbps: 10 }, { readGbps: 10 }, { readGbps: 10 }, { readGbps: 10 }], { replicas: 2 });
  assert.deepEqual(counts(p), [12, 12, 12, 12]);
  assert.equal(p.hosts[2]!.length, 0, "dense layer");
  for (const layer of p.hosts) for (const hosts of layer) assert.equal(new Set(hosts).size, 2);
  const firsts = [0, 0, 0, 0];
  for (const layer of p.hosts) for (const hosts of layer) firsts[hosts[0]!]!++;
  assert.deepEqual(firsts, [6, 6, 6, 6], "each device is the first host of an equal share");
});

test("a device twice as fast holds about twice the experts", () => {
  const p = placeExperts(sparse4, 8, [{ readGbps: 20 }, { readGbps: 10 }, { readGbps: 10 }]);
  assert.deepEqual(counts(p), [16, 8, 8]);
  assert.throws(() => placeExperts([true], 8, []), /no devices/);
});

test("a device holds no more experts than its memory allows; too little memory in all is a clear error", () => {
  const mib = 2 ** 20;
  const p = placeExperts(sparse4, 8, [{ readGbps: 10, memoryBytes: 5 * mib }, { readGbps: 10, memoryBytes: 100 * mib }], { expertBytes: mib });
  assert.deepEqual(counts(p), [5, 27]);
  assert.throws(
    () => placeExperts(sparse4, 8, [{ readGbps: 10, memoryBytes: 10 * mib }, { readGbps: 10, memoryBytes: 10 * mib }], { expertBytes: mib, replicas: 2 }),
    /memory holds 20 expert copies; the model needs 64 \(32 experts × 2 of 0\.00 GiB each/,
  );
});

test("a re-plan keeps experts where they are: a joining device takes only its share, a leaving one's experts move and nothing else", () => {
  const three = placeExperts(sparse4, 8, [{ readGbps: 10 }, { readGbps: 10 }, { readGbps: 10 }]);
  const held = three.experts.map((e) => ({ readGbps: 10, holds: e }));
  const four = placeExperts(sparse4, 8, [...held, { readGbps: 10 }]);
  assert.deepEqual(counts(four), [8, 8, 8, 8]);
  const moved = (before: Placement, after: Placement, map: number[]) =>
    after.experts.reduce((n, e, d) => n + e.filter(([l, x]) => !(map[d]! >= 0 && before.experts[map[d]!]!.some(([l2, x2]) => l2 === l && x2 === x))).length, 0);
  assert.equal(moved(three, four, [0, 1, 2, -1]), 8, "only the newcomer's share is loaded anew");
  const after = placeExperts(sparse4, 8, [held[0]!, held[2]!]);
  assert.deepEqual(counts(after), [16, 16]);
  assert.equal(moved(three, after, [0, 2]), three.experts[1]!.length, "only the leaver's experts move");
});

test("a device that comes back to the experts it held gets them all back (replicas 2), though it joins last and the others hold more than their shares", () => {
  const four = placeExperts(sparse4, 8, [{ readGbps: 10 }, { readGbps: 10 }, { readGbps: 10 }, { readGbps: 10 }], { replicas: 2 });
  const three = placeExperts(sparse4, 8, four.experts.slice(0, 3).map((e) => ({ readGbps: 10, holds: e })), { replicas: 2 });
  const back = placeExperts(sparse4, 8, [...three.experts.map((e) => ({ readGbps: 10, holds: e })), { readGbps: 10, holds: four.experts[3] }], { replicas: 2 });
  assert.deepEqual(counts(back), [16, 16, 16, 16]);
  const sorted = (e: Array<[number, number]>) => e.map(([l, x]) => `${l}:${x}`).sort();
  assert.deepEqual(sorted(back.experts[3]!), sorted(four.experts[3]!), "the returning device keeps exactly what it held");
  back.experts.slice(0, 3).forEach((e, d) => assert.ok(e.every(([l, x]) => three.experts[d]!.some(([l2, x2]) => l2 === l && x2 === x)), `device ${d} loads nothing new`));
});

test("speeds a device claims near the largest number still leave each device what it holds (they do not sum to Infinity)", () => {
  const halves = (l0: number) => Array.from({ length: 16 }, (_, i): [number, number] => [l0 + (i >> 3), i & 7]);
  const p = placeExperts(sparse4, 8, [{ readGbps: 1e308, holds: halves(0) }, { readGbps: 1e308, holds: halves(2) }]);
  assert.deepEqual(p.experts, [halves(0), halves(2)]);
});

test("a held pair outside the model (kept for another model) is no expert of it", () => {
  const p = placeExperts([true, true], 4, [{ readGbps: 10, holds: [[0, 4], [0, 5], [0, 6], [0, 7]] }, { readGbps: 10, holds: [[1, 0], [1, 1], [1, 2], [1, 3]] }]);
  assert.deepEqual(counts(p), [4, 4]);
  assert.deepEqual(p.experts[1], [[1, 0], [1, 1], [1, 2], [1, 3]]);
});
