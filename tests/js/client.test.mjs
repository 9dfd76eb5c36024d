// The client's state machine against a scripted fake WebSocket (node --test,
// no browser, no server): connect, requests, reconnect and resubscribe with
// `since`, refresh, ping, close codes, and no timers or listeners left
// behind. The same behaviour is tested against a real Herald in Chromium
// (tests/browser).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Herald, HeraldError } from "../../web/herald.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A generous bound: it only delays a failure, and a loaded machine must
// not cause one.
async function until(pred, what = "condition", timeout = 20000) {
  const end = Date.now() + timeout;
  while (Date.now() < end) {
    const v = pred();
    if (v) return v;
    await sleep(2);
  }
  throw new Error("timed out waiting for " + what);
}

/* A fake server: every socket the client opens is recorded; tests answer
 * commands by hand or through auto-replies. */
function fakeNet() {
  const net = { sockets: [], auto: true, user: "alice", expiresAt: null, nextClient: 1 };
  class FakeWS {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      net.sockets.push(this);
      if (net.refuse) {
        setTimeout(() => this.serverClose(1006, ""), 1);
        return;
      }
      setTimeout(() => {
        if (this.readyState !== 0) return;
        this.readyState = 1;
        this.onopen && this.onopen({});
      }, 1);
    }
    send(text) {
      if (this.readyState !== 1) throw new Error("send on a socket that is not open");
      const m = JSON.parse(text);
      this.sent.push(m);
      if (net.auto) net.reply(this, m);
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }
    push(obj) {
      this.onmessage && this.onmessage({ data: JSON.stringify(obj) });
    }
    serverClose(code, reason) {
      this.readyState = 3;
      this.onclose && this.onclose({ code, reason });
    }
    ops(op) {
      return this.sent.filter((m) => m.op === op);
    }
  }
  net.WS = FakeWS;
  net.last = () => net.sockets[net.sockets.length - 1];
  net.history = new Map(); // channel -> {epoch, pubs}
  net.reply = (ws, m) => {
    switch (m.op) {
      case "connect":
        net.connects = (net.connects || []).concat([m]);
        /* a connect proxy: the test decides (true = handled) */
        if (net.connectProxy && net.connectProxy(ws, m)) return;
        if (net.rejectToken && m.token === net.rejectToken) {
          ws.push({ id: m.id, error: { code: "unauthorized", message: "invalid token" } });
          setTimeout(() => ws.serverClose(4001, "unauthorized"), 1);
          return;
        }
        ws.push({ push: "connected", client: "n." + net.nextClient++, user: net.user, expires_at: net.expiresAt });
        ws.push({ id: m.id, result: { client: "n.x", user: net.user, expires_at: net.expiresAt } });
        return;
      case "subscribe": {
        const h = net.history.get(m.channel);
        if (net.forbid && net.forbid === m.channel) {
          ws.push({ id: m.id, error: { code: "forbidden", message: "not allowed" } });
          return;
        }
        if (!h) {
          ws.push({ id: m.id, result: { channel: m.channel } });
          return;
        }
        const top = h.pubs.length ? h.pubs[h.pubs.length - 1].offset : 0;
        const res = { channel: m.channel, offset: top, epoch: h.epoch, recovered: false, publications: [] };
        if (m.since) {
          res.publications = h.pubs.filter((p) => p.offset > m.since.offset);
          res.recovered = m.since.epoch === h.epoch;
        }
        ws.push({ id: m.id, result: res });
        return;
      }
      case "publish":
        if (m.channel === "nope") ws.push({ id: m.id, error: { code: "forbidden", message: "no publishing here" } });
        else ws.push({ id: m.id, result: {} });
        return;
      case "ping":
        if (!net.deaf) ws.push({ id: m.id, result: {} });
        return;
      case "refresh":
        net.refreshed = (net.refreshed || 0) + 1;
        ws.push({ id: m.id, result: { expires_at: Math.floor(Date.now() / 1000) + 600 } });
        return;
      case "rpc":
        /* an RPC proxy whose backend knows "echo" and "whoami" */
        if (m.method === "echo") ws.push({ id: m.id, result: { data: m.data } });
        else if (m.method === "whoami") ws.push({ id: m.id, result: { data: { user: net.user } } });
        else if (m.method === "nulled") ws.push({ id: m.id, result: { data: null } });
        else ws.push({ id: m.id, error: { code: "unknown_method", message: "no method " + m.method } });
        return;
      case "presence":
      case "history":
        if (net.deaf) return;
        ws.push({ id: m.id, error: { code: "not_found", message: "off here" } });
        return;
      default:
        ws.push({ id: m.id, result: {} });
    }
  };
  net.publish = (channel, data) => {
    const h = net.history.get(channel);
    const msg = { push: "message", channel, data };
    if (h) {
      const offset = (h.pubs.length ? h.pubs[h.pubs.length - 1].offset : 0) + 1;
      h.pubs.push({ offset, data });
      msg.offset = offset;
    }
    for (const ws of net.sockets) if (ws.readyState === 1) ws.push(msg);
  };
  return net;
}

function client(net, opts = {}) {
  return new Herald("ws://fake/ws", {
    token: "tok",
    WebSocket: net.WS,
    backoff: { base: 20, max: 40 },
    pingInterval: 10000,
    ...opts,
  });
}

test("connect: the token goes in a connect command, connected event, state", async () => {
  const net = fakeNet();
  const h = client(net);
  const seen = [];
  h.on("connected", (ev) => seen.push(ev));
  h.connect();
  assert.equal(h.state, "connecting");
  await until(() => h.state === "connected");
  assert.deepEqual(net.last().sent[0], { id: net.last().sent[0].id, op: "connect", token: "tok" });
  assert.equal(net.last().url, "ws://fake/ws");
  assert.deepEqual(seen, [{ client: "n.1", user: "alice", expiresAt: null }]);
  h.disconnect();
  assert.equal(h.state, "disconnected");
  assert.deepEqual(net.last().closedWith, { code: 1000, reason: "client disconnect" });
  assert.equal(h._timerCount, 0);
});

test("requests: results resolve, server errors reject with their code, offline rejects", async () => {
  const net = fakeNet();
  const h = client(net);
  await assert.rejects(h.publish("c", 1), (e) => e instanceof HeraldError && e.code === "disconnected");
  h.connect();
  const early = h.publish("c", { a: 1 }); // queued while connecting
  assert.deepEqual(await early, {});
  await assert.rejects(h.publish("nope", 1), (e) => e.code === "forbidden" && e.message === "no publishing here");
  await assert.rejects(h.presence("c"), { code: "not_found" });
  const pub = net.last().ops("publish")[0];
  assert.deepEqual(pub, { id: pub.id, op: "publish", channel: "c", data: { a: 1 } });
  h.disconnect();
});

test("requests: a reply that never comes times out; a lost connection rejects in-flight ones", async () => {
  const net = fakeNet();
  const h = client(net, { requestTimeout: 50 });
  h.connect();
  await until(() => h.state === "connected");
  net.deaf = true;
  await assert.rejects(h.history("c"), { code: "timeout" });
  const p = h.presence("c");
  await sleep(5);
  net.last().serverClose(1006, "");
  await assert.rejects(p, { code: "disconnected" });
  h.disconnect();
  assert.equal(h._timerCount, 0);
});

test("subscribe: messages, join/leave, several subscriptions share one server subscription", async () => {
  const net = fakeNet();
  const h = client(net);
  const got = [];
  const a = h.subscribe("news", { onMessage: (d, ctx) => got.push(["a", d, ctx]), onJoin: (j) => got.push(["join", j.user]) });
  const b = h.subscribe("news", { onMessage: (d) => got.push(["b", d]) });
  h.connect();
  await a.ready;
  await b.ready;
  assert.equal(net.last().ops("subscribe").length, 1);
  net.last().push({ push: "join", channel: "news", client: "n.9", user: "bob" });
  net.publish("news", { t: 1 });
  assert.deepEqual(got, [["join", "bob"], ["a", { t: 1 }, { channel: "news" }], ["b", { t: 1 }]]);
  a.unsubscribe();
  assert.equal(net.last().ops("unsubscribe").length, 0, "b still listens");
  b.unsubscribe();
  assert.deepEqual(net.last().ops("unsubscribe").map((m) => m.channel), ["news"]);
  net.publish("news", { t: 2 });
  assert.equal(got.length, 3);
  h.disconnect();
});

test("subscribe: a refusal rejects ready, calls onError and is not retried", async () => {
  const net = fakeNet();
  net.forbid = "secret";
  const h = client(net);
  const errs = [];
  h.on("error", (e) => errs.push(e.code));
  h.connect();
  const s = h.subscribe("secret", { onError: (e) => errs.push("sub:" + e.code) });
  await assert.rejects(s.ready, { code: "forbidden" });
  assert.deepEqual(errs, ["sub:forbidden", "forbidden"]);
  assert.equal(s.active, false);
  net.last().serverClose(1006, "");
  await until(() => h.state === "connected" && net.sockets.length === 2);
  await sleep(10);
  assert.equal(net.last().ops("subscribe").length, 0);
  h.disconnect();
});

test("reconnect: backoff, resubscribe with since, missed publications replayed in order with ctx.recovered", async () => {
  const net = fakeNet();
  net.history.set("chat:room", { epoch: "E1", pubs: [] });
  const h = client(net);
  const got = [];
  const subs = [];
  const events = [];
  h.on("disconnected", (ev) => events.push(["disconnected", ev.code, ev.reconnect]));
  h.on("connecting", (ev) => events.push(["connecting", ev.attempt]));
  h.on("connected", () => events.push(["connected"]));
  h.subscribe("chat:room", { onMessage: (d, ctx) => got.push([d, ctx]), onSubscribed: (ctx) => subs.push(ctx) });
  h.subscribe("plain", {});
  h.connect();
  await until(() => subs.length === 1);
  net.publish("chat:room", "m1");
  net.last().serverClose(1006, "");
  net.refuse = true; // the server is away for a while
  net.publish("chat:room", "m2");
  net.publish("chat:room", "m3");
  await until(() => net.sockets.length >= 3);
  net.refuse = false;
  await until(() => subs.length === 2);
  const resub = net.last().ops("subscribe");
  assert.deepEqual(resub.map((m) => [m.channel, m.since]), [["chat:room", { offset: 1, epoch: "E1" }], ["plain", undefined]]);
  assert.deepEqual(got, [
    ["m1", { channel: "chat:room", offset: 1 }],
    ["m2", { channel: "chat:room", offset: 2, recovered: true, replayed: true }],
    ["m3", { channel: "chat:room", offset: 3, recovered: true, replayed: true }],
  ]);
  assert.deepEqual(subs[1], { channel: "chat:room", resubscribed: true, recovered: true, offset: 3, epoch: "E1" });
  assert.deepEqual(events.slice(0, 3), [["connected"], ["disconnected", 1006, true], ["connecting", 1]]);
  assert.deepEqual(events[events.length - 1], ["connected"]);
  net.publish("chat:room", "m4");
  assert.deepEqual(got[3], ["m4", { channel: "chat:room", offset: 4 }]);
  h.disconnect();
  assert.equal(h._timerCount, 0);
});

test("reconnect: a new epoch is reported as not recovered and nothing stale is replayed", async () => {
  const net = fakeNet();
  net.history.set("h:x", { epoch: "E1", pubs: [] });
  const h = client(net);
  const got = [];
  const subs = [];
  h.subscribe("h:x", { onMessage: (d) => got.push(d), onSubscribed: (ctx) => subs.push(ctx) });
  h.connect();
  await until(() => subs.length === 1);
  net.publish("h:x", "a");
  net.history.set("h:x", { epoch: "E2", pubs: [{ offset: 1, data: "other" }, { offset: 2, data: "stream" }] });
  net.last().serverClose(1001, "going away");
  await until(() => subs.length === 2);
  assert.deepEqual(subs[1], { channel: "h:x", resubscribed: true, recovered: false, offset: 2, epoch: "E2" });
  assert.deepEqual(got, ["a"]);
  h.disconnect();
});

test("reconnect: messages pushed before the subscribe reply wait for it and are not duplicated", async () => {
  const net = fakeNet();
  net.history.set("h:y", { epoch: "E", pubs: [] });
  const h = client(net);
  const got = [];
  h.subscribe("h:y", { onMessage: (d, ctx) => got.push(ctx.offset) });
  h.connect();
  await until(() => h.state === "connected");
  await sleep(5);
  net.publish("h:y", 1);
  net.auto = false;
  net.last().serverClose(1006, "");
  await until(() => net.sockets.length === 2 && net.last().readyState === 1);
  const ws = net.last();
  net.reply(ws, ws.sent[0]); // connect
  await until(() => ws.ops("subscribe").length === 1);
  const sub = ws.ops("subscribe")[0];
  assert.deepEqual(sub.since, { offset: 1, epoch: "E" });
  ws.push({ push: "message", channel: "h:y", data: 3, offset: 3 }); // live, before the reply
  ws.push({ id: sub.id, result: { channel: "h:y", offset: 3, epoch: "E", recovered: true, publications: [{ offset: 2, data: 2 }, { offset: 3, data: 3 }] } });
  ws.push({ push: "message", channel: "h:y", data: 4, offset: 4 });
  assert.deepEqual(got, [1, 2, 3, 4]);
  h.disconnect();
});

test("close 4003: no reconnect; requests fail", async () => {
  const net = fakeNet();
  const h = client(net);
  const ev = [];
  h.on("disconnected", (e) => ev.push(e));
  h.connect();
  await until(() => h.state === "connected");
  net.last().serverClose(4003, "disconnected by the server");
  assert.equal(h.state, "disconnected");
  assert.deepEqual(ev, [{ code: 4003, reason: "disconnected by the server", reconnect: false, wasConnected: true }]);
  await sleep(100);
  assert.equal(net.sockets.length, 1);
  assert.equal(h._timerCount, 0);
  await assert.rejects(h.publish("c", 1), { code: "disconnected" });
});

test("close 4001: a new token from getToken before reconnecting; without getToken, stop", async () => {
  const net = fakeNet();
  let n = 0;
  const h = client(net, { token: undefined, getToken: async () => "t" + ++n });
  h.connect();
  await until(() => h.state === "connected");
  assert.equal(net.last().sent[0].token, "t1");
  net.last().serverClose(4001, "token expired");
  await until(() => h.state === "connected" && net.sockets.length === 2);
  assert.equal(net.last().sent[0].token, "t2");
  h.disconnect();

  const net2 = fakeNet();
  net2.rejectToken = "bad";
  const h2 = client(net2, { token: "bad" });
  const errs = [];
  const ev = [];
  h2.on("error", (e) => errs.push(e.code));
  h2.on("disconnected", (e) => ev.push([e.code, e.reconnect]));
  h2.connect();
  await until(() => h2.state === "disconnected");
  assert.deepEqual(errs, ["unauthorized"]);
  assert.deepEqual(ev, [[4001, false]]);
  await sleep(80);
  assert.equal(net2.sockets.length, 1);
});

test("getToken resolving to nothing keeps the client disconnected; throwing retries", async () => {
  const net = fakeNet();
  const h = client(net, { token: undefined, getToken: async () => null });
  const ev = [];
  h.on("disconnected", (e) => ev.push(e.code));
  h.connect();
  await until(() => h.state === "disconnected");
  assert.deepEqual(ev, [4001]);
  assert.equal(net.sockets.length, 0);

  let calls = 0;
  const h2 = client(net, {
    token: undefined,
    getToken: async () => {
      if (++calls < 3) throw new Error("auth server down");
      return "ok";
    },
  });
  const errs = [];
  h2.on("error", (e) => errs.push(e.code));
  h2.connect();
  await until(() => h2.state === "connected");
  assert.deepEqual(errs, ["token", "token"]);
  h2.disconnect();
});

test("refresh: getToken and the refresh command before exp", async () => {
  const net = fakeNet();
  net.expiresAt = Math.floor(Date.now() / 1000) + 2; // refresh due in about a second
  let n = 0;
  const h = client(net, { token: undefined, getToken: async () => "t" + ++n });
  h.connect();
  await until(() => h.state === "connected");
  const ws = net.last();
  await until(() => ws.ops("refresh").length === 1, "refresh");
  assert.equal(ws.ops("refresh")[0].token, "t2");
  await until(() => h.expiresAt > net.expiresAt);
  assert.equal(net.sockets.length, 1);
  h.disconnect();
  assert.equal(h._timerCount, 0);
});

test("ping: a dead connection is noticed at its first unanswered ping and replaced", async () => {
  const net = fakeNet();
  const h = client(net, { pingInterval: 30, pongTimeout: 30 });
  const ev = [];
  h.on("disconnected", (e) => ev.push([e.code, e.reason]));
  h.connect();
  await until(() => h.state === "connected");
  await until(() => net.last().ops("ping").length >= 2, "two pings");
  net.deaf = true;
  const before = net.last().ops("ping").length; // each answered at once (fake server)
  const t0 = Date.now();
  await until(() => ev.length === 1);
  // not before the pong timeout (30 ms, a ms of timer rounding aside), and
  // at the first unanswered ping: no second ping went out on the dead
  // socket. (How soon in wall time depends on the machine's load; counting
  // pings does not: a client that ignored missing pongs would keep pinging.)
  assert.ok(Date.now() - t0 >= 25, "noticed after " + (Date.now() - t0) + " ms");
  assert.equal(net.sockets[0].ops("ping").length, before + 1);
  assert.deepEqual(ev[0], [1006, "no reply to ping"]);
  assert.equal(net.sockets[0].onmessage, null, "the dead socket's handlers are detached");
  net.deaf = false;
  await until(() => h.state === "connected" && net.sockets.length === 2);
  h.disconnect();
});

test("server-side membership: subscribed / unsubscribed pushes", async () => {
  const net = fakeNet();
  const h = client(net);
  const ev = [];
  h.on("subscribed", (e) => ev.push(["subscribed", e.channel]));
  h.on("unsubscribed", (e) => ev.push(["unsubscribed", e.channel, e.reason]));
  h.on("message", (d, ctx) => ev.push(["message", d, ctx.channel]));
  h.connect();
  await until(() => h.state === "connected");
  net.last().push({ push: "subscribed", channel: "group" });
  net.publish("group", "hello");
  const s = h.subscribe("group", { onMessage: (d) => ev.push(["sub", d]) });
  await s.ready;
  assert.equal(net.last().ops("subscribe").length, 0, "already subscribed by the server");
  net.publish("group", "again");
  net.last().push({ push: "unsubscribed", channel: "group" });
  assert.equal(s.active, false);
  net.publish("group", "gone");
  assert.deepEqual(ev, [
    ["subscribed", "group"],
    ["message", "hello", "group"],
    ["sub", "again"],
    ["unsubscribed", "group", "server"],
  ]);
  h.disconnect();
});

test("Redis outage push: recovered false reaches onSubscribed and resets the position", async () => {
  const net = fakeNet();
  net.history.set("h:z", { epoch: "E", pubs: [] });
  const h = client(net);
  const subs = [];
  h.subscribe("h:z", { onSubscribed: (ctx) => subs.push(ctx) });
  h.connect();
  await until(() => subs.length === 1);
  net.last().push({ push: "subscribed", channel: "h:z", recovered: false, offset: 9, epoch: "E" });
  assert.deepEqual(subs[1], { channel: "h:z", resubscribed: true, recovered: false, offset: 9, epoch: "E" });
  h.disconnect();
});

test("many reconnects leave no timers and no handlers on old sockets", async () => {
  const net = fakeNet();
  const h = client(net, { pingInterval: 1000 });
  h.subscribe("a", {});
  h.connect();
  for (let i = 0; i < 10; i++) {
    await until(() => h.state === "connected" && net.sockets.length === i + 1);
    net.last().serverClose(1006, "");
  }
  await until(() => h.state === "connected" && net.sockets.length === 11);
  for (const ws of net.sockets.slice(0, -1)) {
    assert.equal(ws.onmessage, null);
    assert.equal(ws.onclose, null);
  }
  // per connection: stable, ping; nothing piles up
  assert.ok(h._timerCount <= 3, "timers: " + h._timerCount);
  h.disconnect();
  assert.equal(h._timerCount, 0);
});

test("the backoff resets only after a stable connection", async () => {
  const net = fakeNet();
  const h = client(net, { stableAfter: 60 });
  const attempts = [];
  h.on("connecting", (e) => attempts.push(e.attempt));
  h.connect();
  await until(() => h.state === "connected");
  net.last().serverClose(1006, "");
  await until(() => h.state === "connected" && net.sockets.length === 2);
  net.last().serverClose(1006, ""); // flapping: the schedule goes on
  await until(() => h.state === "connected" && net.sockets.length === 3);
  await sleep(100); // stable
  net.last().serverClose(1006, "");
  await until(() => h.state === "connected" && net.sockets.length === 4);
  assert.deepEqual(attempts, [1, 2, 1]);
  h.disconnect();
});

test("pacing: a burst of commands over the bucket goes out at the configured rate", async () => {
  const net = fakeNet();
  const h = client(net, { rate: 200, burst: 5 });
  h.connect();
  await until(() => h.state === "connected");
  const t0 = Date.now();
  const all = Array.from({ length: 15 }, (_, i) => h.publish("c", i));
  await Promise.all(all);
  const took = Date.now() - t0;
  assert.ok(took >= 40, "10 over the burst at 200/s take >= 50 ms, took " + took);
  assert.deepEqual(net.last().ops("publish").map((m) => m.data), [...Array(15).keys()]);
  h.disconnect();
});

/*---- connecting without a token (the connect proxy), rpc ----*/

test("no token: a bare connect command, with the data option's value or function result", async () => {
  const net = fakeNet();
  const h = client(net, { token: undefined });
  h.connect();
  await until(() => h.state === "connected");
  assert.deepEqual(net.last().sent[0], { id: net.last().sent[0].id, op: "connect" });
  h.disconnect();

  const net2 = fakeNet();
  const h2 = client(net2, { token: undefined, data: { room: "lobby" } });
  h2.connect();
  await until(() => h2.state === "connected");
  assert.deepEqual(net2.last().sent[0], { id: net2.last().sent[0].id, op: "connect", data: { room: "lobby" } });
  h2.disconnect();

  // a function is asked again for every connection (here: after a drop)
  const net3 = fakeNet();
  let n = 0;
  const h3 = client(net3, { token: undefined, data: async () => ({ attempt: ++n }) });
  h3.connect();
  await until(() => h3.state === "connected");
  net3.last().serverClose(1006, "");
  await until(() => h3.state === "connected" && net3.sockets.length === 2);
  assert.deepEqual(net3.connects.map((m) => [m.token, m.data]), [[undefined, { attempt: 1 }], [undefined, { attempt: 2 }]]);
  h3.disconnect();

  // with a token the data goes along (the server decides who reads it)
  const net4 = fakeNet();
  const h4 = client(net4, { data: 0 });
  h4.connect();
  await until(() => h4.state === "connected");
  assert.deepEqual(net4.connects.map((m) => [m.token, m.data]), [["tok", 0]]);
  h4.disconnect();
  for (const c of [h, h2, h3, h4]) assert.equal(c._timerCount, 0);
});

test("no token: a data function that throws is an error and a retry, not a crash", async () => {
  const net = fakeNet();
  let calls = 0;
  const h = client(net, {
    token: undefined,
    data: () => {
      if (++calls < 2) throw new Error("no locale yet");
      return "ok";
    },
  });
  const errs = [];
  h.on("error", (e) => errs.push([e.code, e.message]));
  h.connect();
  await until(() => h.state === "connected");
  assert.deepEqual(errs, [["transport", "the data option failed: no locale yet"]]);
  assert.equal(net.sockets.length, 1, "no socket for the failed attempt");
  assert.equal(net.last().sent[0].data, "ok");
  h.disconnect();
});

test("connect proxy unavailable: error reply, close 1013, retried with backoff until the backend answers", async () => {
  const net = fakeNet();
  let down = 3;
  net.connectProxy = (ws, m) => {
    if (down-- <= 0) return false;
    ws.push({ id: m.id, error: { code: "unavailable", message: "the backend did not answer" } });
    setTimeout(() => ws.serverClose(1013, "try again later"), 1);
    return true;
  };
  const h = client(net, { token: undefined });
  const errs = [];
  const attempts = [];
  const ev = [];
  h.on("error", (e) => errs.push(e.code));
  h.on("connecting", (e) => attempts.push(e.attempt));
  h.on("disconnected", (e) => ev.push(e));
  h.connect();
  await until(() => h.state === "connected");
  assert.deepEqual(errs, ["unavailable", "unavailable", "unavailable"]);
  // never connected in between: the schedule grows, it is not reset
  assert.deepEqual(attempts, [1, 2, 3]);
  assert.equal(net.sockets.length, 4);
  assert.deepEqual(ev, [], "no disconnected event before the first connection");
  // a request made meanwhile waited for the connection
  assert.deepEqual(await h.publish("c", 1), {});
  h.disconnect();
  assert.equal(h._timerCount, 0);
});

test("connect proxy refusal: the backend's error code, then 4003 ends it; requests reject with that code", async () => {
  const net = fakeNet();
  net.connectProxy = (ws, m) => {
    ws.push({ id: m.id, error: { code: "login_required", message: "log in first" } });
    setTimeout(() => ws.serverClose(4003, "login_required"), 1);
    return true;
  };
  const h = client(net, { token: undefined });
  const errs = [];
  const ev = [];
  h.on("error", (e) => errs.push(e.code));
  h.on("disconnected", (e) => ev.push(e));
  h.connect();
  const waiting = assert.rejects(h.publish("c", 1), (e) => e instanceof HeraldError && e.code === "login_required" && e.message === "log in first");
  await until(() => h.state === "disconnected");
  await waiting;
  assert.deepEqual(errs, ["login_required"]);
  assert.equal(ev.length, 1);
  assert.equal(ev[0].code, 4003);
  assert.equal(ev[0].reconnect, false);
  assert.equal(ev[0].wasConnected, false);
  assert.equal(ev[0].error.code, "login_required");
  await sleep(80);
  assert.equal(net.sockets.length, 1, "no reconnect after 4003");
  assert.equal(h._timerCount, 0);
  // connect() again is the application's decision (say, after its login form)
  net.connectProxy = null;
  h.connect();
  await until(() => h.state === "connected");
  h.disconnect();
});

test("backend disconnect codes 4500-4999: the end, unless the reason starts with \"reconnect\"", async () => {
  const net = fakeNet();
  const h = client(net, { token: undefined });
  const ev = [];
  h.on("disconnected", (e) => ev.push([e.code, e.reason, e.reconnect]));
  h.connect();
  await until(() => h.state === "connected");
  net.last().serverClose(4501, "reconnect: moved to another shard");
  await until(() => h.state === "connected" && net.sockets.length === 2);
  net.last().serverClose(4502, "banned");
  assert.equal(h.state, "disconnected");
  await sleep(80);
  assert.equal(net.sockets.length, 2);
  assert.deepEqual(ev, [[4501, "reconnect: moved to another shard", true], [4502, "banned", false]]);
  await assert.rejects(h.rpc("echo", 1), { code: "disconnected" });
  assert.equal(h._timerCount, 0);
});

test("a proxy session ended by the refresh proxy (4001, no getToken) is not retried", async () => {
  const net = fakeNet();
  net.expiresAt = Math.floor(Date.now() / 1000) + 60;
  const h = client(net, { token: undefined });
  const ev = [];
  h.on("disconnected", (e) => ev.push([e.code, e.reconnect]));
  h.connect();
  await until(() => h.state === "connected");
  assert.equal(h.expiresAt, net.expiresAt);
  await sleep(20);
  assert.equal(net.last().ops("refresh").length, 0, "the server refreshes a proxy session, not the client");
  net.last().serverClose(4001, "session expired");
  assert.deepEqual(ev, [[4001, false]]);
  await sleep(80);
  assert.equal(net.sockets.length, 1);
});

test("rpc: the result's data, the backend's error code, the command as sent", async () => {
  const net = fakeNet();
  const h = client(net, { token: undefined });
  await assert.rejects(h.rpc("echo", 1), { code: "disconnected" });
  h.connect();
  const early = h.rpc("echo", { a: [1, 2] }); // queued while connecting
  assert.deepEqual(await early, { a: [1, 2] });
  assert.deepEqual(await h.rpc("whoami"), { user: "alice" });
  assert.equal(await h.rpc("nulled", 5), null);
  await assert.rejects(h.rpc("nope", {}), (e) => e instanceof HeraldError && e.code === "unknown_method" && e.message === "no method nope");
  await assert.rejects(h.rpc(""), TypeError);
  await assert.rejects(h.rpc(42), TypeError);
  const sent = net.last().ops("rpc");
  assert.deepEqual(sent.map(({ id, ...m }) => (assert.ok(id > 0), m)), [
    { op: "rpc", method: "echo", data: { a: [1, 2] } },
    { op: "rpc", method: "whoami", data: null },
    { op: "rpc", method: "nulled", data: 5 },
    { op: "rpc", method: "nope", data: {} },
  ]);
  h.disconnect();
  assert.equal(h._timerCount, 0);
});

test("rpc: no reply in time is a timeout; a lost connection rejects it", async () => {
  const net = fakeNet();
  const h = client(net, { requestTimeout: 50 });
  h.connect();
  await until(() => h.state === "connected");
  net.auto = false;
  await assert.rejects(h.rpc("slow", 1), { code: "timeout" });
  const p = h.rpc("slow", 2);
  await sleep(5);
  net.last().serverClose(1006, "");
  await assert.rejects(p, { code: "disconnected" });
  h.disconnect();
  assert.equal(h._timerCount, 0);
});
