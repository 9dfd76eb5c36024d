// The chat page of docs/clients/javascript.md, taken from the file as
// written (only Herald's address changed), served from another local origin
// the way the page says, in two Chromium pages chatting through Herald.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Herald, launchBrowser, browserTest, readmePage, servePage } from "./lib.mjs";

let browser;
let hd;
let site;
let sitePort;

before(async () => {
  hd = await new Herald().start();
  site = await servePage(readmePage().replaceAll("127.0.0.1:8080", `127.0.0.1:${hd.port}`));
  sitePort = site.port;
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (site) await site.close();
  if (hd) await hd.cleanup();
});

const lines = (page) => page.$$eval("#log li", (lis) => lis.map((li) => li.textContent));
const waitLine = (page, text) =>
  page.waitForFunction((t) => [...document.querySelectorAll("#log li")].some((li) => li.textContent === t), text, { timeout: 10000 });

async function openChat(newPage, user) {
  const page = await newPage();
  await page.goto(`http://localhost:${sitePort}/?token=${hd.token(user)}`);
  await waitLine(page, `connected as ${user}`);
  return page;
}

test("the docs' chat page: connect, presence, join, send, receive, history after a reload", browserTest(() => browser, async (t, { newPage }) => {
  const alice = await openChat(newPage, "alice");
  await waitLine(alice, "online: alice");
  const bob = await openChat(newPage, "bob");
  await waitLine(alice, "bob joined");
  await bob.fill("#text", "hello alice");
  // Enter, as a person sends: the page's log sits above the form and grows
  // while lines arrive, so a click could land where the button was a moment before
  await bob.press("#text", "Enter");
  await waitLine(alice, "bob: hello alice");
  await waitLine(bob, "bob: hello alice");
  assert.equal(await bob.inputValue("#text"), "");
  // a backend's publication: no ctx.from, the page names it from its data
  assert.equal((await hd.publish("chat:lobby", { from: "bot", text: "hi" })).status, 200);
  await waitLine(alice, "bot: hi");
  await bob.reload();
  await waitLine(bob, "(earlier) bob: hello alice");
  await waitLine(bob, "(earlier) bot: hi");
  // the old page's socket may still be open when the new one asks who is
  // online (its close is handled on another loop thread): bob is then listed
  // twice, and the old connection's leave follows
  await bob.waitForFunction(() => [...document.querySelectorAll("#log li")].some((li) => li.textContent.startsWith("online: ")), null, { timeout: 10000 });
  const after = await lines(bob);
  const online = after.find((l) => l.startsWith("online: "));
  const names = online ? online.slice("online: ".length).split(", ").sort().join() : "";
  if (names === "alice,bob,bob") await waitLine(bob, "bob left");
  else assert.equal(names, "alice,bob", after.join("\n"));
  assert.deepEqual((await lines(alice)).filter((l) => l.startsWith("error") || l.startsWith("not sent")), []);
}));
