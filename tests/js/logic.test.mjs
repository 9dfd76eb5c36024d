// The client's logic that needs no browser and no server (node --test):
// backoff schedule, recovery bookkeeping, refresh timing, pacing, URLs.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  backoffDelay,
  Backoff,
  StreamPosition,
  TokenBucket,
  refreshDelay,
  tokenExpiry,
  resolveUrl,
  shouldReconnect,
  reasonAsksReconnect,
} from "../../web/herald.js";

test("backoff: full jitter under a cap that doubles up to max", () => {
  const top = () => 0.999999;
  const caps = [0, 1, 2, 3, 4, 5, 6, 10, 40].map((a) => backoffDelay(a, { base: 500, max: 20000 }, top));
  assert.deepEqual(caps, [499, 999, 1999, 3999, 7999, 15999, 19999, 19999, 19999]);
  for (let a = 0; a < 50; a++) {
    assert.equal(backoffDelay(a, { base: 500, max: 20000 }, () => 0), 0, "full jitter reaches 0");
    const d = backoffDelay(a, { base: 500, max: 20000 });
    assert.ok(d >= 0 && d < 20000 && Number.isInteger(d));
  }
  // jitter really spreads: 200 draws at attempt 5 are not all alike
  const draws = new Set(Array.from({ length: 200 }, () => backoffDelay(5)));
  assert.ok(draws.size > 100);
});

test("backoff: next() walks the schedule, reset() starts over", () => {
  const b = new Backoff({ base: 100, max: 1000 }, () => 0.5);
  assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()], [50, 100, 200, 400, 500, 500]);
  assert.equal(b.attempt, 6);
  b.reset();
  assert.equal(b.next(), 50);
});

test("recovery: first subscribe takes the stream's position, nothing to replay", () => {
  const p = new StreamPosition();
  assert.equal(p.since(), undefined);
  const r = p.subscribed({ channel: "c", offset: 7, epoch: "e1", recovered: false, publications: [] }, false);
  assert.deepEqual(r, { recovered: false, publications: [] });
  assert.deepEqual(p.since(), { offset: 7, epoch: "e1" });
});

test("recovery: live messages advance the position and duplicates are dropped", () => {
  const p = new StreamPosition();
  p.subscribed({ offset: 3, epoch: "e" }, false);
  assert.equal(p.accept(4), true);
  assert.equal(p.accept(4), false);
  assert.equal(p.accept(2), false);
  assert.equal(p.accept(5), true);
  assert.equal(p.accept(undefined), true, "plain messages have no offset");
  assert.deepEqual(p.since(), { offset: 5, epoch: "e" });
});

test("recovery: a resubscribe in the same epoch replays what was missed, in order, once", () => {
  const p = new StreamPosition();
  p.subscribed({ offset: 5, epoch: "e" }, false);
  const pubs = [4, 5, 6, 7, 8].map((o) => ({ offset: o, data: { n: o } }));
  const r = p.subscribed({ offset: 8, epoch: "e", recovered: true, publications: pubs }, true);
  assert.equal(r.recovered, true);
  assert.deepEqual(r.publications.map((x) => x.offset), [6, 7, 8]);
  assert.deepEqual(p.since(), { offset: 8, epoch: "e" });
  assert.equal(p.accept(8), false, "a live copy of a replayed one is a duplicate");
  assert.equal(p.accept(9), true);
});

test("recovery: a gap (trimmed history) is not recovered; what is left is delivered", () => {
  const p = new StreamPosition();
  p.subscribed({ offset: 5, epoch: "e" }, false);
  const r = p.subscribed({ offset: 20, epoch: "e", recovered: false, publications: [{ offset: 18, data: 1 }, { offset: 19, data: 2 }, { offset: 20, data: 3 }] }, true);
  assert.equal(r.recovered, false);
  assert.deepEqual(r.publications.map((x) => x.offset), [18, 19, 20]);
  assert.deepEqual(p.since(), { offset: 20, epoch: "e" });
});

test("recovery: a new epoch (server restarted) replays nothing and restarts the position", () => {
  const p = new StreamPosition();
  p.subscribed({ offset: 50, epoch: "old" }, false);
  const r = p.subscribed({ offset: 2, epoch: "new", recovered: false, publications: [{ offset: 51, data: "x" }] }, true);
  assert.deepEqual(r, { recovered: false, publications: [] });
  assert.deepEqual(p.since(), { offset: 2, epoch: "new" });
  assert.equal(p.accept(3), true);
});

test("recovery: the server saying recovered without the same epoch is not believed", () => {
  const p = new StreamPosition();
  p.subscribed({ offset: 1, epoch: "a" }, false);
  assert.equal(p.subscribed({ offset: 1, epoch: "b", recovered: true, publications: [] }, true).recovered, false);
});

test("recovery: the subscribed push after a Redis outage", () => {
  const p = new StreamPosition();
  p.subscribed({ offset: 10, epoch: "e" }, false);
  p.accept(11);
  assert.equal(p.resynced({ channel: "c", recovered: true, offset: 11, epoch: "e" }), true);
  assert.deepEqual(p.since(), { offset: 11, epoch: "e" });
  assert.equal(p.resynced({ channel: "c", recovered: false, offset: 30, epoch: "e" }), false);
  assert.deepEqual(p.since(), { offset: 30, epoch: "e" });
  assert.equal(p.accept(30), false);
  assert.equal(p.resynced({ channel: "c" }), false, "plain channels carry no position");
});

test("refresh: a quarter of the time left, 1 s to 60 s before exp, never sooner than the floor", () => {
  const now = 1_700_000_000_000;
  assert.equal(refreshDelay(now / 1000 + 5, now), 3750);
  assert.equal(refreshDelay(now / 1000 + 3600, now), 3540000);
  assert.equal(refreshDelay(now / 1000 + 2, now), 1000);
  assert.equal(refreshDelay(now / 1000 - 100, now), 1000, "already expired (clock skew): floor");
  assert.equal(refreshDelay(now / 1000 - 100, now, 5000), 5000);
});

test("tokenExpiry reads exp without verifying; junk gives null", () => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  assert.equal(tokenExpiry(b64({ alg: "HS256" }) + "." + b64({ sub: "a", exp: 1234567890 }) + ".sig"), 1234567890);
  assert.equal(tokenExpiry(b64({ alg: "HS256" }) + "." + b64({ sub: "a" }) + ".sig"), null);
  assert.equal(tokenExpiry("nonsense"), null);
  assert.equal(tokenExpiry("a.%%%.c"), null);
});

test("token bucket: a burst goes at once, then the rate", () => {
  const b = new TokenBucket(100, 3, 0);
  assert.deepEqual([b.take(0), b.take(0), b.take(0)], [0, 0, 0]);
  assert.equal(b.take(0), 10);
  assert.equal(b.take(10), 0);
  assert.equal(new TokenBucket(0, 0, 0).take(0), 0, "rate 0: no pacing");
});

test("URLs: http(s) becomes ws(s), paths resolve against the page", () => {
  assert.equal(resolveUrl("ws://h:1/ws"), "ws://h:1/ws");
  assert.equal(resolveUrl("https://h/ws"), "wss://h/ws");
  assert.equal(resolveUrl("/ws", "http://example.test:8080/app/page"), "ws://example.test:8080/ws");
  assert.throws(() => resolveUrl("ftp://h/ws"));
});

test("reconnect policy: never after 4003; after 4001 only with getToken", () => {
  assert.equal(shouldReconnect(4003, true), false);
  assert.equal(shouldReconnect(4001, false), false);
  assert.equal(shouldReconnect(4001, true), true);
  for (const c of [1001, 1006, 1011, 4008, 4029]) assert.equal(shouldReconnect(c, false), true);
});

test("reconnect policy: close codes and a backend's reason", () => {
  const cases = [
    // code, hasGetToken, reason, reconnect?
    [1000, false, "", true],
    [1001, false, "going away", true],
    [1006, false, "", true],
    [1013, false, "try again later", true], // the connect proxy was unavailable
    [4001, true, "token expired", true],
    [4001, false, "session expired", false],
    [4003, true, "disconnected", false],
    [4008, false, "slow consumer", true],
    [4029, false, "rate limit", true],
    [4499, false, "", true],
    [4500, false, "", false],
    [4500, true, "banned", false],
    [4999, false, "no", false],
    [4501, false, "reconnect", true],
    [4501, false, "Reconnect: moved", true],
    [4501, false, "reconnect later", true],
    [4501, false, "reconnecting", false], // the word itself, not a prefix of another
    [4501, false, "please reconnect", false],
    [4501, false, undefined, false],
    [5000, false, "", true],
  ];
  for (const [code, getToken, reason, want] of cases) {
    assert.equal(shouldReconnect(code, getToken, reason), want, `${code} ${getToken} ${JSON.stringify(reason)}`);
  }
  assert.equal(reasonAsksReconnect("reconnect_now"), false);
  assert.equal(reasonAsksReconnect(" reconnect"), false);
  assert.equal(reasonAsksReconnect("RECONNECT."), true);
  assert.equal(reasonAsksReconnect(null), false);
});
