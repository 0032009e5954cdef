// Waiting in tests for something another process or socket will do: poll until it holds, and fail
// after a generous bound (a stuck test, not a slow machine).
import assert from "node:assert/strict";

/** Polls `cond` every 10 ms until it gives a truthy value, and returns that; fails after `ms`. */
export async function until<T>(cond: () => T | Promise<T>, what: string, ms = 60_000): Promise<Exclude<T, false | 0 | "" | null | undefined>> {
  const t0 = performance.now();
  for (;;) {
    const v = await cond();
    if (v) return v as Exclude<T, false | 0 | "" | null | undefined>;
    assert.ok(performance.now() - t0 < ms, `waited ${ms} ms for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
