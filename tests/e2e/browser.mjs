// Browser half of the e2e suite: node browser.mjs SCENARIO BASE SHOT
// BASE is where the app is served (https://voice.test:PORT or https://ai.test:PORT/voice),
// SHOT the screenshot's file. Drives Debian's /usr/bin/chromium (launch.mjs) with playwright-core (no
// browser download) and prints one JSON line with what it saw, including every URL the
// page requested and every WebSocket it opened. HOST_RULES maps only our test hosts;
// METRICS is the gateway's /metrics URL (scenario gradio-pool).
import { launch } from "./launch.mjs";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";

const [scenario, origin, shot] = process.argv.slice(2);
const deadline = (ms) => Date.now() + ms;

const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
const report = { requests: [], websockets: [] };
page.on("request", (r) => report.requests.push(r.url()));
page.on("websocket", (ws) => report.websockets.push(ws.url()));
try {
  if (scenario === "streamlit") await streamlit(page);
  else if (scenario === "gradio") await gradio(page);
  else if (scenario === "gradio-pool") await gradioPool();
  else if (scenario === "gradio-ondemand") await gradioOnDemand(page);
  else throw new Error(`unknown scenario ${scenario}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));

/** Text of the first element matching `selector` whose text matches `re`, waiting. */
async function textMatching(selector, re, ms = 30000) {
  const end = deadline(ms);
  while (Date.now() < end) {
    for (const t of await page.locator(selector).allInnerTexts()) {
      if (re.test(t)) return t.trim();
    }
    await page.waitForTimeout(100);
  }
  throw new Error(`no ${selector} matching ${re} within ${ms} ms`);
}

async function streamlit(page) {
  await page.goto(origin + "/", { waitUntil: "domcontentloaded" });
  await textMatching("p", /^count: 0$/, 60000);
  report.counts = [];
  for (const n of [1, 2]) {
    await page.getByRole("button", { name: "Increment" }).click();
    report.counts.push(await textMatching("p", new RegExp(`^count: ${n}$`)));
  }
  // A small file through Streamlit's uploader (PUT /_stcore/upload_file, XSRF cookie).
  const dir = mkdtempSync(join(tmpdir(), "e2e-"));
  const small = join(dir, "small.bin");
  writeFileSync(small, Buffer.alloc(4096, 7));
  await page.locator('input[type="file"]').setInputFiles(small);
  report.uploaded = await textMatching("p", /^received \d+ bytes/);
  await page.screenshot({ path: shot, fullPage: true });
  // Over the route's max_body (1M): the gateway answers 413 and the user sees it.
  const big = join(dir, "big.bin");
  writeFileSync(big, Buffer.alloc(2 << 20, 9));
  await page.locator('input[type="file"]').setInputFiles(big);
  report.too_large = await textMatching("body", /413/);
  // The app goes on working.
  await page.getByRole("button", { name: "Increment" }).click();
  report.after = await textMatching("p", /^count: 3$/);
}

async function gradio(page) {
  await page.goto(origin + "/", { waitUntil: "domcontentloaded" });
  await page.locator("#generate").waitFor({ timeout: 60000 });
  await page.locator("#generate").click();
  // Sample the output while it streams: partial values must show before the last.
  report.values = await generated(page, []);
  await uploadAndMeasure(page);
  report.measured = await textValue(page.locator("#measured textarea"), /^\d+ [0-9a-f]{64}$/);
  await page.screenshot({ path: shot, fullPage: true });
}

/** Gradio as an app the gateway starts on demand: the first visit gets the gateway's
 * waiting page (503, reloading itself every 2 s), then the app once it serves; a
 * generation streams. Screenshots: SHOT with "-waiting" for the waiting page. */
async function gradioOnDemand(page) {
  const asked = Date.now();
  const first = await page.goto(origin + "/", { waitUntil: "domcontentloaded" });
  report.first_status = first.status();
  report.first_ms = Date.now() - asked;
  report.first_title = await page.title();
  report.first_heading = await page.locator("h1").first().innerText();
  await page.screenshot({ path: shot.replace(/\.png$/, "-waiting.png") });
  let loads = 0;
  page.on("load", () => (loads += 1));
  await page.locator("#generate").waitFor({ timeout: 180000 });
  report.reloads = loads;
  report.app_after_ms = Date.now() - asked;
  await page.locator("#generate").click();
  report.values = await generated(page, []);
  await page.screenshot({ path: shot, fullPage: true });
}

/** The distinct values of the streamed output, sampled every 100 ms, added to `values`
 * until one ends with token7 (the last of the 8 tokens) or `stop` says so. */
async function generated(page, values, stop = () => false) {
  const box = page.locator("#generated textarea");
  const end = deadline(30000);
  while (Date.now() < end) {
    const v = await box.inputValue();
    if (values.at(-1) !== v) values.push(v);
    if (v.trim().endsWith("token7") || stop(v)) break;
    await page.waitForTimeout(100);
  }
  return values;
}

/** An upload through the browser (Gradio's /gradio_api/upload), then measured by the app. */
async function uploadAndMeasure(page) {
  const dir = mkdtempSync(join(tmpdir(), "e2e-"));
  const file = join(dir, "upload.bin");
  writeFileSync(file, Buffer.alloc(4096, 7));
  // Measure only once the upload has been answered and the app has taken the file
  // (Gradio then shows its size), else the click sends no file.
  const uploaded = page.waitForResponse(
    (r) => r.url().includes("/gradio_api/upload") && r.request().method() === "POST",
    { timeout: 30000 },
  );
  await page.locator("#upload input[type=file]").setInputFiles(file);
  report.upload_status = (await uploaded).status();
  await page.locator("#upload").getByText(/4\.\d\s*KB/).first().waitFor({ timeout: 30000 });
  await page.locator("#measure").click();
}

/** The gateway's replica series (gateway_upstream_up, gateway_upstream_in_flight) now. */
async function replicaMetrics() {
  const text = await (await fetch(process.env.METRICS)).text();
  return text.split("\n").filter((l) => l.startsWith("gateway_upstream_"));
}

/** A fresh browser context (no cookies) whose requests carry `ua`, so that the apps and
 * the gateway's access log can tell its requests apart; records every Set-Cookie. */
async function session(ua) {
  const viewport = { width: 1100, height: 800 };
  const context = await browser.newContext({ viewport, userAgent: ua });
  const page = await context.newPage();
  const s = { user_agent: ua, requests: 0, set_cookies: [], values: [] };
  page.on("request", (r) => {
    s.requests += 1;
    report.requests.push(r.url());
  });
  page.on("websocket", (ws) => report.websockets.push(ws.url()));
  page.on("response", async (r) => {
    try {
      const v = await r.headerValue("set-cookie");
      if (v) s.set_cookies.push(...v.split("\n").map((c) => ({ url: r.url(), cookie: c })));
    } catch {}
  });
  return { context, page, s };
}

/** Two browsers on the two-replica Gradio route. The first opens the app and generates;
 * while its output streams (its replica has a request in flight, the other none), a second
 * browser without cookies opens the app: least_conn places it on the idle replica. The
 * second generates too, while the first finishes, then uploads and measures. */
async function gradioPool() {
  const ua = await page.evaluate(() => navigator.userAgent);
  const one = await session(`${ua} e2e-session/1`);
  const two = await session(`${ua} e2e-session/2`);
  report.sessions = [one.s, two.s];

  await one.page.goto(origin + "/", { waitUntil: "domcontentloaded" });
  await one.page.locator("#generate").waitFor({ timeout: 60000 });
  await one.page.locator("#generate").click();
  await generated(one.page, one.s.values, (v) => /token\d/.test(v));
  report.metrics_before_second = await replicaMetrics();
  await two.page.goto(origin + "/", { waitUntil: "domcontentloaded" });
  // The first output was still streaming when the second page had arrived.
  report.first_after_second = await one.page.locator("#generated textarea").inputValue();
  await two.page.locator("#generate").waitFor({ timeout: 60000 });
  await two.page.locator("#generate").click();
  const second = generated(two.page, two.s.values);
  await generated(one.page, one.s.values);
  await uploadAndMeasure(one.page);
  one.s.measured = await textValue(one.page.locator("#measured textarea"), /^\d+ [0-9a-f]{64}$/);
  await second;
  for (const { context, s } of [one, two]) {
    s.cookies = await context.cookies();
    await context.close();
  }
  report.metrics_after = await replicaMetrics();
}

/** The value of a text box once it matches `re`, waiting. */
async function textValue(box, re, ms = 30000) {
  const end = deadline(ms);
  while (Date.now() < end) {
    const v = (await box.inputValue()).trim();
    if (re.test(v)) return v;
    await box.page().waitForTimeout(100);
  }
  throw new Error(`no value matching ${re} within ${ms} ms`);
}
