// Replica choice: when an expert lives on several devices, serve it from the one that is fastest now.
// The channel changes every step, so the fixed preference order of the placement is only the default.

/** The host of `hosts` with the least expected call latency (`deviceMs`, per device); the first on a tie. */
export function chooseReplica(hosts: readonly number[], deviceMs: ArrayLike<number>): number {
  if (hosts.length === 0) throw new Error("an expert with no host");
  let best = hosts[0]!;
  for (const h of hosts) if (deviceMs[h]! < deviceMs[best]!) best = h;
  return best;
}
