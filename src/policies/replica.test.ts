import { test } from "node:test";
import assert from "node:assert/strict";
import { LOW_BATTERY, onLowBattery, sparingLowBattery } from "./replica.js";

test("low battery: below the threshold and not charging; no battery reported is never low", () => {
  assert.equal(onLowBattery(null), false);
  assert.equal(onLowBattery({ level: 0.05, charging: false }), true);
  assert.equal(onLowBattery({ level: 0.05, charging: true }), false, "charging: not spared");
  assert.equal(onLowBattery({ level: LOW_BATTERY, charging: false }), false, "at the threshold: not yet low");
  assert.equal(onLowBattery({ level: 0.5, charging: false }, 0.6), true, "the threshold is a parameter");
});

test("hosts on low battery go after the others, each group in placement order; all or none low: unchanged", () => {
  const battery: Record<string, { level: number; charging: boolean } | null> = {
    mains: null,
    full: { level: 0.9, charging: false },
    dying: { level: 0.1, charging: false },
    plugged: { level: 0.1, charging: true },
    flat: { level: 0.02, charging: false },
  };
  const of = (h: string) => battery[h]!;
  assert.deepEqual(sparingLowBattery(["dying", "mains", "flat", "full"], of), ["mains", "full", "dying", "flat"]);
  assert.deepEqual(sparingLowBattery(["dying", "plugged"], of), ["plugged", "dying"], "a charging phone is preferred to one running down");
  const none = ["mains", "full"];
  assert.equal(sparingLowBattery(none, of), none, "nothing low: the placement's order as it is");
  const all = ["flat", "dying"];
  assert.equal(sparingLowBattery(all, of), all, "all low: still served, in the placement's order");
});
