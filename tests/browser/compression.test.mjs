// permessage-deflate with Chromium's own WebSocket (it offers
// "permessage-deflate; client_max_window_bits" by default): Herald
// (HERALD_WS_COMPRESSION=true) answers with server_no_context_takeover and
// client_no_context_takeover, the page's socket reports the extension,
// Chromium's compressed commands are understood, and compressed publications
// (short, ~1 KB, 70 KB) arrive intact - through a bare WebSocket and through
// herald.js. Herald's metrics show the frames left compressed, one
// compression per publication. Without HERALD_WS_COMPRESSION nothing is
// negotiated. Run: HERALD_BIN=build/herald node --test tests/browser/compression.test.mjs
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Herald, launchBrowser, browserTest, until } from "./lib.mjs";

const ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
let browser;
let hd;

before(async () => {
  hd = await new Herald({ env: { HERALD_WS_COMPRESSION: "true" } }).start();
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (hd) await hd.cleanup();
});

const bt = (fn) => browserTest(() => browser, fn);

/* A chat event of about 1 KB, or `text` instead of its text. */
const chat = (i, text) => ({
  type: "chat.message",
  id: `01HV6Z5W3K9Q2M7YB8T4C1N${String(i).padStart(3, "0")}`,
  room: "room-42",
  author: { id: "u_83921", name: "Alice Martin", avatar: "https://cdn.example.com/avatars/u_83921/64.png" },
  text:
    text ??
    `Hey everyone, the release notes for 2.4 are up. Please take a look at the migration section before Thursday's deploy, especially if you maintain one of the plugins that use the old settings API. (#${i})`,
  mentions: [{ id: "u_1002", name: "Bob" }, { id: "u_1003", name: "Carol" }],
  reactions: { thumbs_up: 3, eyes: 1 },
  sent_at: "2026-11-22T10:42:13.512Z",
});

/* What REST publishes in the tests: short ones (sent plain), ~1 KB ones and
 * one of 70 KB (a 64-bit frame length), all sent compressed. */
const DATAS = [...Array.from({ length: 12 }, (_, i) => (i % 3 ? chat(i) : { n: i })), chat(99, "é ü ✓ ".repeat(10000))];
const BIG = DATAS.filter((d) => JSON.stringify(d).length > 256).length;

/* A bare WebSocket in the page: window.got collects every message. */
async function rawSocket(page, url) {
  return page.evaluate(async (url) => {
    window.got = [];
    const ws = (window.ws = new WebSocket(url));
    ws.onmessage = (e) => window.got.push(JSON.parse(e.data));
    await new Promise((ok, fail) => {
      ws.onopen = ok;
      ws.onerror = () => fail(new Error("WebSocket error"));
    });
    return ws.extensions;
  }, url);
}

const received = (page) => page.evaluate(() => window.got);

test("Chromium negotiates permessage-deflate and reads compressed publications", bt(async (t, { open }) => {
  const page = await open(hd.base);
  const frames0 = await hd.metric("herald_ws_compressed_frames_sent_total");
  const deflates0 = await hd.metric("herald_ws_deflates_total");
  const ext = await rawSocket(page, `${hd.ws}?token=${hd.token("alice")}`);
  assert.equal(ext, ANSWER, "the socket's negotiated extensions");
  await until(async () => (await received(page)).some((m) => m.push === "connected"), "connected push");

  // Chromium compresses what it sends: Herald must inflate it
  await page.evaluate(() => window.ws.send(JSON.stringify({ id: 1, op: "subscribe", channel: "plain:c" })));
  await until(async () => (await received(page)).some((m) => m.id === 1), "subscribe reply");
  assert.deepEqual((await received(page)).find((m) => m.id === 1), { id: 1, result: { channel: "plain:c" } });

  for (const d of DATAS) assert.equal((await hd.publish("plain:c", d)).status, 200);
  // and a publication of the page's own, big enough to go both ways compressed
  await page.evaluate((d) => window.ws.send(JSON.stringify({ id: 2, op: "publish", channel: "plain:c", data: d })), chat(7));
  await until(async () => (await received(page)).filter((m) => m.push === "message").length === DATAS.length + 1,
    "every publication", 15000);
  const got = (await received(page)).filter((m) => m.push === "message").map((m) => m.data);
  assert.deepEqual(got, [...DATAS, chat(7)]);
  assert.deepEqual((await received(page)).find((m) => m.id === 2), { id: 2, result: {} });

  assert.equal(await hd.metric("herald_ws_compressed_frames_sent_total") - frames0, BIG + 1);
  assert.equal(await hd.metric("herald_ws_deflates_total") - deflates0, BIG + 1, "one compression per publication");
}));

test("herald.js over a compressing socket: subscribe, publish, receive", bt(async (t, { open }) => {
  const alice = await open(hd.base);
  const bob = await open(hd.base);
  const deflates0 = await hd.metric("herald_ws_deflates_total");
  const frames0 = await hd.metric("herald_ws_compressed_frames_sent_total");
  for (const [page, who] of [[alice, "alice"], [bob, "bob"]]) {
    await page.evaluate(({ url, token }) => {
      window.msgs = [];
      window.ready = false;
      const h = (window.h = new window.herald.Herald(url, { token }));
      window.sub = h.subscribe("chat:room", {
        onMessage: (data) => window.msgs.push(data),
        onSubscribed: () => (window.ready = true),
      });
      h.connect();
    }, { url: "/ws", token: hd.token(who) });
    await until(() => page.evaluate(() => window.ready), `${who} subscribed`);
  }
  await alice.evaluate((d) => window.h.publish("chat:room", d), chat(1));
  await until(() => bob.evaluate(() => window.msgs.length === 1), "bob receives alice's message");
  await until(() => alice.evaluate(() => window.msgs.length === 1), "alice receives her own message");
  assert.deepEqual(await bob.evaluate(() => window.msgs[0]), chat(1));
  assert.deepEqual(await alice.evaluate(() => window.msgs[0]), chat(1));
  // one compression per loop thread at most: alice and bob may sit on two loops that
  // both find no compressed frame yet and each make one (docs/protocol.md, "Metrics";
  // the second is freed). Two compressed frames, one per subscriber, either way.
  const deflates = await hd.metric("herald_ws_deflates_total") - deflates0;
  assert.ok(deflates >= 1 && deflates <= Number(hd.env.HERALD_THREADS), `${deflates} compressions`);
  assert.equal(await hd.metric("herald_ws_compressed_frames_sent_total") - frames0, 2);
}));

test("without HERALD_WS_COMPRESSION Chromium's offer is declined", bt(async (t, { open }) => {
  const plain = await new Herald().start();
  try {
    const page = await open(plain.base);
    assert.equal(await rawSocket(page, `${plain.ws}?token=${plain.token("alice")}`), "");
    await until(async () => (await received(page)).some((m) => m.push === "connected"), "connected push");
  } finally {
    await plain.cleanup();
  }
}));
