// The base station's option parsers: API, admin and dashboard view keys (from the command line, a file or the
// environment), the body limit, the request timeout and the spot checks' rate, each refused at start
// with the rule when a value could never work.
import { readFileSync } from "node:fs";
import { InvalidArgumentError } from "commander";
import { byteSize, duration } from "./options.js";

/** What `Authorization: Bearer` can carry (RFC 6750's b64token, as bearerAuth matches it): a key outside it could never be used. */
const API_KEY = /^(?=.{8,256}$)[A-Za-z0-9._~+/-]+=*$/;
const keyRule = (what: string) => `${what} is 8 to 256 characters of A-Z a-z 0-9 . _ ~ + / - (then = padding)`;
const API_KEY_RULE = keyRule("an API key");

/** Keys from a file: one a line; blank lines and # comments skipped. */
export function readKeys(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new Error(`--api-key-file ${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const keys = text.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  if (keys.length === 0) throw new Error(`--api-key-file ${file}: holds no key`);
  const bad = keys.findIndex((k) => !API_KEY.test(k));
  if (bad >= 0) throw new Error(`--api-key-file ${file}: key ${bad + 1}: ${API_KEY_RULE}`);
  return keys;
}

export function apiKey(v: string, all: string[]): string[] {
  if (!API_KEY.test(v)) throw new InvalidArgumentError(API_KEY_RULE);
  return [...all, v];
}

export function adminKey(v: string, all: string[]): string[] {
  if (!API_KEY.test(v)) throw new InvalidArgumentError(keyRule("an admin key"));
  return [...all, v];
}

export function viewKey(v: string, all: string[]): string[] {
  if (!API_KEY.test(v)) throw new InvalidArgumentError(keyRule("a view key"));
  return [...all, v];
}

/**
 * The admin keys: those given, else $DISTMOE_ADMIN_KEY. One that is also an API key is refused: every
 * API user would be an operator.
 */
export function adminKeys(given: readonly string[], apiKeys: readonly string[]): string[] {
  const env = process.env.DISTMOE_ADMIN_KEY;
  if (given.length === 0 && env && !API_KEY.test(env)) throw new Error(`DISTMOE_ADMIN_KEY: ${keyRule("an admin key")}`);
  const keys = given.length > 0 ? [...given] : env ? [env] : [];
  if (keys.some((k) => apiKeys.includes(k))) throw new Error("an admin key must not also be an API key: every API user could then add and revoke join tokens");
  return keys;
}

/** The longest request timeout, ms: what a timer holds; AbortSignal.timeout throws beyond it, on every request. */
const MAX_REQUEST_TIMEOUT_MS = 2 ** 31 - 1;

/** A request timeout: a duration above 0 that a timer holds (about 24 days at most). */
export function requestTimeout(v: string): number {
  const ms = duration(v);
  if (!(ms > 0 && ms <= MAX_REQUEST_TIMEOUT_MS)) throw new InvalidArgumentError(`expected a duration above 0 and at most 596h (what a timer holds), got "${v}"`);
  return ms;
}

/** A body limit: a size of at least 1KiB (below it no completion request fits). */
export function bodySize(v: string): number {
  const n = byteSize(v);
  if (n < 1024) throw new InvalidArgumentError(`expected at least 1KiB, got "${v}"`);
  return n;
}

/** The share of expert calls spot-checked: a number from 0 to 1. */
export function verifyRate(v: string): number {
  const n = v.trim() === "" ? NaN : Number(v);
  if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError(`expected a share of the expert calls from 0 to 1 (e.g. 0.01), got "${v}"`);
  return n;
}
