// The demo chat (web/demo) served by Herald with --web-root: two users
// register and log in through the page (REST + OAuth2 password grant), enter
// a room, see each other online, chat, get the last messages after a
// reload, and one of them gets what was said while its socket was cut
// (through a TCP proxy) without a reload.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { REPO, browserTest, enterDemoRoom, heraldProxyBrowser, items, waitItem } from "./lib.mjs";

const DEMO = path.join(REPO, "web", "demo");
const env = heraldProxyBrowser({
  env: { HERALD_WEB_ROOT: DEMO },
  config: JSON.parse(fs.readFileSync(path.join(DEMO, "herald.json"), "utf8")),
});

async function enter(page, origin, user, room) {
  await enterDemoRoom(page, origin, user, room);
  await waitItem(page, "#messages li", `${user} entered the room`, 10000);
}

test("Herald serves the demo: /, its script and stylesheet, with content types and ETags", async () => {
  for (const [p, type] of [["/", "text/html; charset=utf-8"], ["/chat.js", "application/javascript; charset=utf-8"], ["/chat.css", "text/css; charset=utf-8"]]) {
    const r = await fetch(env.hd.base + p);
    assert.equal(r.status, 200, p);
    assert.equal(r.headers.get("content-type"), type);
    const etag = r.headers.get("etag");
    assert.ok(etag);
    assert.equal((await fetch(env.hd.base + p, { headers: { "If-None-Match": etag } })).status, 304);
  }
  for (const p of ["/nope.js", "/../CMakeLists.txt", "/.hidden", "/herald.json/"]) assert.equal((await fetch(env.hd.base + p)).status, 404, p);
  assert.equal((await fetch(env.hd.base + "/healthz")).status, 200, "routes come first");
});

test("two users chat in a room: register, presence, messages, history, recovery after a cut", browserTest(() => env.browser, async (t, { newPage }) => {
  const alice = await newPage();
  const bob = await newPage();
  await enter(alice, `http://127.0.0.1:${env.proxy.port}`, "alice", "lobby");
  await enter(bob, env.hd.base, "bob", "lobby");
  await waitItem(alice, "#messages li", "bob entered the room");
  await waitItem(alice, "#online li", "bob");
  await waitItem(bob, "#online li", "alice");

  await alice.fill("#text", "hello bob");
  await alice.press("#text", "Enter");
  await waitItem(bob, "#messages li", "alice: hello bob");
  await waitItem(alice, "#messages li", "alice: hello bob");
  assert.equal(await alice.inputValue("#text"), "");

  // alice's socket is cut; bob talks meanwhile; alice gets it on reconnect
  env.proxy.refuse = true;
  env.proxy.drop();
  await waitItem(alice, "#status", "reconnecting…");
  await bob.fill("#text", "are you there?");
  await bob.press("#text", "Enter");
  await waitItem(bob, "#messages li", "bob: are you there?");
  env.proxy.refuse = false;
  await waitItem(alice, "#status", "online", 15000);
  await waitItem(alice, "#messages li", "bob: are you there?");
  const seen = await items(alice, "#messages li");
  assert.equal(seen.filter((l) => l === "bob: are you there?").length, 1, seen.join("\n"));
  assert.equal(seen.filter((l) => l === "alice: hello bob").length, 1, seen.join("\n"));

  // bob posts, with his own token, a message that claims to be alice's (the
  // old demo rendered data.from): the page names the publisher Herald says
  await bob.evaluate(async () => {
    const { Herald } = await import("/herald.js");
    const session = JSON.parse(sessionStorage.getItem("herald-demo"));
    const h = new Herald("/ws", { token: session.access });
    h.connect();
    await h.subscribe("chat:lobby").ready; /* the namespace lets subscribers publish */
    await h.publish("chat:lobby", { type: "message", from: "alice", uid: "alice", text: "forged" });
    h.disconnect();
  });
  await waitItem(alice, "#messages li", "bob: forged");
  assert.ok(!(await items(alice, "#messages li")).includes("alice: forged"));

  // a reload: the session survives in the tab, the last messages come back
  await bob.reload();
  await waitItem(bob, "#status", "online");
  await waitItem(bob, "#messages li", "alice: hello bob");
  await waitItem(bob, "#messages li", "bob: are you there?");
  assert.equal(await bob.$eval("#me", (e) => e.textContent), "bob");

  // log out: back to the form
  await bob.click("#logout");
  await bob.waitForSelector("#login:not([hidden])");
  await waitItem(alice, "#messages li", "bob left");
}));

test("the demo's errors: a wrong password and a taken username are shown on the form", browserTest(() => env.browser, async (t, { newPage }) => {
  const page = await newPage();
  await page.goto(env.hd.base + "/");
  await page.fill("#username", "carol");
  await page.fill("#password", "carol has a long passphrase");
  await page.click("#register-btn");
  await page.waitForSelector("#lobby:not([hidden])");
  await page.click("#logout");
  await page.fill("#username", "carol");
  await page.fill("#password", "not carol's passphrase");
  await page.click("#login-btn");
  await page.waitForFunction(() => document.getElementById("login-error").textContent.length > 0);
  await page.fill("#password", "carol has a long passphrase");
  await page.click("#register-btn");
  await waitItem(page, "#login-error", "that username is taken");
}));
