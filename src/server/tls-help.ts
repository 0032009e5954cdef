// What a browser that reached a TLS base station over plain http:// is shown: in plain words, that the
// page is at https://, why a browser warns about a self-signed certificate, how to check the certificate
// and continue, and a link to the same address over https:// (a phone that scanned or typed the address
// without the scheme lands here). The page is not authenticated (plain HTTP): it shows no fingerprint
// for the reader to trust, and asks them to compare with the one the base station printed.
import { createHash } from "node:crypto";

// the link to https:// keeps the path and the fragment (the join token), which the server never sees
const SCRIPT = `document.getElementById("go").href = "https://" + location.host + location.pathname + location.search + location.hash;`;
const SCRIPT_HASH = createHash("sha256").update(SCRIPT).digest("base64");

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>distmoe: use https://</title>
<style>
  body { font: 17px/1.5 system-ui, sans-serif; margin: 0 auto; padding: 1rem; max-width: 40rem; color: #1f2328; }
  h1 { font-size: 1.3rem; } h2 { font-size: 1.05rem; margin-top: 1.5rem; }
  a.go { display: inline-block; padding: .6rem 1rem; border-radius: .5rem; background: #116329; color: #fff; text-decoration: none; font-weight: 600; }
  li { margin: .3rem 0; }
</style>
</head>
<body>
<h1>This base station speaks only https://</h1>
<p>It encrypts everything that crosses its port, so this address works only with <b>https://</b> in front.</p>
<p><a class="go" id="go" href="#">Continue over https://</a></p>
<h2>If your browser then warns “Your connection is not private”</h2>
<p>The base station made its own certificate (it was started with <code>--tls self-signed</code>) instead of
getting one from a certificate authority, so your browser cannot tell by itself that it is really talking to
the base station. You can check that yourself:</p>
<ol>
  <li>When it started, the base station printed its certificate's fingerprint, on a line like
  <code>TLS: … SHA-256 fingerprint AB:CD:…</code>. Ask whoever runs it for that line.</li>
  <li>Open the certificate from the warning: in Chrome or Edge, <i>Not secure</i> (left of the address) →
  <i>Certificate</i>; in Firefox, <i>Advanced</i> → <i>View Certificate</i>; in Safari, <i>Show Details</i> →
  <i>view the certificate</i>. Find its SHA-256 fingerprint.</li>
  <li>If the two are the same, continue: in Chrome, Edge or on Android, <i>Advanced</i> → <i>Proceed to …
  (unsafe)</i>; in Firefox, <i>Advanced</i> → <i>Accept the Risk and Continue</i>; in Safari or on an iPhone,
  <i>Show Details</i> → <i>visit this website</i>.</li>
  <li>If they differ, do not continue: something between you and the base station is pretending to be it.</li>
</ol>
<p>A base station with a certificate from a certificate authority (<code>--tls-cert</code>) gives no warning:
there is nothing to check.</p>
<script>${SCRIPT}</script>
</body>
</html>
`;

/** The whole HTTP answer: 426 (the same request works over TLS), the page, and a policy that runs only its own script. */
export const TLS_HELP_ANSWER =
  "HTTP/1.1 426 Upgrade Required\r\nUpgrade: TLS/1.3, HTTP/1.1\r\nConnection: close\r\nContent-Type: text/html; charset=utf-8\r\n" +
  `Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-${SCRIPT_HASH}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n` +
  `Content-Length: ${Buffer.byteLength(PAGE)}\r\n\r\n${PAGE}`;

/** Whether a plain request's first bytes are a browser asking for a page: a GET that accepts HTML. */
export function wantsPage(first: Buffer): boolean {
  const head = first.subarray(0, 8192).toString("latin1");
  return /^GET \S+ HTTP\/1\.[01]\r\n/.test(head) && /\r\naccept:[^\r\n]*text\/html/i.test(head);
}
