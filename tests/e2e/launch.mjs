// The headless Chromium both the e2e suite (browser.mjs) and bench/pageload.mjs drive:
// Debian's /usr/bin/chromium through playwright-core (no browser download), nothing
// running in the background that would add requests, QUIC off (the gateway and nginx
// serve TCP), the test hosts mapped by HOST_RULES, their certificates accepted.
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-features=Translate,OptimizationHints,MediaRouter",
      `--host-resolver-rules=${process.env.HOST_RULES}`,
      "--ignore-certificate-errors",
    ],
  });
}
