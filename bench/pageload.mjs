// One cold first load of a page in Chromium: node bench/pageload.mjs SCENARIO URL
// SCENARIO streamlit (ready when the counter shows) or gradio (ready when the Generate
// button is there). Prints one JSON line: ms from navigation to ready, and the bytes
// Chromium received for every request of the page (headers and bodies as they came,
// compressed or not: the DevTools protocol's encodedDataLength). HOST_RULES maps the
// bench's hosts. A fresh profile each time: nothing cached.
// The e2e suite's Chromium launch and its playwright-core (tests/e2e/node_modules).
import { launch } from "../tests/e2e/launch.mjs";

const [scenario, url] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  let bytes = 0;
  let requests = 0;
  const encodings = {};
  const seen = new Map();
  cdp.on("Network.responseReceived", (e) => {
    const h = Object.fromEntries(
      Object.entries(e.response.headers).map(([k, v]) => [k.toLowerCase(), v]),
    );
    seen.set(e.requestId, h["content-encoding"] || "none");
  });
  cdp.on("Network.loadingFinished", (e) => {
    bytes += e.encodedDataLength;
    requests += 1;
    const enc = seen.get(e.requestId) || "none";
    encodings[enc] = (encodings[enc] || 0) + 1;
  });
  const start = Date.now();
  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 120000 });
  if (scenario === "streamlit") {
    await page.getByText("count: 0", { exact: true }).waitFor({ timeout: 120000 });
  } else {
    await page.locator("#generate").waitFor({ timeout: 120000 });
  }
  const ms = Date.now() - start;
  // What is still in flight for the page (fonts, icons) is counted too.
  await page.waitForLoadState("networkidle", { timeout: 30000 }).catch(() => {});
  console.log(JSON.stringify({ ms, bytes, requests, encodings }));
} finally {
  await browser.close();
}
