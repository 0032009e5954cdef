// The dashboard page the base station serves at /: it asks for a key once (kept in this tab), reads the
// live snapshots from /dashboard/events and shows them (topology.ts, grids.ts, latency.ts); an admin key
// also gets the controls (controls.ts); the playground streams completions with the same key.
import type { Snapshot } from "../../server/dashboard/snapshot.js";
import { $, call, forgetKey, keepKey, readEvents, storedKey } from "./api.js";
import { showControls } from "./controls.js";
import { gridViews } from "./grids.js";
import { latencyView } from "./latency.js";
import { playground } from "./playground.js";
import { showTopology } from "./topology.js";

/** How long the page waits before it reads the stream again after it ended. */
const RECONNECT_MS = 2000;

function showHeader(s: Snapshot): void {
  $("model").textContent = s.model ?? "";
  $("policy").textContent = `policy: ${s.policy}`;
  $("health").textContent = `health: ${s.health.state}`;
}

async function view(key: string): Promise<void> {
  const r = await call("/dashboard/events", key);
  if (r.status === 401 || r.status === 403) {
    forgetKey();
    $("key-error").textContent = "This key may not view the dashboard.";
    $("login").hidden = false;
    return;
  }
  if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
  $("login").hidden = true;
  $("views").hidden = false;
  const views = [showHeader, showTopology, gridViews(), latencyView()];
  playground(key);
  void showControls(key).catch(() => undefined);
  const connect = async (r: Response): Promise<never> => {
    for (;;) {
      $("stream").textContent = "live";
      await readEvents(r, (data, event) => {
        if (event !== "snapshot") return;
        const s = JSON.parse(data) as Snapshot;
        for (const v of views) v(s);
      }).catch(() => undefined);
      $("stream").textContent = "reconnecting…";
      for (;;) {
        await new Promise((done) => setTimeout(done, RECONNECT_MS));
        const again = await call("/dashboard/events", key).catch(() => null);
        if (again?.ok) {
          r = again;
          break;
        }
      }
    }
  };
  void connect(r);
}

$("key-form").onsubmit = (e) => {
  e.preventDefault();
  const key = $<HTMLInputElement>("key").value.trim();
  keepKey(key);
  $("key-error").textContent = "";
  view(key).catch((err: Error) => ($("key-error").textContent = err.message));
};
const kept = storedKey();
if (kept !== null) view(kept).catch((err: Error) => ($("key-error").textContent = err.message));
