// herald.js in a real browser (Debian's Chromium, headless, through
// playwright-core) against a real Herald in embedded mode: the module as
// Herald serves it, connect, subscribe, publish, presence, history, error
// codes, token refresh, reconnect with recovery after a dropped socket and
// after a restart, a dead network noticed by the ping, no reconnect after
// 4003, server-side membership. Run: HERALD_BIN=build/herald node --test
// tests/browser/client.test.mjs
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { REPO, browserTest, heraldProxyBrowser, sleep, until } from "./lib.mjs";

const env = heraldProxyBrowser();

const bt = (fn, contextOptions) => browserTest(() => env.browser, fn, contextOptions);

/* Creates window.h in the page: a Herald client whose events, messages and
 * subscription callbacks are recorded in window.rec (and shown on the page). */
async function client(page, { url, token, getTokenFor, ttl, options = {}, subs = [] }) {
  if (getTokenFor) {
    page.tokens = 0;
    await page.exposeFunction("mintToken", (bad) => {
      page.tokens++;
      return bad ? "not-a-jwt" : env.hd.token(getTokenFor, ttl);
    });
  }
  await page.evaluate(({ url, token, useGetToken, options, subs }) => {
    const { Herald } = window.herald;
    const rec = (window.rec = { events: [], messages: {}, subscribed: {}, joins: [], leaves: [], errors: [], tokenCalls: 0 });
    if (useGetToken) {
      options.getToken = () => {
        rec.tokenCalls++;
        return window.mintToken(window.badTokens > 0 ? (window.badTokens--, true) : false);
      };
    } else {
      options.token = token;
    }
    const h = (window.h = new Herald(url, options));
    for (const ev of ["connecting", "connected", "disconnected", "error", "subscribed", "unsubscribed"]) {
      h.on(ev, (e) => {
        const v = e instanceof Error ? { code: e.code, message: e.message } : e;
        rec.events.push([ev, v]);
        window.log(ev, v);
      });
    }
    h.on("message", (data, ctx) => {
      (rec.messages[ctx.channel] ||= []).push([data, ctx]);
      window.log("message (server-side channel)", data, ctx);
    });
    window.sub = (channel) =>
      h.subscribe(channel, {
        onMessage(data, ctx) {
          (rec.messages[channel] ||= []).push([data, ctx]);
          window.log("message", data, ctx);
        },
        onSubscribed(ctx) {
          (rec.subscribed[channel] ||= []).push(ctx);
          window.log("onSubscribed", ctx);
        },
        onJoin: (e) => rec.joins.push(e),
        onLeave: (e) => rec.leaves.push(e),
        onError: (e) => rec.errors.push([channel, e.code]),
      });
    window.subs = {};
    for (const c of subs) window.subs[c] = window.sub(c);
    h.connect();
  }, { url, token, useGetToken: Boolean(getTokenFor), options, subs });
}

const rec = (page) => page.evaluate(() => window.rec);
// generous: a bound only delays a failure (a loaded machine must not cause one)
const waitRec = (page, fn, arg, timeout = 30000) => page.waitForFunction(fn, arg, { timeout, polling: 20 });
const eventsOf = async (page, name) => (await rec(page)).events.filter((e) => e[0] === name).map((e) => e[1]);

/* a page rejection as {code, message, isHeraldError} */
const attempt = (page, expr) =>
  page.evaluate(async (expr) => {
    try {
      return { ok: await new Function("h", "return " + expr)(window.h) };
    } catch (e) {
      return { code: e.code, message: e.message, isHeraldError: e instanceof window.herald.HeraldError };
    }
  }, expr);

test("GET /herald.js serves web/herald.js as JavaScript with an ETag; 304 when it matches", async () => {
  const r = await fetch(env.hd.base + "/herald.js");
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("content-type"), "application/javascript; charset=utf-8");
  assert.equal(r.headers.get("cache-control"), "no-cache");
  assert.equal(r.headers.get("access-control-allow-origin"), "*");
  const etag = r.headers.get("etag");
  assert.match(etag, /^"[0-9a-f]{32}"$/);
  assert.equal(await r.text(), fs.readFileSync(path.join(REPO, "web", "herald.js"), "utf8"));
  const again = await fetch(env.hd.base + "/herald.js", { headers: { "If-None-Match": etag } });
  assert.equal(again.status, 304);
  assert.equal((await again.text()).length, 0);
  assert.equal((await fetch(env.hd.base + "/herald.js", { headers: { "If-None-Match": '"other"' } })).status, 200);
  assert.equal((await fetch(env.hd.base + "/herald.js", { method: "DELETE" })).status, 405);
});

test("the documented page: import from /herald.js, connect, subscribe, receive a REST publication", bt(async (t, { open }) => {
  const page = await open(env.hd.base);
  await client(page, { url: "/ws", token: env.hd.token("alice"), subs: ["news"] });
  await waitRec(page, () => window.rec.subscribed.news?.length === 1);
  const connected = await eventsOf(page, "connected");
  assert.equal(connected.length, 1);
  assert.equal(connected[0].user, "alice");
  assert.match(connected[0].client, /^t\.\d+$/);
  assert.equal(await page.evaluate(() => window.h.state), "connected");
  assert.equal((await env.hd.publish("news", { text: "hello" })).status, 200);
  await waitRec(page, () => window.rec.messages.news?.length === 1);
  assert.deepEqual((await rec(page)).messages.news, [[{ text: "hello" }, { channel: "news" }]]);
  await page.evaluate(() => window.h.disconnect());
  assert.deepEqual((await eventsOf(page, "disconnected")).at(-1), { code: 1000, reason: "client disconnect", reconnect: false, wasConnected: true });
  assert.equal(await page.evaluate(() => window.h._timerCount), 0);
}));

// The page comes through the proxy (another port: another origin); Herald's
// own CSP on /healthz would forbid the cross-origin import, a developer's
// page has its own.
test("a page of another origin imports the client from Herald (CORS) and connects", bt(async (t, { open }) => {
  const other = `http://127.0.0.1:${env.proxy.port}`;
  const page = await open(other, env.hd.base + "/herald.js");
  await client(page, { url: env.hd.ws, token: env.hd.token("carol"), subs: ["news"] });
  await waitRec(page, () => window.rec.subscribed.news?.length === 1);
  assert.equal(await page.evaluate(() => location.origin), other);
  assert.equal(await page.evaluate(() => typeof window.herald.Herald), "function");
}, { bypassCSP: true }));

test("publish, presence, join/leave and history between two browsers; errors carry the server's code", bt(async (t, { open }) => {
  const alice = await open(env.hd.base);
  const bob = await open(env.hd.base);
  await client(alice, { url: "/ws", token: env.hd.token("alice"), subs: ["chat:room"] });
  await waitRec(alice, () => window.rec.subscribed["chat:room"]?.length === 1);
  const first = (await rec(alice)).subscribed["chat:room"][0];
  assert.equal(first.resubscribed, false);
  assert.equal(typeof first.epoch, "string");
  await client(bob, { url: "/ws", token: env.hd.token("bob"), subs: ["chat:room"] });
  await waitRec(bob, () => window.rec.subscribed["chat:room"]?.length === 1);
  await waitRec(alice, () => window.rec.joins.some((j) => j.user === "bob"));

  const presence = await attempt(alice, "h.presence('chat:room')");
  assert.deepEqual(presence.ok.clients.map((c) => c.user).sort(), ["alice", "bob"]);

  const offsets = [];
  for (const n of [1, 2, 3]) offsets.push((await attempt(alice, `h.publish('chat:room', {n: ${n}})`)).ok.offset);
  assert.deepEqual(offsets, [offsets[0], offsets[0] + 1, offsets[0] + 2]);
  await waitRec(bob, () => window.rec.messages["chat:room"]?.length === 3);
  const got = (await rec(bob)).messages["chat:room"];
  assert.deepEqual(got.map(([d, ctx]) => [d.n, ctx.offset]), [[1, offsets[0]], [2, offsets[1]], [3, offsets[2]]]);

  const hist = (await attempt(bob, "h.history('chat:room', {limit: 2})")).ok;
  assert.deepEqual(hist.publications.map((p) => p.data.n), [2, 3]);
  assert.equal(hist.offset, offsets[2]);
  const since = (await attempt(bob, `h.history('chat:room', {since: {offset: ${offsets[0]}, epoch: ${JSON.stringify(hist.epoch)}}})`)).ok;
  assert.deepEqual(since.publications.map((p) => p.data.n), [2, 3]);

  // errors: a HeraldError with the server's code
  assert.deepEqual(await attempt(alice, "h.publish('news', 1)"), { code: "forbidden", message: (await attempt(alice, "h.publish('news', 1)")).message, isHeraldError: true });
  assert.equal((await attempt(alice, "h.presence('plain:x')")).code, "not_found");
  assert.equal((await attempt(alice, "h.history('news')")).code, "not_found");
  assert.equal((await attempt(alice, "h.publish('bad channel!', 1)")).code, "bad_request");
  await alice.evaluate(() => window.sub("user:bob"));
  await waitRec(alice, () => window.rec.errors.length === 1);
  assert.deepEqual((await rec(alice)).errors, [["user:bob", "forbidden"]]);
  assert.equal(await alice.evaluate(() => window.h.subscriptions("user:bob").length), 0);

  // bob leaves: alice is told
  await bob.evaluate(() => window.subs["chat:room"].unsubscribe());
  await waitRec(alice, () => window.rec.leaves.some((j) => j.user === "bob"));
  const after = await attempt(alice, "h.presence('chat:room')");
  assert.deepEqual(after.ok.clients.map((c) => c.user), ["alice"]);
}));

test("token refresh through getToken before exp keeps the connection", bt(async (t, { open }) => {
  const page = await open(env.hd.base);
  // 8 s tokens: the client refreshes a quarter of the lifetime (2 s) before
  // exp, time enough for getToken and the refresh round trip on a loaded
  // machine (3 s tokens left it 1 s)
  await client(page, { url: "/ws", getTokenFor: "dana", ttl: 8, subs: ["news"] });
  await waitRec(page, () => window.rec.subscribed.news?.length === 1);
  const exp0 = await page.evaluate(() => window.h.expiresAt);
  const client0 = await page.evaluate(() => window.h.client);
  // the initial token and two refreshes (the second shows a refresh arms
  // the next one), waited for instead of a fixed 5.5 s
  await waitRec(page, () => window.rec.tokenCalls >= 3, null, 60000);
  const r = await rec(page);
  assert.ok(Date.now() / 1000 > exp0, "the first token has expired by now");
  assert.deepEqual(r.events.filter((e) => e[0] === "disconnected"), []);
  assert.equal(await page.evaluate(() => window.h.client), client0, "same connection");
  assert.ok((await page.evaluate(() => window.h.expiresAt)) > exp0);
  await env.hd.publish("news", "still here");
  await waitRec(page, () => window.rec.messages.news?.length === 1);
}));

test("a static token that expires: close 4001 and no reconnect", bt(async (t, { open }) => {
  const page = await open(env.hd.base);
  // a short-lived token; a loaded machine that cannot even connect before
  // it expires (wasConnected: false) gets a longer-lived one
  for (const ttl of [3, 6, 12, 30]) {
    await client(page, { url: "/ws", token: env.hd.token("erin", ttl) });
    await waitRec(page, () => window.rec.events.some((e) => e[0] === "disconnected"), null, (ttl + 30) * 1000);
    const ev = (await eventsOf(page, "disconnected"))[0];
    if (!ev.wasConnected && ttl < 30) continue;
    assert.deepEqual(ev, { code: 4001, reason: "token expired", reconnect: false, wasConnected: true });
    assert.equal(await page.evaluate(() => window.h.state), "disconnected");
    break;
  }
}));

test("a refused token: the error reaches the page, getToken gives a new one, then connected", bt(async (t, { open }) => {
  const page = await open(env.hd.base);
  await page.evaluate(() => (window.badTokens = 1));
  await client(page, { url: "/ws", getTokenFor: "fred", options: { backoff: { base: 50, max: 200 } } });
  await waitRec(page, () => window.h.state === "connected");
  const r = await rec(page);
  assert.equal(r.tokenCalls, 2);
  assert.deepEqual(r.events.filter((e) => e[0] === "error").map((e) => e[1].code), ["unauthorized"]);
}));

test("a dropped socket: reconnect, resubscribe with since, missed publications in order with ctx.recovered", bt(async (t, { open }) => {
  const page = await open(env.hd.base);
  await client(page, { url: env.proxy.ws, token: env.hd.token("gina"), subs: ["chat:recov", "news"], options: { backoff: { base: 100, max: 400 } } });
  await waitRec(page, () => window.rec.subscribed["chat:recov"]?.length === 1 && window.rec.subscribed.news?.length === 1);
  const o1 = (await env.hd.publish("chat:recov", { n: 1 })).body.offset;
  await waitRec(page, () => window.rec.messages["chat:recov"]?.length === 1);

  env.proxy.refuse = true;
  const accepted = env.proxy.accepted;
  env.proxy.drop();
  await waitRec(page, () => window.rec.events.some((e) => e[0] === "disconnected"));
  for (const n of [2, 3, 4]) await env.hd.publish("chat:recov", { n });
  await until(() => env.proxy.accepted >= accepted + 2, "two refused reconnect attempts", 30000);
  env.proxy.refuse = false;
  await waitRec(page, () => window.rec.subscribed["chat:recov"]?.length === 2 && window.rec.subscribed.news?.length === 2);
  await waitRec(page, () => window.rec.messages["chat:recov"]?.length === 4);
  const r = await rec(page);
  const dis = r.events.find((e) => e[0] === "disconnected")[1];
  assert.equal(dis.code, 1006);
  assert.equal(dis.reconnect, true);
  assert.deepEqual(r.subscribed["chat:recov"][1], { channel: "chat:recov", resubscribed: true, recovered: true, offset: o1 + 3, epoch: r.subscribed["chat:recov"][0].epoch });
  assert.deepEqual(r.messages["chat:recov"].map(([d, ctx]) => [d.n, ctx]), [
    [1, { channel: "chat:recov", offset: o1 }],
    [2, { channel: "chat:recov", offset: o1 + 1, recovered: true, replayed: true }],
    [3, { channel: "chat:recov", offset: o1 + 2, recovered: true, replayed: true }],
    [4, { channel: "chat:recov", offset: o1 + 3, recovered: true, replayed: true }],
  ]);
  // a plain channel comes back too, with no recovery to offer
  assert.deepEqual(r.subscribed.news[1], { channel: "news", resubscribed: true, recovered: false });
  await env.hd.publish("chat:recov", { n: 5 });
  await env.hd.publish("news", "live");
  await waitRec(page, () => window.rec.messages["chat:recov"].length === 5 && window.rec.messages.news?.length === 1);
  assert.ok((await page.evaluate(() => window.h._timerCount)) <= 3);
}));

test("a dead network (nothing closes, nothing arrives) is noticed by the ping and replaced", bt(async (t, { open }) => {
  const page = await open(env.hd.base);
  await client(page, {
    url: env.proxy.ws,
    token: env.hd.token("hana"),
    subs: ["news"],
    options: { pingInterval: 400, pongTimeout: 400, connectTimeout: 1000, backoff: { base: 100, max: 300 } },
  });
  await waitRec(page, () => window.rec.subscribed.news?.length === 1);
  env.proxy.blackhole = true;
  const t0 = Date.now();
  await waitRec(page, () => window.rec.events.some((e) => e[0] === "disconnected"), null, 3000);
  const noticed = Date.now() - t0;
  assert.ok(noticed < 2500, "noticed after " + noticed + " ms (ping every 400 ms, 400 ms for the reply)");
  assert.deepEqual((await eventsOf(page, "disconnected"))[0], { code: 1006, reason: "no reply to ping", reconnect: true, wasConnected: true });
  env.proxy.blackhole = false;
  env.proxy.drop(); // the stuck sockets
  await waitRec(page, () => window.rec.subscribed.news?.length === 2);
  await env.hd.publish("news", "back");
  await waitRec(page, () => window.rec.messages.news?.length === 1);
}));

test("a restarted Herald (embedded: new epoch): reconnect, resubscribe, recovered false", bt(async (t, { open }) => {
  const page = await open(env.hd.base);
  await client(page, { url: "/ws", token: env.hd.token("ivan"), subs: ["chat:restart"], options: { backoff: { base: 100, max: 400 } } });
  await waitRec(page, () => window.rec.subscribed["chat:restart"]?.length === 1);
  await env.hd.publish("chat:restart", "before");
  await waitRec(page, () => window.rec.messages["chat:restart"]?.length === 1);
  await env.hd.restart();
  await waitRec(page, () => window.rec.subscribed["chat:restart"]?.length === 2, null, 15000);
  const r = await rec(page);
  assert.deepEqual(r.events.find((e) => e[0] === "disconnected")[1], { code: 1001, reason: "going away", reconnect: true, wasConnected: true });
  const [s0, s1] = r.subscribed["chat:restart"];
  assert.equal(s1.resubscribed, true);
  assert.equal(s1.recovered, false);
  assert.notEqual(s1.epoch, s0.epoch);
  await env.hd.publish("chat:restart", "after");
  await waitRec(page, () => window.rec.messages["chat:restart"]?.length === 2);
  assert.deepEqual((await rec(page)).messages["chat:restart"].map((m) => m[0]), ["before", "after"]);
}));

test("disconnected by the server (4003): no reconnect, requests fail 'disconnected'", bt(async (t, { open }) => {
  const page = await open(env.hd.base);
  await client(page, { url: env.proxy.ws, token: env.hd.token("judy"), subs: ["news"], options: { backoff: { base: 50, max: 100 } } });
  await waitRec(page, () => window.rec.subscribed.news?.length === 1);
  const accepted = env.proxy.accepted;
  assert.equal((await env.hd.api("POST", "/api/v1/users/judy/disconnect")).status, 204);
  await waitRec(page, () => window.rec.events.some((e) => e[0] === "disconnected"));
  assert.deepEqual((await eventsOf(page, "disconnected"))[0].code, 4003);
  assert.equal((await eventsOf(page, "disconnected"))[0].reconnect, false);
  await sleep(1000);
  assert.equal(env.proxy.accepted, accepted, "no new connection");
  assert.equal(await page.evaluate(() => window.h.state), "disconnected");
  assert.deepEqual(await attempt(page, "h.publish('news', 1)"), { code: "disconnected", message: "not connected: call connect() first", isHeraldError: true });
  assert.equal(await page.evaluate(() => window.h._timerCount), 0);
}));

test("server-side membership (members API): subscribed push, messages, unsubscribed push", bt(async (t, { open }) => {
  const page = await open(env.hd.base);
  await client(page, { url: "/ws", token: env.hd.token("kate") });
  await waitRec(page, () => window.h.state === "connected");
  assert.equal((await env.hd.api("POST", "/api/v1/channels/team/members", { user: "kate" })).status, 204);
  await waitRec(page, () => window.rec.events.some((e) => e[0] === "subscribed"));
  await env.hd.publish("team", { hi: 1 });
  await waitRec(page, () => window.rec.messages.team?.length === 1);
  assert.equal((await env.hd.api("DELETE", "/api/v1/channels/team/members/kate")).status, 204);
  await waitRec(page, () => window.rec.events.some((e) => e[0] === "unsubscribed"));
  const r = await rec(page);
  assert.deepEqual(r.events.filter((e) => e[0] === "subscribed" || e[0] === "unsubscribed"), [
    ["subscribed", { channel: "team", resubscribed: false }],
    ["unsubscribed", { channel: "team", reason: "server" }],
  ]);
  assert.deepEqual(r.messages.team, [[{ hi: 1 }, { channel: "team" }]]);
}));
