// The web console's login in headless Chromium against a `weir up` that requires authentication, with ACLs:
// node login.js BASE_URL SCREENSHOT_DIR. The page asks for a login (a wrong password is told so), a reader sees the
// platform but is not offered what they may not do (create or delete a topic, produce, start a wedding run), logging
// out returns to the login, and a writer is offered it all.
"use strict";
const { open, step, finish } = require("./browser.js");

async function main() {
  const [base, shots] = process.argv.slice(2);
  const session = await open({ expected: (r) => r.status() === 401 && /\/console\/(api\/me|login)/.test(r.url()), consoleErrors: false });
  const { page } = session;
  const login = async (user, password) => {
    await page.waitForSelector("[data-testid=login]");
    await page.fill("#login input[name=user]", user);
    await page.fill("#login input[name=password]", password);
    await page.click("#login button[type=submit]");
  };

  await page.goto(`${base}/`);
  await page.waitForSelector("[data-testid=login]", { timeout: 15000 });
  if (await page.isVisible("nav")) throw new Error("the pages are offered before a login");
  await page.screenshot({ path: `${shots}/login.png` });
  await login("reader", "not-the-password");
  await page.waitForFunction(() => /Wrong user name or password/.test(document.getElementById("login-status").textContent), null, { timeout: 15000 });
  step("a wrong password is refused");

  await login("reader", "reader-pw-2026");
  await page.waitForSelector("[data-testid=overview]", { timeout: 15000 });
  if ((await page.textContent("#who")).indexOf("reader") < 0) throw new Error("the user logged in is not shown");
  await page.goto(`${base}/#/topics`);
  await page.waitForSelector("[data-testid=topics-table] td:has-text('orders')", { timeout: 15000 });
  if (!(await page.isHidden("#create"))) throw new Error("a reader is offered to create a topic");
  await page.click("[data-testid=topics-table] a:has-text('orders')");
  await page.waitForSelector("[data-testid=topic]");
  if (!(await page.isHidden("#produce")) || !(await page.isHidden("#delete"))) throw new Error("a reader is offered to produce or delete");
  if (!(await page.isVisible("#browse"))) throw new Error("a reader cannot browse messages");
  await page.goto(`${base}/#/systems/wedding`);
  await page.waitForSelector("[data-testid=wedding]");
  if (!(await page.isHidden("#simulate"))) throw new Error("a reader is offered to start a wedding run");
  step("a reader sees, and is offered nothing they may not do");

  await page.click("#who button");
  await page.waitForSelector("[data-testid=login]", { timeout: 15000 });
  step("logged out");

  await login("writer", "writer-pw-2026");
  // The page reloads where it was (the wedding's view), now as the writer.
  await page.waitForFunction(() => /writer/.test(document.getElementById("who").textContent) && !document.querySelector("nav").hidden, null, { timeout: 15000 });
  await page.goto(`${base}/#/topics`);
  await page.waitForSelector("[data-testid=topics-table] td:has-text('orders')", { timeout: 15000 });
  if (!(await page.isVisible("#create"))) throw new Error("a writer is not offered to create a topic");
  await page.goto(`${base}/#/systems/wedding`);
  await page.waitForSelector("[data-testid=wedding]");
  if (!(await page.isVisible("#simulate"))) throw new Error("a writer is not offered to start a wedding run");
  step("a writer is offered it all");

  await finish(session, "login");
}

main().catch((e) => { console.error(e); process.exit(1); });
