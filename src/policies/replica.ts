// Replica choice: when an expert lives on several devices, serve it from the one that is fastest now.
// The channel changes every step, so the fixed preference order of the placement is only the default;
// and a device running down its battery is spared where another replica can serve.

/** The host of `hosts` with the least expected call latency (`deviceMs`, per device); the first on a tie. */
export function chooseReplica(hosts: readonly number[], deviceMs: ArrayLike<number>): number {
  if (hosts.length === 0) throw new Error("an expert with no host");
  let best = hosts[0]!;
  for (const h of hosts) if (deviceMs[h]! < deviceMs[best]!) best = h;
  return best;
}

/** Below this battery level (0..1), a device that is not charging is on low battery. */
export const LOW_BATTERY = 0.2;

/** Whether a device with this battery (null: none reported, as on mains power) should be spared: below `threshold` and not charging. */
export function onLowBattery(battery: { level: number; charging: boolean } | null, threshold = LOW_BATTERY): boolean {
  return battery !== null && !battery.charging && battery.level < threshold;
}

/**
 * An expert's hosts in the order to try them: the placement's preference order, with hosts on low
 * battery moved after the others (in their own order), so a phone running down serves only when no
 * other replica can. Returns `hosts` itself when nothing moves.
 */
export function sparingLowBattery<T>(hosts: readonly T[], battery: (host: T) => { level: number; charging: boolean } | null, threshold = LOW_BATTERY): readonly T[] {
  const low = hosts.filter((h) => onLowBattery(battery(h), threshold));
  if (low.length === 0 || low.length === hosts.length) return hosts;
  return [...hosts.filter((h) => !low.includes(h)), ...low];
}
