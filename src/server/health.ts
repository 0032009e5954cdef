// What /health says: whether the base station can serve, and if not fully, why. The states:
//   ok           every expert has a live holder and nothing failed lately;
//   degraded     it serves, but devices are quarantined, replicas are missing, or expert calls failed
//                (their experts dropped) in the last minute;
//   unavailable  it cannot serve: the model is loading, devices are awaited, or some expert has no holder.
import type { GenerationResult } from "../runtime/scheduler.js";

export type ServiceState = "ok" | "degraded" | "unavailable";

/** A part's own state and reasons (the device hub's, for one), with whatever details it reports. */
export interface PartStatus {
  state: ServiceState;
  reasons: string[];
  [detail: string]: unknown;
}

const RECENT_MS = 60_000;
const RANK: Record<ServiceState, number> = { ok: 0, degraded: 1, unavailable: 2 };

/** The base station's parts: the model (until it is loaded) and the device hub, where there is one. */
export function stationParts(loaded: boolean, devices?: () => PartStatus): PartStatus[] {
  const parts: PartStatus[] = loaded ? [] : [{ state: "unavailable", reasons: ["loading the model"] }];
  if (devices) parts.push(devices());
  return parts;
}

export class Health {
  /** failed expert calls in requests that ended within RECENT_MS, with the times they ended */
  private readonly recentFailures: Array<{ at: number; calls: number }> = [];

  /** Notes a finished request's failed expert calls. */
  noteResult(r: GenerationResult): void {
    if (r.experts.failed_calls > 0) this.recentFailures.push({ at: performance.now(), calls: r.experts.failed_calls });
    this.forgetOld();
  }

  /** Keeps only the failures of the last RECENT_MS (whether or not anyone asks for the state). */
  private forgetOld(): void {
    const now = performance.now();
    while (this.recentFailures.length > 0 && now - this.recentFailures[0]!.at >= RECENT_MS) this.recentFailures.shift();
  }

  /** The overall state: the worst of the parts', and recent failures. */
  status(parts: readonly PartStatus[]): { state: ServiceState; reasons: string[] } {
    this.forgetOld();
    const failed = this.recentFailures.reduce((n, f) => n + f.calls, 0);
    const own: PartStatus = failed > 0 ? { state: "degraded", reasons: [`${failed} expert calls failed in the last minute (their experts were dropped)`] } : { state: "ok", reasons: [] };
    const all = [...parts, own];
    const state = all.reduce<ServiceState>((s, p) => (RANK[p.state] > RANK[s] ? p.state : s), "ok");
    return { state, reasons: all.flatMap((p) => p.reasons) };
  }
}
