// The hub's small parts: the token bucket, device names, printable log text and the identities kept.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Identities, MAX_IDENTITIES } from "./identities.js";
import { Complaints, printable } from "./complaints.js";
import { TokenBucket } from "./limits.js";
import { MAX_NAME_LENGTH, safeName, uniqueName } from "../../protocol/names.js";

test("a token bucket passes a burst, then says how long its debt takes to repay; it refills at its rate up to the burst", () => {
  let now = 0;
  const bucket = new TokenBucket(10, 5, () => now);
  for (let i = 0; i < 5; i++) assert.equal(bucket.take(1), 0);
  assert.equal(bucket.take(1), 100, "one token in debt at 10 per second: 100 ms");
  now = 10_000;
  assert.equal(bucket.take(5), 0, "refilled, but only up to the burst");
  assert.equal(bucket.take(20), 2000, "a take larger than the burst passes, in debt");
});

test("device names: a safe charset, at most 64 characters, never empty, unique with a suffix", () => {
  assert.equal(safeName("gpu-0.local_A"), "gpu-0.local_A");
  assert.equal(safeName("a\nb\x1b[31m c/é"), "a_b__31m_c__");
  assert.equal(safeName(""), "device");
  assert.equal(safeName("x".repeat(1000)).length, MAX_NAME_LENGTH);
  const taken = new Set(["d", "d-2", "y".repeat(64)]);
  assert.equal(uniqueName("e", (n) => taken.has(n)), "e");
  assert.equal(uniqueName("d", (n) => taken.has(n)), "d-3");
  assert.equal(uniqueName("y".repeat(64), (n) => taken.has(n)), `${"y".repeat(62)}-2`);
});

test("log text is printable ASCII and bounded; complaints past the first few per peer and reason are counted, then summarised", () => {
  assert.equal(printable("a\nb\x1b[0m\u2028é"), "a\\u000ab\\u001b[0m\\u2028\\u00e9");
  assert.equal(printable("z".repeat(300), 10), "zzzzzzzzzz...");
  const lines: string[] = [];
  const c = new Complaints((l) => lines.push(l), 2, 60_000);
  const logged = Array.from({ length: 5 }, (_, i) => c.report("dev", "bad things", `bad thing ${i}`));
  assert.deepEqual(logged, [true, true, false, false, false]);
  assert.equal(c.report("other", "bad things", "its own"), true, "counted per peer");
  c.close();
  assert.deepEqual(lines, ["dev: bad thing 0", "dev: bad thing 1", "other: its own", "dev: 3 more bad things"]);
});

test("identities: a ready that changes nothing writes nothing; beyond MAX_IDENTITIES a new identity finds no room, a known one does", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-identities-"));
  try {
    const file = path.join(dir, "devices.json");
    const ids = new Identities(file);
    ids.joined("d", "SHA256:" + "a".repeat(43));
    ids.holds("SHA256:" + "a".repeat(43), [[0, 1]]);
    rmSync(file);
    ids.holds("SHA256:" + "a".repeat(43), [[0, 1]]);
    assert.ok(!existsSync(file), "the same experts again: no write");
    ids.holds("SHA256:" + "a".repeat(43), [[0, 2]]);
    assert.ok(existsSync(file), "a change is written");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const many = new Identities();
  for (let i = 0; i < MAX_IDENTITIES; i++) many.joined(`d${i}`, `SHA256:${String(i).padStart(43, "0")}`);
  assert.ok(many.fullFor(`SHA256:${"x".repeat(43)}`));
  assert.ok(!many.fullFor(`SHA256:${"0".repeat(43)}`), "a known identity always has room");
});
