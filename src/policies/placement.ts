// Where each (layer, expert) lives: a pure function of the devices' declared capabilities and current
// holdings, shared by the runtime and the simulator. Each device's fair share of the expert copies is
// proportional to its speed and capped by its memory. Experts a device already holds stay there while
// it is within its share, so a re-plan (a device joins or leaves) moves as few weights as it can; the
// rest go to the devices with the lowest load relative to their speed. Among an expert's hosts, the
// first (the one that serves it while it is up) is the one that is first least often relative to its
// speed, so that serving is balanced too, not only holding.

export interface PlacementDevice {
  /** Measured memory read bandwidth: an expert call at batch 1 is bound by it. */
  readGbps: number;
  /** Bytes the device offers for expert weights (0: not limited). */
  memoryBytes?: number;
  /** The [layer, expert] pairs it holds now. */
  holds?: ReadonlyArray<readonly [number, number]>;
}

export interface PlacementOptions {
  /** Devices holding each expert (default 1; at most the number of devices). */
  replicas?: number;
  /** Bytes of one expert's weights as the devices hold them, for the memory limits (0: not limited). */
  expertBytes?: number;
}

export interface Placement {
  /** hosts[layer][expert]: the devices holding it, in preference order (empty for dense layers). */
  hosts: number[][][];
  /** experts[device]: the [layer, expert] pairs it holds. */
  experts: Array<Array<[number, number]>>;
}

export function placeExperts(sparseLayers: readonly boolean[], experts: number, devices: readonly PlacementDevice[], opts: PlacementOptions = {}): Placement {
  if (devices.length === 0) throw new Error("no devices to place experts on");
  const copies = Math.min(Math.max(1, opts.replicas ?? 1), devices.length);
  const expertBytes = opts.expertBytes ?? 0;
  const slots: Array<[number, number]> = [];
  sparseLayers.forEach((sparse, layer) => {
    for (let e = 0; e < (sparse ? experts : 0); e++) slots.push([layer, e]);
  });
  const speed = devices.map((d) => (d.readGbps > 0 ? d.readGbps : 1));
  const capacity = devices.map((d) => (expertBytes > 0 && d.memoryBytes ? Math.min(slots.length, Math.floor(d.memoryBytes / expertBytes)) : slots.length));
  const needed = slots.length * copies;
  const offered = capacity.reduce((s, c) => s + c, 0);
  if (offered < needed) {
    const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
    throw new Error(`the devices' memory holds ${offered} expert copies; the model needs ${needed} (${slots.length} experts × ${copies} of ${gib(expertBytes)} each, ${gib(needed * expertBytes)} in all)`);
  }
  // the shares from speeds scaled by a power of two (exact: the same shares) to at most 1, so that speeds a
  // device claims near the largest number do not sum to Infinity and make every share NaN (nothing kept)
  const scale = 2 ** -Math.max(0, Math.ceil(Math.log2(speed.reduce((m, v) => Math.max(m, v), 0))));
  const scaled = speed.map((v) => v * scale);
  const totalSpeed = scaled.reduce((s, v) => s + v, 0);
  const share = devices.map((_, d) => Math.min(capacity[d]!, Math.floor((needed * scaled[d]!) / totalSpeed)));
  const load = devices.map(() => 0);
  const chosen = slots.map(() => [] as number[]);

  // keep what devices hold, within their share, as many copies as can be kept: a slot that finds its
  // holders full moves one of their kept slots to another of that slot's holders (an augmenting path),
  // so a device that comes back to the weights it kept (a reopened tab) gets them all back, whatever
  // its place in the list, where the others can keep their shares of what they hold meanwhile
  // holding[d * slots + s]: device d holds slot s; a pair outside the model (held for another model) is none
  const slotOf = new Map(slots.map(([l, e], s) => [l * experts + e, s]));
  const holding = new Uint8Array(devices.length * slots.length);
  devices.forEach((d, i) => {
    for (const [l, e] of d.holds ?? []) {
      const s = e >= 0 && e < experts ? slotOf.get(l * experts + e) : undefined;
      if (s !== undefined) holding[i * slots.length + s] = 1;
    }
  });
  const holds = (d: number, s: number) => holding[d * slots.length + s] === 1;
  const holders = slots.map((_, s) => {
    const out: number[] = [];
    for (let d = 0; d < devices.length; d++) if (holds(d, s)) out.push(d);
    return out;
  });
  const kept = devices.map(() => [] as number[]);
  const keep = (s: number, seen: Set<number>): boolean => {
    // a holder with room ends the path here; only when none has room does it go through full ones (so
    // where many hold the same experts, a search is one step, not a walk through every full device)
    const free = holders[s]!.find((d) => !seen.has(d) && !chosen[s]!.includes(d) && load[d]! < share[d]!);
    if (free !== undefined) {
      chosen[s]!.push(free);
      kept[free]!.push(s);
      load[free]!++;
      return true;
    }
    for (const d of holders[s]!) {
      if (seen.has(d) || chosen[s]!.includes(d)) continue;
      seen.add(d);
      for (const other of kept[d]!) {
        if (other === s || !keep(other, seen)) continue;
        // `other` found another holder: it gives its place on d to s
        chosen[other]!.splice(chosen[other]!.indexOf(d), 1);
        kept[d]!.splice(kept[d]!.indexOf(other), 1, s);
        chosen[s]!.push(d);
        return true;
      }
    }
    return false;
  };
  // the full devices a failed search went through lead to no room, and go on not to until a search
  // succeeds and moves something: the next searches skip them (else each failure walks them all again)
  let dead = new Set<number>();
  for (let s = 0; s < slots.length; s++) {
    while (chosen[s]!.length < copies) {
      const seen = new Set(dead);
      if (keep(s, seen)) dead.clear();
      else {
        dead = seen;
        break;
      }
    }
  }
  // the rest to the least loaded devices relative to speed that have room; on a tie, one that holds
  // the expert already, then the lower index
  slots.forEach(([l, e], s) => {
    while (chosen[s]!.length < copies) {
      let best = -1;
      const score = (d: number) => (load[d]! + 1) / speed[d]!;
      for (let d = 0; d < devices.length; d++) {
        if (chosen[s]!.includes(d) || load[d]! >= capacity[d]!) continue;
        if (best < 0 || score(d) < score(best) || (score(d) === score(best) && holds(d, s) && !holds(best, s))) best = d;
      }
      if (best < 0) throw new Error(`no device has room for another copy of expert ${e} of layer ${l}`);
      chosen[s]!.push(best);
      load[best]!++;
    }
  });

  const primary = devices.map(() => 0);
  const placement: Placement = { hosts: sparseLayers.map(() => []), experts: devices.map(() => []) };
  slots.forEach(([l, e], s) => {
    const hosts = chosen[s]!.sort((a, b) => (primary[a]! + 1) / speed[a]! - (primary[b]! + 1) / speed[b]! || a - b);
    primary[hosts[0]!]!++;
    for (const d of hosts) placement.experts[d]!.push([l, e]);
    placement.hosts[l]![e] = hosts;
  });
  return placement;
}
