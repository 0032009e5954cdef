import net from "node:net";

/** Whether `host` (a name, or an address; IPv6 with or without brackets) is this machine's loopback, which traffic never leaves. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  return h === "localhost" || h === "::1" || (net.isIPv4(h) && h.startsWith("127."));
}
