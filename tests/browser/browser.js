// What the browser tests share: Debian's Chromium, headless, driven by npm's playwright-core (NODE_PATH finds it),
// and a page that collects what must not happen: script errors, console errors and failed requests (4xx, 5xx), less
// the responses a test expects.
"use strict";
const { chromium } = require("playwright-core");

// A browser and a light-themed page; `errors` fills as the page goes. `expected(response)` lets a test's own
// refusals through (the login's 401s); with `consoleErrors` false, the console's "failed to load" lines are left to
// the response check, which knows which were expected.
async function open({ expected = () => false, consoleErrors = true } = {}) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 }, colorScheme: "light" });
  const errors = [];
  if (consoleErrors) page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("response", (r) => { if (r.status() >= 400 && !expected(r)) errors.push(`${r.status()} ${r.url()}`); });
  page.on("dialog", (d) => { errors.push(`a browser dialog: ${d.message()}`); d.dismiss(); });
  return { browser, page, errors };
}

function step(name) {
  console.log(`step: ${name}`);
}

// Closes the browser; throws if anything went wrong meanwhile, else prints `NAME ok` (what the Rust test waits for).
async function finish({ browser, errors }, name) {
  await browser.close();
  if (errors.length) throw new Error(`errors:\n${errors.join("\n")}`);
  console.log(`${name} ok`);
}

module.exports = { open, step, finish };
