// The page's battery, where the browser reports one (navigator.getBattery: Chromium-based browsers),
// for the heartbeat: the base station spares a device on low battery where another replica can serve.
import type { Battery } from "../../protocol/frames.js";

interface BatteryManager extends EventTarget {
  readonly level: number;
  readonly charging: boolean;
}

/** Reads the battery now; null where the browser reports none. `onChange` hears of level and charging changes. */
export async function openBattery(onChange: () => void): Promise<(() => Battery) | null> {
  const getBattery = (navigator as Navigator & { getBattery?: () => Promise<BatteryManager> }).getBattery;
  const manager = await getBattery?.call(navigator).catch(() => undefined);
  if (!manager) return null;
  for (const event of ["levelchange", "chargingchange"]) manager.addEventListener(event, onChange);
  // a browser's numbers, kept in the range the protocol allows
  return () => ({ level: Math.min(1, Math.max(0, Number(manager.level) || 0)), charging: manager.charging === true });
}
