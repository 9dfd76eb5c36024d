// Server-Sent Events with Chromium's own EventSource (GET /sse, SPEC §9):
// a bare EventSource reads the pushes (onmessage for publications, named
// events for the rest), herald.js' HeraldEvents does the same, and when the
// client's node restarts the browser reconnects by itself with
// Last-Event-ID and receives, in order and once, what was published through
// the other node meanwhile (history lives in Redis, so the epoch survives).
// Run: HERALD_BIN=build/herald node --test tests/browser/sse.test.mjs
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { Herald, Redis, launchBrowser, browserTest, until } from "./lib.mjs";

let browser;
let redis;
let a;
let b;

before(async () => {
  redis = await new Redis().start();
  const shared = { secret: crypto.randomBytes(24).toString("hex"), apiKey: crypto.randomBytes(16).toString("hex"), redis };
  a = await new Herald({ ...shared, nodeId: "a", env: { HERALD_SSE_PING: "1" } }).start();
  b = await new Herald({ ...shared, nodeId: "b" }).start();
  await a.waitReady();
  await b.waitReady();
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  for (const n of [a, b]) if (n) await n.cleanup();
  if (redis) await redis.cleanup();
});

const bt = (fn) => browserTest(() => browser, fn);
const got = (page) => page.evaluate(() => window.got);

test("a bare EventSource reads publications (onmessage) and named events", bt(async (t, { open }) => {
  const page = await open(a.base);
  const url = `/sse?channel=chat:bare&channel=plain:bare&token=${a.token("alice")}`;
  await page.evaluate((url) => {
    window.got = { messages: [], named: [], ids: [] };
    const es = (window.es = new EventSource(url));
    es.onmessage = (e) => {
      window.got.messages.push(JSON.parse(e.data));
      window.got.ids.push(e.lastEventId);
    };
    for (const name of ["connected", "subscribed", "join"]) {
      es.addEventListener(name, (e) => window.got.named.push([name, JSON.parse(e.data)]));
    }
  }, url);
  await until(async () => (await got(page)).named.filter(([n]) => n === "subscribed").length === 2, "two subscribed events");
  assert.equal((await a.publish("chat:bare", { n: 1 })).status, 200);
  assert.equal((await b.publish("plain:bare", { n: 2 })).status, 200); // through the other node
  await until(async () => (await got(page)).messages.length === 2, "two messages");
  const g = await got(page);
  const byChannel = Object.fromEntries(g.messages.map((m) => [m.channel, m]));
  assert.deepEqual(byChannel["chat:bare"].data, { n: 1 });
  assert.equal(typeof byChannel["chat:bare"].offset, "number");
  assert.deepEqual(byChannel["plain:bare"], { push: "message", channel: "plain:bare", data: { n: 2 } });
  assert.equal(g.named[0][0], "connected");
  assert.equal(g.named[0][1].user, "alice");
  assert.ok(g.ids.every((id) => id.includes("chat:bare~")), "the last event id names the history channel");
  await page.evaluate(() => window.es.close());
}));

test("HeraldEvents: the node restarts, EventSource reconnects with Last-Event-ID and recovers the gap", bt(async (t, { open }) => {
  const page = await open(a.base);
  await page.evaluate((token) => {
    const { HeraldEvents } = window.herald;
    window.got = { messages: [], subscribed: [], closes: [], errors: 0 };
    const ev = (window.ev = new HeraldEvents("/sse", { channels: ["chat:gap"], token }));
    ev.on("message", (data, ctx) => window.got.messages.push([data, ctx.channel, ctx.offset]));
    ev.on("subscribed", (p) => window.got.subscribed.push(p));
    ev.on("close", (c) => window.got.closes.push(c));
    ev.on("error", () => window.got.errors++);
    ev.connect();
  }, a.token("carol"));
  await until(async () => (await got(page)).subscribed.length === 1, "subscribed");
  const o1 = (await b.publish("chat:gap", 1)).body.offset;
  await until(async () => (await got(page)).messages.length === 1, "the first message");

  await a.stop(); // the stream ends with `close` 1001; EventSource retries every 2 s
  for (const n of [2, 3, 4]) assert.equal((await b.publish("chat:gap", n)).status, 200);
  await a.start();
  await a.waitReady();
  await until(async () => (await got(page)).subscribed.length === 2, "subscribed again", 30000);
  await until(async () => (await got(page)).messages.length === 4, "the missed messages", 15000);
  assert.equal((await b.publish("chat:gap", 5)).status, 200);
  await until(async () => (await got(page)).messages.length === 5, "a live message after");

  const g = await got(page);
  assert.deepEqual(g.closes[0], { code: 1001, reason: "going away" });
  assert.ok(g.errors >= 1, "EventSource saw the stream drop");
  const [s0, s1] = g.subscribed;
  assert.equal(s1.recovered, true, JSON.stringify(s1));
  assert.equal(s1.epoch, s0.epoch);
  assert.deepEqual(g.messages, [1, 2, 3, 4, 5].map((n, i) => [n, "chat:gap", o1 + i]), "in order, once each");
  assert.ok((await page.evaluate(() => window.ev.lastEventId)).includes(`chat:gap~${s0.epoch}~${o1 + 4}`));
  await page.evaluate(() => window.ev.close());
}));

test("HeraldEvents stops after 4003 (disconnected by the server)", bt(async (t, { open }) => {
  const page = await open(a.base);
  await page.evaluate((token) => {
    window.got = { subscribed: 0, closes: [] };
    const ev = (window.ev = new window.herald.HeraldEvents("/sse", { channels: ["plain:x"], token }));
    ev.on("subscribed", () => window.got.subscribed++);
    ev.on("close", (c) => window.got.closes.push(c));
    ev.connect();
  }, a.token("dave"));
  await until(async () => (await got(page)).subscribed === 1, "subscribed");
  assert.equal((await a.api("POST", "/api/v1/users/dave/disconnect")).status, 204);
  await until(async () => (await got(page)).closes.length === 1, "the close event");
  assert.equal((await got(page)).closes[0].code, 4003);
  await until(async () => (await page.evaluate(() => window.ev._es)) === null, "closed for good");
  // nothing reconnects: the node counts no stream for dave
  await until(async () => (await a.metric("herald_stream_connections")) === 0, "no stream left", 15000);
}));
