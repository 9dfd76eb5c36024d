// herald.js in Chromium against a cluster: a private redis-server and two
// Herald nodes. Messages and presence across nodes, recovery after the
// client's node restarts (history lives in Redis: the epoch survives, so
// the gap is closed: recovered true), and the `subscribed` push a node sends
// after a Redis outage. Run: HERALD_BIN=build/herald node --test
// tests/browser/cluster.test.mjs
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { Herald, Proxy, Redis, launchBrowser, browserTest, until } from "./lib.mjs";

let browser;
let redis;
let a;
let b;
let proxy;

before(async () => {
  redis = await new Redis().start();
  const shared = { secret: crypto.randomBytes(24).toString("hex"), apiKey: crypto.randomBytes(16).toString("hex"), redis };
  a = await new Herald({ ...shared, nodeId: "a" }).start();
  b = await new Herald({ ...shared, nodeId: "b" }).start();
  await a.waitReady();
  await b.waitReady();
  proxy = await new Proxy(a.port).start();
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (proxy) await proxy.close();
  for (const n of [a, b]) if (n) await n.cleanup();
  if (redis) await redis.cleanup();
});

const bt = (fn) => browserTest(() => browser, fn);

async function client(page, node, url, sub, channels) {
  await page.evaluate(({ url, token, channels }) => {
    const { Herald } = window.herald;
    const rec = (window.rec = { events: [], messages: {}, subscribed: {}, joins: [] });
    const h = (window.h = new Herald(url, { token, backoff: { base: 100, max: 500 } }));
    for (const ev of ["connected", "disconnected", "error", "subscribed"]) {
      h.on(ev, (e) => {
        const v = e instanceof Error ? { code: e.code, message: e.message } : e;
        rec.events.push([ev, v]);
        window.log(ev, v);
      });
    }
    for (const c of channels) {
      h.subscribe(c, {
        onMessage(data, ctx) {
          (rec.messages[c] ||= []).push([data, ctx]);
          window.log("message", data, ctx);
        },
        onSubscribed(ctx) {
          (rec.subscribed[c] ||= []).push(ctx);
          window.log("onSubscribed", ctx);
        },
        onJoin: (j) => rec.joins.push(j.user),
      });
    }
    h.connect();
  }, { url, token: node.token(sub), channels });
}

const rec = (page) => page.evaluate(() => window.rec);
const waitRec = (page, fn, arg, timeout = 15000) => page.waitForFunction(fn, arg, { timeout, polling: 25 });

test("two browsers on two nodes: messages, join and presence cross nodes", bt(async (t, { open }) => {
  const alice = await open(a.base);
  const bob = await open(b.base);
  await client(alice, a, "/ws", "alice", ["chat:x"]);
  await waitRec(alice, () => window.rec.subscribed["chat:x"]?.length === 1); // before bob joins
  await client(bob, b, "/ws", "bob", ["chat:x"]);
  await waitRec(bob, () => window.rec.subscribed["chat:x"]?.length === 1);
  await waitRec(alice, () => window.rec.joins.includes("bob"));
  const pres = await alice.evaluate(() => window.h.presence("chat:x"));
  assert.deepEqual(pres.clients.map((c) => c.user).sort(), ["alice", "bob"]);
  assert.deepEqual(pres.clients.map((c) => c.client.split(".")[0]).sort(), ["a", "b"]);
  const r = await alice.evaluate(() => window.h.publish("chat:x", { from: "alice" }));
  assert.equal(typeof r.offset, "number");
  await waitRec(bob, () => window.rec.messages["chat:x"]?.length === 1);
  // ctx.from: the server's word on who published ({from: "alice"} in the data is just data)
  const ctxFrom = { user: "alice", client: (await alice.evaluate(() => window.h.client)), info: {} };
  assert.deepEqual((await rec(bob)).messages["chat:x"][0], [{ from: "alice" }, { channel: "chat:x", offset: r.offset, from: ctxFrom }]);
}));

test("the client's node restarts: the gap is closed from Redis (recovered true)", bt(async (t, { open }) => {
  const page = await open(b.base);
  await client(page, a, proxy.ws, "carol", ["chat:y"]);
  await waitRec(page, () => window.rec.subscribed["chat:y"]?.length === 1);
  const o1 = (await b.publish("chat:y", 1)).body.offset;
  await waitRec(page, () => window.rec.messages["chat:y"]?.length === 1);
  await a.stop(); // the client gets 1001 and retries through the proxy
  for (const n of [2, 3]) assert.equal((await b.publish("chat:y", n)).status, 200);
  await a.start();
  await a.waitReady();
  await waitRec(page, () => window.rec.subscribed["chat:y"]?.length === 2);
  await waitRec(page, () => window.rec.messages["chat:y"]?.length === 3);
  const r = await rec(page);
  assert.equal(r.events.find((e) => e[0] === "disconnected")[1].code, 1001);
  const [s0, s1] = r.subscribed["chat:y"];
  assert.deepEqual(s1, { channel: "chat:y", resubscribed: true, recovered: true, offset: o1 + 2, epoch: s0.epoch });
  assert.deepEqual(r.messages["chat:y"].map(([d, ctx]) => [d, ctx.offset, ctx.recovered === true]), [
    [1, o1, false],
    [2, o1 + 1, true],
    [3, o1 + 2, true],
  ]);
}));

test("a Redis outage: the node's `subscribed` push reaches onSubscribed, live traffic resumes", bt(async (t, { open }) => {
  const page = await open(b.base);
  await client(page, b, "/ws", "dave", ["chat:z", "news"]);
  await waitRec(page, () => window.rec.subscribed["chat:z"]?.length === 1 && window.rec.subscribed.news?.length === 1);
  await b.publish("chat:z", "before");
  await waitRec(page, () => window.rec.messages["chat:z"]?.length === 1);
  await redis.halt();
  // the node has noticed the outage (not a fixed 500 ms)
  await until(async () => (await fetch(b.base + "/readyz")).status === 503, "node b /readyz 503", 30000);
  await redis.start(); // same port, empty: the streams and their epochs are gone
  await b.waitReady();
  await waitRec(page, () => window.rec.subscribed["chat:z"]?.length === 2 && window.rec.subscribed.news?.length === 2);
  const r = await rec(page);
  assert.deepEqual(r.events.filter((e) => e[0] === "disconnected"), [], "the socket stayed open");
  const [z0, z1] = r.subscribed["chat:z"];
  assert.equal(z1.resubscribed, true);
  assert.equal(z1.recovered, false, "Redis came back empty: a new epoch");
  assert.notEqual(z1.epoch, z0.epoch);
  assert.deepEqual(r.subscribed.news[1], { channel: "news", resubscribed: true, recovered: false });
  assert.deepEqual(r.events.filter((e) => e[0] === "subscribed").map((e) => e[1].channel).sort(), ["chat:z", "news"]);
  await a.waitReady();
  const after = await a.publish("chat:z", "after");
  assert.equal(after.status, 200, JSON.stringify(after.body));
  assert.equal(after.body.offset, 1, JSON.stringify(after.body));
  await waitRec(page, () => window.rec.messages["chat:z"]?.length === 2);
  assert.deepEqual((await rec(page)).messages["chat:z"].map((m) => m[0]), ["before", "after"]);
}));
