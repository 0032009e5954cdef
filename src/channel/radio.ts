// Radio link budget: path loss, and the Shannon rate of a share of the cell's bandwidth. Pure
// functions of plain numbers; the channel model (channel-model.ts) and the bandwidth solver use them.

export const dbToLinear = (db: number): number => 10 ** (db / 10);
export const dbmToWatts = (dbm: number): number => 10 ** ((dbm - 30) / 10);

export type PathLoss =
  /** PL(d) = referenceDb + 10 · exponent · log10(d / referenceM); the default 128.1 + 37.6 log10(d km) is 3GPP's macro-cell urban loss */
  | { model: "log-distance"; exponent: number; referenceDb: number; referenceM: number }
  /** 3GPP TR 38.901 UMi street canyon (BS at 10 m, devices at 1.5 m), line of sight or not */
  | { model: "3gpp-umi"; carrierGHz: number; los: boolean };

const UMI_BS_HEIGHT = 10, UMI_UT_HEIGHT = 1.5;

/** Path loss in dB at `distanceM` metres from the BS. */
export function pathLossDb(pl: PathLoss, distanceM: number): number {
  const d = Math.max(distanceM, 1);
  if (pl.model === "log-distance") return pl.referenceDb + 10 * pl.exponent * Math.log10(d / pl.referenceM);
  const fc = pl.carrierGHz;
  const d3 = Math.hypot(d, UMI_BS_HEIGHT - UMI_UT_HEIGHT);
  // breakpoint distance with effective antenna heights (1 m environment height)
  const dBp = (4 * (UMI_BS_HEIGHT - 1) * (UMI_UT_HEIGHT - 1) * fc * 1e9) / 299_792_458;
  const los =
    d <= dBp
      ? 32.4 + 21 * Math.log10(d3) + 20 * Math.log10(fc)
      : 32.4 + 40 * Math.log10(d3) + 20 * Math.log10(fc) - 9.5 * Math.log10(dBp ** 2 + (UMI_BS_HEIGHT - UMI_UT_HEIGHT) ** 2);
  if (pl.los) return los;
  return Math.max(los, 35.3 * Math.log10(d3) + 22.4 + 21.3 * Math.log10(fc) - 0.3 * (UMI_UT_HEIGHT - 1.5));
}

/**
 * Shannon rate (bit/s) on `bandwidthHz` of a link whose received power over the noise density is
 * `rxOverN0` (W ÷ W/Hz = Hz): r = b · log2(1 + rxOverN0 / b).
 */
export function shannonRateBps(bandwidthHz: number, rxOverN0: number): number {
  return bandwidthHz > 0 ? bandwidthHz * Math.log2(1 + rxOverN0 / bandwidthHz) : 0;
}

/**
 * One device's radio link at a moment: received power over noise density each way, with the whole
 * transmit power on the link. On the uplink the device puts its whole power on its share of the band.
 * On the downlink the BS either splits its power over the devices in proportion to their shares
 * (constant power density: `downPowerSplit`, the default), or gives each link its whole power.
 */
export interface RadioLink {
  downRxOverN0: number;
  upRxOverN0: number;
  downPowerSplit: boolean;
}

/** Rates each way on a share β of a cell of `cellHz`: r = βB · log2(1 + P·g·|h|² / (βB·N0)). */
export function linkRates(link: RadioLink, cellHz: number, share: number): { downBps: number; upBps: number } {
  const b = share * cellHz;
  return {
    downBps: shannonRateBps(b, link.downPowerSplit ? share * link.downRxOverN0 : link.downRxOverN0),
    upBps: shannonRateBps(b, link.upRxOverN0),
  };
}

/** d r / d β of linkRates, each way (for solvers that invert the rate). */
export function linkRateSlopes(link: RadioLink, cellHz: number, share: number): { downBps: number; upBps: number } {
  // r = βB·log2(1 + c/(βB)) has slope B·(log2(1 + x) − x / ((1 + x)·ln 2)) with x = c/(βB); with the power
  // split, c grows with β too and r = βB·log2(1 + c₁/B) is linear
  const slope = (c: number) => {
    const x = c / (share * cellHz);
    return cellHz * (Math.log2(1 + x) - x / ((1 + x) * Math.LN2));
  };
  return {
    downBps: link.downPowerSplit ? cellHz * Math.log2(1 + link.downRxOverN0 / cellHz) : slope(link.downRxOverN0),
    upBps: slope(link.upRxOverN0),
  };
}
