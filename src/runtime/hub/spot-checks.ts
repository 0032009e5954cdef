// Spot checks of expert results (--verify-rate): a share of the calls, chosen at random, is computed
// twice — by the next ready replica of the expert when there is one, else by the base station itself
// (hub/referee.ts) — and the results are compared row by row within the dtypes' tolerance
// (policies/result-match.ts). When two replicas disagree the base station computes the call as
// referee. A device whose result disagrees with the base station's is taken out of service at once, and
// the call is answered with the result that agrees with the base station's (else its own). The step
// waits for both opinions: that is the checks' cost.
import type { ExpertCall, ExpertResult } from "../../moe/executor.js";
import { resultMismatch, type ResultTolerance } from "../../policies/result-match.js";
import { decodeActivations, encodeActivations, type WireDType } from "../../protocol/activations.js";
import type { Device } from "./device.js";
import type { Referee } from "./referee.js";

export interface SpotCheckOptions {
  /** The share of expert calls checked, 0 to 1. */
  rate: number;
  tolerance: ResultTolerance;
  wireDType: WireDType;
  hidden: number;
}

/** One checked call and its second opinions. */
export interface Check {
  readonly call: ExpertCall;
  /** the replica asked too, and its answer (null: it failed, and the base station answers instead) */
  replica: { device: Device; output: Promise<Float32Array | null> } | null;
}

export class SpotChecks {
  /** Calls whose result was compared with a second opinion, so far. */
  verified = 0;
  /** Device results that disagreed with the base station's, so far. */
  mismatched = 0;

  /** `quarantine` takes a device out of service at once, saying why after "out of service". */
  constructor(
    private readonly opts: SpotCheckOptions,
    private readonly referee: Referee,
    private readonly quarantine: (d: Device, why: string, wrongResults: boolean) => void,
  ) {}

  /** A check for `call` if it is one of those chosen (at random, `rate` of them), else null. */
  choose(call: ExpertCall): Check | null {
    return Math.random() < this.opts.rate ? { call, replica: null } : null;
  }

  /**
   * Asks for the second opinions of a layer's checked calls, once their first calls are out: from each
   * expert's ready host after its first, one frame per device (`frame` sends it and judges its results
   * plausible); a call no other replica holds is answered by the base station when it is settled.
   */
  ask(checks: readonly Check[], hostsOf: (layer: number, expert: number) => readonly Device[] | null, frame: (d: Device, calls: ExpertCall[]) => Promise<ExpertResult[]>): void {
    const groups = new Map<Device, Check[]>();
    for (const c of checks) {
      const second = (hostsOf(c.call.layer, c.call.expert) ?? []).filter((d) => d.ready)[1];
      if (second) (groups.get(second) ?? groups.set(second, []).get(second)!).push(c);
    }
    for (const [device, group] of groups) {
      const answered = frame(device, group.map((c) => c.call)).then((rs) => rs.map((r) => r.output), () => null);
      group.forEach((c, i) => (c.replica = { device, output: answered.then((outputs) => outputs?.[i] ?? null) }));
    }
  }

  /**
   * The results to use of a frame that `device` answered (each plausible): for a checked call the one
   * that agrees with the base station's, the others as they came.
   */
  async settle(device: Device, checks: ReadonlyArray<Check | null>, results: readonly ExpertResult[]): Promise<ExpertResult[]> {
    const used = [...results];
    for (const [i, c] of checks.entries()) if (c) used[i] = { ...results[i]!, ...(await this.judge(c, device, results[i]!.output)) };
    return used;
  }

  /** The output to use for a checked call that `device` answered with `output`, and who computed it (device absent: the base station). */
  private async judge(c: Check, device: Device, output: Float32Array): Promise<{ output: Float32Array; device: string | undefined }> {
    this.verified++;
    // a replica that failed, or that the call failed over to, gives no second opinion: the base station does
    const replica = c.replica && c.replica.device !== device ? await c.replica.output : null;
    if (replica && !resultMismatch(output, replica, this.opts.hidden, this.opts.tolerance)) return { output, device: device.name };
    // the base station referees: each result that disagrees with its own is found out
    const own = this.own(c.call);
    const deviceRight = this.agrees(device, output, own, c.call);
    const replicaRight = replica !== null && this.agrees(c.replica!.device, replica, own, c.call);
    return deviceRight ? { output, device: device.name } : replicaRight ? { output: replica, device: c.replica!.device.name } : { output: own, device: undefined };
  }

  /** Whether `output` agrees with the base station's `own`; a device whose result does not is taken out of service. */
  private agrees(device: Device, output: Float32Array, own: Float32Array, { layer, expert }: ExpertCall): boolean {
    const m = resultMismatch(output, own, this.opts.hidden, this.opts.tolerance);
    if (!m) return true;
    this.mismatched++;
    const pct = (x: number) => `${(100 * x).toPrecision(3)} %`;
    this.quarantine(device, `for a wrong result: expert ${expert} of layer ${layer}, row ${m.row} ${pct(m.difference)} off the base station's (tolerance ${pct(this.opts.tolerance.relative)})`, true);
    return false;
  }

  /** The base station's answer, computed from the input as the wire carried it to the devices. */
  private own(call: ExpertCall): Float32Array {
    const wire = this.opts.wireDType;
    return this.referee.answer({ ...call, input: decodeActivations(encodeActivations(call.input, wire), wire) });
  }
}
