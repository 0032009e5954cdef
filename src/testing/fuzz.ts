// Settings shared by the fuzz tests: a fixed seed so CI runs the same cases every time, and
// FUZZ_SEED / FUZZ_RUNS to explore further locally. fast-check prints the seed and path of a failure.
import type fc from "fast-check";

/** fast-check parameters for a property run `runs` times in CI (FUZZ_RUNS overrides, FUZZ_SEED reseeds). */
export function fuzzParams<T>(runs: number): fc.Parameters<T> {
  const seed = process.env.FUZZ_SEED === undefined ? 0x5eed : Number(process.env.FUZZ_SEED);
  const scaled = process.env.FUZZ_RUNS === undefined ? runs : Number(process.env.FUZZ_RUNS);
  return { seed, numRuns: scaled, includeErrorInReport: true };
}

/** Runs `f`; its result, or the error it throws when that is an instance of `expected` (any other throw propagates). */
export function cleanlyRefused<T>(f: () => T, expected: abstract new (...args: never[]) => Error): T | Error {
  try {
    return f();
  } catch (e) {
    if (e instanceof expected) return e;
    throw e;
  }
}
