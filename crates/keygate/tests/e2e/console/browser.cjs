// The web console in a real browser (Debian's Chromium, headless, driven by playwright-core),
// against a keygate that `console.rs` started with the candidate-service deployed.
//
// Environment: PLAYWRIGHT (path of the playwright-core package), CHROMIUM, CONSOLE (the admin
// listener's base URL), TRAFFIC (the traffic listener's), TOKEN (an admin token), SHOTS (where
// screenshots go), PLAN (the deployed usage plan's name).
//
// Fails (exit 1) on any assertion, on any error in a page's console, on an uncaught page error
// and on any failed request or error status the step did not expect.
"use strict";

const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { chromium } = require(process.env.PLAYWRIGHT);

const CONSOLE = process.env.CONSOLE;
const TRAFFIC = process.env.TRAFFIC;
const SHOTS = process.env.SHOTS;
const PLAN = process.env.PLAN;

const problems = [];
// Statuses a step expects (the wrong sign-in's 401): consumed as they are seen, with the console
// line Chromium writes for each.
const expected = [];
const expectedConsole = [];

function watch(page) {
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const at = expectedConsole.findIndex((text) => msg.text().includes(text));
    if (at >= 0) expectedConsole.splice(at, 1);
    else problems.push(`console error: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("requestfailed", (req) =>
    problems.push(`request failed: ${req.method()} ${req.url()} ${req.failure()?.errorText}`),
  );
  page.on("response", (res) => {
    if (res.status() < 400) return;
    const at = expected.indexOf(res.status());
    if (at >= 0) expected.splice(at, 1);
    else problems.push(`error status: ${res.status()} ${res.request().method()} ${res.url()}`);
  });
}

// Screenshots of the page at 1440 and 375 px wide (test artifacts, not committed).
async function shoot(page, name) {
  for (const width of [1440, 375]) {
    await page.setViewportSize({ width, height: 900 });
    await page.screenshot({ path: path.join(SHOTS, `${name}-${width}.png`), fullPage: true });
    // Usable at 375 px: nothing wider than the window.
    if (width === 375) {
      const overflow = await page.evaluate(
        () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
      );
      assert.ok(overflow <= 0, `${name} is ${overflow}px wider than a 375px window`);
    }
  }
  await page.setViewportSize({ width: 1440, height: 900 });
}

async function status(key) {
  const res = await fetch(`${TRAFFIC}/dev/candidates`, { headers: key ? { "x-api-key": key } : {} });
  await res.arrayBuffer();
  return res.status;
}

// Polls the traffic listener until `want` or the limit passes; returns the milliseconds taken.
async function until(key, want, limitMs) {
  const start = Date.now();
  for (;;) {
    if ((await status(key)) === want) return Date.now() - start;
    assert.ok(Date.now() - start < limitMs, `not ${want} within ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function main() {
  fs.mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu"],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    watch(page);

    // Not signed in: the sign-in page.
    await page.goto(`${CONSOLE}/`);
    assert.match(page.url(), /\/console\/signin$/);
    await shoot(page, "signin");

    // The token field has the focus.
    assert.equal(await page.evaluate(() => document.activeElement.id), "token");

    // A wrong token: refused, the error next to the field.
    expected.push(401);
    expectedConsole.push("status of 401 (Unauthorized)");
    await page.getByLabel("Admin token").fill("kgt_wrong");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.locator("#token-error").waitFor();
    assert.match(await page.locator("#token-error").textContent(), /not an active admin token/);
    await shoot(page, "signin-error");

    // The right one: the key list, with the deployed key.
    await page.getByLabel("Admin token").fill(process.env.TOKEN);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL(/\/console\/keys$/);
    await page.locator('tr[data-key="candidate-service-api-key"]').waitFor();
    await shoot(page, "keys");

    // Keyboard: the first Tab reaches the skip link, then the navigation.
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement.textContent), "Skip to content");

    // Create a key in the deployed plan; its value is shown once.
    await page.getByRole("link", { name: "Create API key" }).click();
    await page.waitForURL(/\/console\/keys\/new$/);
    await shoot(page, "key-new");
    await page.getByLabel("Name").fill("browser-key");
    await page.getByLabel("Usage plan").selectOption({ label: `${PLAN} · dev` });
    await page.getByRole("button", { name: "Create API key" }).click();
    const value = await page.locator("#key-value").inputValue();
    assert.match(value, /^[A-Za-z0-9]{40}$/);
    await page.getByRole("button", { name: "Copy" }).click();
    await shoot(page, "key-created");

    // The key works on the example's private route; without it, 403.
    assert.equal(await status(null), 403);
    await until(value, 200, 1000);

    // The list never shows the value again; search finds the key.
    await page.getByRole("link", { name: "Done" }).click();
    assert.ok(!(await page.content()).includes(value), "the list shows the value");
    await page.getByLabel("Search by name").fill("browser");
    await page.getByRole("button", { name: "Search" }).click();
    await page.waitForURL(/q=browser/);
    assert.equal(await page.locator("tbody tr").count(), 1);

    // Disable it in the console: refused within a second.
    await page.getByRole("button", { name: "Disable browser-key" }).click();
    await page.locator(".notice").waitFor();
    const ms = await until(value, 403, 1000);
    console.log(JSON.stringify({ disabledRefusedAfterMs: ms }));
    await page.getByRole("button", { name: "Enable browser-key" }).waitFor();

    // Delete it, after a confirmation page.
    await page.getByRole("link", { name: "Delete browser-key" }).click();
    await page.waitForURL(/\/delete$/);
    await shoot(page, "key-delete");
    await page.getByRole("button", { name: "Delete browser-key" }).click();
    await page.locator(".notice").waitFor();
    assert.equal(await page.locator('tr[data-key="browser-key"]').count(), 0);

    // A usage plan with a quota of 3 a day on the example's stage, and a new key in it: the
    // fourth request is refused and the usage chart shows 3 used.
    await page.getByRole("link", { name: "Create API key" }).click();
    await page.getByLabel("Name").fill("quota-key");
    await page.getByRole("button", { name: "Create API key" }).click();
    const quotaKey = await page.locator("#key-value").inputValue();
    await page.getByRole("link", { name: "Usage plans" }).click();
    await page.waitForURL(/\/console\/plans$/);
    await shoot(page, "plans");
    await page.getByRole("link", { name: "Create usage plan" }).click();
    await shoot(page, "plan-new");
    await page.getByLabel("Name").fill("trial");
    await page.getByLabel("Requests", { exact: true }).fill("3");
    await page.getByLabel("Per", { exact: true }).selectOption("DAY");
    await page.getByLabel("API stage").selectOption({ label: "candidate-service · dev" });
    await page.getByRole("button", { name: "Create usage plan" }).click();
    await page.waitForURL(/\/console\/plans\/[a-z0-9]+\?notice=created$/);
    await page.getByLabel("Add a key (name or id)").fill("quota-key");
    await page.getByRole("button", { name: "Add key" }).click();
    await page.locator('li[data-key="quota-key"]').waitFor();
    await shoot(page, "plan");
    await until(quotaKey, 200, 1000);
    assert.equal(await status(quotaKey), 200);
    assert.equal(await status(quotaKey), 200);
    assert.equal(await status(quotaKey), 429, "the fourth request of a 3/DAY quota");
    await page.getByRole("link", { name: "Usage of this plan's keys" }).click();
    const used = page.locator('section[data-key="quota-key"] .used-total');
    for (let tries = 0; (await used.textContent()) !== "3"; tries++) {
      // Gateways write usage every half second.
      assert.ok(tries < 20, `the chart shows ${await used.textContent()} used, not 3`);
      await new Promise((r) => setTimeout(r, 250));
      await page.reload();
    }
    assert.match(
      await page.locator('section[data-key="quota-key"] svg').getAttribute("aria-label"),
      /^quota-key: 3 used, 0 remaining/,
    );
    await shoot(page, "usage");
    const csvHref = await page.getByRole("link", { name: "Export CSV" }).getAttribute("href");
    const csv = await (await page.request.get(`${CONSOLE}${csvHref}`)).text();
    assert.match(csv, /^keyId,keyName,date,used,remaining\n/);
    assert.match(csv, /,quota-key,\d{4}-\d{2}-\d{2},3,0\n/);

    // Import a CSV (AWS's format) with a bad row: the good rows are imported, the warning names
    // the bad row's line.
    await page.getByRole("link", { name: "API keys" }).click();
    await page.getByRole("link", { name: "Import keys" }).click();
    await shoot(page, "import");
    const csvFile = [
      "Name,Key,Description,Enabled,UsagePlanIds",
      "imported-one,ImportedValue000000000001,first,true,",
      "imported-bad,short,bad,true,",
      "imported-two,ImportedValue000000000002,second,true,",
      "",
    ].join("\n");
    await page.getByLabel("CSV file").setInputFiles({
      name: "keys.csv",
      mimeType: "text/csv",
      buffer: Buffer.from(csvFile),
    });
    await page.getByRole("button", { name: "Import" }).click();
    await page.locator(".notice").waitFor();
    assert.match(await page.locator(".notice").textContent(), /Imported 2 keys\. 1 row skipped/);
    const warnings = await page.locator("ul.warnings li").allTextContents();
    assert.equal(warnings.length, 1, warnings.join("; "));
    assert.match(warnings[0], /^line 3: /);
    assert.ok(!warnings[0].includes("short"), "a warning shows a key value");
    await shoot(page, "import-result");

    // An imported key's page: into the deployed plan in one step (200 within a second), an
    // expiry, a rotation whose new value is shown once.
    await page.getByRole("link", { name: "Done" }).click();
    await page.getByRole("link", { name: "imported-two", exact: true }).click();
    await page.getByLabel("Usage plan").selectOption({ label: `${PLAN} · dev` });
    await page.getByRole("button", { name: "Add to plan" }).click();
    await page.locator(".notice").waitFor();
    await until("ImportedValue000000000002", 200, 1000);
    await page.getByLabel("Expires").fill("+30d");
    await page.getByRole("button", { name: "Save expiry" }).click();
    await page.locator(".notice").waitFor();
    assert.match(await page.getByLabel("Expires").inputValue(), /^\d{4}-\d{2}-\d{2}T/);
    await shoot(page, "key");
    // A bad expiry: the page again (400), the error next to the field.
    expected.push(400);
    expectedConsole.push("status of 400 (Bad Request)");
    await page.getByLabel("Expires").fill("tomorrow");
    await page.getByRole("button", { name: "Save expiry" }).click();
    await page.locator("#key-expires-error").waitFor();
    assert.equal(await page.getByLabel("Expires").getAttribute("aria-invalid"), "true");
    await shoot(page, "key-error");
    await page.getByLabel("Grace period for the current value").fill("0");
    await page.getByRole("button", { name: /^Rotate/ }).click();
    const rotated = await page.locator("#key-value").inputValue();
    assert.match(rotated, /^[A-Za-z0-9]{40}$/);
    await shoot(page, "key-rotated");
    await until("ImportedValue000000000002", 403, 1000);
    await until(rotated, 200, 1000);

    // The seed's Method Request step: switch off "API key required" on GET /candidates. As on
    // AWS it takes effect at the next deployment: the banner says so, the route still wants a key.
    await page.getByRole("link", { name: "APIs", exact: true }).click();
    await page.waitForURL(/\/console\/apis$/);
    await shoot(page, "apis");
    await page.getByRole("link", { name: "candidate-service" }).click();
    await page.waitForURL(/\/console\/apis\/[a-z0-9]+$/);
    assert.equal(await page.locator(".banner").count(), 0, "a banner before any change");
    const toggle = page.getByRole("switch", { name: "API key required: GET /candidates", exact: true });
    assert.equal(await toggle.getAttribute("aria-checked"), "true");
    await toggle.click();
    await page.locator(".notice").waitFor();
    assert.equal(await toggle.getAttribute("aria-checked"), "false");
    assert.match(await page.locator(".banner").textContent(), /Undeployed changes/);
    assert.match(await page.locator(".banner").textContent(), /dev/);
    await shoot(page, "api");
    assert.equal(await status(null), 403, "changed before a deployment");
    // Deploy to dev (the stage behind is picked): the route answers without a key.
    assert.equal(await page.getByLabel("Stage", { exact: true }).inputValue(), "dev");
    await page.getByRole("button", { name: "Deploy" }).click();
    await page.locator(".notice").waitFor();
    assert.match(await page.locator(".notice").textContent(), /Deployed/);
    assert.equal(await page.locator(".banner").count(), 0, "a banner after the deployment");
    await until(null, 200, 1000);
    // Two deployments in the history: the deploy's and the console's.
    assert.ok((await page.locator("table").last().locator("tbody tr").count()) >= 2);

    // The audit log names the console as the actor.
    await page.getByRole("link", { name: "Audit log" }).click();
    await page.waitForURL(/\/console\/audit$/);
    assert.ok((await page.content()).includes("console:"), "no console: actor in the audit log");
    await shoot(page, "audit");

    // Sign out: the pages need signing in again.
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL(/\/console\/signin$/);
    await page.goto(`${CONSOLE}/console/keys`);
    assert.match(page.url(), /\/console\/signin$/);
    await context.close();
  } finally {
    await browser.close();
  }
  assert.deepEqual(problems, [], "problems seen in the pages");
  assert.deepEqual(expected, [], "expected error statuses that never came");
  assert.deepEqual(expectedConsole, [], "expected console lines that never came");
}

main().then(
  () => console.log(JSON.stringify({ ok: true })),
  (err) => {
    console.error(err && err.stack ? err.stack : err);
    if (problems.length) console.error(problems.join("\n"));
    process.exit(1);
  },
);
