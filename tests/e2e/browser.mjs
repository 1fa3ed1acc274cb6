// Browser half of the e2e suite: node browser.mjs SCENARIO ORIGIN SHOT_DIR
// Drives Debian's /usr/bin/chromium with playwright-core (no browser download) and
// prints one JSON line with what it saw. HOST_RULES maps only our test hosts.
import { chromium } from "playwright-core";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";

const [scenario, origin, shots] = process.argv.slice(2);
const deadline = (ms) => Date.now() + ms;

const browser = await chromium.launch({
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
const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
const report = {};
try {
  if (scenario === "streamlit") await streamlit(page);
  else if (scenario === "gradio") await gradio(page);
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
  await page.screenshot({ path: join(shots, "streamlit.png"), fullPage: true });
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
  const box = page.locator("#generated textarea");
  await page.locator("#generate").click();
  // Sample the output while it streams: partial values must show before the last.
  const values = [];
  const end = deadline(30000);
  while (Date.now() < end) {
    const v = await box.inputValue();
    if (values.at(-1) !== v) values.push(v);
    if (v.trim().endsWith("token7")) break;
    await page.waitForTimeout(100);
  }
  report.values = values;
  await page.screenshot({ path: join(shots, "gradio.png"), fullPage: true });
}
