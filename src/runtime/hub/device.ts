// A device as the base station keeps it: its connection, what it can do, what it holds and is assigned,
// and how it has served.
import type { ShapedLink } from "../../channel/link.js";
import type { Battery, Capabilities } from "../../protocol/frames.js";
import type { Connection } from "./connection.js";

export interface Device {
  /** its name, made safe and unique among connected devices */
  name: string;
  /** its identity: the fingerprint of the key it proved it holds (null: it presented none) */
  fingerprint: string | null;
  /** the id of the join token it proved it holds (null: the hub asks for none) */
  tokenId: string | null;
  conn: Connection;
  capabilities: Capabilities;
  /** connected, and has loaded at least one assignment: may be routed to */
  ready: boolean;
  connected: boolean;
  /** the experts it holds, as its hello or last ready said, less those released since */
  holds: Array<[number, number]>;
  /**
   * the experts its identity held when last ready here, before this connection: placement prefers them
   * until it is ready (a device that kept their weights, a reopened tab, loads them without a download)
   */
  heldBefore: Array<[number, number]>;
  /** the latest assignment sent to it, its generation, and the generation it has loaded */
  assigned: Array<[number, number]>;
  assignedGen: number;
  loadedGen: number;
  /** left out of placement for missing a load deadline; back in once it reports its assignment loaded */
  laggard: boolean;
  /** expert calls it has answered */
  calls: number;
  /** its emulated link, when the hub shapes links */
  link: ShapedLink | null;
  /** weight bytes streamed to it */
  weightBytes: number;
  /** calls failed in a row; past a limit the device is taken out of service */
  failures: number;
  /** whether one of those failed calls returned implausible results (not only errors or lateness) */
  wrongInStreak: boolean;
  quarantined: boolean;
  /** why it was taken out of service, as the log said it */
  outOfService: string | null;
  /** said it is leaving: routed no new calls, placed on no more, closed once its calls in flight are answered */
  leaving: boolean;
  /** its battery as its last heartbeat said (null: it reports none) */
  battery: Battery | null;
}

/** "layer:expert", to compare [layer, expert] pairs in sets. */
export const pairKey = (p: readonly [number, number]): string => `${p[0]}:${p[1]}`;
