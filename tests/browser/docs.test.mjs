// /docs in Chromium: Swagger UI (npm's swagger-ui-dist, which setup.sh
// installs in web/swagger-ui) renders every operation of
// /api/v1/openapi.json under Herald's Content-Security-Policy, and "Try it
// out" works against the live server: an open route, then a publication
// authorised with the API key through the Authorize dialog.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { Herald, REPO, launchBrowser, browserTest } from "./lib.mjs";

const SWAGGER_UI = path.join(REPO, "web", "swagger-ui", "node_modules", "swagger-ui-dist");
let browser;
let hd;

before(async () => {
  assert.ok(fs.existsSync(path.join(SWAGGER_UI, "swagger-ui-bundle.js")),
    `${SWAGGER_UI} missing: ./setup.sh test installs it (npm ci in web/swagger-ui)`);
  hd = await new Herald({ env: { HERALD_SWAGGER_UI: SWAGGER_UI } }).start();
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (hd) await hd.cleanup();
});

const operations = () => {
  const doc = JSON.parse(fs.readFileSync(path.join(REPO, "docs", "openapi.json"), "utf8"));
  const out = [];
  for (const [p, item] of Object.entries(doc.paths))
    for (const [m, op] of Object.entries(item)) if (m !== "parameters") out.push({ path: p, method: m, op });
  return out;
};

async function execute(page, block) {
  const op = page.locator(block);
  await op.locator(".opblock-summary").first().click();
  await op.locator(".try-out__btn").click();
  await op.locator(".execute").click();
  const status = op.locator(".live-responses-table tbody .response-col_status").first();
  await status.waitFor({ timeout: 10000 });
  return (await status.textContent()).trim();
}

test("Swagger UI shows every operation and tries them against Herald", browserTest(() => browser, async (t, { newPage }) => {
  const page = await newPage();
  const resp = await page.goto(hd.base + "/docs");
  assert.equal(resp.status(), 200);
  assert.match(resp.headers()["content-security-policy"] || "", /script-src 'self'/);
  await page.locator(".opblock").first().waitFor({ timeout: 15000 });
  assert.equal(await page.locator(".info .title").first().textContent().then((s) => s.includes("Herald")), true);

  const ops = operations();
  assert.equal(await page.locator(".opblock").count(), ops.length, "one block per documented operation");
  for (const { op } of ops) {
    const tag = op.tags[0];
    assert.equal(await page.locator(`#operations-${tag}-${op.operationId}`).count(), 1, `${op.operationId} not shown`);
  }

  // an open route
  assert.equal(await execute(page, "#operations-operations-healthz"), "200");

  // the API key through Authorize, then a publication
  await page.locator(".auth-wrapper .authorize").first().click();
  const keyForm = page.locator(".auth-container").filter({ hasText: "X-API-Key" }).first();
  await keyForm.locator("input").first().fill(hd.apiKey);
  await keyForm.locator("button.authorize").click();
  await page.locator(".btn-done, .close-modal").first().click();
  const before = await hd.metric("herald_publications_total");
  assert.equal(await execute(page, "#operations-publishing-publish"), "200");
  assert.equal(await hd.metric("herald_publications_total"), before + 1, "the publication did not reach Herald");

  // Swagger UI sets one inline style that the CSP refuses, without a
  // visible effect; a refused script, stylesheet or fetch would matter
  const errors = page.consoleLines.filter((l) => /pageerror|Refused to (load|execute|connect)|script-src|connect-src/.test(l));
  assert.deepEqual(errors, [], "the page hit errors or CSP refusals");
}));
