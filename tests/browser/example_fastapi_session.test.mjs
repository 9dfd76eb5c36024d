// examples/fastapi's /session page in Chromium (issue 17): the app's own
// cookie login, and a Herald socket with no token - Herald's connect proxy
// asks the app (POST /herald/connect, a FastAPI dependency of
// herald_client.proxy) with the page's cookie. Alice orders, watches her
// order (the app's subscribe check), lists her orders with an RPC; bob, in a
// browser context of his own, is refused her order.
//
// Waits for the proxy's wiring into the connection paths (gateway/).
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserTest, useFastapiExample } from "./lib.mjs";

const ex = useFastapiExample();

const lines = (page) => page.$$eval("#log li", (lis) => lis.map((li) => li.textContent));
async function waitLine(page, re) {
  try {
    await page.waitForFunction((src) => [...document.querySelectorAll("#log li")].some((li) => new RegExp(src).test(li.textContent)), re.source, { timeout: 20000 });
  } catch (e) {
    e.message += `\nwaiting for ${re}; the page shows ${JSON.stringify(await lines(page).catch(() => []))}`;
    throw e;
  }
}

async function logIn(page, username) {
  await page.goto(`http://127.0.0.1:${ex.appPort}/session`);
  await page.fill("#username", username);
  await page.fill("#password", "correct horse battery");
  await page.click("#login button");
  await waitLine(page, /^connected to Herald as user \d+$/);
  return (await lines(page)).find((l) => l.startsWith("connected")).split(" ").pop();
}

test("the FastAPI example's session page: a socket with no token, the order check, an RPC", browserTest(() => ex.browser, async (t, { newPage }) => {
  const alice = await newPage();
  const aliceId = await logIn(alice, "alice");
  await alice.fill("#item", "teapot");
  await alice.click("#order button");
  await waitLine(alice, /^watching order:1$/);
  await waitLine(alice, new RegExp(`^user:${aliceId}: \\{"type":"order.created","order":\\{"id":1,"item":"teapot"`));
  await waitLine(alice, /^orders: \{"type":"order.created","item":"teapot","quantity":1\}$/);
  await alice.click("#mine");
  await waitLine(alice, /^my orders: 1 teapot$/);
  const bobContext = await ex.browser.newContext(); // a cookie jar of his own
  try {
    const bob = await bobContext.newPage();
    const bobId = await logIn(bob, "bob");
    assert.notEqual(bobId, aliceId);
    await bob.fill("#order-id", "1");
    await bob.click("#watch button");
    await waitLine(bob, /^order:1 refused: forbidden$/);
  } finally {
    await bobContext.close();
  }
  assert.deepEqual((await lines(alice)).filter((l) => l.startsWith("error")), []);
}));
