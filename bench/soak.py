#!/usr/bin/env python3
"""soak.py - Herald's soak test: --duration seconds of mixed traffic, then checks.

Starts Herald (embedded mode, or with --cluster a private redis-server and two
nodes) with a config that has a plain (""), a history (hist, 200 kept, filled
before the run so it does not grow during it), a presence + join/leave (room)
and an expiring-history (eph, 5 s) namespace, runs all the traffic below at
once from one asyncio process, samples each server's RSS, open descriptors,
threads, CPU time and gauges every --sample-interval seconds, and prints a
report (text; JSON with --json; --write puts it into a markdown file). Exit
status 1 when a check fails, 2 when the run could not be set up.

Traffic (rates at --scale 1; ASan halves them):
  long-lived subscribers  --subscribers (32) connections, each on 2 plain
                (feed.N), 2 history (hist:N) and 2 presence (room:N) channels,
                every 4th also on its personal user:<sub> channel. They stay
                for the whole run: every publication sent after their
                subscribe reply must reach them exactly once and in order
                (per-publisher sequence numbers; on history channels the
                offsets must also rise by one). Now and then a ping, a
                presence (must list the client itself) or a history op.
  publishers    2 WebSocket publishers (40/s each; they are subscribed to
                every room:N, whose rule is "subscribers", and are checked
                like the long-lived subscribers), 1 REST publisher (30/s),
                1 REST broadcaster (2/s to feed.0-3 and user:soak-u0).
  churners      --churners (8) loops: connect (Authorization header, ?token=
                or the connect op), subscribe to 1-3 plain/presence channels
                and to one history channel with `since` from the previous
                session (`recovered` must be true and the stream continue
                without a gap or a duplicate; one time in ten a bogus epoch,
                where it must be false), publish a little, read, unsubscribe
                some (no message may follow the reply), leave (close
                handshake, FIN without a close frame, or RST), come back.
  rapid churn   20 sessions/s: connect, then nothing, a ping, or a one-off
                channel (tmp.N, room:rN with presence, eph:N with history)
                to subscribe to, publish into and hear back from; leave.
  slow consumers  one every 15 s: a 4 KiB receive buffer, never read, on its
                own channel plus a shared feed, history and room channel; its
                channel gets 32 KiB REST publications until the node's
                herald_slow_consumer_closes_total moves; it must then find a
                4008 close after what the kernel held.
  token expiry  expirers (exp 2-4 s ahead: closed 4001 "token expired" within
                [exp, exp + 3 s], 6 s under ASan) and refreshers (two
                `refresh` ops before exp, a refused one for another sub, then
                closed 4001 at the last exp, not at an earlier one).
  misbehaving clients  connect timeout (4001), binary frame (1003), oversized
                message (1009), malformed JSON (bad_request, stays open), bad
                and expired tokens (HTTP 401), half-sent handshakes and
                request bodies, bare TCP connects.
  users         one every 8 s (Argon2id is slow): register, OAuth2 password
                grant, /users/me, refresh-token grant (the old refresh token
                then refused), a socket on the access token, a REST
                publication to user:<id>, members add/remove (pushes
                subscribed/unsubscribed, a publication in between), then
                delete the user (socket 4003, its tokens refused) or
                disconnect it (4003) or just leave; every 5th also a wrong
                password (invalid_grant; the per-address throttle allows 20
                per 5 min).
  REST reads    every 2 s: history, presence, /healthz, /readyz, /metrics.

Checks (any failure: exit status 1):
  errors        none, by kind (failed, refused or timed-out commands and
                requests, wrong replies, protocol errors, hung tasks)
  closes        no connection closed by the server with an unexpected code
  deliveries    none lost, duplicated or reordered (slow consumers aside)
  slow consumers, token expiry, recovery   as above, and each happened
  RSS flat      after the warm-up (10 % of the run, at least 10 s) the
                highest sample of the last third may exceed the highest of
                the first third by --rss-tolerance-mib (8) + 5 %. Why that
                much: a slow consumer's 1 MiB queue and socket buffers leave
                ~1.2 MiB in whichever malloc arena served them (seen as
                steps), and the SQLite page cache grows with the user table;
                a leak of 1 KiB per connection is ~10 MiB over a 10-minute
                run (and shows in the "bytes per connection" and "trend"
                figures of the report either way). Not checked under ASan:
                its quarantine keeps 256 MiB of freed memory, so RSS climbs
                regardless; LeakSanitizer's report at exit stands in.
  descriptors flat  the same way with +16 + 10 % (the number of open
                connections moves with the churn, more when the machine
                stalls and episodes overlap), and, the exact check, once
                every client has left the same count as before the first
                one came.
  end state     herald_connections, herald_subscriptions, herald_channels 0;
                presence of every room empty; cluster: no Redis topic left
                subscribed, no presence hash left.
  exit          SIGTERM: exit status 0, no sanitizer report, no warn/error
                log line but slow_consumer.

ASan (--asan yes, or auto: libasan in the server's mappings): rates x0.5,
12 subscribers, 4 churners, wider expiry tolerance, no RSS check.

    python3 bench/soak.py --duration 600 [--cluster] [--herald build/herald] \
        [--json soak.json] [--write docs/benchmarks.md] [-v]

Chaos mode (--chaos, bench/soak_chaos.py): three nodes on two Redis shards,
clients that reconnect as herald.js does, and a node SIGKILLed, a shard
SIGKILLed, a node SIGSTOPped or a client-side network drop every 20-40 s;
reports acknowledged vs delivered publications per history subscriber,
RSS/descriptors per node process and every error code seen:

    python3 bench/soak.py --chaos --duration 600 [--seed N] [--write docs/reliability.md]

(Why one file of ~1,850 lines: one asyncio process drives every kind of
traffic above, and the checks and the report read the same per-stream and
per-server state the traffic writes; the chaos mode, whose clients and
faults are of another kind, is soak_chaos.py; what both use - the raw
WebSocket and HTTP clients, the /proc view of a server - is soaklib.py.)
"""

import argparse
import asyncio
import bisect
import collections
import datetime
import faulthandler
import json
import os
import platform
import random
import re
import resource
import secrets
import signal
import sys
import time
import threading
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from harness import Herald, Redis, make_jwt  # noqa: E402
from soaklib import (CMD_TIMEOUT, HTTP, OP_BINARY, Closed, ProtocolError, RawWS, Refused,  # noqa: E402
                     Session, describe_fds, fd_targets, fetch_metrics, fmt, maps_have_asan, proc_stats,
                     route_frame, sleep_until, slope, tally, where, write_section)

FEED = ["feed.%d" % i for i in range(4)]
HIST = ["hist:%d" % i for i in range(4)]
ROOM = ["room:%d" % i for i in range(4)]
HISTORY_SIZE = 200
CONFIG = {"namespaces": {
    "": {"subscribe": "authenticated", "publish": "authenticated"},
    "hist": {"subscribe": "authenticated", "publish": "authenticated",
             "history_size": HISTORY_SIZE, "history_ttl": 900},
    "room": {"subscribe": "authenticated", "publish": "subscribers", "presence": True,
             "join_leave": True},
    # one-off channels of the rapid churn: history that expires 5 s after each publication
    "eph": {"subscribe": "authenticated", "publish": "authenticated", "history_size": 10,
            "history_ttl": 5},
}}
ASAN_RATE = 0.5              # rates under ASan (its build is several times slower)
CONNECT_TIMEOUT = 2          # HERALD_CONNECT_TIMEOUT for the run
EXPECTED_LOG_EVENTS = {"slow_consumer"}  # warn/error events that are part of the test


#---- publication bookkeeping ------------------------------------------------------------

class PubLog:
    """What one publisher sent, per channel: seq N was sent at sent[ch][N-1]
    (monotonic); `uncertain` holds seqs that failed or whose fate is unknown."""

    def __init__(self, pid):
        self.pid = pid
        self.sent = collections.defaultdict(list)
        self.uncertain = collections.defaultdict(set)
        self.inflight = 0

    def next(self, ch):
        self.sent[ch].append(time.monotonic())
        return len(self.sent[ch])

    def fail(self, ch, seq):
        self.uncertain[ch].add(seq)

    def missing(self, ch, lo, hi):
        """Seqs in [lo, hi] that were certainly published."""
        if hi < lo:
            return 0
        unc = self.uncertain.get(ch, ())
        return (hi - lo + 1) - sum(1 for s in unc if lo <= s <= hi)


class Checker:
    """Exactly-once, in-order checks of what one connection receives.

    Streams are (channel, publisher): seqs must rise by one (a gap is lost
    unless the publisher's missing seqs failed). On history channels the
    offsets must rise by one too. Messages of a channel whose subscribe reply
    is pending are held until the reply (recovered publications first)."""

    def __init__(self, soak, role):
        self.soak, self.role = soak, role
        self.streams = {}                 # (ch, pid) -> [[first, last], ...] runs received
        self.hist_last = {}               # ch -> last offset seen
        self.epoch = {}
        self.state = {}                   # ch -> "pending" | "on" | "unsub"
        self.held = collections.defaultdict(list)
        self.sub_time = {}                # ch -> monotonic time of the subscribe reply
        self.member_events = collections.deque()
        self.member_event = asyncio.Event()
        self.messages = collections.deque(maxlen=64)  # recent (ch, data) for ad-hoc waits
        self.message_event = asyncio.Event()

    def on_push(self, m):
        kind = m.get("push")
        if kind == "message" and self.soak.args.self_test and self.role == "long-lived":
            m = self.self_test(m)
            if m is None:
                return
        if kind == "message":
            ch = m.get("channel")
            st = self.state.get(ch)
            if st == "pending":
                self.held[ch].append(m)
            elif st is None:
                self.soak.error("message_not_subscribed", "%s got a message on %s" % (self.role, ch))
            else:
                self.message(ch, m.get("data"), m.get("offset"))
        elif kind in ("join", "leave"):
            self.soak.counts["join_leave_pushes"] += 1
        elif kind in ("subscribed", "unsubscribed"):
            ch = m.get("channel")
            if kind == "subscribed":
                self.state[ch] = "on"
                self.sub_time[ch] = time.monotonic()
            else:
                self.forget(ch)
            self.member_events.append(m)
            self.member_event.set()
        else:
            self.soak.error("unexpected_push", "%s: %r" % (self.role, m))

    def self_test(self, m):
        """--self-test: spoils every 500th delivery to long-lived subscribers
        (dropped, seen twice, or held back until the next one) so that the
        checks can be seen to catch it."""
        soak = self.soak
        if getattr(self, "held_back", None) is not None:
            late, self.held_back = self.held_back, None
            self.on_push(m)
            return late
        soak.self_test_n += 1
        if soak.self_test_n % 500:
            return m
        soak.counts["self_test_spoiled"] += 1
        if soak.args.self_test == "drop":
            return None
        if soak.args.self_test == "dup":
            self.on_push(dict(m, _dup=1))
            return m
        self.held_back = m
        return None

    def forget(self, ch):
        self.state.pop(ch, None)
        self.hist_last.pop(ch, None)
        self.held.pop(ch, None)
        for key in [k for k in self.streams if k[0] == ch]:
            del self.streams[key]

    def begin_subscribe(self, ch, keep=False):
        if not keep:
            self.forget(ch)
        self.state[ch] = "pending"

    def subscribed(self, ch, result, since=None):
        """Applies a subscribe result; returns `recovered` (None on plain channels)."""
        recovered = None
        self.sub_time[ch] = time.monotonic()
        if result.get("channel") != ch:
            self.soak.error("subscribe_result", "%s: %r" % (ch, result))
        if ch.startswith("hist:"):
            if not isinstance(result.get("offset"), int) or not result.get("epoch"):
                self.soak.error("subscribe_result", "history channel %s: %r" % (ch, result))
                self.state[ch] = "on"
                return None
            recovered = result.get("recovered")
            pubs = result.get("publications") or []
            if since is not None and recovered is True:
                if result["epoch"] != since["epoch"]:
                    self.soak.error("recovery_epoch", "%s: %r vs %r" % (ch, result["epoch"], since))
                self.hist_last[ch] = since["offset"]
                for p in pubs:
                    self.message(ch, p.get("data"), p.get("offset"), recovered=True)
                if self.hist_last[ch] != result["offset"]:
                    self.soak.error("recovery_incomplete", "%s: recovered up to %s, stream at %s"
                                    % (ch, self.hist_last[ch], result["offset"]))
                    self.hist_last[ch] = result["offset"]
            else:
                for key in [k for k in self.streams if k[0] == ch]:
                    del self.streams[key]
                self.hist_last[ch] = result["offset"]
            self.epoch[ch] = result["epoch"]
        self.state[ch] = "on"
        for m in self.held.pop(ch, []):
            self.message(ch, m.get("data"), m.get("offset"))
        return recovered

    def begin_unsubscribe(self, ch):
        if ch in self.state:
            self.state[ch] = "unsub"

    def message(self, ch, data, offset, recovered=False):
        soak = self.soak
        soak.counts["deliveries"] += 1
        if not recovered:
            self.messages.append((ch, data))
            self.message_event.set()
        if ch.startswith("hist:"):
            last = self.hist_last.get(ch)
            if not isinstance(offset, int):
                soak.error("offset_missing", "%s on %s: %r" % (self.role, ch, data))
            elif last is not None:
                if offset <= last:
                    soak.error("offset_not_increasing", "%s on %s: offset %d after %d"
                               % (self.role, ch, offset, last))
                elif offset > last + 1:
                    soak.error("offset_gap", "%s on %s: offset %d after %d" % (self.role, ch, offset, last))
                self.hist_last[ch] = max(last, offset)
        if not (isinstance(data, dict) and "p" in data and "s" in data):
            return
        key = (ch, data["p"])
        s = data["s"]
        runs = self.streams.get(key)
        if runs is None:
            self.streams[key] = [[s, s]]
        elif s == runs[-1][1] + 1:
            runs[-1][1] = s
        elif s > runs[-1][1]:
            log = soak.publogs.get(data["p"])
            lost = log.missing(ch, runs[-1][1] + 1, s - 1) if log else s - runs[-1][1] - 1
            if lost:
                soak.lost[self.role] += lost
                soak.error("delivery_gap", "%s on %s from %s: seq %d after %d"
                           % (self.role, ch, data["p"], s, runs[-1][1]))
            runs.append([s, s])
        elif any(a <= s <= b for a, b in runs):
            soak.dups[self.role] += 1
            soak.error("delivery_duplicate", "%s on %s from %s: seq %d again (last %d)"
                       % (self.role, ch, data["p"], s, runs[-1][1]))
        else:
            soak.reordered[self.role] += 1
            soak.error("delivery_reordered", "%s on %s from %s: seq %d after %d"
                       % (self.role, ch, data["p"], s, runs[-1][1]))

    def tail_missing(self, ch, log):
        """Publications of `log` on `ch` sent after this connection's
        subscribe reply that have not arrived (head and tail; gaps in between
        were counted when they showed)."""
        sent = log.sent.get(ch)
        if not sent or ch not in self.sub_time:
            return 0
        start = bisect.bisect_right(sent, self.sub_time[ch]) + 1
        n = len(sent)
        runs = self.streams.get((ch, log.pid))
        if not runs:
            return log.missing(ch, start, n)
        return log.missing(ch, start, runs[0][0] - 1) + log.missing(ch, max(start, runs[-1][1] + 1), n)


class Client(Session):
    """One WebSocket connection with a reader task: replies resolve cmd()
    futures, pushes go to on_push. A close by the server with a code outside
    `expect` is counted as unexpected."""

    def __init__(self, soak, role, node):
        super().__init__(node.port)
        self.soak, self.role, self.node = soak, role, node
        self.orphans = collections.deque()
        self.close_code = self.close_reason = None
        self.expect = set()

    async def connect(self, token, via="header", timeout=CMD_TIMEOUT):
        self.soak.counts["ws_connections"] += 1
        return await self.open(token, via, timeout)

    async def _reader(self):
        try:
            while True:
                text = await self.ws.recv()
                try:
                    obj = json.loads(text)
                except ValueError:
                    self.soak.error("bad_json", "%s: %r" % (self.role, text[:200]))
                    continue
                what = route_frame(obj, self.pending, self.on_push)
                if what == "unmatched":
                    self.soak.error("reply_without_command", "%s: %r" % (self.role, obj))
                elif what == "neither":
                    self.orphans.append(obj)
        except Closed as e:
            self.close_code, self.close_reason = e.code, e.reason
        except ProtocolError as e:
            self.soak.error("protocol_error", "%s: %s" % (self.role, e))
            self.close_code = -1
            self.ws.abort()
        except Exception as e:  # noqa: BLE001 - reported, never silent
            self.soak.error("client_crash", "%s: %r" % (self.role, e))
            self.close_code = -1
            self.ws.abort()
        finally:
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(Closed(self.close_code or 1006, self.close_reason or ""))
            self.pending.clear()
            self._classify()
            self.closed.set()

    def _classify(self):
        code = self.close_code
        if self.by_us or code == -1:
            return
        if code in self.expect:
            self.soak.closes_expected[str(code)] += 1
        else:
            self.soak.closes_unexpected[str(code)] += 1
            self.soak.error("unexpected_close", "%s (%s): %s %r"
                            % (self.role, self.hello and self.hello.get("client"), code, self.close_reason))

    async def cmd(self, op, timeout=CMD_TIMEOUT, **args):
        """Sends a command, returns its reply; raises Closed / TimeoutError."""
        if self.closed.is_set():
            raise Closed(self.close_code, self.close_reason or "")
        cid, fut = self.command(op, args)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.pending.pop(cid, None)

    async def result(self, op, **args):
        """cmd() that must succeed: the result, or None after recording an error."""
        try:
            reply = await self.cmd(op, **args)
        except Closed as e:
            self.soak.error("closed_during:" + op, "%s: %s" % (self.role, e))
            return None
        except asyncio.TimeoutError:
            self.soak.error("timeout:" + op, "%s: %r" % (self.role, args.get("channel")))
            return None
        if "result" not in reply:
            self.soak.error("error_reply:%s:%s" % (op, (reply.get("error") or {}).get("code")),
                            "%s %r: %r" % (self.role, args.get("channel"), reply))
            return None
        return reply["result"]

    async def wait_closed(self, timeout):
        return await sleep_until(self.closed, timeout)

    async def close(self, mode="clean"):
        """clean: close handshake; fin: drop the TCP connection without a
        close frame; rst: reset it."""
        if self.closed.is_set():
            return
        self.by_us = True
        if mode == "clean":
            self.ws.send_close(1000)
            if not await self.wait_closed(10):
                self.soak.error("close_handshake_timeout", self.role)
                self.ws.abort()
        else:
            self.ws.abort(rst=(mode == "rst"))
        if self.task is not None:
            await self.wait_closed(10)


#---- nodes, sampling ---------------------------------------------------------------------

class Node:
    def __init__(self, herald, name):
        self.herald, self.name = herald, name
        self.port = herald.port
        self.mhttp = HTTP(self.port)  # the sampler's connection (kept open: part of the baseline)

    @property
    def pid(self):
        return self.herald.proc.pid

    def proc_stats(self):
        return proc_stats(self.pid)

    def fd_targets(self):
        """{fd: link target} of the server's open descriptors."""
        return fd_targets(self.pid)

    def describe_fds(self, fds):
        """'fd N: target (TCP state local -> remote)' for each of fds."""
        return describe_fds(self.pid, fds)

    async def metrics(self):
        return await fetch_metrics(self.mhttp)


#---- the soak -----------------------------------------------------------------------------

class Soak:
    def __init__(self, args):
        self.args = args
        self.t0 = None
        self.stopping = None
        self.nodes = []
        self.redis = None
        self.secret = secrets.token_hex(24)
        self.api_key = secrets.token_hex(16)
        self.run_id = secrets.token_hex(3)
        self.errors = collections.Counter()
        self.examples = collections.defaultdict(list)
        self.counts = collections.Counter()
        self.closes_expected = collections.Counter()
        self.closes_unexpected = collections.Counter()
        self.lost = collections.Counter()
        self.dups = collections.Counter()
        self.reordered = collections.Counter()
        self.publogs = {}
        self.hist_top = {}
        self.long_lived = []      # (Client, Checker)
        self.samples = []
        self.checks = []
        self.timings = collections.defaultdict(list)
        self.slopes = {}
        self.self_test_n = 0
        self.asan = False
        self.rnd = random.Random(args.seed)

    # -- bookkeeping --

    def now(self):
        return time.monotonic() - self.t0

    def error(self, kind, detail=""):
        tally(self.errors, self.examples, kind, detail, self.now(), self.args.verbose, "error")

    def publog(self, pid):
        return self.publogs.setdefault(pid, PubLog(pid))

    def token(self, sub, ttl=3600, exp=None, **claims):
        now = int(time.time())
        body = {"sub": sub, "iat": now, "exp": exp if exp is not None else now + ttl}
        body.update(claims)
        return make_jwt(body, self.secret)

    def api(self):
        return {"X-API-Key": self.api_key}

    def node(self, i=None):
        return self.nodes[(self.rnd.randrange(len(self.nodes)) if i is None else i) % len(self.nodes)]

    def rate(self, per_s):
        """A rate scaled for the build (ASan: /4) and --scale."""
        return per_s * self.args.scale * (ASAN_RATE if self.asan else 1.0)

    def every(self, seconds):
        """An interval scaled inversely to rate()."""
        return seconds / (self.args.scale * (ASAN_RATE if self.asan else 1.0))

    async def sleep(self, seconds):
        """Sleeps, waking early when the run stops; True if it stopped."""
        return await sleep_until(self.stopping, seconds)

    def note_offset(self, ch, result):
        if ch.startswith("hist:"):
            off = result.get("offset") if isinstance(result, dict) else None
            if not isinstance(off, int):
                self.error("publish_without_offset", "%s: %r" % (ch, result))
            else:
                self.hist_top[ch] = max(self.hist_top.get(ch, 0), off)

    async def guarded(self, role, coro):
        """Runs one task; an exception escaping it is an error, not a crash."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except (Closed, Refused, ProtocolError, ConnectionError, OSError, asyncio.TimeoutError) as e:
            self.error("%s:%s" % (role, type(e).__name__), repr(e))
        except Exception as e:  # noqa: BLE001
            self.error("task_crash:" + role, "%r\n%s" % (e, traceback.format_exc(limit=6)))

    def spawn_loop(self, role, interval, episode, jitter=0.5):
        """A task that starts `episode(n)` every `interval` seconds (jittered)
        until the run stops; episodes run concurrently and are awaited."""
        async def loop():
            running = set()
            n = 0
            while not await self.sleep(interval * (1 - jitter / 2 + self.rnd.random() * jitter)):
                t = asyncio.ensure_future(self.guarded(role, episode(n)))
                running.add(t)
                t.add_done_callback(running.discard)
                n += 1
            if running:
                await asyncio.gather(*running)
        return asyncio.ensure_future(loop())

    # -- long-lived subscribers and publishers --

    async def subscribe(self, c, chk, ch, since=None, keep=False):
        chk.begin_subscribe(ch, keep=keep)
        args = {"channel": ch}
        if since is not None:
            args["since"] = since
        res = await c.result("subscribe", **args)
        if res is None:
            chk.forget(ch)
            return None, None
        return res, chk.subscribed(ch, res, since)

    async def start_long_lived(self, i):
        sub = "soak-u%d" % i
        node = self.node(i)
        c = Client(self, "long-lived", node)
        chk = Checker(self, "long-lived")
        c.on_push = chk.on_push
        await c.connect(self.token(sub, info={"i": i}), via=("header", "query", "op")[i % 3])
        r = random.Random(i)
        chans = r.sample(FEED, 2) + r.sample(HIST, 2) + r.sample(ROOM, 2)
        if i % 4 == 0:
            chans.append("user:" + sub)
        for ch in chans:
            res, _ = await self.subscribe(c, chk, ch)
            if res is None:
                raise RuntimeError("long-lived subscriber %d could not subscribe to %s" % (i, ch))
        self.long_lived.append((c, chk))
        return c, chk

    async def prefill(self, ch):
        http = HTTP(self.node(0).port)
        try:
            for i in range(HISTORY_SIZE):
                status, _, body = await http.request("POST", "/api/v1/publish",
                                                     {"channel": ch, "data": {"prefill": i, "x": "x" * 150}},
                                                     headers=self.api(), retry=False)
                if status != 200:
                    raise RuntimeError("prefill of %s: %s %r" % (ch, status, body))
                self.note_offset(ch, body)
        finally:
            http.close()

    async def long_lived_queries(self, c, chk):
        """Now and then: ping, presence (must list this client), history."""
        while not await self.sleep(self.rnd.uniform(5, 15)):
            if c.closed.is_set():
                return
            kind = self.rnd.choice(("ping", "presence", "history"))
            if kind == "ping":
                await c.result("ping")
            elif kind == "presence":
                rooms = [ch for ch in chk.state if ch.startswith("room:")]
                if rooms:
                    ch = self.rnd.choice(rooms)
                    res = await c.result("presence", channel=ch)
                    if res is not None:
                        ids = [x.get("client") for x in res.get("clients", [])]
                        if c.hello["client"] not in ids:
                            self.error("presence_missing_self", "%s not in %s" % (c.hello["client"], ch))
            else:
                hs = [ch for ch in chk.state if ch.startswith("hist:")]
                if hs:
                    ch = self.rnd.choice(hs)
                    res = await c.result("history", channel=ch, limit=10)
                    if res is not None:
                        offs = [p.get("offset") for p in res.get("publications", [])]
                        if offs != sorted(offs) or len(offs) > 10 or \
                                (offs and offs[-1] > res.get("offset", 0)):
                            self.error("history_result", "%s: offsets %r, top %r" % (ch, offs, res.get("offset")))
            self.counts["long_lived_queries"] += 1

    async def ws_publisher(self, i):
        pid = "ws%d" % i
        log = self.publog(pid)
        node = self.node(i)
        c = Client(self, "publisher", node)
        chk = Checker(self, "publisher")
        c.on_push = chk.on_push
        await c.connect(self.token("soak-pub%d" % i, roles=[]))
        for ch in ROOM:  # room:* lets subscribers publish: subscribe (and verify) them all
            res, _ = await self.subscribe(c, chk, ch)
            if res is None:
                raise RuntimeError("publisher could not subscribe to " + ch)
        self.long_lived.append((c, chk))
        await self.publish_loop(log, self.rate(40), lambda ch, data: c.cmd("publish", channel=ch, data=data),
                                FEED + HIST + ROOM, ws=True)

    async def publish_loop(self, log, rate, send, channels, ws):
        period = 1.0 / rate
        nxt = time.monotonic()
        while not self.stopping.is_set():
            ch = self.rnd.choice(channels)
            seq = log.next(ch)
            data = {"p": log.pid, "s": seq, "x": "x" * self.rnd.randrange(0, 300)}
            log.inflight += 1
            try:
                reply = await send(ch, data)
            except (Closed, asyncio.TimeoutError, ConnectionError, OSError) as e:
                log.fail(ch, seq)
                self.error("publish_failed:" + ("ws" if ws else "rest"), "%s %s: %r" % (log.pid, ch, e))
                if isinstance(e, Closed):
                    return
            else:
                self.check_publish_reply(log, ch, seq, reply, ws)
            finally:
                log.inflight -= 1
            nxt += period
            delay = nxt - time.monotonic()
            if delay > 0:
                await self.sleep(delay)
            elif delay < -5:
                nxt = time.monotonic()  # fell behind (busy machine): do not burst

    def check_publish_reply(self, log, ch, seq, reply, ws):
        if ws:
            ok, result = "result" in reply, reply.get("result")
            why = reply
        else:
            status, _, body = reply
            ok, result, why = status == 200, body, (status, body)
        if not ok:
            log.fail(ch, seq)
            self.error("publish_refused:" + ("ws" if ws else "rest"), "%s %s: %r" % (log.pid, ch, why))
            return
        self.counts["publications"] += 1
        self.note_offset(ch, result)

    async def rest_publisher(self):
        log = self.publog("rest")
        http = HTTP(self.node(0).port)
        try:
            await self.publish_loop(
                log, self.rate(30),
                lambda ch, data: http.request("POST", "/api/v1/publish", {"channel": ch, "data": data},
                                              headers=self.api(), retry=False),
                FEED + HIST, ws=False)
        finally:
            http.close()

    async def broadcaster(self):
        log = self.publog("bc")
        chans = FEED + ["user:soak-u0"]
        http = HTTP(self.node(1).port)
        period = 1.0 / self.rate(2)
        try:
            while not await self.sleep(period):
                seqs = [log.next(ch) for ch in chans]
                assert len(set(seqs)) == 1
                seq = seqs[0]
                log.inflight += 1
                try:
                    status, _, body = await http.request(
                        "POST", "/api/v1/broadcast", {"channels": chans, "data": {"p": "bc", "s": seq}},
                        headers=self.api(), retry=False)
                except (asyncio.TimeoutError, ConnectionError, OSError) as e:
                    for ch in chans:
                        log.fail(ch, seq)
                    self.error("broadcast_failed", repr(e))
                    continue
                finally:
                    log.inflight -= 1
                resp = body.get("responses") if status == 200 and isinstance(body, dict) else None
                if not isinstance(resp, list) or [x.get("channel") for x in resp] != chans:
                    for ch in chans:
                        log.fail(ch, seq)
                    self.error("broadcast_refused", "%s %r" % (status, body))
                    continue
                for x in resp:
                    if "result" not in x:
                        log.fail(x.get("channel"), seq)
                        self.error("broadcast_channel_error", repr(x))
                self.counts["broadcasts"] += 1
        finally:
            http.close()

    # -- churn --

    async def churner(self, k):
        pid = "ch%d" % k
        log = self.publog(pid)
        chk = Checker(self, "churner")
        saved = {}                  # hist channel -> since position of the last session
        hist_ch = HIST[k % len(HIST)]
        sub = "soak-c%d" % k
        r = random.Random(self.args.seed * 1000 + k)
        while not self.stopping.is_set():
            c = Client(self, "churner", self.node())
            c.on_push = chk.on_push
            for ch in list(chk.state):
                chk.state.pop(ch)   # a new session: nothing subscribed yet
            try:
                await c.connect(self.token(sub), via=r.choice(("header", "query", "op")))
            except (Refused, ConnectionError, OSError, ProtocolError, asyncio.TimeoutError, Closed) as e:
                self.error("churn_connect", repr(e))
                await self.sleep(1)
                continue
            chans = r.sample(FEED + ROOM, r.randint(1, 3)) + [hist_ch]
            ok = True
            for ch in chans:
                since, bogus = saved.get(ch), False
                if since is not None and r.random() < 0.1:
                    since, bogus = {"offset": since["offset"], "epoch": "bogus"}, True
                res, recovered = await self.subscribe(c, chk, ch, since=since, keep=since is not None and not bogus)
                if res is None:
                    ok = False
                    break
                if since is not None:
                    self.counts["recoveries"] += 1
                    if bogus:
                        self.counts["recoveries_bogus_epoch"] += 1
                        if recovered is not False:
                            self.error("recovered_with_bogus_epoch", "%s: %r" % (ch, res))
                    elif recovered is not True:
                        self.error("not_recovered", "%s since %r: result offset %s epoch %s"
                                   % (ch, since, res.get("offset"), res.get("epoch")))
                    else:
                        self.counts["recovered_publications"] += len(res.get("publications") or [])
            if ok:
                for _ in range(r.randint(0, 3)):
                    ch = r.choice(chans)
                    seq = log.next(ch)
                    try:
                        reply = await c.cmd("publish", channel=ch, data={"p": pid, "s": seq})
                    except (Closed, asyncio.TimeoutError) as e:
                        log.fail(ch, seq)
                        self.error("publish_failed:churner", repr(e))
                        break
                    self.check_publish_reply(log, ch, seq, reply, True)
                    await asyncio.sleep(r.uniform(0.05, 0.5))
                await asyncio.sleep(r.uniform(0.2, 2.0))
                for ch in r.sample(chans, r.randint(0, len(chans))):
                    chk.begin_unsubscribe(ch)
                    res = await c.result("unsubscribe", channel=ch)
                    if res is not None:
                        if ch.startswith("hist:") and ch in chk.hist_last:
                            saved[ch] = {"offset": chk.hist_last[ch], "epoch": chk.epoch[ch]}
                        chk.forget(ch)
            await c.close(r.choice(("clean", "clean", "fin", "rst")))
            for ch, st in list(chk.state.items()):
                if ch.startswith("hist:") and st == "on" and ch in chk.hist_last:
                    saved[ch] = {"offset": chk.hist_last[ch], "epoch": chk.epoch[ch]}
            self.counts["churn_sessions"] += 1
            await asyncio.sleep(r.uniform(0, 0.5))

    async def rapid_churn(self):
        """Short sessions: connect, then nothing, a ping, or a one-off channel
        (plain tmp.N, presence room:rN, expiring history eph:N) that it
        subscribes to, publishes into and must hear back from; then leave."""
        r = random.Random(self.args.seed + 7)
        period = 1.0 / self.rate(20)
        n = 0
        nxt = time.monotonic()
        while not self.stopping.is_set():
            n += 1
            c = Client(self, "rapid", self.node())
            chk = Checker(self, "rapid")
            c.on_push = chk.on_push
            await c.connect(self.token("soak-r%d" % (n % 50)), via=r.choice(("header", "query")))
            action = r.choice(("none", "ping", "plain", "presence", "history"))
            if action == "ping":
                await c.result("ping")
            elif action != "none":
                ch = {"plain": "tmp.%d", "presence": "room:r%d", "history": "eph:%d"}[action] % n
                res, _ = await self.subscribe(c, chk, ch)
                if res is not None:
                    data = {"p": "rapid", "n": n}
                    if await c.result("publish", channel=ch, data=data) is not None:
                        self.counts["publications"] += 1
                        await self.wait_message(c, chk, ch, data)
            await c.close(r.choice(("clean", "fin", "rst")))
            self.counts["rapid_sessions"] += 1
            nxt += period
            delay = nxt - time.monotonic()
            if delay > 0:
                if await self.sleep(delay):
                    break
            elif delay < -5:
                nxt = time.monotonic()

    # -- slow consumers --

    async def slow_episode(self, n):
        # one at a time: the node's slow-consumer counter must move for this one
        async with self.slow_lock:
            await self._slow_episode(n)

    async def _slow_episode(self, n):
        node = self.node()
        ch = "slow.%d" % n
        ws = RawWS(node.port)
        self.counts["ws_connections"] += 1
        await ws.open("/ws", {"Authorization": "Bearer " + self.token("soak-slow%d" % n)},
                      rcvbuf=4096, limit=4096)
        hello = json.loads(await asyncio.wait_for(ws.recv(), CMD_TIMEOUT))
        # its own channel (the flood), and shared ones: its queue then holds
        # messages other subscribers hold too when it is dropped
        shared = [self.rnd.choice(FEED), self.rnd.choice(HIST), self.rnd.choice(ROOM)]
        for i, sch in enumerate([ch] + shared):
            ws.send_text(json.dumps({"id": i + 1, "op": "subscribe", "channel": sch}))
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), CMD_TIMEOUT))
                if "push" not in reply:
                    break
            if reply.get("id") != i + 1 or "result" not in reply:
                self.error("slow_subscribe", repr(reply))
                ws.abort()
                return
        before = (await node.metrics()).get("herald_slow_consumer_closes_total", 0)
        http = HTTP(node.port)
        pad = "y" * 32768
        closed_by_server = False
        sent = 0
        try:
            for _mib in range(24):
                for j in range(32):
                    status, _, body = await http.request(
                        "POST", "/api/v1/publish", {"channel": ch, "data": {"n": sent, "pad": pad}},
                        headers=self.api(), retry=False)
                    sent += 1
                    if status != 200:
                        self.error("slow_publish_refused", "%s %r" % (status, body))
                if (await node.metrics()).get("herald_slow_consumer_closes_total", 0) > before:
                    closed_by_server = True
                    break
        finally:
            http.close()
        self.counts["slow_bytes_published"] += sent * 32768
        if not closed_by_server:
            self.error("slow_consumer_not_closed", "%s: %d x 32 KiB published, %s" % (ch, sent, hello.get("client")))
        # now read: what the kernel holds, then the close frame
        got = 0
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 30)
                got += 1
        except Closed as e:
            if e.code == 4008:
                self.counts["slow_closed_4008"] += 1
                self.closes_expected["4008"] += 1
            else:
                self.closes_unexpected[str(e.code)] += 1
                self.error("unexpected_close", "slow consumer %s: %s %r after %d messages"
                           % (hello.get("client"), e.code, e.reason, got))
        except asyncio.TimeoutError:
            self.error("slow_consumer_no_close", "%s: %d messages read, no close in 30 s" % (ch, got))
            ws.abort()
        self.counts["slow_consumers"] += 1

    # -- token expiry --

    def expiry_tolerance(self):
        return 3.0 if not self.asan else 6.0

    async def expirer(self, n):
        exp = int(time.time()) + self.rnd.randint(2, 4)
        c = Client(self, "expirer", self.node())
        chk = Checker(self, "expirer")
        c.on_push = chk.on_push
        c.expect = {4001}
        hello = await c.connect(self.token("soak-e%d" % n, exp=exp), via=self.rnd.choice(("header", "op")))
        if hello.get("expires_at") != exp:
            self.error("expires_at", "connected push %r, exp %d" % (hello, exp))
        await self.subscribe(c, chk, self.rnd.choice(FEED))
        await self.subscribe(c, chk, self.rnd.choice(ROOM))
        if not await c.wait_closed(exp - time.time() + self.expiry_tolerance() + 2):
            self.error("token_not_expired", "%s: exp %d, still open %.1fs later"
                       % (hello.get("client"), exp, time.time() - exp))
            await c.close()
            return
        self.check_expiry_close(c, exp, "expirer")
        self.counts["expired_4001"] += 1

    def check_expiry_close(self, c, exp, role):
        if c.close_code != 4001 or c.close_reason != "token expired":
            if c.close_code in c.expect:  # 4001 for another reason
                self.error("expiry_close_reason", "%s: %s %r" % (role, c.close_code, c.close_reason))
            return
        late = c.ws.closed_wall - exp
        self.timings["expiry_lateness_s"].append(late)
        if late < -0.3:
            self.error("token_expired_early", "%s: closed %.2fs before exp" % (role, -late))
        elif late > self.expiry_tolerance():
            self.error("token_expired_late", "%s: closed %.2fs after exp" % (role, late))

    async def refresher(self, n):
        ttl = 3 if not self.asan else 5
        margin = 1.5 if not self.asan else 2.5
        sub = "soak-f%d" % n
        exp = int(time.time()) + ttl
        c = Client(self, "refresher", self.node())
        chk = Checker(self, "refresher")
        c.on_push = chk.on_push
        await c.connect(self.token(sub, exp=exp), via=self.rnd.choice(("header", "query", "op")))
        await self.subscribe(c, chk, self.rnd.choice(FEED + HIST))
        for _ in range(2):
            await asyncio.sleep(max(0.0, exp - margin - time.time()))
            if c.closed.is_set():
                return  # counted as an unexpected close
            new_exp = int(time.time()) + ttl
            res = await c.result("refresh", token=self.token(sub, exp=new_exp))
            if res is None:
                return
            if res.get("expires_at") != new_exp:
                self.error("refresh_expires_at", "%r, want %d" % (res, new_exp))
            exp = new_exp
            self.counts["refreshes"] += 1
        try:
            reply = await c.cmd("refresh", token=self.token(sub + "-other", exp=exp + 60))
            if "error" not in reply:
                self.error("refresh_other_sub_accepted", repr(reply))
        except (Closed, asyncio.TimeoutError) as e:
            self.error("refresh_other_sub", repr(e))
            return
        c.expect = {4001}
        if not await c.wait_closed(exp - time.time() + self.expiry_tolerance() + 2):
            self.error("token_not_expired", "refresher: exp %d, still open" % exp)
            await c.close()
            return
        self.check_expiry_close(c, exp, "refresher")
        self.counts["refreshed_then_expired_4001"] += 1

    # -- misbehaving clients --

    async def misbehave(self, n):
        kind = ("connect_timeout", "binary", "oversize", "malformed", "bad_token", "expired_token",
                "half_handshake", "half_body", "bare_tcp")[n % 9]
        node = self.node()
        self.counts["misbehave:" + kind] += 1
        if kind in ("half_handshake", "half_body", "bare_tcp"):
            r, w = await asyncio.open_connection("127.0.0.1", node.port)
            if kind == "half_handshake":
                w.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            elif kind == "half_body":
                w.write(b"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"X-API-Key: " + self.api_key.encode() + b"\r\nContent-Length: 100\r\n\r\n{\"chan")
            await asyncio.sleep(self.rnd.uniform(0, 0.5))
            w.close()
            return
        ws = RawWS(node.port)
        self.counts["ws_connections"] += 1
        if kind in ("bad_token", "expired_token"):
            tok = self.token("soak-bad", exp=int(time.time()) - 10) if kind == "expired_token" \
                else self.token("soak-bad")[:-4] + "AAAA"
            try:
                await ws.open("/ws", {"Authorization": "Bearer " + tok})
            except Refused as e:
                if e.status != 401:
                    self.error("bad_token_status", "%s: HTTP %s" % (kind, e.status))
                return
            self.error("bad_token_accepted", kind)
            ws.abort()
            return
        if kind == "connect_timeout":
            await ws.open("/ws")
            t = time.monotonic()
            try:
                await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT + self.expiry_tolerance() + 2)
                self.error("connect_timeout_message", "a message before connect")
            except Closed as e:
                waited = time.monotonic() - t
                if e.code != 4001:
                    self.error("connect_timeout_close", "%s %r" % (e.code, e.reason))
                elif waited < CONNECT_TIMEOUT - 0.5 or waited > CONNECT_TIMEOUT + self.expiry_tolerance():
                    self.error("connect_timeout_timing", "closed after %.2fs (timeout %ds)" % (waited, CONNECT_TIMEOUT))
                else:
                    self.closes_expected["4001"] += 1
            except asyncio.TimeoutError:
                self.error("connect_timeout_missing", "no close")
                ws.abort()
            return
        await ws.open("/ws", {"Authorization": "Bearer " + self.token("soak-m%d" % (n % 20))})
        await asyncio.wait_for(ws.recv(), CMD_TIMEOUT)  # connected
        want = {"binary": 1003, "oversize": 1009}.get(kind)
        if kind == "binary":
            ws.send_frame(OP_BINARY, b"\x00\x01")
        elif kind == "oversize":
            ws.send_text(json.dumps({"id": 1, "op": "publish", "channel": "feed.0", "data": "z" * 70000}))
        else:
            ws.send_text('{"id": 5, "op": "publish", "channel": ')
            ws.send_text(json.dumps({"id": 6, "op": "ping"}))
        try:
            if want:
                while True:
                    await asyncio.wait_for(ws.recv(), CMD_TIMEOUT)
            first = json.loads(await asyncio.wait_for(ws.recv(), CMD_TIMEOUT))
            second = json.loads(await asyncio.wait_for(ws.recv(), CMD_TIMEOUT))
            if (first.get("error") or {}).get("code") != "bad_request" or second != {"id": 6, "result": {}}:
                self.error("malformed_reply", "%r then %r" % (first, second))
            ws.send_close()
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except Closed:
                pass
        except Closed as e:
            if e.code != want:
                self.closes_unexpected[str(e.code)] += 1
                self.error("unexpected_close", "%s: %s %r" % (kind, e.code, e.reason))
            else:
                self.closes_expected[str(e.code)] += 1
        except asyncio.TimeoutError:
            self.error("misbehave_timeout", kind)
            ws.abort()

    # -- users --

    async def user_cycle(self, n, node=None):
        node = node or self.node()
        http = HTTP(node.port)
        try:
            await self._user_cycle(n, node, http)
        finally:
            http.close()

    async def _user_cycle(self, n, node, http):
        uname = "soak-%s-%d" % (self.run_id, n)
        pw = secrets.token_hex(10)
        t = time.monotonic()
        status, _, user = await http.request("POST", "/api/v1/users", {"username": uname, "password": pw})
        if status != 201:
            self.error("register", "%s: %s %r" % (uname, status, user))
            return
        self.timings["register_s"].append(time.monotonic() - t)
        uid = user["id"]
        t = time.monotonic()
        status, _, tok = await http.request("POST", "/api/v1/auth/token",
                                            form={"grant_type": "password", "username": uname, "password": pw})
        if status != 200 or tok.get("token_type") != "bearer":
            self.error("login", "%s %r" % (status, tok))
            return
        self.timings["login_s"].append(time.monotonic() - t)
        self.counts["users_registered_logged_in"] += 1
        if n % 5 == 0:
            status, _, body = await http.request("POST", "/api/v1/auth/token",
                                                 form={"grant_type": "password", "username": uname,
                                                       "password": pw + "-wrong"})
            if status != 400 or body.get("error") != "invalid_grant":
                self.error("wrong_password", "%s %r" % (status, body))
            self.counts["wrong_password_logins"] += 1
        status, _, me = await http.request("GET", "/api/v1/users/me",
                                           headers={"Authorization": "Bearer " + tok["access_token"]})
        if status != 200 or me.get("id") != uid or me.get("username") != uname:
            self.error("users_me", "%s %r" % (status, me))
        status, _, tok2 = await http.request("POST", "/api/v1/auth/token",
                                             form={"grant_type": "refresh_token",
                                                   "refresh_token": tok["refresh_token"]})
        if status != 200:
            self.error("refresh_grant", "%s %r" % (status, tok2))
            return
        status, _, body = await http.request("POST", "/api/v1/auth/token",
                                             form={"grant_type": "refresh_token",
                                                   "refresh_token": tok["refresh_token"]})
        if status != 400 or body.get("error") != "invalid_grant":
            self.error("refresh_reuse", "%s %r" % (status, body))
        access = tok2["access_token"]
        c = Client(self, "user", node)
        chk = Checker(self, "user")
        c.on_push = chk.on_push
        await c.connect(access, via=self.rnd.choice(("header", "query", "op")))
        if c.hello.get("user") != uid:
            self.error("connected_user", "%r, want %s" % (c.hello, uid))
        mine = "user:" + uid
        res, _ = await self.subscribe(c, chk, mine)
        if res is None:
            await c.close()
            return
        await self.expect_message(c, chk, http, mine, {"p": "user-rest", "n": n})
        grp = "grp.%d" % (n % 4)
        status, _, body = await http.request("POST", "/api/v1/channels/%s/members" % grp, {"user": uid},
                                             headers=self.api())
        if status != 204:
            self.error("members_add", "%s %r" % (status, body))
        elif await self.expect_member_event(c, chk, "subscribed", grp):
            await self.expect_message(c, chk, http, grp, {"p": "members", "n": n})
            status, _, body = await http.request("DELETE", "/api/v1/channels/%s/members/%s" % (grp, uid),
                                                 headers=self.api())
            if status != 204:
                self.error("members_remove", "%s %r" % (status, body))
            else:
                await self.expect_member_event(c, chk, "unsubscribed", grp)
        ending = ("delete", "disconnect", "leave")[n % 3]
        if ending == "leave":
            await c.close()
        else:
            c.expect = {4003}
            path = "/api/v1/users/%s" % uid if ending == "delete" else "/api/v1/users/%s/disconnect" % uid
            status, _, body = await http.request("DELETE" if ending == "delete" else "POST", path,
                                                 headers=self.api())
            if status != 204:
                self.error("user_" + ending, "%s %r" % (status, body))
                await c.close()
                return
            if not await c.wait_closed(CMD_TIMEOUT):
                self.error("user_%s_no_close" % ending, uid)
                await c.close()
            elif c.close_code != 4003:
                pass  # counted as unexpected by the client
            else:
                self.counts["users_closed_4003"] += 1
        if ending == "delete":
            self.counts["users_deleted"] += 1
            try:
                await RawWS(node.port).open("/ws", {"Authorization": "Bearer " + access})
                self.error("deleted_user_token_accepted", uid)
            except Refused as e:
                if e.status != 401:
                    self.error("deleted_user_token_status", str(e.status))
            status, _, body = await http.request("POST", "/api/v1/auth/token",
                                                 form={"grant_type": "refresh_token",
                                                       "refresh_token": tok2["refresh_token"]})
            if status != 400:
                self.error("deleted_user_refresh", "%s %r" % (status, body))

    async def expect_message(self, c, chk, http, ch, data):
        """Publishes `data` on `ch` over REST and waits for it on `c`."""
        status, _, body = await http.request("POST", "/api/v1/publish", {"channel": ch, "data": data},
                                             headers=self.api(), retry=False)
        if status != 200:
            self.error("publish_refused:rest", "%s: %s %r" % (ch, status, body))
            return False
        return await self.wait_message(c, chk, ch, data)

    async def wait_message(self, c, chk, ch, data):
        """Waits for `data` on `ch` at `c`; a miss is a lost delivery."""
        deadline = time.monotonic() + CMD_TIMEOUT
        while True:
            if any(m == (ch, data) for m in chk.messages):
                return True
            left = deadline - time.monotonic()
            if left <= 0 or c.closed.is_set():
                self.lost[chk.role] += 1
                self.error("delivery_missing", "%s never got %r on %s" % (c.hello.get("client"), data, ch))
                return False
            chk.message_event.clear()
            await sleep_until(chk.message_event, left)

    async def expect_member_event(self, c, chk, kind, ch):
        deadline = time.monotonic() + CMD_TIMEOUT
        while True:
            while chk.member_events:
                m = chk.member_events.popleft()
                if m.get("push") == kind and m.get("channel") == ch:
                    self.counts["member_pushes"] += 1
                    return True
                self.error("member_push", "want %s %s, got %r" % (kind, ch, m))
            left = deadline - time.monotonic()
            if left <= 0 or c.closed.is_set():
                self.error("member_push_missing", "%s %s" % (kind, ch))
                return False
            chk.member_event.clear()
            await sleep_until(chk.member_event, left)

    # -- REST reads --

    async def rest_reader(self):
        http = HTTP(self.node(0).port)
        try:
            while not await self.sleep(self.every(2.0)):
                kind = self.rnd.choice(("history", "history", "presence", "presence", "healthz", "readyz",
                                        "metrics"))
                if kind == "history":
                    ch = self.rnd.choice(HIST)
                    status, _, body = await http.request("GET", "/api/v1/channels/%s/history?limit=5" % ch,
                                                         headers=self.api())
                    ok = status == 200 and isinstance(body, dict) and len(body.get("publications", [])) <= 5
                elif kind == "presence":
                    ch = self.rnd.choice(ROOM)
                    status, _, body = await http.request("GET", "/api/v1/channels/%s/presence" % ch,
                                                         headers=self.api())
                    ok = status == 200 and isinstance(body, dict) and isinstance(body.get("clients"), list)
                else:
                    path = {"healthz": "/healthz", "readyz": "/readyz", "metrics": "/metrics"}[kind]
                    status, _, body = await http.request("GET", path)
                    ok = status == 200
                if not ok:
                    self.error("rest_" + kind, "%s %r" % (status, body if not isinstance(body, bytes) else body[:200]))
                self.counts["rest_reads"] += 1
        finally:
            http.close()

    # -- sampling --

    async def take_sample(self):
        s = {"t": round(self.now(), 1), "nodes": []}
        for node in self.nodes:
            try:  # first: the sampler's connection is then open while /proc is read
                m = await node.metrics()
            except (asyncio.TimeoutError, ConnectionError, OSError, RuntimeError) as e:
                self.error("metrics", repr(e))
                m = {}
            ps = node.proc_stats()
            ps.update({"connections": m.get("herald_connections"), "subscriptions": m.get("herald_subscriptions"),
                       "channels": m.get("herald_channels"), "slow": m.get("herald_slow_consumer_closes_total")})
            s["nodes"].append(ps)
        if self.redis is not None:
            try:
                info = self.redis.cmd("INFO", "memory")
                s["redis_used_kb"] = int(re.search(r"used_memory:(\d+)", info).group(1)) // 1024
            except Exception as e:  # noqa: BLE001
                self.error("redis_info", repr(e))
        s.update({k: self.counts[k] for k in ("deliveries", "publications", "ws_connections")})
        return s

    async def sampler(self):
        while True:
            for node in self.nodes:
                if not node.herald.running():
                    self.error("server_died", "%s exited with %s" % (node.name, node.herald.proc.returncode))
                    self.stopping.set()
                    return
            self.samples.append(await self.take_sample())
            if self.args.verbose:
                s = self.samples[-1]
                print("t=%6.1f rss=%s fds=%s conns=%s deliveries=%d errors=%d" % (
                    s["t"], [n["rss_kb"] for n in s["nodes"]], [n["fds"] for n in s["nodes"]],
                    [n["connections"] for n in s["nodes"]], s["deliveries"], sum(self.errors.values())),
                    file=sys.stderr, flush=True)
            if await self.sleep(self.args.sample_interval):
                return

    # -- the run --

    def start_servers(self):
        env = {"HERALD_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT), "HERALD_LOG_LEVEL": "info"}
        if self.args.threads:
            env["HERALD_THREADS"] = str(self.args.threads)
        if self.args.cluster:
            self.redis = Redis().start()
            for name in ("a", "b"):
                h = Herald(env=dict(env, HERALD_NODE_ID=name), config=CONFIG, redis=self.redis,
                           secret=self.secret, api_key=self.api_key)
                h.bin = self.args.herald
                h.start()
                h.wait_ready()
                h.session.close()  # its keep-alive connection must not be in the baseline
                self.nodes.append(Node(h, name))
        else:
            h = Herald(env=dict(env, HERALD_NODE_ID="soak"), config=CONFIG, secret=self.secret,
                       api_key=self.api_key)
            h.bin = self.args.herald
            h.start()
            self.nodes.append(Node(h, "soak"))
        pids = [n.pid for n in self.nodes]
        if self.args.asan == "auto":
            self.asan = any(maps_have_asan(p) for p in pids)
        else:
            self.asan = self.args.asan == "yes"

    async def run(self):
        self.loop = asyncio.get_running_loop()
        self.slow_lock = asyncio.Lock()
        self.stopping = asyncio.Event()
        self.t0 = time.monotonic()
        args = self.args
        # baseline: the sampler's own connection is open, nothing else
        await asyncio.sleep(0.5)
        self.baseline = await self.take_sample()
        self.baseline_fds = [n.fd_targets() for n in self.nodes]
        # history at its steady size from the start (else RSS grows while it fills)
        await asyncio.gather(*(self.prefill(ch) for ch in HIST))
        n_subs = args.subscribers or (12 if self.asan else 32)
        n_churn = args.churners or (4 if self.asan else 8)
        for i in range(n_subs):
            await self.start_long_lived(i)
        # warm-up of the auth workers: two registrations at once on each node,
        # so each Argon2 worker has hashed (19 MiB) before the samples that count
        await asyncio.gather(*(self.guarded("users", self.user_cycle(10**6 + 10 * i + j, node))
                               for i, node in enumerate(self.nodes) for j in range(2)))
        self.setup_s = self.now()
        self.deadline = self.t0 + self.setup_s + args.duration
        tasks = {
            "sampler": asyncio.ensure_future(self.sampler()),
            "rest_publisher": asyncio.ensure_future(self.guarded("rest_publisher", self.rest_publisher())),
            "broadcaster": asyncio.ensure_future(self.guarded("broadcaster", self.broadcaster())),
            "rapid_churn": asyncio.ensure_future(self.guarded("rapid_churn", self.rapid_churn())),
            "rest_reader": asyncio.ensure_future(self.guarded("rest_reader", self.rest_reader())),
        }
        for i in range(2):
            tasks["ws_publisher%d" % i] = asyncio.ensure_future(self.guarded("ws_publisher", self.ws_publisher(i)))
        for k in range(n_churn):
            tasks["churner%d" % k] = asyncio.ensure_future(self.guarded("churner", self.churner(k)))
        for c, chk in list(self.long_lived):
            tasks["queries-" + c.hello["client"]] = asyncio.ensure_future(
                self.guarded("long_lived_queries", self.long_lived_queries(c, chk)))
        tasks["slow"] = self.spawn_loop("slow_consumer", 15.0, self.slow_episode, jitter=0.2)
        tasks["expirer"] = self.spawn_loop("expirer", self.every(5.0), self.expirer)
        tasks["refresher"] = self.spawn_loop("refresher", self.every(8.0), self.refresher)
        tasks["misbehave"] = self.spawn_loop("misbehave", self.every(1.5), self.misbehave)
        tasks["users"] = self.spawn_loop("users", self.every(8.0), self.user_cycle, jitter=0.3)

        await self.sleep(max(0.0, self.deadline - time.monotonic()))
        self.run_end = self.now()
        self.stopping.set()
        # every task finishes its episode (all bounded); a task still busy after 90 s hangs
        done, pending = await asyncio.wait(list(tasks.values()), timeout=90)
        for name, t in tasks.items():
            if t in pending:
                self.error("task_hung", name)
                t.cancel()
        await self.drain()
        self.verify_long_lived()
        for c, _ in self.long_lived:
            await c.close()
        await asyncio.sleep(2.0)
        await self.end_state()

    async def drain(self):
        """Waits (20 s at most) until every long-lived subscriber has what was published."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.tail_missing() == 0:
                break
            await asyncio.sleep(0.2)
        self.drain_s = round(20 - (deadline - time.monotonic()), 1)

    def tail_missing(self):
        n = 0
        for c, chk in self.long_lived:
            for ch, st in chk.state.items():
                if st != "on":
                    continue
                for log in self.publogs.values():
                    n += chk.tail_missing(ch, log)
        return n

    def verify_long_lived(self):
        for c, chk in self.long_lived:
            if c.closed.is_set():
                continue  # its close was counted as unexpected
            for ch, st in chk.state.items():
                if st != "on":
                    continue
                for log in self.publogs.values():
                    miss = chk.tail_missing(ch, log)
                    if miss:
                        self.lost[chk.role] += miss
                        self.error("delivery_missing", "%s (%s) on %s: %d of %s's publications never arrived"
                                   % (chk.role, c.hello["client"], ch, miss, log.pid))
                if ch.startswith("hist:") and ch in self.hist_top and chk.hist_last.get(ch) != self.hist_top[ch]:
                    self.error("history_tail", "%s on %s: last offset %s, channel at %s"
                               % (c.hello["client"], ch, chk.hist_last.get(ch), self.hist_top[ch]))

    async def end_state(self):
        """After every client left: gauges at 0, no presence, descriptors back to the baseline."""
        self.final = None
        deadline = time.monotonic() + 10
        while True:
            self.final = await self.take_sample()
            settled = all(n["connections"] == 0 and n["subscriptions"] == 0 and n["channels"] == 0
                          and n["fds"] == b["fds"]
                          for n, b in zip(self.final["nodes"], self.baseline["nodes"]))
            if settled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        self.extra_fds = []
        for node, before in zip(self.nodes, self.baseline_fds):
            now = node.fd_targets()
            extra = {fd: t for fd, t in now.items() if before.get(fd) != t}
            mine = node.mhttp.local_port()
            self.extra_fds.append([d for d in node.describe_fds(extra)
                                   if not (mine and d.endswith("-> 127.0.0.1:%d)" % mine))]
                                  + ["gone: fd %d: %s" % (fd, t) for fd, t in sorted(before.items())
                                     if fd not in now and not t.startswith("socket:")])
        http = HTTP(self.node(0).port)
        self.final_presence = {}
        try:
            for ch in ROOM:
                status, _, body = await http.request("GET", "/api/v1/channels/%s/presence" % ch, headers=self.api())
                self.final_presence[ch] = body.get("clients") if status == 200 and isinstance(body, dict) else status
        finally:
            http.close()
        if self.redis is not None:
            self.final_redis = {
                "topics": self.redis.cmd("PUBSUB", "CHANNELS", "herald:ch:*"),
                "presence_keys": self.redis.keys("herald:presence*"),
            }
        for node in self.nodes:
            node.mhttp.close()

    def stop_servers(self):
        self.exits = []
        for node in self.nodes:
            t = time.monotonic()
            try:
                code = node.herald.stop(signal.SIGTERM, timeout=30)
            except AssertionError as e:
                code = "hung: %s" % str(e).splitlines()[0]
            self.exits.append({"node": node.name, "status": code, "seconds": round(time.monotonic() - t, 2)})
            node.log = node.herald.log()
        if self.redis is not None:
            self.redis.stop()

    def cleanup(self):
        for node in self.nodes:
            node.herald.discard()

    # -- checks and report --

    def check(self, name, ok, detail):
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail})

    def flatness(self, key, tol_abs, tol_rel):
        """(first third max, last third max, limit, ok) per node over the samples after warm-up."""
        warm = max(10.0, 0.1 * self.args.duration) + self.setup_s
        window = [s for s in self.samples if warm <= s["t"] <= self.run_end]
        out = []
        for i, node in enumerate(self.nodes):
            vals = [(s["t"], s["nodes"][i][key]) for s in window if s["nodes"][i][key] is not None]
            if len(vals) < 4:
                out.append((node.name, None, None, None, False))  # too few samples: a longer run
                continue
            span = vals[-1][0] - vals[0][0]
            first = [v for t, v in vals if t <= vals[0][0] + span / 3]
            last = [v for t, v in vals if t >= vals[-1][0] - span / 3]
            m1, m3 = max(first), max(last)
            limit = m1 + tol_abs + tol_rel * m1
            out.append((node.name, m1, m3, limit, m3 <= limit))
            self.slopes[(node.name, key)] = slope(vals) * 60.0
        if window:
            self.conns_after_warmup = window[-1]["ws_connections"] - window[0]["ws_connections"]
        return out

    def evaluate(self):
        a = self.args
        self.check("errors", not self.errors, "none" if not self.errors else
                   ", ".join("%s %d" % kv for kv in sorted(self.errors.items())))
        self.check("unexpected closes", not self.closes_unexpected,
                   "none" if not self.closes_unexpected else dict(self.closes_unexpected))
        lost, dups, reord = sum(self.lost.values()), sum(self.dups.values()), sum(self.reordered.values())
        self.check("deliveries lost / duplicated / reordered", lost == 0 and dups == 0 and reord == 0,
                   "%d / %d / %d of %d deliveries" % (lost, dups, reord, self.counts["deliveries"]))
        slow_metric = sum(n.get("slow") or 0 for n in self.final["nodes"])
        self.check("slow consumers closed 4008", self.counts["slow_consumers"] > 0
                   and self.counts["slow_closed_4008"] == self.counts["slow_consumers"] == slow_metric,
                   "%d of %d (server counted %d)" % (self.counts["slow_closed_4008"], self.counts["slow_consumers"],
                                                     slow_metric))
        self.check("token expiry", self.counts["expired_4001"] > 0 and self.counts["refreshed_then_expired_4001"] > 0,
                   "%d expired (4001), %d refreshed twice then expired; lateness after exp %s"
                   % (self.counts["expired_4001"], self.counts["refreshed_then_expired_4001"],
                      span_text(self.timings["expiry_lateness_s"])))
        self.check("recovery", self.counts["recoveries"] > 0,
                   "%d resubscriptions with since (%d with a bogus epoch), %d publications recovered"
                   % (self.counts["recoveries"], self.counts["recoveries_bogus_epoch"],
                      self.counts["recovered_publications"]))
        for name, m1, m3, limit, ok in self.flatness("rss_kb", a.rss_tolerance_mib * 1024, 0.05):
            if self.asan:
                self.check("RSS flat (%s)" % name, True, "not checked under ASan (quarantine); first third max "
                           "%s MiB, last third max %s MiB" % (mib(m1), mib(m3)))
            else:
                per_conn = ""
                if m1 is not None and getattr(self, "conns_after_warmup", 0):
                    per_conn = " (%+.0f bytes per WebSocket connection opened after the warm-up)" % (
                        (m3 - m1) * 1024.0 / self.conns_after_warmup)
                sl = self.slopes.get((name, "rss_kb"))
                self.check("RSS flat (%s)" % name, ok, "first third max %s MiB, last third max %s MiB, limit %s MiB%s%s"
                           % (mib(m1), mib(m3), mib(limit), per_conn,
                              "" if sl is None else "; trend %+.0f KiB/min" % sl))
        for name, m1, m3, limit, ok in self.flatness("fds", 16, 0.10):
            self.check("descriptors flat (%s)" % name, ok, "first third max %s, last third max %s, limit %s"
                       % (m1, m3, None if limit is None else int(limit)))
        for n, b, node in zip(self.final["nodes"], self.baseline["nodes"], self.nodes):
            ok = n["connections"] == 0 and n["subscriptions"] == 0 and n["channels"] == 0 and n["fds"] == b["fds"]
            extra = self.extra_fds[self.nodes.index(node)]
            self.check("end state (%s)" % node.name, ok,
                       "connections %s, subscriptions %s, channels %s; descriptors %s (before the first client: %s)%s"
                       % (fmt(n["connections"]), fmt(n["subscriptions"]), fmt(n["channels"]), n["fds"], b["fds"],
                          ("; new: " + "; ".join(extra[:6])) if extra else ""))
        self.check("presence empty at the end", all(v == [] for v in self.final_presence.values()),
                   "%s" % {k: (len(v) if isinstance(v, list) else v) for k, v in self.final_presence.items()})
        if self.redis is not None:
            r = self.final_redis
            self.check("Redis clean at the end", not r["topics"] and not r["presence_keys"],
                       "topics subscribed %r, presence keys %r" % (r["topics"][:5], r["presence_keys"][:5]))
        for ex, node in zip(self.exits, self.nodes):
            log = node.log
            sanitizer = [l for l in log.splitlines() if "Sanitizer" in l or "runtime error:" in l]
            events = collections.Counter()
            for line in log.splitlines():
                try:
                    j = json.loads(line)
                except ValueError:
                    continue
                if j.get("level") in ("warn", "warning", "error"):
                    events["%s:%s" % (j.get("level"), j.get("event"))] += 1
            node.log_events = dict(events)
            odd = {k: v for k, v in events.items() if k.split(":", 1)[1] not in EXPECTED_LOG_EVENTS}
            self.check("exit (%s)" % node.name, ex["status"] == 0 and not sanitizer and not odd,
                       "status %s after %.1fs; sanitizer lines %d%s; warn/error log events %s"
                       % (ex["status"], ex["seconds"], len(sanitizer),
                          (" (" + sanitizer[0][:160] + ")") if sanitizer else "", dict(events) or "none"))
            node.sanitizer = sanitizer[:40]

    def report(self):
        a = self.args
        lines = []
        mode = "cluster (2 nodes, 1 Redis)" if a.cluster else "embedded"
        lines.append("Herald soak: %s, %d s of traffic (+%.0f s setup, %.0f s drain/checks), %s%s, "
                     "%s loop threads, scale %g" % (
                         mode, a.duration, self.setup_s, self.total_s - self.run_end, a.herald,
                         " (ASan: rates x%g, RSS not checked)" % ASAN_RATE if self.asan else "",
                         self.nodes[0].herald.env.get("HERALD_THREADS"), a.scale))
        c = self.counts
        dur = max(1e-9, self.run_end - self.setup_s)
        lines.append("")
        lines.append("traffic: %d WebSocket connections (%.1f/s; %d churn sessions, %d rapid), %d publications "
                     "acked (%.0f/s) + %d broadcasts, %d deliveries checked (%.0f/s), %d slow consumers, "
                     "%d tokens expired + %d refreshed-then-expired, %d users registered and logged in "
                     "(%d deleted), %d recoveries, %d REST reads, %d misbehaving clients"
                     % (c["ws_connections"], c["ws_connections"] / dur, c["churn_sessions"], c["rapid_sessions"],
                        c["publications"], c["publications"] / dur, c["broadcasts"], c["deliveries"],
                        c["deliveries"] / dur, c["slow_consumers"], c["expired_4001"],
                        c["refreshed_then_expired_4001"], c["users_registered_logged_in"], c["users_deleted"],
                        c["recoveries"], c["rest_reads"],
                        sum(v for k, v in c.items() if k.startswith("misbehave:"))))
        cpu = []
        for i, node in enumerate(self.nodes):
            b, f = self.baseline["nodes"][i]["cpu_s"], self.final["nodes"][i]["cpu_s"]
            if b is not None and f is not None:
                cpu.append("%s %.0f s (%.0f%% of a core)" % (node.name, f - b, 100.0 * (f - b) / max(1, self.final["t"])))
        ru = resource.getrusage(resource.RUSAGE_SELF)
        lines.append("CPU: herald %s; this driver %.0f s (%.0f%%); %d cores" % (
            ", ".join(cpu), ru.ru_utime + ru.ru_stime, 100.0 * (ru.ru_utime + ru.ru_stime) / max(1, self.final["t"]),
            os.cpu_count()))
        if self.timings["login_s"]:
            lines.append("logins: register %s s, password grant %s s (min..max)"
                         % (span_text(self.timings["register_s"]), span_text(self.timings["login_s"])))
        lines.append("")
        hdr = ["t (s)"]
        for node in self.nodes:
            suffix = "" if len(self.nodes) == 1 else " " + node.name
            hdr += ["RSS MiB" + suffix, "fds" + suffix, "conns" + suffix, "subs" + suffix]
        hdr += ["threads", "deliveries", "publications"]
        if self.redis is not None:
            hdr.append("Redis MiB")
        rows = []
        samples = [self.baseline] + self.samples + [self.final]
        keep = decimate(samples, 32)
        for s in keep:
            row = ["%.0f" % s["t"]]
            for n in s["nodes"]:
                row += [mib(n["rss_kb"]), fmt(n["fds"]), fmt(n["connections"]), fmt(n["subscriptions"])]
            row += [fmt(s["nodes"][0]["threads"]), str(s["deliveries"]), str(s["publications"])]
            if self.redis is not None:
                row.append(mib(s.get("redis_used_kb")))
            rows.append(row)
        lines += table(hdr, rows)
        lines.append("(first row: before the first client; last row: after every client left)")
        lines.append("")
        if self.closes_expected or self.closes_unexpected:
            lines.append("closes by the server: expected %s; unexpected %s" % (
                dict(sorted(self.closes_expected.items())), dict(self.closes_unexpected) or "none"))
        if self.errors:
            lines.append("errors by kind:")
            for k, v in sorted(self.errors.items(), key=lambda kv: -kv[1]):
                lines.append("  %-40s %6d   e.g. %s" % (k, v, self.examples[k][0][:200]))
        lines.append("")
        lines.append("checks:")
        for ch in self.checks:
            lines.append("  %-4s %-42s %s" % ("ok" if ch["ok"] else "FAIL", ch["check"], ch["detail"]))
        for node in self.nodes:
            if getattr(node, "sanitizer", None):
                lines.append("")
                lines.append("sanitizer output (%s):" % node.name)
                lines += ["  " + l for l in node.sanitizer]
        lines.append("")
        lines.append("result: %s" % ("PASS" if all(ch["ok"] for ch in self.checks) else "FAIL"))
        return "\n".join(lines)

    def as_json(self):
        return {
            "mode": "cluster" if self.args.cluster else "embedded", "duration_s": self.args.duration,
            "herald": self.args.herald, "asan": self.asan, "scale": self.args.scale, "seed": self.args.seed,
            "host": {"nproc": os.cpu_count(), "machine": platform.machine()},
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "setup_s": round(self.setup_s, 1), "run_end_s": round(self.run_end, 1), "total_s": round(self.total_s, 1),
            "counts": dict(self.counts), "errors": dict(self.errors),
            "error_examples": {k: v for k, v in self.examples.items()},
            "closes_expected": dict(self.closes_expected), "closes_unexpected": dict(self.closes_unexpected),
            "lost": dict(self.lost), "duplicated": dict(self.dups), "reordered": dict(self.reordered),
            "timings": {k: {"min": min(v), "max": max(v), "n": len(v)} for k, v in self.timings.items() if v},
            "baseline": self.baseline, "samples": self.samples, "final": self.final,
            "extra_fds_at_end": getattr(self, "extra_fds", None),
            "exits": self.exits, "log_events": {n.name: getattr(n, "log_events", {}) for n in self.nodes},
            "checks": self.checks, "passed": all(ch["ok"] for ch in self.checks),
        }


def mib(kb):
    return "-" if kb is None else "%.1f" % (kb / 1024.0)


def span_text(vals):
    return "-" if not vals else "%.2f..%.2f" % (min(vals), max(vals))


def decimate(samples, n):
    if len(samples) <= n:
        return samples
    step = (len(samples) - 1) / (n - 1)
    idx = sorted({round(i * step) for i in range(n)})
    return [samples[i] for i in idx]


def table(hdr, rows):
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(hdr)]
    out = ["  ".join(h.rjust(w) for h, w in zip(hdr, widths))]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return out


WATCHDOG_S = 200  # a run still going this long after --duration is hung: every phase is bounded


def on_hang(soak):
    """The watchdog (a thread): prints where every task and thread is, kills
    the servers (they would outlive us) and exits with status 3."""
    print("soak: the run did not finish within --duration + %d s; where it is:" % WATCHDOG_S, flush=True)
    loop = getattr(soak, "loop", None)
    try:  # tasks grouped by where they wait (the chain of awaited coroutines)
        places = collections.Counter(where(task) for task in (list(asyncio.all_tasks(loop)) if loop else ()))
        for chain, n in places.most_common():
            print("%4d task(s) at %s" % (n, chain), flush=True)
    except Exception as e:  # noqa: BLE001 - best effort, the loop runs in another thread
        print("(tasks not listed: %r)" % e)
    faulthandler.dump_traceback(all_threads=True)
    for node in soak.nodes:
        try:
            print("---- %s log (tail) ----\n%s" % (node.name, node.herald.log_tail(30)), flush=True)
            node.herald.proc.kill()
        except Exception:  # noqa: BLE001
            pass
    if soak.redis is not None and soak.redis.proc is not None:
        soak.redis.proc.kill()
    sys.stdout.flush()
    os._exit(3)


def default_herald():
    for p in (os.environ.get("HERALD_BIN"), os.path.join(REPO, "build", "herald"), "/work/main/build/herald"):
        if p and os.path.exists(p):
            return p
    return os.path.join(REPO, "build", "herald")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=600, help="seconds of traffic (default 600)")
    p.add_argument("--cluster", action="store_true", help="two nodes on a private redis-server")
    p.add_argument("--chaos", action="store_true",
                   help="chaos mode (bench/soak_chaos.py): 3 nodes, 2 Redis shards, a fault every "
                        "--chaos-interval seconds; its own traffic and report")
    p.add_argument("--chaos-interval", default="20:40", metavar="MIN:MAX",
                   help="seconds between two faults in chaos mode, drawn uniformly (default 20:40)")
    p.add_argument("--chaos-faults", default="node-kill,redis-kill,node-stop,net-drop",
                   help="the fault kinds of chaos mode, comma-separated (default: all four)")
    p.add_argument("--chaos-redis-empty", choices=("alternate", "always", "never"), default="alternate",
                   help="whether a killed shard restarts empty (default: every other time)")
    p.add_argument("--herald", default=default_herald(), help="the binary (default: $HERALD_BIN, build/herald)")
    p.add_argument("--asan", choices=("auto", "yes", "no"), default="auto",
                   help="ASan build: lower rates, no RSS check (auto: libasan mapped in the server)")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every rate")
    p.add_argument("--threads", type=int, default=0, help="HERALD_THREADS (default: $HERALD_TEST_THREADS or 2)")
    p.add_argument("--subscribers", type=int, default=0,
                   help="long-lived subscribers (default 32, ASan 12; chaos: followers, 12)")
    p.add_argument("--churners", type=int, default=0, help="churning clients (default 8, ASan 4; chaos 6)")
    p.add_argument("--sample-interval", type=float, default=5.0, help="seconds between samples (default 5)")
    p.add_argument("--rss-tolerance-mib", type=float, default=8.0,
                   help="allowed RSS growth, last third vs first third, on top of 5%% (default 8)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--self-test", choices=("drop", "dup", "reorder"),
                   help="spoil every 500th delivery to long-lived subscribers: the run must then fail")
    p.add_argument("--json", help="write the JSON report here")
    p.add_argument("--write", help="put the text report into this markdown file's soak section")
    p.add_argument("-v", "--verbose", action="store_true", help="errors and samples on stderr as they happen")
    args = p.parse_args()
    if args.duration < 30:
        p.error("--duration must be at least 30 s (the flatness checks need samples)")
    if not os.access(args.herald, os.X_OK):
        print("soak: no herald binary at %s (--herald)" % args.herald, file=sys.stderr)
        return 2
    soak = Soak(args)
    shown, skip = [], False
    for a in sys.argv[1:]:  # the command as run, without where its output went
        if skip:
            skip = False
        elif a in ("--write", "--json"):
            skip = True
        elif not a.startswith(("--write=", "--json=")):
            shown.append(a)
    cmd = "python3 bench/soak.py " + " ".join(shown)
    if args.chaos:
        try:
            lo, hi = (float(x) for x in args.chaos_interval.split(":"))
            assert 0 < lo <= hi
        except (ValueError, AssertionError):
            p.error("--chaos-interval wants MIN:MAX seconds, e.g. 20:40")
        args.chaos_interval = (lo, hi)
        args.chaos_faults = [f for f in args.chaos_faults.split(",") if f]
        if not args.chaos_faults or set(args.chaos_faults) - {"node-kill", "redis-kill", "node-stop", "net-drop"}:
            p.error("--chaos-faults: node-kill, redis-kill, node-stop, net-drop")
        import soak_chaos  # noqa: E402 - only chaos mode needs it
        return soak_chaos.main(args, cmd)
    t = time.monotonic()
    try:
        soak.start_servers()
    except (AssertionError, OSError) as e:
        print("soak: could not start the servers: %s" % e, file=sys.stderr)
        for node in soak.nodes:
            node.herald.stop(signal.SIGKILL)
        if soak.redis:
            soak.redis.stop()
        return 2
    watchdog = threading.Timer(args.duration + WATCHDOG_S, on_hang, (soak,))
    watchdog.daemon = True
    watchdog.start()
    try:
        asyncio.run(soak.run())
    except Exception:
        soak.error("driver_crash", traceback.format_exc(limit=8))
        traceback.print_exc()
        if not hasattr(soak, "run_end"):
            soak.run_end = soak.now()
    finally:
        watchdog.cancel()
        soak.stop_servers()
    soak.total_s = time.monotonic() - t
    for attr, default in (("setup_s", 0.0), ("final", None), ("final_presence", {}), ("baseline", None)):
        if not hasattr(soak, attr):
            setattr(soak, attr, default)
    try:
        if soak.final is None or soak.baseline is None:
            soak.check("run", False, "the run did not finish: %s" % dict(soak.errors))
        else:
            soak.evaluate()
        text = soak.report()
    except Exception:
        traceback.print_exc()
        text = "report failed; errors: %r" % dict(soak.errors)
        soak.checks.append({"check": "report", "ok": False, "detail": "crashed"})
    print(text, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(soak.as_json(), f, indent=1)
    if args.write:
        write_section(args.write, text, cmd, "bench/soak.py", "Soak")
    soak.cleanup()
    return 0 if soak.checks and all(ch["ok"] for ch in soak.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
