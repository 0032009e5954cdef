// Spot checks' verdicts, with stand-ins for the devices and the base station's own answers: which result
// is used, and which devices are found out, for every way two or three opinions can fall.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { ExpertCall, ExpertResult } from "../../moe/executor.js";
import { resultTolerance } from "../../policies/result-match.js";
import type { Device } from "./device.js";
import type { Referee } from "./referee.js";
import { SpotChecks } from "./spot-checks.js";

const hidden = 4;
const truth = new Float32Array([1, -2, 3, 0.5]);
const wrong = truth.map((x) => x * 1.05);
const call: ExpertCall = { layer: 1, expert: 2, rows: 1, input: new Float32Array([0.5, 0.25, -1, 2]) };
const result = (output: Float32Array): ExpertResult => ({ output, computeMs: 1, roundTripMs: 2 });

/** Spot checks of every call, two devices holding the expert (a first, b second), and what happened. */
function setup(bAnswers: Float32Array | "fails" | "absent") {
  const a = { name: "a", ready: true } as Device, b = { name: "b", ready: true } as Device;
  const out: Device[] = [];
  let own = 0;
  const referee = { answer: () => (own++, truth) } as unknown as Referee;
  const checks = new SpotChecks({ rate: 1, tolerance: resultTolerance("f32", "f32"), wireDType: "f32", hidden }, referee, (d) => out.push(d));
  const check = checks.choose(call)!;
  checks.ask([check], () => (bAnswers === "absent" ? [a] : [a, b]), async (d) => {
    assert.equal(d, b, "the second opinion is asked of the next ready host");
    if (bAnswers === "fails") throw new Error("b failed");
    return [result(bAnswers as Float32Array)];
  });
  /** The output used when `a` answers `output`. */
  const settle = async (output: Float32Array) => (await checks.settle(a, [check], [result(output)]))[0]!.output;
  return { a, b, checks, check, out, settle, own: () => own };
}

test("two replicas that agree: the first's result, and no work for the base station", async () => {
  const s = setup(truth);
  assert.equal(await s.settle(truth), truth);
  assert.deepEqual([s.own(), s.out.length, s.checks.verified, s.checks.mismatched], [0, 0, 1, 0]);
});

test("two replicas that disagree: the base station referees, and finds out whichever is wrong", async () => {
  let s = setup(wrong);
  assert.deepEqual(await s.settle(truth), truth, "the first was right");
  assert.deepEqual([s.out, s.own(), s.checks.mismatched], [[s.b], 1, 1], "the second opinion was wrong: that replica is out");
  s = setup(truth);
  assert.deepEqual(await s.settle(wrong), truth, "the second replica's result is used");
  assert.deepEqual([s.out, s.checks.mismatched], [[s.a], 1]);
  s = setup(wrong.map((x) => x * 2));
  assert.deepEqual(await s.settle(wrong), truth, "neither: the base station's own");
  assert.deepEqual([s.out, s.checks.mismatched], [[s.a, s.b], 2]);
});

test("without a second replica, or when it fails, the base station checks", async () => {
  for (const b of ["absent", "fails"] as const) {
    let s = setup(b);
    assert.deepEqual(await s.settle(truth), truth);
    assert.deepEqual([s.own(), s.out.length], [1, 0], `${b}: agreed`);
    s = setup(b);
    assert.deepEqual(await s.settle(wrong), truth, `${b}: the base station's result replaces the wrong one`);
    assert.deepEqual([s.out, s.checks.verified, s.checks.mismatched], [[s.a], 1, 1]);
  }
});

test("a call that failed over to the replica asked for the second opinion is checked by the base station", async () => {
  const s = setup(truth);
  const [r] = await s.checks.settle(s.b, [s.check], [result(wrong)]);
  assert.deepEqual([r!.output, s.out, s.own()], [truth, [s.b], 1], "b's own second opinion does not vouch for b");
});
