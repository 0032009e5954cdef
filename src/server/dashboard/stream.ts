// The dashboard's live data: GET /dashboard/events, server-sent events each carrying one snapshot
// (snapshot.ts). One feed builds a snapshot per tick, only while someone listens, and sends the same
// text to every client: N clients cost one snapshot per tick. A client holds at most one snapshot in
// flight: while its last one is unwritten (it reads slower than the feed sends, and its socket's buffers
// are full) it skips ticks, and one whose snapshot stays unwritten for stallMs is dropped, its
// connection closed. So what a client that stops reading costs is bounded: its socket's buffers and one
// snapshot. Read-only: a viewer needs the
// API key, the view key or the admin key (none configured: open, as /v1 is), and a snapshot holds no
// secret (no join token, no key).
import type { Context, Hono } from "hono";
import { bearerAuth } from "hono/bearer-auth";
import type { RequestIdVariables } from "hono/request-id";
import { streamSSE } from "hono/streaming";
import type { Registry } from "prom-client";
import { errorBody } from "../errors.js";
import { buildSnapshot, DASHBOARD_METRICS, readingFrom, type DeviceInput, type Reading, type Snapshot, type SnapshotInput, type Values } from "./snapshot.js";

export const DEFAULT_INTERVAL_MS = 333;
/** The window rates, the heat map and call percentiles are measured over. */
export const DEFAULT_WINDOW_MS = 5000;
export const DEFAULT_STALL_MS = 10_000;

/** What a snapshot is built from, read at each tick. */
export interface DashboardSources {
  registry: Registry;
  model: () => SnapshotInput["model"];
  health: () => SnapshotInput["health"];
  devices: () => readonly DeviceInput[];
  placement: () => SnapshotInput["placement"];
  bsExperts: () => SnapshotInput["bsExperts"];
  policy: () => string;
}

export interface FeedOptions {
  intervalMs?: number;
  windowMs?: number;
  stallMs?: number;
  /** told of a tick that failed (the feed goes on) */
  log?: (line: string) => void;
}

/** The values of the registry's DASHBOARD_METRICS now (their collect functions run: the same values /metrics gives). */
export async function readValues(registry: Registry): Promise<Values> {
  const values: Values = {};
  for (const name of DASHBOARD_METRICS) {
    const metric = registry.getSingleMetric(name);
    if (metric) values[name] = (await metric.get()).values;
  }
  return values;
}

interface Client {
  send: (data: string) => Promise<void>;
  drop: (why: "stalled" | "closing") => void;
  /** when the snapshot in flight was handed over; null: none in flight */
  busySince: number | null;
}

export class DashboardFeed {
  private readonly clients = new Set<Client>();
  /** readings over the last window, oldest first */
  private readonly readings: Reading[] = [];
  private latest: { snapshot: Snapshot; json: string } | null = null;
  private timer: NodeJS.Timeout | null = null;
  private ticking = false;
  private closed = false;
  private readonly intervalMs: number;
  private readonly windowMs: number;
  private readonly stallMs: number;
  private readonly log: (line: string) => void;

  constructor(private readonly sources: DashboardSources, opts: FeedOptions = {}) {
    this.intervalMs = opts.intervalMs ?? DEFAULT_INTERVAL_MS;
    this.windowMs = opts.windowMs ?? DEFAULT_WINDOW_MS;
    this.stallMs = opts.stallMs ?? DEFAULT_STALL_MS;
    this.log = opts.log ?? (() => undefined);
  }

  /** Clients listening now. */
  get listeners(): number {
    return this.clients.size;
  }

  /**
   * Sends `send` every snapshot from now on, the latest first; `drop` is told once when the feed lets the
   * client go (it stalled, or the feed closes). Returns the unsubscribe.
   */
  subscribe(send: Client["send"], drop: Client["drop"]): () => void {
    const client: Client = { send, drop, busySince: null };
    if (this.closed) {
      drop("closing");
      return () => undefined;
    }
    this.clients.add(client);
    if (!this.timer) {
      this.timer = setInterval(() => void this.tick(), this.intervalMs);
      this.timer.unref();
    }
    // the latest snapshot, if the feed is running, else a first one now
    if (this.latest && this.readings.length > 0) this.deliver(client, this.latest.json, performance.now());
    else void this.tick();
    return () => this.remove(client);
  }

  /** Builds the snapshot of now (one for every client). */
  async snapshot(): Promise<Snapshot> {
    const s = this.sources;
    const now = readingFrom(await readValues(s.registry), performance.now());
    while (this.readings.length > 1 && now.at - this.readings[1]!.at >= this.windowMs) this.readings.shift();
    const base = this.readings[0] ?? null;
    this.readings.push(now);
    const snapshot = buildSnapshot({ now, base, wallMs: Date.now(), model: s.model(), health: s.health(), devices: s.devices(), placement: s.placement(), bsExperts: s.bsExperts(), policy: s.policy(), previous: this.latest?.snapshot ?? null });
    this.latest = { snapshot, json: JSON.stringify(snapshot) };
    return snapshot;
  }

  /** Lets every client go and stops. */
  close(): void {
    this.closed = true;
    for (const c of [...this.clients]) {
      this.remove(c);
      c.drop("closing");
    }
  }

  private remove(c: Client): void {
    this.clients.delete(c);
    if (this.clients.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
      // a window with a gap in it would average over time nobody watched
      this.readings.length = 0;
    }
  }

  private async tick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      await this.snapshot();
    } catch (e) {
      this.log(`dashboard: a snapshot failed: ${(e as Error)?.stack ?? String(e)}`);
      return;
    } finally {
      this.ticking = false;
    }
    const json = this.latest!.json, now = performance.now();
    for (const c of [...this.clients]) this.deliver(c, json, now);
  }

  /** Hands a client the snapshot, unless its last one is still unwritten: then it skips it, or is dropped once that has lasted stallMs. */
  private deliver(c: Client, json: string, now: number): void {
    if (c.busySince !== null) {
      if (now - c.busySince >= this.stallMs) {
        this.remove(c);
        c.drop("stalled");
      }
      return;
    }
    c.busySince = now;
    c.send(json).then(
      () => void (c.busySince = null),
      () => {
        this.remove(c);
        c.drop("stalled");
      },
    );
  }
}

type Env = { Variables: RequestIdVariables };

export interface DashboardAccess {
  /** keys that may view (API keys, view keys, admin keys); none: open */
  keys: readonly string[];
}

/** Adds GET /dashboard/events to `app`. */
export function mountDashboardStream(app: Hono<Env>, feed: DashboardFeed, access: DashboardAccess): void {
  if (access.keys.length > 0) {
    const refuse = (message: string) => (c: Context<Env>) => c.json(errorBody(message, "authentication_error", undefined, c.get("requestId")), 401);
    const required = refuse("a key is required to view the dashboard: Authorization: Bearer KEY (the API key or the view key)");
    app.use("/dashboard/events", bearerAuth({ token: [...access.keys], noAuthenticationHeader: { message: required }, invalidAuthenticationHeader: { message: required }, invalidToken: { message: refuse("the key is not valid") } }));
  }
  app.get("/dashboard/events", (c) =>
    streamSSE(c, async (stream) => {
      let id = 0;
      await new Promise<void>((resolve) => {
        const unsubscribe = feed.subscribe(
          (data) => stream.writeSSE({ event: "snapshot", id: String(++id), data }),
          (why) => {
            // a client that reads nothing holds its writes: only closing its socket frees them
            if (why === "stalled") (c.env as { incoming?: { socket?: { destroy(): void } } } | undefined)?.incoming?.socket?.destroy();
            resolve();
          },
        );
        stream.onAbort(() => {
          unsubscribe();
          resolve();
        });
      });
    }),
  );
}
