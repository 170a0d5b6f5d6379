// Each system's view in the web console, in headless Chromium against a `weir up` running every system:
// node systems.js BASE_URL SCREENSHOT_DIR. Every view renders without a console error or a failed request and shows
// what the test gave its system: repair tickets and a ticket's journey, analytics' windows, dispatch's waiting events
// and a reviewer approving one from their queue, a waitroom event's queue; a screenshot of each.
"use strict";
const { open, step, finish } = require("./browser.js");

async function main() {
  const [base, shots] = process.argv.slice(2);
  const call = async (method, path, body) => {
    const response = await fetch(`${base}${path}`, { method, headers: { "content-type": "application/json" }, body: body && JSON.stringify(body) });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  // What each system is given: tickets, detection events, fans in a queue.
  const tickets = await call("POST", "/api/repair/tickets", [0, 1, 2].map((i) => ({
    requester: { email: `c${i}@example.com`, name: "Ada", surname: "Lovelace", age: 40 }, repair_type: ["windshield", "bumper", "body"][i] })));
  await call("POST", "/api/dispatch/events", [1, 2, 3].map((severity) => ({ region: "EU", ruleType: "face_detection", severity })));
  for (const user of ["fan-1", "fan-2", "fan-3"]) await call("POST", "/api/v1/waitroom/join", { user_id: user, event_id: "console-concert", priority: 0 });

  const session = await open();
  const { page } = session;

  await page.goto(`${base}/#/systems`);
  await page.waitForSelector("[data-testid=systems] li");
  const listed = await page.$$eval("[data-testid=systems] a", (as) => as.map((a) => a.textContent));
  for (const title of ["Wedding operations", "Analytics pipeline", "Car repair shop", "Dispatch", "Waitroom"]) {
    if (!listed.includes(title)) throw new Error(`${title} is not listed: ${listed}`);
  }
  step("every system listed");

  await page.click("[data-testid=systems] a:has-text('Car repair shop')");
  await page.waitForSelector("[data-testid=tickets] button[data-ticket]", { timeout: 30000 });
  const first = tickets.tickets[0].ticket_id;
  await page.click(`[data-testid=tickets] button[data-ticket='${first}']`);
  await page.waitForFunction(() => /ticket_opened/.test(document.querySelector("[data-testid=journey]").textContent), null, { timeout: 15000 });
  step("repair: tickets by state and a ticket's journey");
  await page.screenshot({ path: `${shots}/system-repair.png`, fullPage: true });

  await page.goto(`${base}/#/systems/analytics`);
  await page.waitForFunction(() => Number(document.getElementById("a-consumed")?.dataset.value) > 0, null, { timeout: 60000 });
  // One series a type; a window's counts show as a line, or as a dot while there is one window.
  await page.waitForSelector("[data-testid=analytics-chart] svg polyline", { state: "attached", timeout: 60000 });
  step("analytics: counters and the hourly chart");
  await page.screenshot({ path: `${shots}/system-analytics.png`, fullPage: true });

  await page.goto(`${base}/#/systems/dispatch`);
  await page.waitForFunction(() => Number(document.getElementById("d-waiting")?.dataset.value) >= 3, null, { timeout: 30000 });
  await page.fill("#d-open input[name=user]", "console-reviewer");
  await page.click("#d-open button[type=submit]");
  await page.waitForSelector("[data-testid=reviewer]");
  await page.click("#activate");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=queue] button[data-settle=approved]").length >= 1, null, { timeout: 30000 });
  const before = await page.$$eval("[data-testid=queue] button[data-settle=approved]", (b) => b.length);
  await page.click("[data-testid=queue] button[data-settle=approved]");
  await page.waitForFunction(() => /Marked approved/.test(document.getElementById("r-status").textContent), null, { timeout: 15000 });
  await page.waitForFunction((n) => document.querySelectorAll("[data-testid=queue] button[data-settle=approved]").length < n, before, { timeout: 15000 });
  step(`dispatch: a reviewer's queue (${before}), one approved`);
  await page.screenshot({ path: `${shots}/system-dispatch.png`, fullPage: true });

  await page.goto(`${base}/#/systems/waitroom`);
  await page.fill("#w-event input[name=event]", "console-concert");
  await page.click("#w-event button[type=submit]");
  await page.waitForFunction(() => {
    const waiting = Number(document.getElementById("q-waiting")?.dataset.value);
    const checkout = Number(document.getElementById("q-checkout")?.dataset.value);
    return waiting + checkout >= 3;
  }, null, { timeout: 30000 });
  step("waitroom: the event's queue");
  await page.screenshot({ path: `${shots}/system-waitroom.png`, fullPage: true });

  await finish(session, "systems");
}

main().catch((e) => { console.error(e); process.exit(1); });
