// Device names as they reach logs, metric labels and a device's identity file: a safe charset, a bounded length, one per device.

export const MAX_NAME_LENGTH = 64;

/** `raw` with every character outside [A-Za-z0-9._-] replaced by "_", cut to MAX_NAME_LENGTH; "device" if empty. */
export function safeName(raw: string): string {
  const name = [...raw].slice(0, MAX_NAME_LENGTH).map((c) => (/^[A-Za-z0-9._-]$/.test(c) ? c : "_")).join("");
  return name || "device";
}

/** `name`, or `name-2`, `name-3`, … (cut to fit MAX_NAME_LENGTH), the first that `taken` refuses. */
export function uniqueName(name: string, taken: (name: string) => boolean): string {
  if (!taken(name)) return name;
  for (let i = 2; ; i++) {
    const suffix = `-${i}`;
    const candidate = name.slice(0, MAX_NAME_LENGTH - suffix.length) + suffix;
    if (!taken(candidate)) return candidate;
  }
}
