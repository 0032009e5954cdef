// The wireless cell over time: every device's large-scale gain (path loss and shadowing, fixed for a
// run) times its small-scale fading (a process in time), turned into link rates for any split of the
// bandwidth. Seeded by the scenario, so a run is reproducible. The runtime's link shaping, the
// evaluation and the simulator all read the cell through this class.
import { Random } from "../util/random.js";
import { FadingProcess } from "./fading.js";
import type { LinkModel, LinkParams } from "./link.js";
import { dbmToWatts, dbToLinear, linkRates, pathLossDb, type RadioLink } from "./radio.js";
import type { Scenario } from "./scenario.js";

export interface DeviceRadio {
  name: string;
  /** path loss plus shadowing, dB */
  lossDb: number;
  fading: FadingProcess;
}

export class ChannelModel {
  readonly devices: readonly DeviceRadio[];
  private readonly index: ReadonlyMap<string, number>;
  private readonly n0: number;
  /** received power over noise density each way without fading, per device */
  private readonly downMean: Float64Array;
  private readonly upMean: Float64Array;
  /** each device's own clock: devices move on together (advanceTo) or one at a time when read (linkAt) */
  private readonly deviceTimeMs: Float64Array;

  constructor(readonly scenario: Scenario) {
    const rng = new Random(scenario.seed);
    this.n0 = dbmToWatts(scenario.noiseDbmPerHz + scenario.noiseFigureDb);
    this.devices = scenario.devices.map((d) => ({
      name: d.name,
      lossDb: pathLossDb(scenario.pathLoss, d.distanceM) + rng.normal() * scenario.shadowingDb,
      fading: new FadingProcess(scenario.fading, scenario.correlation, new Random(rng.nextU32())),
    }));
    this.index = new Map(this.devices.map((d, i) => [d.name, i]));
    this.deviceTimeMs = new Float64Array(this.devices.length);
    const gain = this.devices.map((d) => dbToLinear(-d.lossDb) / this.n0);
    this.downMean = Float64Array.from(gain, (g) => dbmToWatts(scenario.bsPowerDbm) * g);
    this.upMean = Float64Array.from(gain, (g, i) => dbmToWatts(scenario.devices[i]!.powerDbm) * g);
  }

  /** Moves the channel to `ms` (never back), drawing the fading for the elapsed time. */
  advanceTo(ms: number): void {
    for (let i = 0; i < this.devices.length; i++) this.advanceDevice(i, ms);
  }

  /** Device `i`'s link at `ms`, moving only its own fading on (a large cell where few devices are read at a time). */
  linkAt(i: number, ms: number): RadioLink {
    this.advanceDevice(i, ms);
    return this.link(i);
  }

  private advanceDevice(i: number, ms: number): void {
    const dt = ms - this.deviceTimeMs[i]!;
    if (dt <= 0) return;
    this.devices[i]!.fading.advance(dt);
    this.deviceTimeMs[i] = ms;
  }

  indexOf(name: string): number {
    const i = this.index.get(name);
    if (i === undefined) throw new Error(`the scenario has no device ${name} (it has ${[...this.index.keys()].join(", ")})`);
    return i;
  }

  /** Device `i`'s radio link now. */
  link(i: number): RadioLink {
    const fading = this.devices[i]!.fading.power();
    return { downRxOverN0: this.downMean[i]! * fading, upRxOverN0: this.upMean[i]! * fading, downPowerSplit: this.scenario.downPowerSplit };
  }

  /** Device `i`'s link now on bandwidth share `share`. */
  linkParamsOf(i: number, share: number): LinkParams {
    return { ...linkRates(this.link(i), this.scenario.bandwidthHz, share), delayMs: this.scenario.delayMs, jitterMs: 0, loss: 0 };
  }

  /** Every device's link now with bandwidth shares `shares` (default: an equal split among all devices). */
  linkParams(shares: readonly number[] = this.equalShares()): LinkParams[] {
    return this.devices.map((_, i) => this.linkParamsOf(i, shares[i] ?? 0));
  }

  equalShares(): number[] {
    return this.devices.map(() => 1 / this.devices.length);
  }

  /**
   * The runtime's link shaping from this cell: a device's link at a moment of the run, with the
   * bandwidth shares `shares()` gives then. `clock` turns the runtime's time into the cell's (default:
   * the cell's clock starts at the first frame); a cost model that reads the cell shares it.
   */
  linkModel(shares: () => readonly number[] = () => this.equalShares(), clock: (nowMs: number) => number = startingClock()): LinkModel {
    return (device, nowMs) => {
      this.advanceTo(clock(nowMs));
      const i = this.indexOf(device);
      return this.linkParamsOf(i, shares()[i] ?? 0);
    };
  }
}

/** A clock that reads 0 at its first call and runs with the runtime's. */
export function startingClock(): (nowMs: number) => number {
  let origin: number | null = null;
  return (nowMs) => nowMs - (origin ??= nowMs);
}
