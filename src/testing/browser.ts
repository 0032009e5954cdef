// A real browser for tests of the pages the base station serves: Debian's chromium, driven by
// playwright-core, headless, with a fresh profile each time. Tests that need it skip, saying why, where
// it is not installed (`.ci/run` installs it).
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium, type BrowserContext } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";

/** Why browser tests cannot run here, or false. */
export const browserSkip: string | false = existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (Debian: apt-get install chromium), and the browser tests drive it`;

const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

/**
 * A headless chromium with a new user-data directory; closing it removes the directory. `trustAnyCertificate`:
 * for a base station's self-signed certificate, as a user who chose to trust it (pages and their WebSockets).
 * `webgpu`: pages on http://localhost or https get navigator.gpu, which headless chromium offers only
 * behind this flag (without a GPU, or with --disable-gpu, its adapter is SwiftShader's, on the CPU).
 */
export async function launchBrowser(o: { trustAnyCertificate?: boolean; webgpu?: boolean } = {}): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  const profile = mkdtempSync(path.join(os.tmpdir(), "distmoe-chromium-"));
  try {
    const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: o.webgpu ? [...ARGS, "--enable-unsafe-webgpu"] : ARGS, ignoreHTTPSErrors: o.trustAnyCertificate ?? false });
    return {
      context,
      close: async () => {
        await context.close();
        rmSync(profile, { recursive: true, force: true });
      },
    };
  } catch (e) {
    rmSync(profile, { recursive: true, force: true });
    throw e;
  }
}
