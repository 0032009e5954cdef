// The hub's expert executor: each call goes to the first ready host of its expert, one frame per device
// and layer; a failed frame's calls go on to their experts' next hosts. An expert with no ready host at
// all fails its call with ExpertsUnavailable, so the step fails rather than silently dropping it. A frame
// whose results fail the plausibility checks (policies/result-bounds.ts) fails like a lost device; the
// calls chosen for a spot check (hub/spot-checks.ts) wait for a second opinion, and a device taken out
// of service has no unchecked result of its used.
import { ExpertsUnavailable, type ExpertCall, type ExpertResult } from "../../moe/executor.js";
import type { ResultBounds } from "../../policies/result-bounds.js";
import type { Calls } from "./calls.js";
import type { Device } from "./device.js";
import type { Check, SpotChecks } from "./spot-checks.js";

/** Consecutive failed calls (errors, malformed or implausible results, missed deadlines) that put a device out of service. */
const QUARANTINE_AFTER = 3;

/** One expert call of a dispatch, on its way through the expert's hosts. */
interface Job {
  call: ExpertCall;
  /** the hosts tried so far: the hosts' order can change between tries (a battery report, a re-placement), so an index into it would skip or repeat one */
  tried: Set<Device>;
  /** why the last host tried failed (null: none was tried) */
  failure: Error | null;
  /** its spot check, when it was chosen for one */
  check: Check | null;
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
   * yet); `quarantine` takes a device that keeps failing out of service (saying why after "out of
   * service", and whether it returned wrong results rather than only failing); `bounds` judges results and learns from those used (null: results are not checked);
   * `checks` has some calls computed twice (null: none).
   */
  constructor(
    private readonly hostsOf: (layer: number, expert: number) => readonly Device[] | null,
    private readonly calls: Calls,
    private readonly quarantine: (d: Device, why: string, wrongResults: boolean) => void,
    private readonly bounds: ResultBounds | null,
    private readonly checks: SpotChecks | null,
    private readonly hidden: number,
  ) {}

  dispatch(calls: readonly ExpertCall[]): Array<Promise<ExpertResult>> {
    const jobs: Job[] = [];
    const results = calls.map((call) => new Promise<ExpertResult>((resolve, reject) => jobs.push({ call, tried: new Set(), failure: null, check: this.checks?.choose(call) ?? null, resolve, reject })));
    this.route(jobs);
    const checked = jobs.flatMap((j) => j.check ?? []);
    if (checked.length > 0) this.checks!.ask(checked, this.hostsOf, (d, c) => this.frame(d, c));
    return results;
  }

  /**
   * Sends each job to the next ready host of its expert, one frame per device. When a frame fails, its
   * jobs go on to hosts of their experts not tried yet; a job served after another host was tried, or by
   * any host but its expert's first, counts as a retry, and one with no host left fails with the last host's error.
   */
  private route(jobs: readonly Job[]): void {
    const groups = new Map<Device, Job[]>();
    for (const job of jobs) {
      const device = this.nextHost(job);
      if (device) (groups.get(device) ?? groups.set(device, []).get(device)!).push(job);
      else job.reject(job.failure ?? this.unavailable(job.call));
    }
    for (const [device, group] of groups) {
      this.frame(device, group.map((j) => j.call)).then(
        (results) => this.use(device, group, results),
        (e: Error) => {
          for (const j of group) j.failure = e;
          this.route(group);
        },
      );
    }
  }

  /**
   * One frame of calls to `device`, its results judged plausible; a failed frame counts against the
   * device, and puts it out of service after QUARANTINE_AFTER in a row.
   */
  private frame(device: Device, calls: readonly ExpertCall[]): Promise<ExpertResult[]> {
    return this.calls
      .call(device, calls)
      .then((results) => {
        const bad = this.implausible(device, calls, results);
        if (bad) {
          device.wrongInStreak = true;
          throw bad;
        }
        device.failures = 0;
        device.wrongInStreak = false;
        return results;
      })
      .catch((e: Error) => {
        if (device.connected && ++device.failures >= QUARANTINE_AFTER) this.quarantine(device, `after ${device.failures} failed calls in a row (last: ${e.message})`, device.wrongInStreak);
        throw e;
      });
  }

  /**
   * Answers a frame's jobs with its results, a checked job's once its check is settled. When the
   * device is out of service by then (a check found it out), its unchecked jobs go on to other hosts.
   */
  private async use(device: Device, group: readonly Job[], results: ExpertResult[]): Promise<void> {
    if (group.some((j) => j.check)) {
      try {
        results = await this.checks!.settle(device, group.map((j) => j.check), results);
      } catch (e) {
        for (const j of group) j.reject(e as Error);
        return;
      }
    }
    const again: Job[] = [];
    group.forEach((j, i) => {
      if (device.quarantined && !j.check) {
        j.failure = new Error(`device ${device.name} is out of service`);
        return again.push(j);
      }
      // the bounds learn from what is used: results that passed a spot check, the base station's own
      // where a device was found out, and the others' until their devices are suspected
      const { layer, expert, input } = j.call;
      this.bounds?.learn(layer, expert, input, results[i]!.output, this.hidden);
      j.resolve(results[i]!);
    });
    if (again.length > 0) this.route(again);
  }

  /** Why a frame's results cannot be used (the first implausible one, each counted), or null. */
  private implausible(device: Device, calls: readonly ExpertCall[], results: readonly ExpertResult[]): Error | null {
    if (!this.bounds) return null;
    let first: Error | null = null;
    calls.forEach(({ layer, expert, input }, i) => {
      const why = this.bounds!.check(layer, expert, input, results[i]!.output, this.hidden);
      if (!why) return;
      this.rejectedResults++;
      first ??= new Error(`device ${device.name} returned ${why} for expert ${expert} of layer ${layer}`);
    });
    return first;
  }

  private nextHost(job: Job): Device | null {
    const hosts = this.hostsOf(job.call.layer, job.call.expert) ?? [];
    const device = hosts.find((d) => d.ready && !job.tried.has(d));
    if (!device) return null;
    if (job.tried.size > 0 || device !== hosts[0]) this.retries++;
    job.tried.add(device);
    return device;
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
