import { test } from "node:test";
import assert from "node:assert/strict";
import { allocateBandwidth, demandMs, type BandwidthDemand } from "./bandwidth.js";

const cellHz = 20e6;
// received power over noise density, Hz: 1e9 is a strong link (SNR 17 dB on the whole band), 1e7 a weak one
const link = (rx: number) => ({ downRxOverN0: rx * 100, upRxOverN0: rx, downPowerSplit: true });
const demand = (rx: number, kbits: number, fixedMs: number): BandwidthDemand => ({ downBits: kbits * 1000, upBits: kbits * 1000, fixedMs, link: link(rx) });

test("the split equalises the finishing times of the devices in use and beats an equal split", () => {
  const demands = [demand(1e9, 64, 2), demand(1e7, 64, 1), null, demand(3e8, 128, 5)];
  const { shares, finishMs } = allocateBandwidth(demands, cellHz);
  assert.equal(shares[2], 0, "a device not called gets nothing");
  assert.ok(Math.abs(shares.reduce((s, x) => s + x, 0) - 1) < 1e-12, "the whole band is used");
  const times = demands.map((d, i) => (d ? demandMs(d, cellHz, shares[i]!) : null)).filter((t): t is number => t !== null);
  for (const t of times) assert.ok(Math.abs(t - finishMs) <= 1e-6 * finishMs, `finishing times ${times.map((x) => x.toFixed(4)).join(", ")}`);
  const equal = Math.max(...demands.map((d) => (d ? demandMs(d, cellHz, 1 / 3) : 0)));
  assert.ok(finishMs < equal * 0.95, `optimal ${finishMs.toFixed(3)} ms vs equal split ${equal.toFixed(3)} ms`);
  // with the same bits, the weak link needs a larger share than the strong one
  assert.ok(shares[1]! > 2 * shares[0]!, JSON.stringify(shares));
});

test("no demand, no bandwidth; a lone device gets the whole band", () => {
  assert.deepEqual(allocateBandwidth([null, null], cellHz), { shares: [0, 0], finishMs: 0 });
  const lone = allocateBandwidth([null, demand(1e8, 64, 3)], cellHz);
  assert.deepEqual(lone.shares, [0, 1]);
  assert.equal(lone.finishMs, demandMs(demand(1e8, 64, 3), cellHz, 1));
});
