// Where each (layer, expert) lives: a pure function of the devices' declared capabilities, shared by the
// runtime and (later) the simulator. Default rule: every expert goes to the `replicas` devices with the
// lowest load relative to their speed, so faster devices hold proportionally more experts; among those,
// the one that is first (serves the expert while it is up) is the one that is first least often
// relative to its speed, so that serving is balanced too, not only holding.

export interface DeviceSpeed {
  /** Measured memory read bandwidth: an expert call at batch 1 is bound by it. */
  readGbps: number;
}

export interface Placement {
  /** hosts[layer][expert]: the devices holding it, in preference order (empty for dense layers). */
  hosts: number[][][];
  /** experts[device]: the [layer, expert] pairs it holds. */
  experts: Array<Array<[number, number]>>;
}

export function placeExperts(sparseLayers: readonly boolean[], experts: number, devices: readonly DeviceSpeed[], replicas = 1): Placement {
  if (devices.length === 0) throw new Error("no devices to place experts on");
  const copies = Math.min(Math.max(1, replicas), devices.length);
  const load = devices.map(() => 0);
  const primary = devices.map(() => 0);
  const speed = devices.map((d) => (d.readGbps > 0 ? d.readGbps : 1));
  const placement: Placement = { hosts: [], experts: devices.map(() => []) };
  sparseLayers.forEach((sparse, layer) => {
    const row: number[][] = [];
    for (let e = 0; e < (sparse ? experts : 0); e++) {
      // the least loaded devices relative to speed; ties go to the lower index
      const order = devices.map((_, d) => d).sort((a, b) => (load[a]! + 1) / speed[a]! - (load[b]! + 1) / speed[b]! || a - b);
      const chosen = order.slice(0, copies).sort((a, b) => (primary[a]! + 1) / speed[a]! - (primary[b]! + 1) / speed[b]! || a - b);
      primary[chosen[0]!]!++;
      for (const d of chosen) {
        load[d]!++;
        placement.experts[d]!.push([layer, e]);
      }
      row.push(chosen);
    }
    placement.hosts.push(row);
  });
  return placement;
}
