// The memory a device page gives to expert weights: the user's setting where there is a valid one, else a
// quarter of what the browser says the device has (navigator.deviceMemory, which browsers round and cap
// at 8 GiB), else 1 GiB. Sent as the capabilities' memoryBytes: placement gives the page no more than that.

const MIB = 2 ** 20;
/** Where the browser does not say how much memory the device has. */
export const DEFAULT_OFFER = 1024 * MIB;
/** A setting is refused outside these bounds: less holds no expert worth the link; more no page can address. */
export const MIN_SETTING_MIB = 64, MAX_SETTING_MIB = 64 * 1024;
/** The localStorage key of the user's setting, in MiB. */
export const SETTING_KEY = "distmoe.memoryMiB";

/** The user's setting in MiB, or null where `text` is not a whole number of MiB within bounds. */
export function parseSetting(text: string | null): number | null {
  if (text === null || !/^\s*\d+\s*$/.test(text)) return null;
  const mib = Number(text);
  return mib >= MIN_SETTING_MIB && mib <= MAX_SETTING_MIB ? mib : null;
}

/** The bytes offered, and whence. */
export function offeredMemory(setting: string | null, deviceMemoryGiB: number | undefined): { bytes: number; from: string } {
  const mib = parseSetting(setting);
  if (mib !== null) return { bytes: mib * MIB, from: "this page's setting" };
  if (typeof deviceMemoryGiB === "number" && Number.isFinite(deviceMemoryGiB) && deviceMemoryGiB > 0) {
    return { bytes: Math.max(MIN_SETTING_MIB * MIB, Math.min(4 * DEFAULT_OFFER, Math.floor((deviceMemoryGiB * 2 ** 30) / 4 / MIB) * MIB)), from: `a quarter of the device's ${deviceMemoryGiB} GiB` };
  }
  return { bytes: DEFAULT_OFFER, from: "the default (this browser does not say how much memory the device has)" };
}
