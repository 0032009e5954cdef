// Which streamed weights a device removes from its cache to keep it within a budget: the oldest written
// first, never a tensor of an expert it holds now. A pure function over the cache's listing, shared by the
// Node device's files (runtime/weight-cache.ts) and a page's storage (web/device/browser-weights.ts).
// The cache is what lets a device rejoin without a download; without a bound, a base station that
// assigns experts of model after model (or a hostile one making up model ids) would fill the disk.

export interface CachedTensor {
  /** the model id it was streamed for (one folder per model) */
  model: string;
  name: string;
  bytes: number;
  /** when it was written, ms since the epoch */
  writtenAt: number;
}

/**
 * The entries to remove so that the rest take at most `budget` bytes, oldest first, skipping those
 * `keep` says are in use. Where the kept ones alone exceed the budget, every other entry goes and the
 * kept ones stay: a device never drops what it serves from.
 */
export function cacheEvictions(entries: readonly CachedTensor[], keep: (e: CachedTensor) => boolean, budget: number): CachedTensor[] {
  let total = entries.reduce((n, e) => n + e.bytes, 0);
  const out: CachedTensor[] = [];
  for (const e of [...entries].sort((a, b) => a.writtenAt - b.writtenAt || a.model.localeCompare(b.model) || a.name.localeCompare(b.name))) {
    if (total <= budget) break;
    if (keep(e)) continue;
    out.push(e);
    total -= e.bytes;
  }
  return out;
}
