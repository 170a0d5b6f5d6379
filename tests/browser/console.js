// The web console in headless Chromium (Debian's chromium, npm's playwright-core), against a running `weir up`:
// node console.js BASE_URL SCREENSHOT_DIR. Every page renders without a console error, the overview's numbers move
// with the live feed, the lists find what the test made, a dead letter is replayed, a simulated wedding finishes with
// its stress against the optimum, the theme switches; a screenshot of each page.
"use strict";
const { open, step, finish } = require("./browser.js");

async function main() {
  const [base, shots] = process.argv.slice(2);
  const session = await open();
  const { page } = session;

  await page.goto(`${base}/`);
  await page.waitForSelector("[data-testid=overview]");
  step("overview rendered");
  // The live feed: records arrive while the test produces, and the group's lag shows.
  await page.waitForFunction(() => Number(document.getElementById("in-rate")?.dataset.value) > 0, null, { timeout: 30000 });
  await page.waitForFunction(() => Number(document.getElementById("lag")?.dataset.value) > 0, null, { timeout: 30000 });
  await page.waitForFunction(() => document.querySelectorAll("#chart polyline").length === 2, null, { timeout: 30000 });
  // The wedding runs here, and is healthy (its desks' task runs).
  if ((await page.getAttribute("#systems [data-system=wedding]", "data-healthy")) !== "true") throw new Error("the wedding is not shown healthy");
  step("live numbers and chart, the systems' health");
  await page.screenshot({ path: `${shots}/overview.png` });

  // Keyboard only: the Topics link is reached with Tab and followed with Enter.
  await page.focus("nav a[data-page=overview]");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  await page.waitForSelector("[data-testid=topics-table] td:has-text('console-demo')", { timeout: 30000 });
  await page.fill("#filter", "demo");
  await page.waitForFunction(
    () => [...document.querySelectorAll("[data-testid=topics-table] tbody tr")].map((r) => r.cells[0].textContent.trim()).join() === "console-demo",
    null, { timeout: 10000 });
  if ((await page.getAttribute("nav a[data-page=topics]", "aria-current")) !== "page") throw new Error("the Topics link is not marked current");
  step("topics listed and filtered");
  await page.screenshot({ path: `${shots}/topics.png` });

  // A topic's page: its messages, one produced from the form, then found by a JSON path search.
  await page.click("[data-testid=topics-table] a:has-text('console-demo')");
  await page.waitForSelector("[data-testid=messages] article.message", { timeout: 30000 });
  step("messages browsed");
  await page.fill("#produce input[name=key]", "from-the-console");
  await page.fill("#produce textarea[name=headers]", "source: console");
  await page.fill("#produce textarea[name=value]", JSON.stringify({ order: { id: "ui-4711", total: 12.5 } }));
  await page.click("#produce button[type=submit]");
  await page.waitForFunction(() => /Produced to partition \d+ at offset \d+/.test(document.getElementById("produced").textContent), null, { timeout: 15000 });
  step("produced from the form");
  await page.fill("#search input[name=q]", "ui-4711");
  await page.fill("#search input[name=path]", "$.order.id");
  await page.click("#search button[type=submit]");
  await page.waitForFunction(() => document.querySelector("[data-testid=found]").dataset.done === "true", null, { timeout: 30000 });
  const found = await page.$$eval("[data-testid=found] article.message", (list) => list.map((a) => a.textContent));
  if (found.length !== 1 || !found[0].includes("from-the-console") || !found[0].includes("source=console")) {
    throw new Error(`the search found ${JSON.stringify(found)}`);
  }
  step("found by search");
  // Oldest first, three at a time, for a page that fits a screenshot.
  await page.selectOption("#browse select[name=order]", "oldest");
  await page.fill("#browse input[name=limit]", "3");
  await page.click("#browse button[type=submit]");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=messages] article.message").length === 3, null, { timeout: 15000 });
  await page.screenshot({ path: `${shots}/messages.png`, fullPage: true });

  // Creating a topic with a setting, finding it, then deleting it once its name is typed.
  await page.goto(`${base}/#/topics`);
  await page.fill("#create input[name=name]", "console-made");
  await page.fill("#create input[name=partitions]", "3");
  await page.fill("#create textarea[name=configs]", "retention.ms=60000");
  await page.click("#create button[type=submit]");
  await page.waitForFunction(() => /Created console-made with 3 partition/.test(document.getElementById("created").textContent), null, { timeout: 15000 });
  await page.click("[data-testid=topics-table] a:has-text('console-made')");
  await page.waitForSelector("[data-testid=topic]");
  const made = await page.textContent("[data-testid=topic]");
  if (!/retention\.ms\s*60000/.test(made)) throw new Error("the new topic's setting is not shown");
  if ((await page.$$("[data-testid=partitions] tbody tr")).length !== 3) throw new Error("not 3 partitions");
  if (!(await page.isDisabled("#delete button"))) throw new Error("delete is offered before the name is typed");
  await page.fill("#delete input[name=confirm]", "console-made");
  await page.click("#delete button");
  await page.waitForFunction(() => location.hash === "#/topics", null, { timeout: 15000 });
  await page.waitForSelector("[data-testid=topics-table] td:has-text('console-demo')");
  if ((await page.$$("[data-testid=topics-table] a:has-text('console-made')")).length) throw new Error("the deleted topic is still listed");
  step("topic created and deleted");

  await page.click("nav a[data-page=groups]");
  await page.waitForSelector("[data-testid=groups-table] td:has-text('console-group')", { timeout: 30000 });
  step("groups listed");
  await page.screenshot({ path: `${shots}/groups.png` });

  // A group's page: its lag (200 of 300 records unread), falling as it consumes (the test consumes 100 more when
  // this page asks, through a file), then to nothing when its offsets are reset to the end; the chart keeps samples.
  await page.click("[data-testid=groups-table] a:has-text('console-lagged')");
  const lag = () => page.evaluate(() => Number(document.getElementById("g-lag")?.dataset.value));
  await page.waitForFunction(() => Number(document.getElementById("g-lag")?.dataset.value) === 200, null, { timeout: 30000 });
  step("a group's lag shown");
  require("fs").writeFileSync(`${shots}/consume-now`, "");
  await page.waitForFunction(() => Number(document.getElementById("g-lag")?.dataset.value) === 100, null, { timeout: 60000 });
  step(`the lag fell as it consumed (${await lag()})`);
  await page.selectOption("#reset select[name=to]", "latest");
  await page.click("#reset button[type=submit]");
  await page.waitForFunction(() => /Reset 1 partition/.test(document.getElementById("reset-status").textContent), null, { timeout: 15000 });
  await page.waitForFunction(() => Number(document.getElementById("g-lag")?.dataset.value) === 0, null, { timeout: 15000 });
  await page.waitForFunction(() => /^[2-9]|^\d{2,}/.test(document.querySelector("#lag-chart .legend span")?.textContent || ""), null, { timeout: 30000 });
  step("reset to the end, lag 0, samples kept");
  await page.screenshot({ path: `${shots}/group.png`, fullPage: true });

  // Dead letters: the wedding dead-lettered what the test sent to wedding.brawl that is not an event. The oldest is
  // replayed from the page: it leaves the waiting letters and shows among the replayed ones.
  await page.click("nav a[data-page=dead-letters]");
  await page.waitForFunction(() => {
    const row = [...document.querySelectorAll("[data-testid=dlq-table] tbody tr")].find((r) => r.cells[0].textContent.trim() === "wedding.brawl.dlq");
    return row && Number(row.cells[2].textContent.replace(/\D/g, "")) >= 3;
  }, null, { timeout: 60000 });
  step("dead-letter topics listed");
  await page.click("[data-testid=dlq-table] a:has-text('wedding.brawl.dlq')");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=letters] article.letter").length >= 3, null, { timeout: 30000 });
  const oldest = await page.$eval("[data-testid=letters] article.letter:last-child", (a) => ({
    partition: a.dataset.partition, offset: a.dataset.offset, text: a.textContent, error: a.querySelector(".error").textContent }));
  if (!/from wedding\.brawl \/ \d+ \/ \d+/.test(oldest.text) || !/attempts \d/.test(oldest.text) || /no error recorded/.test(oldest.error)) {
    throw new Error(`a letter without its origin, attempts or error: ${oldest.text}`);
  }
  await page.screenshot({ path: `${shots}/dead-letters.png`, fullPage: true });
  await page.click("[data-testid=letters] article.letter:last-child button.replay-one");
  await page.waitForFunction(() => /Replayed 1 to wedding\.brawl/.test(document.getElementById("replay-status").textContent), null, { timeout: 15000 });
  await page.waitForFunction((o) => ![...document.querySelectorAll("[data-testid=letters] article.letter")]
    .some((a) => a.dataset.partition === o.partition && a.dataset.offset === o.offset), oldest, { timeout: 15000 });
  await page.selectOption("#letters select[name=state]", "replayed");
  await page.click("#letters button[type=submit]");
  await page.waitForFunction((o) => [...document.querySelectorAll("[data-testid=letters] article.letter")]
    .some((a) => a.dataset.partition === o.partition && a.dataset.offset === o.offset && a.dataset.replayed === "true"), oldest, { timeout: 15000 });
  step("a dead letter replayed and gone from the waiting ones");

  // The wedding's view: a simulated run started from the page, its timeline drawn, finishing with its stress against
  // the exact optimum's.
  await page.click("nav a[data-page=systems]");
  await page.click("[data-testid=systems] a:has-text('Wedding')");
  await page.waitForSelector("[data-testid=wedding]");
  await page.fill("#simulate input[name=events]", "80");
  await page.fill("#simulate input[name=seed]", "7");
  await page.selectOption("#simulate select[name=speed]", "max");
  await page.click("#simulate button[type=submit]");
  await page.waitForFunction(() => /Run \d+ started: 80 events from seed 7/.test(document.getElementById("simulate-status").textContent), null, { timeout: 15000 });
  await page.waitForFunction(() => document.getElementById("w-result").dataset.finished === "true", null, { timeout: 180000 });
  const result = await page.$eval("#w-result", (r) => ({ stress: Number(r.dataset.stress), best: Number(r.dataset.best), text: r.textContent }));
  if (!(result.best >= 0 && result.stress >= result.best) || !/against \d+ for the best possible/.test(result.text.replace(/\s+/g, " "))) {
    throw new Error(`the run's result: ${JSON.stringify(result)}`);
  }
  if ((await page.$$("[data-testid=timeline] rect")).length === 0) throw new Error("no handling on the timeline");
  if (Number(await page.getAttribute("#w-sent", "data-value")) !== 80) throw new Error("not every event was sent");
  step(`the wedding run finished: stress ${result.stress}, best possible ${result.best}`);
  await page.screenshot({ path: `${shots}/wedding.png`, fullPage: true });

  // Schemas: the subject's two versions side by side (the field added), a draft checked against the latest (one that
  // adds a field without a default is not backward compatible; one with a default is), then a value produced with
  // the subject's latest schema shows decoded on its topic's page.
  if (await page.isHidden("nav a[data-page=schemas]")) throw new Error("no Schemas link though the registry runs");
  await page.click("nav a[data-page=schemas]");
  await page.click("[data-testid=subjects] a:has-text('console-typed-value')");
  await page.waitForSelector("[data-testid=diff] tr.add", { timeout: 15000 });
  const added = await page.$$eval("[data-testid=diff] tr.add", (rows) => rows.map((r) => r.textContent).join(" "));
  if (!/"name": "name"/.test(added)) throw new Error(`the diff shows no added field: ${added}`);
  const draft = (fields) => JSON.stringify({ type: "record", name: "Order", fields }, null, 2);
  await page.fill("#draft textarea[name=schema]", draft([{ name: "id", type: "int" }, { name: "name", type: "string", default: "" }, { name: "total", type: "double" }]));
  await page.click("#draft button[type=submit]");
  await page.waitForFunction(() => document.getElementById("draft-result").dataset.compatible === "false", null, { timeout: 15000 });
  await page.fill("#draft textarea[name=schema]", draft([{ name: "id", type: "int" }, { name: "name", type: "string", default: "" }, { name: "total", type: "double", default: 0 }]));
  await page.click("#draft button[type=submit]");
  await page.waitForFunction(() => document.getElementById("draft-result").dataset.compatible === "true", null, { timeout: 15000 });
  step("a subject's versions compared, drafts checked");
  await page.screenshot({ path: `${shots}/schema.png`, fullPage: true });
  await page.goto(`${base}/#/topics/console-typed`);
  await page.waitForSelector("#produce select[name=value_subject] option[value='console-typed-value']", { state: "attached", timeout: 15000 });
  await page.selectOption("#produce select[name=value_subject]", "console-typed-value");
  await page.fill("#produce textarea[name=value]", JSON.stringify({ id: 7, name: "typed in the console" }));
  await page.click("#produce button[type=submit]");
  await page.waitForFunction(() => /with schema id \d+/.test(document.getElementById("produced").textContent), null, { timeout: 15000 });
  await page.waitForSelector("[data-testid=messages] [data-schema-id]", { timeout: 15000 });
  const typed = await page.textContent("[data-testid=messages] article.message");
  if (!/typed in the console/.test(typed) || !/\(AVRO\)/.test(typed)) throw new Error(`the framed value is not shown decoded: ${typed}`);
  step("a value produced with its schema, shown decoded");

  // Theme: system, then light, then dark, kept when the page is opened again.
  await page.click("#theme");
  await page.click("#theme");
  await page.goto(`${base}/#/`);
  await page.reload();
  await page.waitForSelector("[data-testid=overview]");
  const theme = await page.evaluate(() => document.documentElement.dataset.theme);
  if (theme !== "dark") throw new Error(`the theme is ${theme}, not dark`);
  await page.waitForFunction(() => Number(document.getElementById("topics")?.dataset.value) > 0, null, { timeout: 30000 });
  step("dark theme kept");
  await page.screenshot({ path: `${shots}/overview-dark.png` });

  await finish(session, "console");
}

main().catch((e) => { console.error(e); process.exit(1); });
