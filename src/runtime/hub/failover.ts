// The hub's expert executor: each call goes to the first ready host of its expert, one frame per device
// and layer; a failed frame's calls go on to their experts' next hosts. An expert with no ready host at
// all fails its call with ExpertsUnavailable, so the step fails rather than silently dropping it. A frame
// whose results fail the plausibility checks (policies/result-bounds.ts) fails like a lost device.
import { ExpertsUnavailable, type ExpertCall, type ExpertResult } from "../../moe/executor.js";
import type { ResultBounds } from "../../policies/result-bounds.js";
import type { Calls } from "./calls.js";
import type { Device } from "./device.js";

/** Consecutive failed calls (errors, malformed or implausible results, missed deadlines) that put a device out of service. */
const QUARANTINE_AFTER = 3;

/** One expert call of a dispatch, on its way through the expert's hosts. */
interface Job {
  call: ExpertCall;
  /** index into the expert's hosts of the next one to try */
  next: number;
  /** why the last host tried failed (null: none was tried) */
  failure: Error | null;
  resolve: (r: ExpertResult) => void;
  reject: (e: Error) => void;
}

export class Failover {
  /** Calls that failed on one host and were sent to another, so far. */
  retries = 0;
  /** Expert results that failed the checks (non-finite, all-zero or out-of-bounds rows), so far. */
  rejectedResults = 0;

  /**
   * `hostsOf` gives an expert's hosts in the placement in use, in preference order (null: no placement
   * yet); `quarantine` takes a device that keeps failing out of service; `bounds` judges results and
   * learns from the accepted ones.
   */
  constructor(
    private readonly hostsOf: (layer: number, expert: number) => Device[] | null,
    private readonly calls: Calls,
    private readonly quarantine: (d: Device, why: Error) => void,
    private readonly bounds: ResultBounds,
    private readonly hidden: number,
  ) {}

  dispatch(calls: readonly ExpertCall[]): Array<Promise<ExpertResult>> {
    const jobs: Job[] = [];
    const results = calls.map((call) => new Promise<ExpertResult>((resolve, reject) => jobs.push({ call, next: 0, failure: null, resolve, reject })));
    this.route(jobs);
    return results;
  }

  /**
   * Sends each job to the next ready host of its expert, one frame per device. When a frame fails, its
   * jobs go on to their experts' next hosts; a job served by any host but its expert's first counts as a
   * retry, and one with no host left fails with the last host's error.
   */
  private route(jobs: readonly Job[]): void {
    const groups = new Map<Device, Job[]>();
    for (const job of jobs) {
      const device = this.nextHost(job);
      if (device) (groups.get(device) ?? groups.set(device, []).get(device)!).push(job);
      else job.reject(job.failure ?? this.unavailable(job.call));
    }
    for (const [device, group] of groups) {
      const failed = (e: Error) => {
        if (device.connected && ++device.failures >= QUARANTINE_AFTER) this.quarantine(device, e);
        for (const j of group) j.failure = e;
        this.route(group);
      };
      this.calls.call(device, group.map((j) => j.call)).then((results) => {
        const bad = this.implausible(device, group, results);
        if (bad) return failed(bad);
        device.failures = 0;
        group.forEach((j, i) => {
          const { layer, expert, input } = j.call;
          this.bounds.learn(layer, expert, input, results[i]!.output, this.hidden);
          j.resolve(results[i]!);
        });
      }, failed);
    }
  }

  /** Why a frame's results cannot be used (the first implausible one, each counted), or null. */
  private implausible(device: Device, group: readonly Job[], results: readonly ExpertResult[]): Error | null {
    let first: Error | null = null;
    group.forEach(({ call: { layer, expert, input } }, i) => {
      const why = this.bounds.check(layer, expert, input, results[i]!.output, this.hidden);
      if (!why) return;
      this.rejectedResults++;
      first ??= new Error(`device ${device.name} returned ${why} for expert ${expert} of layer ${layer}`);
    });
    return first;
  }

  private nextHost(job: Job): Device | null {
    const hosts = this.hostsOf(job.call.layer, job.call.expert) ?? [];
    while (job.next < hosts.length) {
      const n = job.next++;
      const device = hosts[n]!;
      if (!device.ready) continue;
      if (n > 0) this.retries++;
      return device;
    }
    return null;
  }

  private unavailable({ layer, expert }: ExpertCall): ExpertsUnavailable {
    const hosts = this.hostsOf(layer, expert);
    const why = !hosts
      ? "no placement is in use yet: waiting for devices"
      : hosts.length === 0
        ? "it is placed on no device"
        : `its ${hosts.length === 1 ? "host" : "hosts"}: ${hosts.map((d) => `${d.name} ${!d.connected ? "gone" : d.quarantined ? "out of service" : "not ready"}`).join(", ")}`;
    return new ExpertsUnavailable(`no live device holds expert ${expert} of layer ${layer} (${why})`);
  }
}
