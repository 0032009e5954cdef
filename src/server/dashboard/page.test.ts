// The dashboard page as the base station serves it: the built page at / and /dashboard/, its script
// under /dashboard/, each with a policy that lets it load and reach nothing but this base station, and
// no key needed for the page itself (it holds no data: the stream and the controls ask for keys).
import { test } from "node:test";
import assert from "node:assert/strict";
import { dashboardStation } from "../../testing/dashboard.js";

test("the dashboard page and its script are served with a self-only content security policy", async (t) => {
  const { base } = await dashboardStation(t);
  for (const route of ["/", "/dashboard/"]) {
    const r = await fetch(`${base}${route}`);
    assert.equal(r.status, 200, route);
    assert.match(r.headers.get("content-type")!, /^text\/html/);
    assert.match(r.headers.get("content-security-policy")!, /script-src 'self';.*connect-src 'self'/);
    const html = await r.text();
    assert.match(html, /<script type="module" src="\/dashboard\/dashboard\.js"><\/script>/);
    assert.doesNotMatch(html, /https?:\/\//, "nothing from elsewhere");
  }
  const js = await fetch(`${base}/dashboard/dashboard.js`);
  assert.equal(js.status, 200);
  assert.match(js.headers.get("content-type")!, /^text\/javascript/);
  assert.ok((await js.arrayBuffer()).byteLength > 0);
  assert.equal((await fetch(`${base}/dashboard/events`)).status, 401, "the data still needs a key");
});
