// Opens one URL in headless Chromium (playwright-core, pinned in package-lock.json), waits
// for the page's #out to leave "loading", and prints its text as the only stdout line.
// Usage: node browser.mjs <chromium executable> <url>
import { chromium } from "playwright-core";

const [executablePath, url] = process.argv.slice(2);
const args = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
];
const browser = await chromium.launch({ executablePath, args });
try {
  const page = await browser.newPage();
  await page.goto(url);
  const out = page.locator("#out");
  await page.waitForFunction(() => document.getElementById("out").textContent !== "loading", null, {
    timeout: 60_000,
  });
  process.stdout.write((await out.textContent()) + "\n");
} finally {
  await browser.close();
}
