// The triage page in a real browser (issue 22): headless Chromium, driven by playwright-core, against
// the driver (tests/browser/driver.rs: the Graph emulator with its OpenID provider stand-in, and secmon's
// router and worker). Opens a notification's link, is sent to the provider and signs in, sees the alert,
// resolves it as benign, sees the confirmation, and the worker's PATCH reaches Graph; then the same link
// is refused (used) and an expired link is refused. Saves a screenshot of the page to docs/img.
//
//   node tests/browser/triage.spec.js <driver executable> [screenshot.png]
"use strict";

const assert = require("node:assert/strict");
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const readline = require("node:readline");
const { chromium } = require("playwright-core");

const [driverExe, screenshot] = process.argv.slice(2);
if (!driverExe) {
  console.error("usage: node triage.spec.js <driver executable> [screenshot.png]");
  process.exit(2);
}

function step(text) {
  console.log(`triage page: ${text}`);
}

async function main() {
  const driver = spawn(driverExe, [], { stdio: ["pipe", "pipe", "inherit"] });
  const lines = readline.createInterface({ input: driver.stdout });
  const pending = [];
  lines.on("line", (line) => pending.shift()?.(JSON.parse(line)));
  const next = () => new Promise((resolve) => pending.push(resolve));
  const report = () => {
    const answer = next();
    driver.stdin.write("report\n");
    return answer;
  };
  const setup = await next();
  step(`driver up at ${setup.base}`);

  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "secmon-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
    viewport: { width: 760, height: 640 },
    // The provider stand-in serves TLS with the emulator's own test CA, which Chromium does not know.
    ignoreHTTPSErrors: true,
  });
  try {
    const page = context.pages()[0] || (await context.newPage());

    // The link: not signed in, so off to the provider, which signs the test user in and sends them back.
    await page.goto(setup.link);
    assert.ok(page.url().includes("/oidc/authorize"), `sent to sign in: ${page.url()}`);
    step("sent to the OpenID provider stand-in");
    await Promise.all([page.waitForURL((u) => u.pathname.startsWith("/api/triage/") && !u.pathname.endsWith("/signin")), page.click("#signin")]);
    step("signed in, back on the link");
    assert.equal(await page.locator("h1").first().textContent(), setup.title);
    assert.equal(await page.locator("#status").textContent(), "new");
    assert.match(await page.content(), /Act as dana@contoso\.com/);
    assert.equal((await report()).patches.length, 0, "nothing changes on a GET");
    if (screenshot) {
      await page.screenshot({ path: screenshot, fullPage: true });
      step(`screenshot ${screenshot}`);
    }

    // Resolve as benign: a choice of classification and determination, then the confirmation.
    await page.selectOption("select[name=classification]", "falsePositive");
    await page.selectOption("select[name=determination]", "notMalicious");
    const [answer] = await Promise.all([page.waitForNavigation(), page.click("#resolve-benign")]);
    assert.equal(answer.status(), 200);
    assert.equal(await page.locator("#outcome").textContent(), "Resolved as benign");
    step("confirmed");

    // The worker acts: one PATCH and the comment naming the person.
    let seen;
    for (let i = 0; i < 100; i++) {
      seen = await report();
      if (seen.patches.length > 0 && seen.comments.length > 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(seen.patches.length, 1, JSON.stringify(seen));
    assert.equal(seen.patches[0].alert, setup.alert);
    assert.equal(seen.patches[0].body.status, "resolved");
    assert.equal(seen.patches[0].body.classification, "falsePositive");
    assert.ok(seen.comments.some((c) => c.text === "Resolved as benign by dana@contoso.com via secmon"), JSON.stringify(seen));
    step("Graph got the PATCH and the comment");

    // The same link again: used up.
    const again = await page.goto(setup.link);
    assert.equal(again.status(), 410);
    assert.match(await page.locator("#refusal").textContent(), /already used/);
    step("the used link is refused (410)");

    // An expired link.
    const expired = await page.goto(setup.expired);
    assert.equal(expired.status(), 410);
    assert.match(await page.locator("#refusal").textContent(), /expired/);
    step("the expired link is refused (410)");

    assert.equal((await report()).patches.length, 1, "nothing more reached Graph");
  } finally {
    await context.close();
    driver.stdin.end();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log("triage page: browser test passed");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
