"""The listen-only transports of SPEC §9 through a real HTTP client on a
socket: Server-Sent Events (GET /sse) and HTTP streaming (GET /stream).
Events and their JSON (the WebSocket pushes), recovery with Last-Event-ID,
?last_event_id= and ?since= (in order, no duplicates, or recovered:false),
bad input answered 4xx problem+json before the stream starts, keep-alives,
the members/disconnect/presence APIs, the slow-consumer close, a client
that goes away, shutdown, and a cluster of two nodes delivering to SSE."""

import json
import signal
import socket
import time
import urllib.parse
from contextlib import ExitStack

from harness import Herald, Redis, cluster_nodes, run_tests, wait_until

HIST = {"namespaces": {
    "chat": {"subscribe": "authenticated", "publish": "subscribers", "presence": True,
             "join_leave": False, "history_size": 100, "history_ttl": 300},
    "secret": {"subscribe": "role:admin", "publish": "none"},
}}


class Stream:
    """A listen-only client on a raw socket: sends the GET, reads the
    response head, then SSE events (sse=True) or NDJSON lines."""

    def __init__(self, port, path, headers=None, sse=True, rcvbuf=None):
        self.sse = sse
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        hdrs = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (path, hdrs)).encode())
        self.buf = b""
        self.eof = False
        head = self._until(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if l)}
        self.ids = []       # every id: seen
        self.comments = 0   # keep-alive comments seen

    def _fill(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            b = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError("no data in time; have %r" % self.buf[-300:])
        if not b:
            self.eof = True
        self.buf += b

    def _until(self, sep, timeout=10.0):
        deadline = time.monotonic() + timeout
        while sep not in self.buf:
            if self.eof:
                raise EOFError("stream ended; have %r" % self.buf[-300:])
            self._fill(deadline)
        part, self.buf = self.buf.split(sep, 1)
        return part

    def body(self, timeout=10.0):
        """The rest of a response that has a length (an error)."""
        n = int(self.headers.get("content-length", "0"))
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            self._fill(deadline)
        return self.buf[:n]

    def next(self, timeout=10.0):
        """The next event: (name, data as JSON, id or None); comments are
        counted and skipped. NDJSON: ("line", object, its "id")."""
        while True:
            if not self.sse:
                line = self._until(b"\n", timeout)
                if not line:
                    continue
                o = json.loads(line)
                if "id" in o:
                    self.ids.append(o["id"])
                return o.get("push"), o, o.get("id")
            block = self._until(b"\n\n", timeout).decode()
            name, data, eid = "message", [], None
            fields = 0
            for line in block.split("\n"):
                if line.startswith(":"):
                    self.comments += 1
                    continue
                k, _, v = line.partition(":")
                v = v[1:] if v.startswith(" ") else v
                fields += 1
                if k == "event":
                    name = v
                elif k == "data":
                    data.append(v)
                elif k == "id":
                    eid = v
                    self.ids.append(v)
                elif k == "retry":
                    self.retry = int(v)
            if not data and comment_only(block):
                return "comment", None, None
            if not data:
                continue  # retry: only
            return name, json.loads("\n".join(data)), eid

    def until(self, name, timeout=10.0):
        """Events up to and with the first called name."""
        got = []
        while True:
            ev = self.next(timeout)
            got.append(ev)
            if ev[0] == name:
                return got

    def messages(self, n, timeout=10.0):
        out = []
        while len(out) < n:
            ev = self.next(timeout)
            if ev[0] == "message":
                out.append(ev)
        return out

    def ended(self, timeout=15.0):
        """Reads to the end of the stream; returns the events on the way."""
        got = []
        try:
            while True:
                got.append(self.next(timeout))
        except EOFError:
            return got

    def close(self):
        self.sock.close()


def comment_only(block):
    return all(line.startswith(":") for line in block.split("\n") if line)


def q(**kw):
    """A query string; a list value repeats the name."""
    pairs = []
    for k, v in kw.items():
        for x in (v if isinstance(v, list) else [v]):
            pairs.append((k, x))
    return urllib.parse.urlencode(pairs)


def sse(h, channels, sub="alice", token=None, sse=True, extra=None, headers=None, **kw):
    token = token or h.jwt(sub=sub)
    path = ("/sse?" if sse else "/stream?") + q(channel=channels, token=token, **(extra or {}))
    return Stream(h.port, path, headers=headers, sse=sse, **kw)


def test_events_are_the_websocket_pushes():
    with Herald(config=HIST) as h:
        s = sse(h, ["chat:a", "news"])
        assert s.status == 200
        assert s.headers["content-type"] == "text/event-stream", s.headers
        assert "no-cache" in s.headers["cache-control"]
        ev = s.until("connected")
        assert s.retry == 2000
        assert ev[-1][1]["user"] == "alice" and ev[-1][1]["client"], ev
        subs = {}
        for _ in range(2):
            name, d, eid = s.next()
            assert name == "subscribed", (name, d)
            subs[d["channel"]] = (d, eid)
        assert subs["chat:a"][0]["recovered"] is False and subs["chat:a"][1], subs
        assert subs["news"][1] is None, "no history, no id"
        ws = h.user("bob")  # the same pushes as a WebSocket subscriber's
        ws.subscribe("news")
        h.publish("news", {"n": 1, "text": "line\nbreak"})
        h.publish("chat:a", {"n": 2})
        m1, m2 = s.messages(2)
        assert m1[1] == ws.recv_push("message"), m1
        assert m1[2] is None
        assert m2[1] == {"push": "message", "channel": "chat:a", "data": {"n": 2}, "offset": 1}
        assert m2[2] and m2[2] != subs["chat:a"][1], "a history publication moves the id"
        # NDJSON: one push per line, the id in the line
        n = sse(h, ["chat:a"], sse=False)
        assert n.headers["content-type"] == "application/x-ndjson"
        assert n.next()[0] == "connected"
        name, d, eid = n.next()
        assert name == "subscribed" and d["offset"] == 1 and eid, d
        h.publish("chat:a", {"n": 3})
        name, d, eid = n.next()
        assert d == {"push": "message", "channel": "chat:a", "data": {"n": 3}, "offset": 2, "id": eid}


def test_last_event_id_recovers_in_order_without_duplicates():
    with Herald(config=HIST) as h:
        s = sse(h, ["chat:a", "chat:b"])
        s.until("connected")
        h.publish("chat:a", {"i": 1})
        h.publish("chat:b", {"i": 1})
        s.messages(2)
        last = s.ids[-1]
        s.close()
        for k, how in enumerate(("header", "query", "since")):
            base = 10 * (k + 1)
            missed = [base + j for j in range(4)]
            for i in missed:  # published while the client was away
                h.publish("chat:a", {"i": i})
            h.publish("chat:b", {"i": base})
            if how == "header":
                r = sse(h, ["chat:a", "chat:b"], headers={"Last-Event-ID": last})
            elif how == "query":
                r = sse(h, ["chat:a", "chat:b"], extra={"last_event_id": last})
            else:
                r = sse(h, ["chat:a", "chat:b"], sse=False, extra={"since": last})
            got = {"chat:a": [], "chat:b": []}
            subscribed, seen = 0, []
            while subscribed < 2 or len(got["chat:a"]) < 4 or len(got["chat:b"]) < 1:
                try:
                    name, d, _ = r.next()
                except AssertionError:
                    raise AssertionError("%s: %r" % (how, seen))
                seen.append((name, d))
                if name == "subscribed":
                    assert d["recovered"] is True, d
                    subscribed += 1
                elif name == "message":
                    got[d["channel"]].append(d["data"]["i"])
            assert got == {"chat:a": missed, "chat:b": [base]}, (how, got)
            # then live publications, each once
            h.publish("chat:a", {"i": base + 9})
            assert [d["data"]["i"] for _, d, _ in r.messages(1)] == [base + 9], how
            last = r.ids[-1]
            r.close()


def test_unrecoverable_position_says_recovered_false():
    with Herald(config=HIST) as h:
        h.publish("chat:a", {"i": 1})
        r = sse(h, ["chat:a"], headers={"Last-Event-ID": "chat:a~not-this-epoch~1"})
        name, d, eid = r.until("subscribed")[-1]
        assert d["recovered"] is False and d["offset"] == 1, d
        # a channel the token does not name starts afresh
        r2 = sse(h, ["chat:a", "chat:z"], headers={"Last-Event-ID": eid})
        subs = {}
        while len(subs) < 2:
            name, d, _ = r2.next()
            if name == "subscribed":
                subs[d["channel"]] = d["recovered"]
        assert subs == {"chat:a": True, "chat:z": False}, subs


def problem(s, status):
    assert s.status == status, (s.status, s.body())
    assert s.headers["content-type"] == "application/problem+json", s.headers
    p = json.loads(s.body())
    assert p["status"] == status and p["detail"], p
    return p["detail"]


def test_bad_input_is_a_problem_before_the_stream():
    with Herald(config=HIST, env={"HERALD_MAX_SUBSCRIPTIONS": "3"}) as h:
        tok = h.jwt(sub="alice")
        for path in ("/sse", "/stream"):
            assert "channel" in problem(Stream(h.port, path + "?" + q(channel="bad name", token=tok)), 400)
            assert "JWT" in problem(Stream(h.port, path + "?" + q(channel="news")), 401)
            problem(Stream(h.port, path + "?" + q(channel="news", token="x.y.z")), 401)
            problem(Stream(h.port, path + "?" + q(channel="news"),
                           headers={"Authorization": "Bearer " + h.jwt(sub="alice", exp=1)}), 401)
            problem(Stream(h.port, path + "?" + q(channel="news"), headers={"X-API-Key": h.api_key}), 401)
            assert "secret:x" in problem(Stream(h.port, path + "?" + q(channel=["news", "secret:x"], token=tok)),
                                         403)
            assert "too many" in problem(Stream(h.port, path + "?" + q(channel=["a", "b", "c", "d"], token=tok)),
                                         400)
        problem(Stream(h.port, "/sse?" + q(channel="chat:a", token=tok), headers={"Last-Event-ID": "junk"}), 400)
        problem(Stream(h.port, "/sse?" + q(channel="chat:a", token=tok, last_event_id="a~b")), 400)
        problem(Stream(h.port, "/stream?" + q(channel="chat:a", token=tok, since="chat:a~e~x")), 400)
        # an admin's token grants the namespace; the channels claim adds its exact names
        admin = h.jwt(sub="root", roles=["admin"], channels=["chat:room", "chat:*"])
        s = Stream(h.port, "/sse?" + q(channel="secret:x", token=admin))
        names = set()
        while len(names) < 2:
            name, d, _ = s.next()
            if name == "subscribed":
                names.add(d["channel"])
        assert names == {"secret:x", "chat:room"}, names


def test_keepalive_comments_and_ping_lines():
    with Herald(config=HIST, env={"HERALD_SSE_PING": "1"}) as h:
        s = sse(h, ["news"])
        s.until("subscribed")
        assert s.until("comment", timeout=20)[-1] == ("comment", None, None)
        n = sse(h, ["news"], sse=False)
        assert n.until("ping")[-1][1] == {"push": "ping"}


def test_members_presence_and_disconnect_reach_streams():
    with Herald(config=HIST) as h:
        s = sse(h, ["chat:a"], sub="carol")
        s.until("subscribed")
        pres = h.http("GET", "/api/v1/channels/chat:a/presence", headers=h.api_headers()).json()
        assert [c["user"] for c in pres["clients"]] == ["carol"], pres
        r = h.http("POST", "/api/v1/channels/chat:m/members", json={"user": "carol"}, headers=h.api_headers())
        assert r.status_code == 204
        name, d, eid = s.until("subscribed")[-1]
        assert d["channel"] == "chat:m" and eid, d
        h.publish("chat:m", {"m": 1})
        assert s.messages(1)[0][1]["data"] == {"m": 1}
        r = h.http("DELETE", "/api/v1/channels/chat:m/members/carol", headers=h.api_headers())
        assert r.status_code == 204
        assert s.until("unsubscribed")[-1][1] == {"push": "unsubscribed", "channel": "chat:m"}
        r = h.http("POST", "/api/v1/users/carol/disconnect", data=b"", headers=h.api_headers())
        assert r.status_code == 204
        rest = s.ended()
        assert rest[-1][0] == "close" and rest[-1][1]["code"] == 4003, rest
        wait_until(lambda: not h.http("GET", "/api/v1/channels/chat:a/presence",
                                      headers=h.api_headers()).json()["clients"], what="presence empty")


def gauge(h, name):
    for line in h.http("GET", "/metrics").text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_slow_consumer_closes_and_a_gone_client_is_noticed():
    with Herald(config=HIST, env={"HERALD_OUT_QUEUE": "65536"}) as h:
        s = sse(h, ["news"], rcvbuf=4096)
        s.until("subscribed")
        big = "x" * 60000
        for i in range(200):  # 12 MB the client does not read: more than any socket buffers
            h.publish("news", {"i": i, "pad": big})
        wait_until(lambda: gauge(h, "herald_slow_consumer_closes_total") == 1, what="a 4008 close")
        rest = s.ended(timeout=30)
        assert rest and rest[-1][0] == "close" and rest[-1][1]["code"] == 4008, rest[-3:]
        # a client that just goes away is dropped: the gauges fall back to 0
        g = sse(h, ["news"], sse=False)
        g.until("subscribed")
        assert gauge(h, "herald_stream_connections") == 1
        g.close()
        wait_until(lambda: gauge(h, "herald_stream_connections") == 0 and gauge(h, "herald_connections") == 0,
                   what="the closed stream dropped")


def test_token_expiry_ends_the_stream_with_4001():
    with Herald(config=HIST) as h:
        s = sse(h, ["news"], token=h.jwt(sub="erin", exp=int(time.time()) + 2))
        s.until("subscribed")
        rest = s.ended(timeout=20)
        assert rest[-1][0] == "close" and rest[-1][1] == {"push": "close", "code": 4001,
                                                          "reason": "token expired"}, rest


def test_shutdown_ends_streams_with_1001():
    h = Herald(config=HIST)
    with h:
        s = sse(h, ["news"])
        s.until("subscribed")
        n = sse(h, ["news"], sse=False)
        n.until("subscribed")
        h.proc.send_signal(signal.SIGTERM)
        for st in (s, n):
            rest = st.ended()
            assert rest[-1][0] == "close" and rest[-1][1]["code"] == 1001, rest
        assert h.proc.wait(timeout=20) == 0


def test_cluster_delivers_to_sse_on_every_node():
    with Redis() as r, ExitStack() as st:
        a, b = cluster_nodes(st, r, config=HIST)
        sa, sb = sse(a, ["chat:a"]), sse(b, ["chat:a"])
        sa.until("subscribed")
        sb.until("subscribed")
        for i in range(5):
            (a if i % 2 else b).publish("chat:a", {"i": i})
        got_a = [d["data"]["i"] for _, d, _ in sa.messages(5)]
        got_b = [d["data"]["i"] for _, d, _ in sb.messages(5)]
        assert got_a == got_b == list(range(5)), (got_a, got_b)
        # the id one node hands out recovers on the other
        last = sb.ids[-1]
        sb.close()
        a.publish("chat:a", {"i": 5})
        rb = sse(a, ["chat:a"], headers={"Last-Event-ID": last})
        name, d, _ = rb.until("subscribed")[-1]
        assert d["recovered"] is True, d
        assert [d["data"]["i"] for _, d, _ in rb.messages(1)] == [5]


if __name__ == "__main__":
    run_tests(globals())
