// examples/fastapi's page, as a person uses it: run.sh starts Herald and the
// FastAPI app; two Chromium pages register and log in through the app, take
// their Herald token from it (herald.js getToken) and place orders; each page
// shows its own order events (user:<id>) and everybody's on "orders".
import { test } from "node:test";
import assert from "node:assert/strict";
import { browserTest, useFastapiExample, until } from "./lib.mjs";

const ex = useFastapiExample();

const lines = (page) => page.$$eval("#log li", (lis) => lis.map((li) => li.textContent));
const waitLine = (page, re) =>
  page.waitForFunction((src) => [...document.querySelectorAll("#log li")].some((li) => new RegExp(src).test(li.textContent)), re.source, { timeout: 15000 });

async function logIn(newPage, username) {
  const page = await newPage();
  await page.goto(`http://127.0.0.1:${ex.appPort}/`);
  await page.fill("#username", username);
  await page.fill("#password", "correct horse battery");
  await page.click("#login button");
  await waitLine(page, /^connected to Herald as user \d+$/);
  const id = (await lines(page)).find((l) => l.startsWith("connected")).split(" ").pop();
  return { page, id };
}

test("the FastAPI example's page: log in, order, see the events", browserTest(() => ex.browser, async (t, { newPage }) => {
  const alice = await logIn(newPage, "alice");
  const bob = await logIn(newPage, "bob");
  assert.notEqual(alice.id, bob.id);
  await alice.page.fill("#item", "teapot");
  await alice.page.click("#order button");
  await waitLine(alice.page, new RegExp(`^user:${alice.id}: \\{"type":"order.created","order":\\{"id":1,"item":"teapot"`));
  await waitLine(alice.page, /^orders: \{"type":"order.created","item":"teapot","quantity":1\}$/);
  await waitLine(bob.page, /^orders: \{"type":"order.created","item":"teapot","quantity":1\}$/);
  await bob.page.click("#order button");
  await waitLine(bob.page, new RegExp(`^user:${bob.id}: .*"item":"teapot"`));
  await until(async () => (await lines(alice.page)).filter((l) => l.startsWith("orders:")).length === 2, "bob's order on alice's page");
  // alice never sees bob's personal channel
  assert.deepEqual((await lines(alice.page)).filter((l) => l.startsWith(`user:${bob.id}:`)), []);
}));
