/*
 * herald.js - the browser client of Herald (SPEC §7). An ES module without
 * dependencies:
 *
 *   import { Herald } from "/herald.js";
 *   const h = new Herald("/ws", { getToken: async () => (await fetch("/my-token")).text() });
 *   h.on("connected", (ctx) => console.log("connected as", ctx.user));
 *   const s = h.subscribe("chat:lobby", { onMessage(data, ctx) { ... } });
 *   h.connect();
 *   await h.publish("chat:lobby", { text: "hi" });
 *
 * One file (~900 lines) on purpose: GET /herald.js serves it as one ES
 * module, without a bundler or dependencies.
 *
 * The protocol is Herald's (docs/protocol.md): the token goes in
 * a `connect` command (never in the URL, so it stays out of access logs),
 * every command gets one reply with its id, pushes carry no id. Without a
 * token the `connect` goes alone (with the `data` option, if any): a
 * server with a connect proxy asks the application's backend, which sees
 * the page's cookies (docs/proxy.md).
 *
 * The pieces of logic that need no socket (backoff schedule, recovery
 * bookkeeping, refresh timing, token bucket) are exported on their own so
 * they can be tested under node without a browser.
 */

/*---- Errors ----------------------------------------------------------------*/

/** An error with the server's code (`forbidden`, `not_found`, ...) or one of
 * the client's own: `timeout`, `disconnected`, `transport`, `token`. */
export class HeraldError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = "HeraldError";
    this.code = code;
  }
}

/*---- Pure logic ------------------------------------------------------------*/

/** Full-jitter exponential backoff: a delay drawn uniformly from
 * [0, min(max, base * 2^attempt)). `attempt` counts from 0. */
export function backoffDelay(attempt, { base = 500, max = 20000 } = {}, random = Math.random) {
  const cap = Math.min(max, base * Math.pow(2, Math.min(Math.max(attempt, 0), 30)));
  return Math.floor(random() * cap);
}

/** The reconnect schedule: next() draws the delay of the next attempt;
 * reset() after a connection that stayed up (see Herald's stableAfter). */
export class Backoff {
  constructor(options = {}, random = Math.random) {
    this.options = { base: options.base ?? 500, max: options.max ?? 20000 };
    this.random = random;
    this.attempt = 0;
  }
  next() {
    return backoffDelay(this.attempt++, this.options, this.random);
  }
  reset() {
    this.attempt = 0;
  }
}

/** A token bucket that paces outgoing commands under the server's inbound
 * limit (default 200/s, burst 400: a client over it is closed 4029), e.g.
 * when hundreds of subscriptions are restored at once after a reconnect.
 * take(now) returns 0 when a command may go now, else the ms to wait. */
export class TokenBucket {
  constructor(rate = 150, burst = 300, now = 0) {
    this.rate = rate;
    this.burst = burst;
    this.tokens = burst;
    this.at = now;
  }
  take(now) {
    if (!(this.rate > 0)) return 0; /* pacing off */
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.rate) / 1000);
    this.at = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.tokens) * 1000) / this.rate);
  }
}

/**
 * Where a subscriber stands in a history channel's stream, and what a
 * (re)subscribe result means for it. Herald numbers the publications of a
 * history channel (`offset`) within a stream (`epoch`); resubscribing with
 * `since` returns what was missed, and `recovered` says whether that closed
 * the gap.
 */
export class StreamPosition {
  constructor() {
    this.offset = null; /* offset of the last publication seen */
    this.epoch = null;
  }
  /** true once a history subscribe told us the stream's position */
  get known() {
    return this.offset !== null && this.epoch !== null;
  }
  /** The `since` argument of the next subscribe, or undefined. */
  since() {
    return this.known ? { offset: this.offset, epoch: this.epoch } : undefined;
  }
  /**
   * Applies a subscribe reply {offset, epoch, recovered, publications}
   * (history namespaces; a plain channel's reply has none of them).
   * Returns {recovered, publications}: the publications to deliver, in
   * order, without any already seen. Publications of another epoch are
   * never delivered: they are not "after" our position.
   */
  subscribed(result, wasRecovering) {
    if (!result || result.epoch === undefined || result.offset === undefined) {
      return { recovered: false, publications: [] };
    }
    const sameEpoch = wasRecovering && this.known && result.epoch === this.epoch;
    const out = [];
    if (sameEpoch && Array.isArray(result.publications)) {
      let last = this.offset;
      for (const p of result.publications) {
        if (typeof p.offset === "number" && p.offset > last) {
          out.push(p);
          last = p.offset;
        }
      }
    }
    const recovered = Boolean(wasRecovering && result.recovered && sameEpoch);
    this.epoch = result.epoch;
    /* after a gap or a new epoch, continue from the stream's top */
    this.offset = recovered && out.length ? Math.max(out[out.length - 1].offset, result.offset) : result.offset;
    return { recovered, publications: out };
  }
  /** A live message with `offset`: false for a duplicate (at or before
   * the position), else advances the position. Messages without an offset
   * (plain channels) are always delivered. */
  accept(offset) {
    if (typeof offset !== "number" || !this.known) return true;
    if (offset <= this.offset) return false;
    this.offset = offset;
    return true;
  }
  /** The `subscribed` push after a Redis outage: the node has already
   * delivered what it recovered; `recovered: false` means a gap. */
  resynced(push) {
    if (push.epoch === undefined || push.offset === undefined) return false;
    const recovered = Boolean(push.recovered) && this.known && push.epoch === this.epoch;
    this.epoch = push.epoch;
    this.offset = recovered ? Math.max(this.offset, push.offset) : push.offset;
    return recovered;
  }
}

/** Milliseconds before a token expiring at `expiresAt` (unix seconds) should
 * be refreshed: a quarter of the time left, at least 1 s and at most 60 s
 * before `exp`, and never less than `floor` ms from now. */
export function refreshDelay(expiresAt, now = Date.now(), floor = 1000) {
  const left = expiresAt * 1000 - now;
  const margin = Math.min(60000, Math.max(1000, left / 4));
  return Math.max(floor, Math.floor(left - margin));
}

/** The `exp` claim of a JWT (unix seconds), unverified; null if none. */
export function tokenExpiry(token) {
  try {
    const part = String(token).split(".")[1];
    if (!part) return null;
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((part.length + 3) % 4);
    const json = typeof atob === "function" ? atob(b64) : Buffer.from(b64, "base64").toString("binary");
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" ? exp : null;
  } catch {
    return null;
  }
}

/** The WebSocket URL for `url`: ws(s) as given; http(s) becomes ws(s);
 * relative URLs resolve against the page (`"/ws"`). */
export function resolveUrl(url, base) {
  if (base === undefined && typeof location !== "undefined") base = location.href;
  const u = new URL(url, base);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.protocol !== "ws:" && u.protocol !== "wss:") throw new TypeError("not a WebSocket URL: " + url);
  return u.href;
}

/** Does a close reason ask the client to come back? A backend's
 * disconnect (close codes 4500-4999) ends the connection for good unless
 * its reason starts with the word "reconnect" ("reconnect", "reconnect:
 * moved to another node", "Reconnect later"). */
export function reasonAsksReconnect(reason) {
  return /^reconnect(?![a-z0-9_])/i.test(String(reason || ""));
}

/** Close codes after which the client does not reconnect by itself:
 * 4003 (disconnected by the server; also after the backend refused a
 * connect), 4001 without getToken (no way to a new token; a session the
 * refresh proxy ended stays ended), and a backend's disconnect (4500-4999)
 * whose reason does not start with "reconnect". Everything else - 1006, 1001,
 * 1013 "try again later" (the connect proxy was unavailable) ... - is
 * retried with backoff. */
export function shouldReconnect(code, hasGetToken, reason) {
  if (code === 4003) return false; /* disconnected by the server */
  if (code === 4001) return hasGetToken; /* only with a way to get a new token */
  if (code >= 4500 && code <= 4999) return reasonAsksReconnect(reason);
  return true;
}

/* reply codes worth retrying a subscribe for (Redis outage, overload) */
const RETRYABLE = new Set(["unavailable", "internal", "rate_limited", "timeout"]);

const EVENTS = ["connecting", "connected", "disconnected", "error", "message", "subscribed", "unsubscribed"];

/* Calls a user callback; an exception there must not break the client. */
function safely(fn, ...args) {
  if (typeof fn !== "function") return;
  try {
    fn(...args);
  } catch (e) {
    if (typeof reportError === "function") reportError(e);
    else setTimeout(() => { throw e; }, 0);
  }
}

/*---- Subscriptions ---------------------------------------------------------*/

/** What subscribe() returns: one set of callbacks on one channel. */
export class Subscription {
  constructor(client, channel, handlers) {
    this.channel = channel;
    this.handlers = handlers || {};
    this._client = client;
    this._active = true;
    /** resolves with the first subscribe result, rejects with a HeraldError
     * if the server refuses (forbidden...) */
    this.ready = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    this.ready.catch(() => {}); /* not awaiting it is fine */
  }
  get active() {
    return this._active;
  }
  unsubscribe() {
    if (!this._active) return;
    this._active = false;
    this._client._removeSubscription(this);
  }
}

/* One channel the connection is (or should be) subscribed to, with every
 * Subscription on it. `server`: joined by the server (members API). */
class ChannelEntry {
  constructor(channel) {
    this.channel = channel;
    this.subs = new Set();
    this.state = "pending"; /* pending | subscribing | active */
    this.server = false;
    this.pos = new StreamPosition();
    this.everSubscribed = false;
    this.buffer = []; /* pushes that arrived while the subscribe was in flight */
    this.reqId = 0;
    this.retryTimer = null;
    this.retry = null; /* Backoff for unavailable replies */
  }
}

/*---- The client ------------------------------------------------------------*/

const DEFAULTS = {
  backoff: { base: 500, max: 20000 },
  stableAfter: 10000, /* ms connected before the backoff is reset */
  pingInterval: 25000, /* ms between pings while connected */
  pongTimeout: 10000, /* ms a ping may wait for its reply */
  connectTimeout: 10000, /* ms from opening the socket to `connected` */
  requestTimeout: 10000, /* ms a publish/presence/history may wait */
  rate: 150, /* outgoing commands/s (0: no pacing) */
  burst: 300,
};

export class Herald {
  /**
   * @param url  "ws://host:port/ws", "https://host/ws" or relative ("/ws")
   * @param options  {token} or {getToken: async () => jwt}; no token at all
   *   sends a `connect` without one: the server's connect proxy then asks
   *   the application's backend (with the page's cookies), or the
   *   connection is anonymous where the server allows it. data: the
   *   connect command's `data` for the connect proxy (any JSON, or a
   *   function, possibly async, called before each connection). Tuning: backoff
   *   {base, max}, stableAfter, pingInterval, pongTimeout, connectTimeout,
   *   requestTimeout, rate, burst (ms, per second); WebSocket (a
   *   constructor, for node or tests), random (for tests).
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this._token = options.token || null;
    this._getToken = typeof options.getToken === "function" ? options.getToken : null;
    this._data = options.data;
    this._connectError = null; /* the error reply to this attempt's connect */
    this._random = options.random || Math.random;
    this._backoff = new Backoff(this.options.backoff, this._random);
    this._listeners = new Map(EVENTS.map((e) => [e, new Set()]));
    this._channels = new Map(); /* channel -> ChannelEntry */
    this._requests = new Map(); /* id -> request (sent or waiting) */
    this._waiting = []; /* app requests made while (re)connecting */
    this._outq = []; /* frames waiting for the token bucket */
    this._bucket = new TokenBucket(this.options.rate, this.options.burst, Date.now());
    this._id = 0;
    this._gen = 0; /* bumped per connection attempt: stale callbacks check it */
    this._ws = null;
    this._state = "disconnected"; /* disconnected | connecting | connected */
    this._timers = new Map(); /* name -> timeout id (one per name) */
    this._connectId = 0;
    this._everConnected = false;
    this.client = null; /* the server's id for this connection */
    this.user = null;
    this.expiresAt = null;
  }

  /** "disconnected" | "connecting" | "connected" */
  get state() {
    return this._state;
  }

  /** Adds a listener; returns a function that removes it. Events:
   * connected {client, user, expiresAt}, disconnected {code, reason,
   * reconnect}, error (HeraldError), connecting {attempt, delay},
   * message (data, ctx) for server-joined channels nobody subscribed to,
   * subscribed / unsubscribed {channel, ...} (server-side membership). */
  on(event, fn) {
    const set = this._listeners.get(event);
    if (!set) throw new TypeError("unknown event: " + event);
    set.add(fn);
    return () => set.delete(fn);
  }

  off(event, fn) {
    const set = this._listeners.get(event);
    if (set) set.delete(fn);
  }

  _emit(event, ...args) {
    for (const fn of [...this._listeners.get(event)]) safely(fn, ...args);
  }

  /** Opens the connection (and keeps it open until disconnect()). */
  connect() {
    if (this._state !== "disconnected") return;
    this._setState("connecting");
    this._backoff.reset();
    this._open();
  }

  /** Closes the connection for good (no reconnect); subscriptions are kept
   * and restored by a later connect(). Pending requests reject
   * `disconnected`. */
  disconnect() {
    if (this._state === "disconnected") return;
    const wasConnected = this._state === "connected";
    this._gen++;
    this._teardown(1000, "client disconnect");
    this._clearTimer("reconnect");
    this._failAll(new HeraldError("disconnected", "disconnect() was called"));
    this._setState("disconnected");
    this._emit("disconnected", { code: 1000, reason: "client disconnect", reconnect: false, wasConnected });
  }

  /**
   * Subscribes to `channel`. handlers: onMessage(data, ctx) with ctx
   * {channel, offset?, from?, recovered?, replayed?} (from: the publishing
   * client {user, client, info} as the server says, absent for a backend),
   * onJoin / onLeave ({channel,
   * client, user}), onSubscribed ({channel, resubscribed, recovered,
   * offset?, epoch?}), onUnsubscribed ({channel, reason}), onError
   * (HeraldError). Several subscriptions to one channel share one server
   * subscription.
   */
  subscribe(channel, handlers = {}) {
    if (typeof channel !== "string" || channel.length === 0) throw new TypeError("channel must be a non-empty string");
    const sub = new Subscription(this, channel, handlers);
    let entry = this._channels.get(channel);
    if (!entry) {
      entry = new ChannelEntry(channel);
      this._channels.set(channel, entry);
    }
    entry.subs.add(sub);
    if (entry.state === "active") {
      const ctx = this._subscribedCtx(entry, false, false);
      queueMicrotask(() => {
        if (!sub.active) return;
        sub._resolve(ctx);
        safely(sub.handlers.onSubscribed, ctx);
      });
    } else if (entry.state === "pending" && this._state === "connected") {
      this._sendSubscribe(entry);
    }
    return sub;
  }

  /** The Subscriptions on `channel` made by this page. */
  subscriptions(channel) {
    const e = this._channels.get(channel);
    return e ? [...e.subs] : [];
  }

  /** Publishes `data` (any JSON) → {offset?}. */
  publish(channel, data) {
    return this._request("publish", { channel, data });
  }

  /** Who is subscribed → {clients: [{client, user, info}]}. */
  presence(channel) {
    return this._request("presence", { channel });
  }

  /** Calls `method` of the application's backend through Herald's RPC
   * proxy → a promise of the backend's result `data`. Rejects with a
   * HeraldError: the backend's own error code, `not_found` where no RPC
   * proxy is configured, `unavailable` when the backend could not answer,
   * or the client's `timeout` / `disconnected`. */
  rpc(method, data = null) {
    if (typeof method !== "string" || method.length === 0) {
      return Promise.reject(new TypeError("method must be a non-empty string"));
    }
    return this._request("rpc", { method, data: data === undefined ? null : data }).then((r) =>
      r && r.data !== undefined ? r.data : null,
    );
  }

  /** The channel's history → {publications: [{offset, data}], offset, epoch}.
   * options: limit (the newest N), since {offset, epoch} (those after). */
  history(channel, options = {}) {
    const args = { channel };
    if (options.limit !== undefined) args.limit = options.limit;
    if (options.since !== undefined) args.since = options.since;
    return this._request("history", args);
  }

  /*---- connection ----*/

  _setState(s) {
    this._state = s;
  }

  _setTimer(name, ms, fn) {
    this._clearTimer(name);
    const gen = this._gen;
    this._timers.set(name, setTimeout(() => {
      this._timers.delete(name);
      if (gen === this._gen) fn();
    }, ms));
  }

  _clearTimer(name) {
    const t = this._timers.get(name);
    if (t !== undefined) {
      clearTimeout(t);
      this._timers.delete(name);
    }
  }

  /** Number of timers this client holds (for leak tests). */
  get _timerCount() {
    let n = this._timers.size + this._waiting.length;
    for (const r of this._requests.values()) if (r.timer) n++;
    for (const e of this._channels.values()) if (e.retryTimer) n++;
    return n;
  }

  async _open() {
    const gen = ++this._gen;
    let token = this._token;
    if (this._getToken) {
      const exp = token ? tokenExpiry(token) : null;
      if (!token || (exp !== null && exp * 1000 - Date.now() < 2000)) {
        try {
          token = await this._getToken();
        } catch (e) {
          if (gen !== this._gen) return;
          this._emit("error", new HeraldError("token", "getToken failed: " + (e && e.message ? e.message : e)));
          this._scheduleReconnect();
          return;
        }
        if (gen !== this._gen) return;
        if (!token) {
          /* the app has no token for us: stay disconnected */
          this._failAll(new HeraldError("unauthorized", "getToken returned no token"));
          this._setState("disconnected");
          this._emit("disconnected", { code: 4001, reason: "no token", reconnect: false });
          return;
        }
        this._token = token;
      }
    }
    let data = this._data;
    if (typeof data === "function") {
      try {
        data = await data();
      } catch (e) {
        if (gen !== this._gen) return;
        this._emit("error", new HeraldError("transport", "the data option failed: " + (e && e.message ? e.message : e)));
        this._scheduleReconnect();
        return;
      }
      if (gen !== this._gen) return;
    }
    this._connectError = null;
    let ws;
    try {
      const WS = this.options.WebSocket || globalThis.WebSocket;
      ws = new WS(resolveUrl(this.url));
    } catch (e) {
      this._emit("error", new HeraldError("transport", String(e && e.message ? e.message : e)));
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    ws.onopen = () => {
      if (ws !== this._ws) return;
      this._connectId = this._nextId();
      const cmd = { id: this._connectId, op: "connect" };
      if (token) cmd.token = token;
      if (data !== undefined) cmd.data = data;
      this._sendNow(cmd);
    };
    ws.onmessage = (ev) => {
      if (ws === this._ws) this._onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws === this._ws) this._onClose(ev.code, ev.reason);
    };
    ws.onerror = () => {}; /* a close event follows */
    this._setTimer("connect", this.options.connectTimeout, () => {
      this._onClose(1006, "connect timeout");
    });
  }

  /* Detaches from the current socket and closes it (its events are ignored
   * from here on), clears every per-connection timer. */
  _teardown(code, reason) {
    const ws = this._ws;
    this._ws = null;
    for (const name of ["connect", "ping", "pong", "refresh", "stable", "flush"]) this._clearTimer(name);
    this._outq = [];
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        if (ws.readyState === 0 || ws.readyState === 1) {
          if (code === 1000) ws.close(1000, reason);
          else ws.close();
        }
      } catch {
        /* closing a socket that never opened may throw: nothing to do */
      }
    }
    /* requests already on the wire: their fate is unknown */
    for (const [id, r] of this._requests) {
      if (!r.sent) continue;
      this._requests.delete(id);
      if (r.timer) clearTimeout(r.timer);
      if (r.lost) r.lost();
    }
    for (const e of this._channels.values()) {
      if (e.retryTimer) {
        clearTimeout(e.retryTimer);
        e.retryTimer = null;
      }
      if (e.state !== "pending") {
        e.state = "pending";
        e.buffer = [];
      }
    }
  }

  _onClose(code, reason) {
    const wasConnected = this._state === "connected";
    this._teardown(code, reason);
    if (code === 4001 && this._getToken) this._token = null; /* ask for a new one */
    /* the server's reason for refusing the connect, when it said one */
    const refused = this._connectError;
    this._connectError = null;
    const reconnect = shouldReconnect(code, Boolean(this._getToken), reason);
    const ev = { code, reason, reconnect, wasConnected };
    if (refused) ev.error = refused;
    if (!reconnect) {
      this._gen++;
      const err = refused || new HeraldError(code === 4001 ? "unauthorized" : "disconnected", reason || "closed " + code);
      this._failAll(err);
      this._setState("disconnected");
      this._emit("disconnected", ev);
      return;
    }
    this._setState("connecting");
    if (wasConnected) this._emit("disconnected", ev);
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    const delay = this._backoff.next();
    this._emit("connecting", { attempt: this._backoff.attempt, delay });
    this._gen++;
    this._setTimer("reconnect", delay, () => this._open());
  }

  _onConnected(push) {
    this._clearTimer("connect");
    this._connectError = null;
    this._setState("connected");
    this._everConnected = true;
    this.client = push.client;
    this.user = push.user;
    this.expiresAt = push.expires_at ?? null;
    this._setTimer("stable", this.options.stableAfter, () => this._backoff.reset());
    this._schedulePing();
    this._scheduleRefresh();
    /* subscriptions first, so queued publishes find them */
    for (const e of this._channels.values()) if (e.state === "pending") this._sendSubscribe(e);
    const waiting = this._waiting;
    this._waiting = [];
    for (const r of waiting) this._sendRequest(r);
    this._emit("connected", { client: this.client, user: this.user, expiresAt: this.expiresAt });
  }

  /*---- ping ----*/

  _schedulePing() {
    this._setTimer("ping", this.options.pingInterval, () => {
      this._command("ping", {}, () => {
        this._clearTimer("pong");
        this._schedulePing();
      });
      this._setTimer("pong", this.options.pongTimeout, () => {
        /* a dead network: the browser may not notice for minutes */
        this._onClose(1006, "no reply to ping");
      });
    });
  }

  /*---- token refresh ----*/

  _scheduleRefresh(floor = 1000) {
    this._clearTimer("refresh");
    if (!this._getToken || typeof this.expiresAt !== "number") return;
    this._setTimer("refresh", refreshDelay(this.expiresAt, Date.now(), floor), () => this._refresh());
  }

  async _refresh() {
    const gen = this._gen;
    let token;
    try {
      token = await this._getToken();
    } catch (e) {
      if (gen !== this._gen) return;
      this._emit("error", new HeraldError("token", "getToken failed: " + (e && e.message ? e.message : e)));
      this._scheduleRefresh(5000);
      return;
    }
    if (gen !== this._gen || this._state !== "connected") return;
    if (!token) return; /* no new token: the server closes 4001 at exp */
    this._command("refresh", { token }, (msg) => {
      if (msg.error) {
        this._emit("error", new HeraldError(msg.error.code, "refresh: " + msg.error.message));
        this._scheduleRefresh(5000);
        return;
      }
      this._token = token;
      this.expiresAt = msg.result.expires_at ?? null;
      this._scheduleRefresh();
    });
  }

  /*---- frames ----*/

  _nextId() {
    this._id = this._id >= 2147483647 ? 1 : this._id + 1;
    return this._id;
  }

  _sendNow(obj) {
    const ws = this._ws;
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(obj));
  }

  /* Every command after `connect` goes through the token bucket. */
  _send(obj) {
    this._outq.push(obj);
    this._flush();
  }

  _flush() {
    while (this._outq.length) {
      const wait = this._bucket.take(Date.now());
      if (wait > 0) {
        if (!this._timers.has("flush")) this._setTimer("flush", wait, () => this._flush());
        return;
      }
      this._sendNow(this._outq.shift());
    }
  }

  /* An internal command; onReply(msg) gets the reply, nothing if the
   * connection is lost first (lost() is called instead). */
  _command(op, args, onReply, lost) {
    const id = this._nextId();
    this._requests.set(id, { id, sent: true, reply: onReply, lost, timer: null });
    this._send({ id, op, ...args });
    return id;
  }

  _request(op, args) {
    return new Promise((resolve, reject) => {
      if (this._state === "disconnected") {
        reject(new HeraldError("disconnected", "not connected: call connect() first"));
        return;
      }
      const r = {
        id: this._nextId(),
        op,
        args,
        sent: false,
        reply: (msg) => (msg.error ? reject(new HeraldError(msg.error.code, msg.error.message)) : resolve(msg.result)),
        fail: reject,
        lost: () => reject(new HeraldError("disconnected", "the connection was lost before the reply")),
        timer: null,
      };
      r.timer = setTimeout(() => {
        this._requests.delete(r.id);
        const i = this._waiting.indexOf(r);
        if (i >= 0) this._waiting.splice(i, 1);
        reject(new HeraldError("timeout", op + ": no reply within " + this.options.requestTimeout + " ms"));
      }, this.options.requestTimeout);
      this._requests.set(r.id, r);
      if (this._state === "connected") this._sendRequest(r);
      else this._waiting.push(r);
    });
  }

  _sendRequest(r) {
    r.sent = true;
    this._send({ id: r.id, op: r.op, ...r.args });
  }

  /* Rejects every app request (sent or waiting). */
  _failAll(err) {
    for (const [id, r] of this._requests) {
      this._requests.delete(id);
      if (r.timer) clearTimeout(r.timer);
      if (r.fail) r.fail(err);
    }
    this._waiting = [];
  }

  _onFrame(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      this._emit("error", new HeraldError("bad_request", "the server sent a frame that is not JSON"));
      return;
    }
    if (!msg || typeof msg !== "object") return;
    if (typeof msg.id === "number") {
      if (msg.id === this._connectId) {
        this._connectId = 0;
        if (msg.error) {
          /* the close that follows (4001, 4003, 1013) says what happens next */
          this._connectError = new HeraldError(msg.error.code, msg.error.message);
          this._emit("error", this._connectError);
        }
        return;
      }
      const r = this._requests.get(msg.id);
      if (!r) return; /* timed out already */
      this._requests.delete(msg.id);
      if (r.timer) clearTimeout(r.timer);
      r.reply(msg);
      return;
    }
    switch (msg.push) {
      case "connected":
        this._onConnected(msg);
        break;
      case "message":
      case "join":
      case "leave":
        this._onChannelPush(msg);
        break;
      case "subscribed":
        this._onServerSubscribed(msg);
        break;
      case "unsubscribed":
        this._onServerUnsubscribed(msg);
        break;
      default:
        break; /* unknown pushes are for newer clients */
    }
  }

  /*---- channels ----*/

  _sendSubscribe(entry) {
    const args = { channel: entry.channel };
    const wasRecovering = entry.everSubscribed && entry.pos.known;
    if (wasRecovering) args.since = entry.pos.since();
    entry.state = "subscribing";
    entry.buffer = [];
    entry.reqId = this._command("subscribe", args, (msg) => this._onSubscribeReply(entry, msg, wasRecovering));
  }

  _onSubscribeReply(entry, msg, wasRecovering) {
    if (this._channels.get(entry.channel) !== entry || entry.state !== "subscribing") return;
    if (msg.error) {
      const err = new HeraldError(msg.error.code, "subscribe " + entry.channel + ": " + msg.error.message);
      if (RETRYABLE.has(msg.error.code)) {
        entry.state = "pending";
        entry.retry = entry.retry || new Backoff(this.options.backoff, this._random);
        const delay = Math.max(200, entry.retry.next());
        entry.retryTimer = setTimeout(() => {
          entry.retryTimer = null;
          if (this._channels.get(entry.channel) === entry && entry.state === "pending" && this._state === "connected") {
            this._sendSubscribe(entry);
          }
        }, delay);
        this._emit("error", err);
        return;
      }
      this._channels.delete(entry.channel);
      for (const s of entry.subs) {
        s._active = false;
        s._reject(err);
        safely(s.handlers.onError, err);
      }
      if (entry.server) this._emit("unsubscribed", { channel: entry.channel, reason: msg.error.code });
      this._emit("error", err);
      return;
    }
    entry.retry = null;
    const resubscribed = entry.everSubscribed;
    const { recovered, publications } = entry.pos.subscribed(msg.result, wasRecovering);
    entry.everSubscribed = true;
    entry.state = "active";
    const ctx = this._subscribedCtx(entry, resubscribed, recovered);
    for (const s of entry.subs) {
      s._resolve(ctx);
      safely(s.handlers.onSubscribed, ctx);
    }
    for (const p of publications) {
      const ctx = { channel: entry.channel, offset: p.offset, recovered, replayed: true };
      if (p.from) ctx.from = p.from;
      this._deliver(entry, p.data, ctx);
    }
    const buffered = entry.buffer;
    entry.buffer = [];
    for (const m of buffered) this._onChannelPush(m);
  }

  _subscribedCtx(entry, resubscribed, recovered) {
    const ctx = { channel: entry.channel, resubscribed, recovered };
    if (entry.pos.known) {
      ctx.offset = entry.pos.offset;
      ctx.epoch = entry.pos.epoch;
    }
    return ctx;
  }

  _deliver(entry, data, ctx) {
    if (entry.subs.size === 0) {
      this._emit("message", data, ctx);
      return;
    }
    for (const s of [...entry.subs]) if (s.active) safely(s.handlers.onMessage, data, ctx);
  }

  _onChannelPush(msg) {
    const entry = this._channels.get(msg.channel);
    if (!entry) return; /* after unsubscribe: late */
    if (entry.state === "subscribing") {
      entry.buffer.push(msg);
      return;
    }
    if (entry.state !== "active") return;
    if (msg.push === "message") {
      if (!entry.pos.accept(msg.offset)) return; /* already delivered */
      const ctx = { channel: msg.channel };
      if (msg.offset !== undefined) ctx.offset = msg.offset;
      /* the server's word on who published (absent: a backend) */
      if (msg.from) ctx.from = msg.from;
      this._deliver(entry, msg.data, ctx);
      return;
    }
    const info = { channel: msg.channel, client: msg.client, user: msg.user };
    const key = msg.push === "join" ? "onJoin" : "onLeave";
    for (const s of [...entry.subs]) if (s.active) safely(s.handlers[key], info);
  }

  /* {"push":"subscribed"}: the server joined us to a channel (members API),
   * or re-established a subscription after a Redis outage. */
  _onServerSubscribed(msg) {
    let entry = this._channels.get(msg.channel);
    if (entry && entry.state === "subscribing") return; /* our subscribe's reply tells */
    const info = { channel: msg.channel };
    if (msg.recovered !== undefined) info.recovered = Boolean(msg.recovered);
    if (msg.offset !== undefined) {
      info.offset = msg.offset;
      info.epoch = msg.epoch;
    }
    if (entry && entry.state === "active") {
      const recovered = entry.pos.resynced(msg);
      const ctx = this._subscribedCtx(entry, true, recovered);
      for (const s of [...entry.subs]) if (s.active) safely(s.handlers.onSubscribed, ctx);
      this._emit("subscribed", { ...info, recovered, resubscribed: true });
      return;
    }
    if (!entry) {
      entry = new ChannelEntry(msg.channel);
      this._channels.set(msg.channel, entry);
    }
    if (entry.retryTimer) {
      clearTimeout(entry.retryTimer);
      entry.retryTimer = null;
    }
    entry.server = true;
    entry.everSubscribed = true;
    entry.state = "active";
    if (msg.offset !== undefined && msg.epoch !== undefined) {
      entry.pos.offset = msg.offset;
      entry.pos.epoch = msg.epoch;
    }
    const ctx = this._subscribedCtx(entry, false, false);
    for (const s of entry.subs) {
      s._resolve(ctx);
      safely(s.handlers.onSubscribed, ctx);
    }
    this._emit("subscribed", { ...info, resubscribed: false });
  }

  _onServerUnsubscribed(msg) {
    const entry = this._channels.get(msg.channel);
    if (!entry) return;
    this._channels.delete(msg.channel);
    if (entry.retryTimer) clearTimeout(entry.retryTimer);
    const info = { channel: msg.channel, reason: "server" };
    for (const s of entry.subs) {
      s._active = false;
      safely(s.handlers.onUnsubscribed, info);
    }
    this._emit("unsubscribed", info);
  }

  _removeSubscription(sub) {
    const entry = this._channels.get(sub.channel);
    if (!entry || !entry.subs.delete(sub)) return;
    if (entry.subs.size > 0 || entry.server) return;
    this._channels.delete(sub.channel);
    if (entry.retryTimer) clearTimeout(entry.retryTimer);
    if (this._state === "connected" && entry.state !== "pending") {
      this._command("unsubscribe", { channel: entry.channel }, () => {});
    }
  }
}

export default Herald;
