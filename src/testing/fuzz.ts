// Settings shared by the fuzz tests: a fixed seed so CI runs the same cases every time, and
// FUZZ_SEED / FUZZ_RUNS to explore further locally. fast-check prints the seed and path of a failure.
import fc from "fast-check";

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

/** Damage any parser of hostile bytes must survive: bytes overwritten, the end cut off, bytes appended. */
export type ByteDamage = { flip: Array<[at: number, value: number]> } | { truncate: number } | { extend: Uint8Array };

export const byteDamage: fc.Arbitrary<ByteDamage> = fc.oneof(
  fc.record({ flip: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }) }),
  fc.record({ truncate: fc.nat() }),
  fc.record({ extend: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
);

export const isByteDamage = (m: object): m is ByteDamage => "flip" in m || "truncate" in m || "extend" in m;

/** `bytes` with `m` done to it. */
export function damage(bytes: Uint8Array, m: ByteDamage): Uint8Array {
  if ("flip" in m) {
    const out = bytes.slice();
    for (const [at, v] of m.flip) if (out.length > 0) out[at % out.length] = v;
    return out;
  }
  if ("truncate" in m) return bytes.subarray(0, m.truncate % (bytes.length + 1));
  return Uint8Array.from([...bytes, ...m.extend]);
}
