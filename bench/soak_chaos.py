"""soak_chaos.py - the chaos mode of bench/soak.py (`soak.py --chaos`).

Cluster mode: three Herald nodes on two Redis shards (redis-server with an
append-only file), traffic from clients that reconnect as herald.js does, and
every --chaos-interval seconds (20-40 by default, seeded) one fault:

  node-kill     SIGKILL a node; restarted on its port 1-3 s later
  redis-kill    SIGKILL a Redis shard; restarted on its port 1-3 s later,
                from its append-only file or (every other time) empty
  node-stop     SIGSTOP a node for 5 s, then SIGCONT
  net-drop      a third of the clients lose the network: they stop reading
                and sending, notice it when their ping goes unanswered
                (pongTimeout), reconnect on a new socket, and drop the old
                one 0-10 s later without a close handshake

The kinds come in a seeded shuffled cycle, so every four faults include each
kind once.

Clients (herald.js' behaviour: backoff 500 ms doubling to 20 s with full
jitter, reset after 10 s connected; ping every 25 s, 10 s pong timeout;
requests time out after 10 s; every subscription restored, history channels
with `since`; a `subscribe` refused `unavailable` is retried with backoff):

  followers     --subscribers (12) clients on 2 history channels (4, two on
                each shard), a plain and a presence channel each, with now
                and then a ping, presence, history or token refresh. Their
                streams are checked (below).
  publishers    2 WebSocket publishers (publish op: history, plain and presence
                channels; 15/s each) and 2 REST publishers (POST
                /api/v1/publish, 15/s each, to a random node; a broadcast now
                and then). Every publication carries (publisher, seq).
  churners      --churners (6) short sessions: connect (header, ?token= or the
                connect op), subscribe (history channels with `since` from the
                previous session), publish, presence, history, ping, refresh,
                unsubscribe, leave (close handshake, FIN or RST).
  users         every 10 s: register, password grant, /users/me, members add
                and remove (pushes `subscribed`/`unsubscribed`), delete.
  REST reads    every second: history, presence, /readyz, /metrics.

What the report says, and what fails the run (exit status 1):

  acknowledged vs delivered, per follower and history channel: every
                publication acknowledged with an offset must reach the
                follower once, in order (offsets rising by one within an
                epoch), unless a `recovered: false` (resubscribe reply or the
                `subscribed` push after a Redis outage) covers it - after which
                the follower reloads with the `history` op and goes on from
                the new position. Lost, duplicated or reordered deliveries,
                two followers seeing different publications at one
                (epoch, offset), a recovery that does not reach the stream's
                offset: all fail the run.
  error codes   every error reply, HTTP status, close code and client-side
                failure, counted by kind. Those chaos explains (unavailable,
                503, 1006, 1001, refused connections, timeouts while a node is
                stopped) are listed; others (internal, bad_request, forbidden,
                a 500, close codes like 1002/1011...) fail the run.
  RSS and descriptors per node: sampled every --sample-interval seconds for
                each process (a restarted node is a new process); a process
                that lived at least 180 s must stay flat (the last third's
                highest sample within 8 MiB + 5 % of the first third's, after a
                30 s warm-up), and once every client has left, every node must
                hold as many descriptors as before the first client came,
                with no connection, subscription or channel left.
  exit          SIGTERM at the end: every node exits 0.

    python3 bench/soak.py --chaos --duration 600 [--seed N] [--write docs/reliability.md]

(Why one file of ~1,500 lines: the faults, the reconnecting clients and
their stream checks share one run's state and seed; soaklib.py holds what both
modes share: the raw WebSocket and HTTP clients, the /proc view of a node.)
"""

import asyncio
import collections
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from harness import Redis, free_port, make_jwt  # noqa: E402
from soaklib import (HTTP, Closed, ProtocolError, Refused, Session, fd_summary, fd_targets,  # noqa: E402
                     fetch_metrics, fmt, maps_have_asan, proc_stats, route_frame, sleep_until, slope, tally,
                     where, write_section)

REQUEST_TIMEOUT = 10.0       # herald.js requestTimeout
PING_INTERVAL = 25.0         # herald.js pingInterval
PONG_TIMEOUT = 10.0          # herald.js pongTimeout
BACKOFF_BASE, BACKOFF_MAX = 0.5, 20.0
STABLE_AFTER = 10.0
HISTORY_SIZE = 20000         # larger than what a 20 s outage publishes: recoveries can succeed
CONFIG = {"namespaces": {
    "": {"subscribe": "authenticated", "publish": "authenticated"},
    "hist": {"subscribe": "authenticated", "publish": "authenticated",
             "history_size": HISTORY_SIZE, "history_ttl": 1800},
    "room": {"subscribe": "authenticated", "publish": "subscribers", "presence": True, "join_leave": True},
}}
FAULTS = ("node-kill", "redis-kill", "node-stop", "net-drop")
# Which faults explain an error kind, and for how long after the fault ended
# (seconds): an error seen outside every such window is unexplained and
# fails the run. Redis: from the kill until every node is ready again, plus
# what a reconnect with backoff takes (and a restarted node, until its Redis
# connections are up). Nodes: connections refused or cut
# while one is down; timeouts while one is stopped; a dropped network:
# the frozen connection's commands time out.
GRACE = 5.0
EXPLAINS = [
    # a restarted node serves before its Redis connections are up (not ready: 503)
    (re.compile(r"^(ws:\w+:unavailable|http:\w+ [^ ]+:503|upgrade:503)$"),
     {"redis-kill": GRACE, "node-kill": GRACE}),
    # node-stop: on SIGCONT, libwebsockets' 5 s idle timer of a keep-alive
    # connection has run out, and it closes the connection before reading a
    # request sent meanwhile
    (re.compile(r"^(close:1006|connect:.*|http:\w+ [^ ]+:connection)$"),
     {"node-kill": GRACE, "node-stop": 1.0}),
    # and net-drop: a dropped client gives its frozen socket up at its pong
    # timeout (net_drop()), failing the command it was waiting for then
    (re.compile(r"^closed_during:.*$"),
     {"node-kill": GRACE, "node-stop": 1.0, "net-drop": PONG_TIMEOUT + 1}),
    (re.compile(r"^(timeout:.*|http:\w+ [^ ]+:timeout)$"),
     {"node-stop": REQUEST_TIMEOUT + 1, "node-kill": REQUEST_TIMEOUT + 1,
      "net-drop": PONG_TIMEOUT + REQUEST_TIMEOUT + 1}),
]


def explaining(kind):
    for rx, faults in EXPLAINS:
        if rx.match(kind):
            return faults
    return {}
SHARDS = 2


def fnv1a64(name):
    h = 0xcbf29ce484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001b3) % 2 ** 64
    return h


def hist_channels(per_shard=2):
    out, by = [], collections.Counter()
    i = 0
    while len(out) < per_shard * SHARDS:
        ch = "hist:c%d" % i
        s = fnv1a64(ch) % SHARDS
        if by[s] < per_shard:
            out.append(ch)
            by[s] += 1
        i += 1
    return out


HIST = hist_channels()
PLAIN = ["feed.%d" % i for i in range(4)]
ROOM = ["room:%d" % i for i in range(4)]


async def cancel_all(tasks):
    """Cancels tasks and waits until they are done. Cancelled again every
    second: Python 3.11's asyncio.wait_for can swallow a cancellation that
    arrives as the awaited future completes, and the task then goes on."""
    pending = {t for t in tasks if not t.done()}
    for t in pending:
        t.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=1.0)
        for t in pending:
            t.cancel()
    for t in tasks:
        if not t.cancelled():
            t.exception()  # retrieved: an activity's own errors were counted where they happened


#---- processes -----------------------------------------------------------------

class Shard(Redis):
    """A redis-server with an append-only file (everysec), restartable on its
    port from that file or empty."""

    def start(self, timeout=10.0):
        self._log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [self.bin, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "everysec", "--dir", self.dir, "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def wipe(self):
        for name in os.listdir(self.dir):
            if name != "redis.log":
                p = os.path.join(self.dir, name)
                shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class NodeProc:
    """One Herald node: restartable on its port; every process it ran is an
    incarnation with its own log and samples."""

    def __init__(self, chaos, name, port, env, binary):
        self.chaos, self.name, self.port, self.env, self.bin = chaos, name, port, env, binary
        self.dir = tempfile.mkdtemp(prefix="herald-chaos-%s-" % name)
        self.proc = None
        self.incarnations = []   # {"pid","start","end","exit","log","samples":[]}
        self.stopped = False
        self.mhttp = HTTP(port)

    def spawn(self):
        n = len(self.incarnations)
        path = os.path.join(self.dir, "stderr.%d.log" % n)
        with open(path, "wb") as err:
            self.proc = subprocess.Popen([self.bin, "serve"], env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err)
        self.incarnations.append({"pid": self.proc.pid, "start": self.chaos.now(), "end": None, "exit": None,
                                  "log": path, "samples": []})
        self.stopped = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def reap(self, how="killed"):
        if self.proc is not None and self.proc.poll() is not None and self.incarnations[-1]["end"] is None:
            inc = self.incarnations[-1]
            inc["end"], inc["exit"], inc["how"] = self.chaos.now(), self.proc.returncode, how

    async def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError("%s exited with %s:\n%s" % (self.name, self.proc.returncode, self.log_tail()))
            try:
                status, _, _ = await self.mhttp.request("GET", "/readyz", timeout=2)
                if status == 200:
                    return
            except (asyncio.TimeoutError, ConnectionError, OSError):
                self.mhttp.close()
            await asyncio.sleep(0.1)
        raise RuntimeError("%s not ready within %.0f s:\n%s" % (self.name, timeout, self.log_tail()))

    async def warm_up(self, api):
        """Two registrations and logins at once, so that each Argon2 worker
        has hashed (19 MiB each) before the RSS samples count."""
        async def one(i):
            http = HTTP(self.port)
            uname = "warm-%s-%d-%d" % (self.name, len(self.incarnations), i)
            try:
                await http.request("POST", "/api/v1/users", {"username": uname, "password": "warm-up-pw-1"},
                                   headers=api, timeout=30, retry=False)
                await http.request("POST", "/api/v1/auth/token", timeout=30, retry=False,
                                   form={"grant_type": "password", "username": uname, "password": "warm-up-pw-1"})
            except (asyncio.TimeoutError, ConnectionError, OSError):
                pass
            finally:
                http.close()
        await asyncio.gather(one(0), one(1))
        self.incarnations[-1]["warm"] = self.chaos.now()

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def log_text(self, inc=None):
        out = []
        for i in ([inc] if inc is not None else self.incarnations):
            try:
                with open(i["log"], "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "".join(out)

    def log_tail(self, lines=30):
        return "\n".join(self.log_text(self.incarnations[-1] if self.incarnations else None).splitlines()[-lines:])

    def live_pid(self):
        return self.proc.pid if self.alive() else None

    def proc_stats(self):
        return proc_stats(self.live_pid())

    def fd_targets(self):
        return fd_targets(self.live_pid())

    def fd_summary(self, fds, names):
        """{what: count} of descriptors: TCP peers by name (names: port ->
        name), listening sockets, other sockets, files."""
        return fd_summary(self.proc.pid, fds, names)

    async def metrics(self):
        return await fetch_metrics(self.mhttp, timeout=3)


#---- a connection -------------------------------------------------------------

class Conn(Session):
    """One WebSocket: replies resolve cmd() futures, pushes go to on_push."""

    def __init__(self, chaos, node, role):
        super().__init__(node.port)
        self.chaos, self.node, self.role = chaos, node, role
        self.abandoned = set()   # ids of commands that timed out or were cancelled
        self.close_code = None
        self.frozen = False

    async def connect(self, token, via):
        return await self.open(token, via, REQUEST_TIMEOUT)

    async def _reader(self):
        try:
            while True:
                obj = json.loads(await self.ws.recv())
                what = route_frame(obj, self.pending, self.on_push)
                if what == "unmatched" and obj["id"] in self.abandoned:
                    self.abandoned.discard(obj["id"])
                    self.chaos.counts["late_replies"] += 1  # its timeout was counted
                elif what == "unmatched":
                    self.chaos.fail("reply_without_command", "%s: %r" % (self.role, obj))
                elif what == "neither":
                    self.chaos.fail("frame_without_push_or_id", "%s: %r" % (self.role, obj))
        except Closed as e:
            self.close_code = e.code
        except (ProtocolError, ValueError) as e:
            self.chaos.fail("protocol_error", "%s: %s" % (self.role, e))
            self.close_code = -1
            self.ws.abort()
        finally:
            if not self.frozen:  # a frozen one's commands time out, as on a dead network
                for fut in self.pending.values():
                    if not fut.done():
                        fut.set_exception(Closed(self.close_code or 1006))
                self.pending.clear()
                if not self.by_us and self.close_code not in (None, -1):
                    self.chaos.seen("close:%s" % self.close_code)
                self.closed.set()

    async def cmd(self, op, timeout=REQUEST_TIMEOUT, **args):
        """The reply; raises Closed or asyncio.TimeoutError."""
        if self.closed.is_set():
            raise Closed(self.close_code or 1006)
        cid, fut = self.command(op, args)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            if self.pending.pop(cid, None) is not None:
                self.abandoned.add(cid)

    async def result(self, op, **args):
        """The result, or None after counting what went wrong."""
        try:
            reply = await self.cmd(op, **args)
        except Closed:
            self.chaos.seen("closed_during:" + op)
            return None
        except asyncio.TimeoutError:
            self.chaos.seen("timeout:" + op)
            return None
        if "result" not in reply:
            self.chaos.seen("ws:%s:%s" % (op, (reply.get("error") or {}).get("code")),
                            "%s %r: %r" % (self.role, args.get("channel"), reply))
            return None
        return reply["result"]

    def freeze(self):
        """The network is gone: nothing is read or sent any more (the socket
        stays open; the server sees nothing)."""
        self.by_us = self.frozen = True
        if self.task is not None:
            self.task.cancel()

    def dead(self):
        """herald.js gave up on it (no reply in time): dropped, reconnect."""
        self.freeze()
        self.ws.abort()
        self.closed.set()

    async def close(self, mode="clean"):
        if self.closed.is_set() and self.task is not None and self.task.done():
            self.ws.abort()
            return
        self.by_us = True
        if mode == "clean":
            self.ws.send_close(1000)
            try:
                await asyncio.wait_for(self.closed.wait(), 5)
            except asyncio.TimeoutError:
                pass
        self.ws.abort(rst=(mode == "rst"))
        if self.task is not None:
            await cancel_all([self.task])


#---- stream accounting ----------------------------------------------------------

class Stream:
    """What one follower saw of one history channel: segments of the stream,
    each from a subscribe position (epoch, offset) on, contiguous; a
    `recovered: false` ends one and starts the next."""

    def __init__(self, chaos, who, ch):
        self.chaos, self.who, self.ch = chaos, who, ch
        self.segments = []       # [epoch, start (exclusive), last, t_start, t_end or None]
        self.delivered = {}      # identity -> count
        self.held = []           # pushes that came before the subscribe reply
        self.live = False
        self.reloads = self.recoveries = 0
        self.dups = self.reordered = self.gaps = 0

    @property
    def pos(self):
        s = self.segments[-1] if self.segments else None
        return None if s is None else {"epoch": s[0], "offset": s[2]}

    def begin(self):
        self.live = False
        self.held = []

    def on_message(self, m):
        if not self.live:
            self.held.append(m)
            return
        self.accept(m.get("offset"), m.get("data"))

    def accept(self, offset, data):
        seg = self.segments[-1]
        c = self.chaos
        c.counts["deliveries_checked"] += 1
        ident = (data.get("p"), data.get("s")) if isinstance(data, dict) else None
        if not isinstance(offset, int):
            c.fail("offset_missing", "%s %s: %r" % (self.who, self.ch, data))
            return
        if offset <= seg[2]:
            if ident is not None and self.delivered.get(ident):
                self.dups += 1
                c.fail("delivery_duplicate", "%s %s: offset %d again (at %d)" % (self.who, self.ch, offset, seg[2]))
            else:
                self.reordered += 1
                c.fail("delivery_reordered", "%s %s: offset %d after %d" % (self.who, self.ch, offset, seg[2]))
            return
        if offset > seg[2] + 1:
            self.gaps += offset - seg[2] - 1
            c.fail("delivery_gap", "%s %s: offset %d after %d (epoch %s)" % (self.who, self.ch, offset, seg[2], seg[0]))
        seg[2] = offset
        if ident is not None:
            self.delivered[ident] = self.delivered.get(ident, 0) + 1
            c.observe(self.ch, seg[0], offset, ident, self.who)

    def subscribed(self, result, with_since):
        """A subscribe reply; returns True when a reload is needed."""
        now = self.chaos.now()
        epoch, offset = result.get("epoch"), result.get("offset")
        if not isinstance(offset, int) or not epoch:
            self.chaos.fail("subscribe_result", "%s %s: %r" % (self.who, self.ch, result))
            return False
        reload = False
        if with_since and result.get("recovered") is True:
            self.recoveries += 1
            if epoch != self.segments[-1][0]:
                # a master that restarted from its AOF (or a promoted
                # replica) starts a new epoch at the switch point: entries
                # up to it are the same under the new name (SPEC section 5,
                # docs/internals/redis-ha.md); the offsets still rise by one
                self.segments[-1][0] = epoch
                self.chaos.counts["epoch_switches"] += 1
            for p in result.get("publications") or []:
                self.accept(p.get("offset"), p.get("data"))
            if self.segments[-1][2] != offset:
                self.chaos.fail("recovery_incomplete", "%s %s: recovered up to %s, stream at %s"
                                % (self.who, self.ch, self.segments[-1][2], offset))
        else:
            if self.segments:
                self.segments[-1][4] = now
                reload = True
                self.reloads += 1
            self.segments.append([epoch, offset, offset, now, None])
        self.live = True
        held, self.held = self.held, []
        for m in held:
            self.accept(m.get("offset"), m.get("data"))
        return reload

    def resynced(self, push):
        """The `subscribed` push a node sends after a Redis outage."""
        if not self.live or not self.segments:
            return False
        if push.get("recovered") is True:
            self.recoveries += 1
            seg = self.segments[-1]
            # what the node recovered came before the push; live ones may have too
            if not isinstance(push.get("offset"), int) or push["offset"] > seg[2]:
                self.chaos.fail("resync_mismatch", "%s %s: push %r, stream at %s/%s"
                                % (self.who, self.ch, push, seg[0], seg[2]))
            elif push.get("epoch") != seg[0]:  # an epoch switch that kept the entries
                seg[0] = push.get("epoch")
                self.chaos.counts["epoch_switches"] += 1
            return False
        self.segments[-1][4] = self.chaos.now()
        self.reloads += 1
        self.segments.append([push.get("epoch"), push.get("offset"), push.get("offset"), self.chaos.now(), None])
        return True


#---- a herald.js-like client ------------------------------------------------------

class Agent:
    """Keeps a connection to some node (a random one each time, as behind a
    load balancer), reconnecting as herald.js does, and restores its
    subscriptions (history ones with `since`)."""

    def __init__(self, chaos, name, channels, checked, rnd):
        self.chaos, self.name, self.rnd = chaos, name, rnd
        self.channels = list(channels)
        self.streams = {ch: Stream(chaos, name, ch) for ch in channels if checked and ch.startswith("hist:")}
        self.since = {}          # unchecked history channels: the last position
        self.conn = None
        self.attempt = 0
        self.ready = asyncio.Event()
        self.dropped = False
        self.reconnects = 0
        self.connections = 0

    def token(self):
        return self.chaos.token(self.name)

    def on_push(self, m):
        kind, ch = m.get("push"), m.get("channel")
        if kind == "message":
            st = self.streams.get(ch)
            if st is not None:
                st.on_message(m)
            elif ch in self.since and isinstance(m.get("offset"), int):
                self.since[ch]["offset"] = m["offset"]
            self.chaos.counts["messages"] += 1
        elif kind == "subscribed":
            st = self.streams.get(ch)
            if st is not None and "recovered" in m and st.resynced(m):
                asyncio.ensure_future(self.reload(ch))
            self.chaos.counts["subscribed_pushes"] += 1
        elif kind in ("join", "leave", "unsubscribed"):
            self.chaos.counts[kind + "_pushes"] += 1
        else:
            self.chaos.fail("unexpected_push", "%s: %r" % (self.name, m))

    async def reload(self, ch):
        """What an app does after recovered:false: read the history."""
        c = self.conn
        if c is not None:
            res = await c.result("history", channel=ch, limit=50)
            if res is not None:
                self.chaos.counts["reloads_with_history"] += 1

    async def run(self, activity, stop):
        """Until `stop` is set: connect, restore, do `activity`, reconnect."""
        c = self.chaos
        while not stop.is_set():
            if self.conn is not None:
                delay = self.rnd.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2 ** self.attempt))
                self.attempt += 1
                if await sleep_until(stop, delay):
                    break
            node = self.rnd.choice(c.nodes)
            conn = Conn(c, node, self.name)
            conn.on_push = self.on_push
            try:
                await conn.connect(self.token(), self.rnd.choice(("header", "query", "op")))
            except Refused as e:
                c.seen("upgrade:%s" % e.status)
                self.conn = self.conn or conn
                continue
            except (Closed, ConnectionError, OSError, asyncio.TimeoutError) as e:
                c.seen("connect:%s" % type(e).__name__)
                self.conn = self.conn or conn
                continue
            if self.conn is not None and self.conn is not conn:
                self.reconnects += 1
            self.conn = conn
            self.connections += 1
            up_at = time.monotonic()
            tasks = [asyncio.ensure_future(self.restore(conn)), asyncio.ensure_future(self.pinger(conn))]
            if activity is not None:
                tasks.append(asyncio.ensure_future(activity(self, conn)))
            stopped = asyncio.ensure_future(stop.wait())
            closed = asyncio.ensure_future(conn.closed.wait())
            await asyncio.wait([stopped, closed], return_when=asyncio.FIRST_COMPLETED)
            await cancel_all(tasks + [stopped, closed])
            self.ready.clear()
            for st in self.streams.values():
                st.live = False
            if time.monotonic() - up_at >= STABLE_AFTER:
                self.attempt = 0
        self.ready.clear()

    async def restore(self, conn):
        """Subscribes to every channel (history ones with since); a refused
        subscribe is retried with backoff, as herald.js does."""
        todo = list(self.channels)
        retry = 0
        while todo:
            ch = todo.pop(0)
            st = self.streams.get(ch)
            args = {"channel": ch}
            since = st.pos if st is not None else self.since.get(ch)
            if since is not None:
                args["since"] = since
            if st is not None:
                st.begin()
            try:
                reply = await conn.cmd("subscribe", **args)
            except Closed:
                self.chaos.seen("closed_during:subscribe")
                return
            except asyncio.TimeoutError:
                self.chaos.seen("timeout:subscribe")
                conn.dead()  # as herald.js: a request without a reply means a dead connection
                return
            if "result" not in reply:
                code = (reply.get("error") or {}).get("code")
                self.chaos.seen("ws:subscribe:%s" % code, "%s %s: %r" % (self.name, ch, reply))
                if code not in ("unavailable", "rate_limited", "internal"):
                    return
                todo.append(ch)
                await asyncio.sleep(max(0.2, self.rnd.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2 ** retry))))
                retry += 1
                continue
            res = reply["result"]
            if st is not None:
                if st.subscribed(res, since is not None):
                    await self.reload(ch)
            elif ch.startswith("hist:") and "epoch" in res:
                self.since[ch] = {"epoch": res["epoch"], "offset": res["offset"]}
            self.chaos.counts["subscribes"] += 1
        self.ready.set()

    async def pinger(self, conn):
        while True:
            await asyncio.sleep(PING_INTERVAL)
            try:
                await conn.cmd("ping", timeout=PONG_TIMEOUT)
            except asyncio.TimeoutError:
                self.chaos.seen("timeout:ping")
                conn.dead()
                return
            except Closed:
                return

    async def net_drop(self, zombie_s):
        """The network goes: the connection freezes; herald.js notices at its
        pong timeout and reconnects; the old socket is dropped later without
        a close frame (a real network drop sends nothing at all)."""
        conn = self.conn
        if conn is None or conn.closed.is_set():
            return
        conn.freeze()
        self.chaos.counts["net_drops"] += 1
        await asyncio.sleep(PONG_TIMEOUT)
        self.chaos.seen("timeout:ping")
        conn.closed.set()  # the agent reconnects now
        await asyncio.sleep(zombie_s)
        conn.ws.abort()  # the kernel then sends a FIN or RST: the server learns of it only now


#---- the run ---------------------------------------------------------------------

class Chaos:
    def __init__(self, args):
        self.args = args
        self.rnd = random.Random(args.seed)
        self.frnd = random.Random(args.seed)  # the faults alone: the same schedule for a seed
        self.secret = secrets.token_hex(24)
        self.api_key = secrets.token_hex(16)
        self.t0 = time.monotonic()
        self.nodes, self.shards = [], []
        self.failures = collections.Counter()
        self.fail_examples = collections.defaultdict(list)
        self.errors = collections.Counter()          # every error kind seen (explained or not)
        self.error_examples = collections.defaultdict(list)
        self.counts = collections.Counter()
        self.events = []
        self.acked = []          # (ch, ident, offset, t_send, t_ack)
        self.observed = {}       # (ch, epoch, offset) -> ident
        self.ident_pos = {}      # (ch, ident) -> (epoch, offset)
        self.followers = []
        self.background = set()
        self.ack_node = {}
        self.windows = []        # {"kind","start","end"}: when each fault was under way
        self.stopping = None

    # -- bookkeeping --

    def now(self):
        return time.monotonic() - self.t0

    def fail(self, kind, detail=""):
        tally(self.failures, self.fail_examples, kind, detail, self.now(), self.args.verbose, "FAIL")

    def seen(self, kind, detail=""):
        """Counts an error kind; one no fault explains (explaining()) is
        counted apart and fails the run."""
        now = self.now()
        ok = explaining(kind)
        explained = any(w["kind"] in ok and w["start"] - 0.5 <= now <= (w["end"] if w["end"] is not None else now)
                        + ok[w["kind"]] for w in self.windows)
        key = kind if explained else "UNEXPLAINED " + kind
        self.errors[key] += 1
        if len(self.error_examples[key]) < 3:
            self.error_examples[key].append("t=%.1fs %s" % (now, detail))
        if not explained and self.args.verbose:
            print("unexplained %s at t=%.1f: %s" % (kind, now, detail), file=sys.stderr, flush=True)

    def observe(self, ch, epoch, offset, ident, who):
        key = (ch, epoch, offset)
        prev = self.observed.get(key)
        if prev is None:
            self.observed[key] = ident
            pos = self.ident_pos.get((ch, ident))
            # the same offset under a new epoch is the same entry renamed by
            # an epoch switch that kept the stream (AOF restart, failover)
            if pos is not None and pos[1] != offset:
                self.fail("published_twice", "%s %r at %s and %s" % (ch, ident, pos, (epoch, offset)))
            self.ident_pos[(ch, ident)] = (epoch, offset)
        elif prev != ident:
            self.fail("divergent_streams", "%s %s/%d: %r for %s, %r for another" % (ch, epoch, offset, ident, who, prev))
            # both were published at that position: the followers that saw
            # only the other one are owed this one too (counted as lost)
            self.ident_pos.setdefault((ch, ident), (epoch, offset))

    def token(self, sub, ttl=3600):
        now = int(time.time())
        return make_jwt({"sub": sub, "iat": now, "exp": now + ttl}, self.secret)

    def api(self):
        return {"X-API-Key": self.api_key}

    async def sleep(self, seconds):
        return await sleep_until(self.stopping, seconds)

    async def guarded(self, role, coro):
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            self.fail("task_crash:" + role, "%r\n%s" % (e, traceback.format_exc(limit=6)))

    # -- servers --

    def start_servers(self):
        for _ in range(SHARDS):
            s = Shard()
            s.start()
            self.shards.append(s)
        for s in self.shards:
            deadline = time.monotonic() + 10
            while True:
                try:
                    if s.cmd("PING") == "PONG":
                        break
                except OSError:
                    s._drop()
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start: " + s.log())
                time.sleep(0.05)
        url = ",".join("redis://127.0.0.1:%d/0" % s.port for s in self.shards)
        cfg_dir = tempfile.mkdtemp(prefix="herald-chaos-cfg-")
        self.cfg_dir = cfg_dir
        with open(os.path.join(cfg_dir, "config.json"), "w") as f:
            json.dump(CONFIG, f)
        base = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        for name in ("n1", "n2", "n3"):
            port = free_port()
            env = dict(base, HERALD_LISTEN="127.0.0.1:%d" % port, HERALD_REDIS_URL=url,
                       HERALD_JWT_SECRET=self.secret, HERALD_API_KEY=self.api_key, HERALD_NODE_ID=name,
                       HERALD_LOG_FORMAT="json", HERALD_LOG_LEVEL="info", HERALD_THREADS=str(self.args.threads or 2),
                       HERALD_MAX_CONNS_PER_ADDRESS="0", HERALD_HANDSHAKE_RATE="0",
                       HERALD_CONFIG=os.path.join(cfg_dir, "config.json"),
                       HERALD_DB=os.path.join(cfg_dir, name + ".db"))
            node = NodeProc(self, name, port, env, self.args.herald)
            node.spawn()
            self.nodes.append(node)

    def stop_servers(self):
        self.exits = []
        for node in self.nodes:
            node.signal(signal.SIGCONT)
            t = time.monotonic()
            if node.alive():
                node.proc.send_signal(signal.SIGTERM)
                try:
                    node.proc.wait(30)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()
                    self.fail("exit_hung", node.name)
            node.reap("stopped at the end")
            self.exits.append({"node": node.name, "status": node.proc.returncode,
                               "seconds": round(time.monotonic() - t, 2)})
            node.mhttp.close()
        for s in self.shards:
            s.stop()

    def cleanup(self):
        for node in self.nodes:
            shutil.rmtree(node.dir, ignore_errors=True)
        shutil.rmtree(getattr(self, "cfg_dir", "/nonexistent"), ignore_errors=True)

    # -- faults --

    async def chaos_loop(self):
        lo, hi = self.args.chaos_interval
        cycle = []
        n = 0
        nxt = time.monotonic()
        while True:
            # from one fault's start to the next (a fault under way is finished first)
            nxt += self.frnd.uniform(lo, hi)
            if await self.sleep(max(0.0, nxt - time.monotonic())):
                return
            if time.monotonic() > self.deadline - 5:
                return
            if not cycle:
                cycle = list(self.args.chaos_faults)
                self.frnd.shuffle(cycle)
            kind = cycle.pop(0)
            n += 1
            try:
                await self.fault(kind, n)
            except Exception as e:  # noqa: BLE001
                self.fail("fault_failed:" + kind, "%r\n%s" % (e, traceback.format_exc(limit=6)))

    async def fault(self, kind, n):
        t = self.now()
        ev = {"t": round(t, 1), "kind": kind}
        window = {"kind": kind, "start": t, "end": None}
        self.windows.append(window)
        try:
            await self._fault(kind, n, ev)
        finally:
            window["end"] = self.now()
        ev["seconds"] = round(self.now() - t, 1)
        self.events.append(ev)
        if self.args.verbose:
            print("fault %d: %r" % (n, ev), file=sys.stderr, flush=True)

    async def _fault(self, kind, n, ev):
        if kind == "node-kill":
            node = self.frnd.choice(self.nodes)
            ev["target"] = node.name
            node.signal(signal.SIGKILL)
            await asyncio.get_running_loop().run_in_executor(None, node.proc.wait)
            node.reap()
            await asyncio.sleep(self.frnd.uniform(1, 3))
            node.spawn()
            await node.wait_ready(60)
            await node.warm_up(self.api())
        elif kind == "redis-kill":
            i = self.frnd.randrange(len(self.shards))
            s = self.shards[i]
            empty = {"alternate": self.counts["redis_kills"] % 2 == 1, "always": True,
                     "never": False}[self.args.chaos_redis_empty]
            self.counts["redis_kills"] += 1
            ev["target"] = "redis%d (%s)" % (i, "restarted empty" if empty else "restarted from its AOF")
            s._drop()
            s.proc.kill()
            await asyncio.get_running_loop().run_in_executor(None, s.proc.wait)
            s._log.close()
            await asyncio.sleep(self.frnd.uniform(1, 3))
            if empty:
                s.wipe()
            s.start()
            deadline = time.monotonic() + 20
            while True:
                try:
                    if s.cmd("PING") == "PONG":
                        break
                except (OSError, Exception):  # noqa: BLE001 - LOADING while the AOF is read
                    s._drop()
                if time.monotonic() > deadline:
                    raise RuntimeError("redis did not come back: " + s.log())
                await asyncio.sleep(0.1)
            await asyncio.gather(*(node.wait_ready(60) for node in self.nodes))
        elif kind == "node-stop":
            node = self.frnd.choice(self.nodes)
            ev["target"] = node.name
            node.signal(signal.SIGSTOP)
            await asyncio.sleep(5)
            node.signal(signal.SIGCONT)
        else:
            agents = [a for a in self.agents if a.conn is not None and not a.conn.closed.is_set()]
            vr = random.Random(self.args.seed * 7919 + n)  # who is connected varies: keep frnd's sequence
            victims = vr.sample(agents, max(1, len(agents) // 3)) if agents else []
            ev["target"] = "%d clients" % len(victims)
            # in the background: the next fault may come while they notice
            for a in victims:
                task = asyncio.ensure_future(a.net_drop(vr.uniform(0, 10)))
                self.background.add(task)
                task.add_done_callback(self.background.discard)

    # -- traffic --

    async def follower_activity(self, agent, conn):
        await agent.ready.wait()
        while True:
            await asyncio.sleep(self.rnd.uniform(3, 8))
            kind = self.rnd.choice(("presence", "history", "refresh", "history_since"))
            if kind == "presence":
                ch = [c for c in agent.channels if c.startswith("room:")][0]
                res = await conn.result("presence", channel=ch)
                if res is not None and conn.hello["client"] not in [x.get("client") for x in res.get("clients", [])]:
                    self.fail("presence_missing_self", "%s on %s" % (conn.hello["client"], ch))
            elif kind == "refresh":
                await conn.result("refresh", token=agent.token())
            else:
                ch = self.rnd.choice(HIST)
                args = {"channel": ch, "limit": 20}
                st = agent.streams.get(ch)
                if kind == "history_since" and st is not None and st.pos is not None:
                    args["since"] = st.pos
                res = await conn.result("history", **args)
                if res is not None:
                    offs = [p.get("offset") for p in res.get("publications", [])]
                    if offs != sorted(set(offs)) or (offs and offs[-1] > res.get("offset", 0)):
                        self.fail("history_result", "%s: offsets %r, top %r" % (ch, offs, res.get("offset")))
            self.counts["queries"] += 1

    def ack(self, ch, ident, result, t_send, node=None):
        off = result.get("offset") if isinstance(result, dict) else None
        if ch.startswith("hist:"):
            if not isinstance(off, int):
                self.fail("publish_without_offset", "%s: %r" % (ch, result))
                return
            self.acked.append((ch, ident, off, t_send, self.now()))
            self.ack_node[(ch, ident)] = node
        self.counts["publications_acked"] += 1

    async def ws_publisher(self, agent, conn):
        await agent.ready.wait()
        period = 1.0 / (15 * self.args.scale)
        chans = HIST * 2 + PLAIN + [ch for ch in agent.channels if ch.startswith("room:")]
        while True:
            ch = self.rnd.choice(chans)
            seq = self.next_seq(agent.name)
            t = self.now()
            try:
                reply = await conn.cmd("publish", channel=ch, data={"p": agent.name, "s": seq})
            except Closed:
                self.seen("closed_during:publish")
                return
            except asyncio.TimeoutError:
                self.seen("timeout:publish")
                continue
            if "result" in reply:
                self.ack(ch, (agent.name, seq), reply["result"], t, conn.node.name)
            else:
                self.seen("ws:publish:%s" % (reply.get("error") or {}).get("code"), "%s: %r" % (ch, reply))
            await asyncio.sleep(period)

    def next_seq(self, pid):
        self.counts["seq:" + pid] += 1
        return self.counts["seq:" + pid]

    async def rest_publisher(self, k):
        pid = "rest%d" % k
        https = {n.name: HTTP(n.port) for n in self.nodes}
        period = 1.0 / (15 * self.args.scale)
        try:
            while not await self.sleep(period):
                node = self.rnd.choice(self.nodes)
                http = https[node.name]
                if self.rnd.random() < 0.05:
                    seq = self.next_seq(pid)
                    await self.rest(http, "POST", "/api/v1/broadcast",
                                    {"channels": PLAIN, "data": {"p": pid, "s": seq}})
                    continue
                ch = self.rnd.choice(HIST * 3 + PLAIN)
                seq = self.next_seq(pid)
                t = self.now()
                status, body = await self.rest(http, "POST", "/api/v1/publish",
                                               {"channel": ch, "data": {"p": pid, "s": seq}})
                if status == 200:
                    self.ack(ch, (pid, seq), body, t, node.name)
        finally:
            for h in https.values():
                h.close()

    async def rest(self, http, method, path, body=None, headers=None):
        """(status, body); counts failures as error kinds by route. A
        keep-alive connection idle for 3 s is not reused: Herald closes idle
        ones after 5 s, and a POST on one it just closed cannot be resent."""
        route = re.sub(r"/(channels|users|members)/[^/]+", r"/\1/X", path.split("?")[0])
        if time.monotonic() - getattr(http, "used", 0) > 3:
            http.close()
        http.used = time.monotonic()
        try:
            status, _, data = await http.request(method, path, body, headers=headers or self.api(),
                                                 timeout=REQUEST_TIMEOUT, retry=method == "GET")
        except asyncio.TimeoutError:
            self.seen("http:%s %s:timeout" % (method, route))
            return None, None
        except (ConnectionError, OSError) as e:
            self.seen("http:%s %s:connection" % (method, route), repr(e))
            return None, None
        if status >= 400:
            self.seen("http:%s %s:%d" % (method, route, status), repr(data)[:200])
        self.counts["rest_requests"] += 1
        return status, data

    async def churner(self, k):
        rnd = random.Random(self.args.seed * 1000 + k)
        saved = {}
        n = 0
        while not self.stopping.is_set():
            n += 1
            node = rnd.choice(self.nodes)
            conn = Conn(self, node, "churner")
            name = "chaos-c%d" % k
            conn.on_push = lambda m, saved=saved: self.churn_push(saved, m)
            try:
                await conn.connect(self.token(name), rnd.choice(("header", "query", "op")))
            except Refused as e:
                self.seen("upgrade:%s" % e.status)
                await self.sleep(rnd.uniform(0.5, 2))
                continue
            except (Closed, ConnectionError, OSError, asyncio.TimeoutError) as e:
                self.seen("connect:%s" % type(e).__name__)
                await self.sleep(rnd.uniform(0.5, 2))
                continue
            self.counts["churn_sessions"] += 1
            try:
                chans = [rnd.choice(HIST), rnd.choice(PLAIN), rnd.choice(ROOM)]
                for ch in chans:
                    args = {"channel": ch}
                    if ch in saved:
                        args["since"] = saved[ch]
                    res = await conn.result("subscribe", **args)
                    if res is not None and "epoch" in res:
                        saved[ch] = {"epoch": res["epoch"], "offset": res["offset"]}
                        self.counts["churn_recovered_%s" % res.get("recovered")] += 1
                for _ in range(rnd.randrange(1, 6)):
                    op = rnd.choice(("publish", "presence", "history", "ping", "refresh"))
                    ch = chans[2] if op in ("presence", "publish") else rnd.choice(chans)
                    if op == "publish":
                        await conn.result("publish", channel=ch, data={"churn": k})
                    elif op == "presence":
                        await conn.result("presence", channel=ch)
                    elif op == "history":
                        await conn.result("history", channel=chans[0], limit=5)
                    elif op == "ping":
                        await conn.result("ping")
                    else:
                        await conn.result("refresh", token=self.token(name))
                    if await self.sleep(rnd.uniform(0.1, 1.0)):
                        break
                if rnd.random() < 0.5:
                    await conn.result("unsubscribe", channel=chans[1])
            finally:
                await conn.close(rnd.choice(("clean", "clean", "fin", "rst")))
            await self.sleep(rnd.uniform(0.2, 2))

    def churn_push(self, saved, m):
        ch = m.get("channel")
        if m.get("push") == "message" and ch in saved and isinstance(m.get("offset"), int):
            saved[ch]["offset"] = m["offset"]
        self.counts["messages"] += 1

    async def users(self):
        https = {n.name: HTTP(n.port) for n in self.nodes}
        n = 0
        try:
            while not await self.sleep(10):
                n += 1
                http = https[self.rnd.choice(self.nodes).name]
                uname, pw = "chaos%d" % n, "pw-%s" % secrets.token_hex(8)
                status, body = await self.rest(http, "POST", "/api/v1/users", {"username": uname, "password": pw})
                if status != 201:
                    continue
                uid = body.get("id")
                http.used = time.monotonic()
                try:
                    st, _, tok = await http.request("POST", "/api/v1/auth/token",
                                                    form={"grant_type": "password", "username": uname, "password": pw},
                                                    timeout=REQUEST_TIMEOUT, retry=False)
                except (asyncio.TimeoutError, ConnectionError, OSError):
                    self.seen("http:POST /api/v1/auth/token:connection")
                    st = None
                if st == 200:
                    self.counts["logins"] += 1
                    await self.rest(http, "GET", "/api/v1/users/me",
                                    headers={"Authorization": "Bearer " + tok["access_token"]})
                elif st is not None:
                    self.seen("http:POST /api/v1/auth/token:%s" % st)
                await self.rest(http, "POST", "/api/v1/channels/feed.0/members", {"user": uid})
                await self.rest(http, "DELETE", "/api/v1/channels/feed.0/members/%s" % uid)
                await self.rest(http, "DELETE", "/api/v1/users/%s" % uid)
                self.counts["user_cycles"] += 1
        finally:
            for h in https.values():
                h.close()

    async def rest_reader(self):
        https = {n.name: HTTP(n.port) for n in self.nodes}
        try:
            while not await self.sleep(1):
                node = self.rnd.choice(self.nodes)
                http = https[node.name]
                what = self.rnd.choice(("history", "presence", "readyz", "metrics"))
                if what == "history":
                    await self.rest(http, "GET", "/api/v1/channels/%s/history?limit=10" % self.rnd.choice(HIST))
                elif what == "presence":
                    await self.rest(http, "GET", "/api/v1/channels/%s/presence" % self.rnd.choice(ROOM))
                elif what == "readyz":
                    status, _ = await self.rest(http, "GET", "/readyz")
                else:
                    await self.rest(http, "GET", "/metrics")
        finally:
            for h in https.values():
                h.close()

    # -- sampling --

    async def sampler(self):
        while True:
            for node in self.nodes:
                node.reap()
                ps = node.proc_stats()
                if ps["rss_kb"] is not None and node.incarnations and node.incarnations[-1]["end"] is None:
                    node.incarnations[-1]["samples"].append((self.now(), ps["rss_kb"], ps["fds"]))
            if self.args.verbose:
                print("t=%6.1f rss=%s fds=%s acked=%d delivered=%d errors=%d failures=%d" % (
                    self.now(), [n.proc_stats()["rss_kb"] for n in self.nodes],
                    [n.proc_stats()["fds"] for n in self.nodes], len(self.acked),
                    self.counts["deliveries_checked"], sum(self.errors.values()), sum(self.failures.values())),
                    file=sys.stderr, flush=True)
            if await self.sleep(self.args.sample_interval):
                return

    async def gauges(self, node):
        try:
            m = await node.metrics()
        except (asyncio.TimeoutError, ConnectionError, OSError, RuntimeError):
            node.mhttp.close()
            return None
        return {k: m.get("herald_" + k) for k in ("connections", "subscriptions", "channels")}

    # -- the run --

    async def run(self):
        self.stopping = asyncio.Event()        # traffic and faults
        self.followers_stop = asyncio.Event()  # the followers, after they caught up
        args = self.args
        await asyncio.gather(*(n.wait_ready(30) for n in self.nodes))
        # ASan's quarantine keeps freed memory: RSS is not judged under it
        self.asan = any(maps_have_asan(n.proc.pid) for n in self.nodes)
        await asyncio.gather(*(n.warm_up(self.api()) for n in self.nodes))
        await asyncio.sleep(0.5)
        # before the first client (the monitoring connection open, as at the end)
        self.baseline = {n.name: n.fd_targets() for n in self.nodes}
        self.port_names = {s.port: "redis%d" % i for i, s in enumerate(self.shards)}
        self.port_names.update({n.port: n.name for n in self.nodes})
        self.baseline_summary = {n.name: n.fd_summary(self.baseline[n.name], self.port_names) for n in self.nodes}
        self.agents = []
        for i in range(args.subscribers or 12):
            rnd = random.Random(args.seed * 100 + i)
            chans = rnd.sample(HIST, 2) + [rnd.choice(PLAIN), rnd.choice(ROOM)]
            self.followers.append(Agent(self, "follower%d" % i, chans, True, rnd))
        # room:* is publish "subscribers": a publisher publishes into the rooms it is in
        pubs = [Agent(self, "wspub%d" % i, [ROOM[i % len(ROOM)], ROOM[(i + 1) % len(ROOM)]], False,
                      random.Random(args.seed * 100 + 50 + i)) for i in range(2)]
        self.agents = self.followers + pubs
        self.t_start = self.now()
        self.deadline = time.monotonic() + args.duration
        followers = [asyncio.ensure_future(self.guarded(a.name, a.run(self.follower_activity, self.followers_stop)))
                     for a in self.followers]
        tasks = {"sampler": asyncio.ensure_future(self.sampler())}
        for a in pubs:
            tasks[a.name] = asyncio.ensure_future(self.guarded(a.name, a.run(self.ws_publisher, self.stopping)))
        for k in range(2):
            tasks["rest%d" % k] = asyncio.ensure_future(self.guarded("rest_publisher", self.rest_publisher(k)))
        for k in range(args.churners or 6):
            tasks["churner%d" % k] = asyncio.ensure_future(self.guarded("churner", self.churner(k)))
        tasks["users"] = asyncio.ensure_future(self.guarded("users", self.users()))
        tasks["rest_reader"] = asyncio.ensure_future(self.guarded("rest_reader", self.rest_reader()))
        tasks["chaos"] = asyncio.ensure_future(self.guarded("chaos", self.chaos_loop()))
        await asyncio.sleep(max(0.0, self.deadline - time.monotonic()))
        self.t_traffic_end = self.now()
        # publishing and faults stop (a fault under way finishes: every node
        # and shard is back); the followers catch up
        self.stopping.set()
        done, still = await asyncio.wait(list(tasks.values()) + list(self.background), timeout=120)
        for n, t in list(tasks.items()) + [("net-drop", t) for t in self.background]:
            if t in still:
                self.fail("task_hung", "%s at %s" % (n, where(t)))
                t.cancel()
        for node in self.nodes:
            node.signal(signal.SIGCONT)
        await self.drain()
        self.followers_stop.set()
        done, still = await asyncio.wait(followers, timeout=30)
        for t in still:
            self.fail("task_hung", "follower at %s" % where(t))
            t.cancel()
        for a in self.agents:
            if a.conn is not None:
                await a.conn.close()
        await self.end_state()

    async def drain(self):
        """Until every follower has every acknowledged publication it is owed
        (60 s at most): the followers reconnect and recover first."""
        t = time.monotonic()
        deadline = t + 60
        while time.monotonic() < deadline:
            if all(a.ready.is_set() for a in self.followers) and not self.missing(final=False):
                break
            await asyncio.sleep(0.5)
        self.drain_s = round(time.monotonic() - t, 1)

    def owed(self, st, ch, ident, off, t_send, t_ack):
        """Is acked publication (ch, ident) owed to stream st?

        Where some follower saw it, its (epoch, offset) is known: owed to a
        segment of that epoch that began before it and did not end (with a
        recovered:false) before reaching it. Where nobody saw it, its epoch
        is unknown (acknowledgements carry only the offset): owed to the
        follower's last segment if it was sent after that segment began and
        the follower never reached its offset there. (A segment that reached
        the offset saw another publication at it, so this one belongs to
        another epoch; one that ended before reaching it ended with a
        recovered:false, which covers it.)"""
        pos = self.ident_pos.get((ch, ident))
        for seg in st.segments:
            epoch, start, last, t0, t1 = seg
            if pos is not None:
                if pos[0] == epoch and pos[1] > start and (t1 is None or pos[1] <= last):
                    return True
            elif t1 is None and t_send >= t0 and off > last:
                return True
        return False

    def missing(self, final):
        out = []
        for a in self.followers:
            for ch, st in a.streams.items():
                for (pch, ident, off, t_send, t_ack) in self.acked:
                    if pch != ch or st.delivered.get(ident):
                        continue
                    if self.owed(st, ch, ident, off, t_send, t_ack):
                        out.append((a.name, ch, ident, off))
                        if not final:
                            return out
        return out

    async def end_state(self):
        await asyncio.sleep(1.0)
        deadline = time.monotonic() + 15
        while True:
            g = {n.name: await self.gauges(n) for n in self.nodes}
            fds = {n.name: n.fd_targets() for n in self.nodes}
            settled = all(v is not None and v["connections"] == 0 and v["subscriptions"] == 0 and v["channels"] == 0
                          for v in g.values()) and all(len(fds[n]) == len(self.baseline[n]) for n in fds)
            if settled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        self.final_gauges = g
        self.final_fds = {}
        for n in self.nodes:
            base = self.baseline[n.name]
            now = n.fd_targets()
            extra = []
            if len(now) != len(base) and n.alive():
                a, b = self.baseline_summary[n.name], n.fd_summary(now, self.port_names)
                extra = ["%s %d -> %d" % (k, a.get(k, 0), b.get(k, 0)) for k in sorted(set(a) | set(b))
                         if a.get(k, 0) != b.get(k, 0)]
            self.final_fds[n.name] = (len(base), len(now), extra)
            n.mhttp.close()

    # -- report --

    def evaluate(self):
        self.checks = []

        def check(name, ok, detail):
            self.checks.append({"check": name, "ok": bool(ok), "detail": detail})

        for k, v in self.errors.items():
            if k.startswith("UNEXPLAINED "):
                self.failures["unexplained error: " + k.split(" ", 1)[1]] += v
        lost = self.missing(final=True)
        self.lost = lost
        rows = []
        tot = collections.Counter()
        for a in self.followers:
            for ch, st in sorted(a.streams.items()):
                owed = delivered = excused = 0
                for (pch, ident, off, t_send, t_ack) in self.acked:
                    if pch != ch:
                        continue
                    if self.owed(st, ch, ident, off, t_send, t_ack):
                        owed += 1
                        if st.delivered.get(ident):
                            delivered += 1
                    elif any(seg[3] <= t_ack for seg in st.segments):
                        excused += 1
                dups = sum(v - 1 for v in st.delivered.values() if v > 1) + st.dups
                rows.append((a.name, ch, owed, delivered, owed - delivered, dups, st.reordered, st.recoveries,
                             st.reloads, excused, a.reconnects))
                for i, k in enumerate(("owed", "delivered", "lost", "dups", "reordered", "recovered", "reloads",
                                       "excused")):
                    tot[k] += rows[-1][2 + i]
        self.stream_rows, self.stream_totals = rows, tot
        check("acknowledged publications delivered", tot["lost"] == 0 and not lost,
              "%d owed to followers, %d delivered, %d lost; %d more acknowledged while a follower was "
              "subscribed but not owed to it (before its subscribe position, or covered by a "
              "recovered:false and the reload)" % (tot["owed"], tot["delivered"], tot["lost"], tot["excused"]))
        check("no duplicates, no reordering", tot["dups"] == 0 and tot["reordered"] == 0,
              "%d duplicated, %d reordered" % (tot["dups"], tot["reordered"]))
        check("faults", len(self.events) > 0, "%d: %s" % (len(self.events), dict(collections.Counter(
            e["kind"] for e in self.events))))
        check("failures", not self.failures, "none" if not self.failures else dict(self.failures))
        self.rss_rows = []
        for node in self.nodes:
            for i, inc in enumerate(node.incarnations):
                smp = [s for s in inc["samples"] if s[0] >= inc.get("warm", inc["start"]) + 30]
                life = ((inc["end"] if inc["end"] is not None else self.t_traffic_end) - inc["start"])
                row = {"node": "%s#%d" % (node.name, i), "pid": inc["pid"], "life_s": round(life),
                       "exit": inc["exit"], "how": inc.get("how")}
                if len(smp) >= 4:
                    span = smp[-1][0] - smp[0][0]
                    first = [s for s in smp if s[0] <= smp[0][0] + span / 3]
                    last = [s for s in smp if s[0] >= smp[-1][0] - span / 3]
                    m1, m3 = max(s[1] for s in first), max(s[1] for s in last)
                    f1, f3 = max(s[2] for s in first), max(s[2] for s in last)
                    row.update(rss1=m1, rss3=m3, fds1=f1, fds3=f3,
                               rss_trend=slope([(s[0], s[1]) for s in smp]) * 60.0)
                    if span >= 120:
                        ok = m3 <= m1 + 8 * 1024 + 0.05 * m1 or getattr(self, "asan", False)
                        okf = f3 <= f1 + 16 + 0.10 * f1
                        row["checked"] = True
                        check("RSS and descriptors flat (%s)" % row["node"], ok and okf,
                              "RSS %.1f -> %.1f MiB, descriptors %d -> %d over %.0f s"
                              % (m1 / 1024, m3 / 1024, f1, f3, span))
                self.rss_rows.append(row)
        for name, (b, n, extra) in self.final_fds.items():
            g = self.final_gauges.get(name) or {}
            ok = n == b and g.get("connections") == 0 and g.get("subscriptions") == 0 and g.get("channels") == 0
            check("end state (%s)" % name, ok, "descriptors %d (before the first client %d), connections %s, "
                  "subscriptions %s, channels %s%s" % (n, b, fmt(g.get("connections")), fmt(g.get("subscriptions")),
                                                       fmt(g.get("channels")),
                                                       ("; descriptors by kind, before -> after: " + "; ".join(extra)) if extra else ""))
        for ex in self.exits:
            check("exit (%s)" % ex["node"], ex["status"] == 0, "status %s after %.1f s" % (ex["status"], ex["seconds"]))
        self.log_events = {}
        for node in self.nodes:
            text = node.log_text()
            sanitizer = [l for l in text.splitlines() if "Sanitizer" in l or "runtime error:" in l]
            check("no sanitizer report (%s)" % node.name, not sanitizer,
                  "none" if not sanitizer else "%d lines, first: %s" % (len(sanitizer), sanitizer[0][:200]))
            events = collections.Counter()
            for line in text.splitlines():
                try:
                    j = json.loads(line)
                except ValueError:
                    continue
                if isinstance(j, dict) and j.get("level") in ("warn", "warning", "error"):
                    events["%s:%s" % (j.get("level"), j.get("event"))] += 1
            self.log_events[node.name] = events

    def report(self, cmd):
        a = self.args
        L = []
        L.append("Herald chaos soak: 3 nodes, 2 Redis shards (AOF), %d s of traffic with a fault every %g-%g s "
                 "(seed %d), then %.1f s for the followers to catch up; %s" % (
                     a.duration, a.chaos_interval[0], a.chaos_interval[1], a.seed, self.drain_s, a.herald))
        L.append("")
        c = self.counts
        L.append("traffic: %d publications acknowledged (%d into history channels), %d deliveries checked, "
                 "%d messages in all, %d subscribes, %d churn sessions, %d user cycles, %d REST requests, "
                 "%d queries, %d reloads after recovered:false" % (
                     c["publications_acked"], len(self.acked), c["deliveries_checked"], c["messages"],
                     c["subscribes"], c["churn_sessions"], c["user_cycles"], c["rest_requests"], c["queries"],
                     c["reloads_with_history"]))
        L.append("")
        L.append("faults:")
        for e in self.events:
            L.append("  t=%6.1fs  %-10s %-32s (%.1f s)" % (e["t"], e["kind"], e.get("target", ""), e["seconds"]))
        L.append("")
        L.append("checks:")
        for ch in self.checks:
            L.append("  [%s] %s: %s" % ("ok" if ch["ok"] else "FAIL", ch["check"], ch["detail"]))
        L.append("")
        L.append("history streams, per follower and channel: acknowledged publications owed / delivered / lost; "
                 "duplicates, reordered; resubscriptions or Redis resyncs with recovered:true; recovered:false "
                 "(then a reload); acknowledged but not owed; reconnects:")
        hdr = ("follower", "channel", "owed", "delivered", "lost", "dup", "reord", "recovered", "reloads",
               "not owed", "reconnects")
        rows = [[str(x) for x in r] for r in self.stream_rows]
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(hdr)]
        L.append("  " + "  ".join(h.rjust(w) for h, w in zip(hdr, widths)))
        for r in rows:
            L.append("  " + "  ".join(x.rjust(w) for x, w in zip(r, widths)))
        if self.lost:
            L.append("  lost (first 10): %r" % self.lost[:10])
            byname = {a.name: a for a in self.followers}
            shown = set()
            for name, ch, ident, off in self.lost:
                if (ch, ident) in shown or len(shown) >= 3:
                    continue
                shown.add((ch, ident))
                ack = [x for x in self.acked if x[0] == ch and x[1] == ident][0]
                L.append("  %s %r: offset %d, sent t=%.3f through %s, acknowledged t=%.3f; %s's segments on %s "
                         "[epoch, from offset, last, t start, t end]: %r" % (
                             ch, ident, off, ack[3], self.ack_node.get((ch, ident)), ack[4], name, ch,
                             [sg for sg in byname[name].streams[ch].segments
                              if sg[3] <= ack[4] + 10 and (sg[4] is None or sg[4] >= ack[3] - 10)]))
        L.append("")
        L.append("RSS and descriptors per node process (after a 30 s warm-up: highest of the first third -> "
                 "highest of the last third; trend):")
        for r in self.rss_rows:
            if "rss1" in r:
                L.append("  %-6s pid %-7d lived %4d s%s: RSS %.1f -> %.1f MiB (%+.0f KiB/min), descriptors %d -> %d%s"
                         % (r["node"], r["pid"], r["life_s"], how(r),
                            r["rss1"] / 1024, r["rss3"] / 1024, r["rss_trend"], r["fds1"], r["fds3"],
                            "" if r.get("checked") else " (too short to judge)"))
            else:
                L.append("  %-6s pid %-7d lived %4d s%s: too short for samples" % (
                    r["node"], r["pid"], r["life_s"], how(r)))
        L.append("")
        L.append("error kinds seen (UNEXPLAINED: no fault under way or just over explains it; fails the run):")
        for k, v in sorted(self.errors.items(), key=lambda kv: (-kv[1], kv[0])):
            odd = k.startswith("UNEXPLAINED ")
            L.append("  %7d  %s%s" % (v, k, ("   e.g. " + self.error_examples[k][0][:200])
                                        if odd and self.error_examples[k] else ""))
        L.append("")
        L.append("warn/error log events per node (all its processes): " + "; ".join(
            "%s: %s" % (n, ", ".join("%s %d" % kv for kv in sorted(ev.items())) or "none")
            for n, ev in sorted(self.log_events.items())))
        if self.failures:
            L.append("")
            L.append("failures:")
            for k, v in sorted(self.failures.items()):
                L.append("  %6d  %s" % (v, k))
                for ex in self.fail_examples.get(k, [])[:3]:
                    L.append("          %s" % ex[:300])
        L.append("")
        ok = all(ch["ok"] for ch in self.checks)
        L.append("result: %s" % ("PASS" if ok else "FAIL"))
        return "\n".join(L)


def how(row):
    if row.get("how") == "killed":
        return ", SIGKILLed"
    if row.get("exit") is not None:
        return ", exit status %s at the end" % row["exit"]
    return ""


def main(args, cmd):
    chaos = Chaos(args)
    try:
        chaos.start_servers()
    except (AssertionError, OSError, RuntimeError) as e:
        print("soak --chaos: could not start the servers: %s" % e, file=sys.stderr)
        for n in chaos.nodes:
            n.signal(signal.SIGKILL)
        for s in chaos.shards:
            s.stop()
        return 2

    def on_hang():
        print("soak --chaos: the run did not finish in time; killing the servers", flush=True)
        for n in chaos.nodes:
            n.signal(signal.SIGCONT)
            print("---- %s log (tail) ----\n%s" % (n.name, n.log_tail(20)), flush=True)
            n.signal(signal.SIGKILL)
        for s in chaos.shards:
            if s.proc is not None:
                s.proc.kill()
        os._exit(3)

    watchdog = threading.Timer(args.duration + 400, on_hang)
    watchdog.daemon = True
    watchdog.start()
    try:
        asyncio.run(chaos.run())
        crashed = False
    except Exception:
        traceback.print_exc()
        chaos.fail("driver_crash", traceback.format_exc(limit=8))
        crashed = True
    finally:
        watchdog.cancel()
        chaos.stop_servers()
    for attr, default in (("drain_s", 0.0), ("final_gauges", {}), ("final_fds", {}),
                          ("t_traffic_end", chaos.now())):
        if not hasattr(chaos, attr):
            setattr(chaos, attr, default)
    try:
        chaos.evaluate()
        text = chaos.report(cmd)
    except Exception:
        traceback.print_exc()
        text = "report failed; failures: %r" % dict(chaos.failures)
        chaos.checks = [{"check": "report", "ok": False, "detail": "crashed"}]
    print(text, flush=True)
    if args.write:
        write_section(args.write, text, cmd, "bench/soak.py --chaos", "Chaos soak", new_doc="# Reliability\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checks": chaos.checks, "errors": dict(chaos.errors), "failures": dict(chaos.failures),
                       "events": chaos.events, "streams": chaos.stream_rows, "processes": chaos.rss_rows,
                       "counts": dict(chaos.counts)}, f, indent=1, default=str)
    ok = not crashed and all(ch["ok"] for ch in chaos.checks)
    if ok:
        chaos.cleanup()
    else:
        print("logs kept in %s" % ", ".join(n.dir for n in chaos.nodes), flush=True)
    return 0 if ok else 1
