"""The backend proxy of SPEC §8 end to end: real WebSocket clients, a real
herald, a real HTTP backend (backend_fixture.py). What a client sees for
every answer of the connect, refresh, subscribe, publish and rpc proxies,
and for every failure (backend down, slow, garbage, huge, wrong status,
redirect, over the bounds); JWT or proxy precedence; what the backend
receives (the forwarded headers only)."""

import json
import time

import backend_fixture as bf
from harness import Herald, assert_error, assert_result, run_tests, wait_until

KEY = "pr0xy-key"


def herald(b, env=None, config=None, **routes):
    """A herald with the given proxy URLs (kind=path on backend b)."""
    e = {"HERALD_PROXY_KEY": KEY, "HERALD_PROXY_TIMEOUT": "5"}
    for kind, path in routes.items():
        e["HERALD_PROXY_%s_URL" % kind.upper()] = b.url(path)
    e.update(env or {})
    return Herald(env=e, config=config)


def ok_connect(user="alice", **more):
    res = {"user": user}
    res.update(more)
    return bf.answer(200, {"result": res})


def sock(h, headers=None, data=None, token=None):
    """A socket upgraded with headers whose connect command is sent."""
    ws = h.ws(timeout=20)
    assert ws.connect("/ws", headers or {}) == 101, ws.http_body
    cmd = {"id": 1, "op": "connect"}
    if data is not None:
        cmd["data"] = data
    if token is not None:
        cmd["token"] = token
    ws.send_json(cmd)
    return ws


def read_until_reply(ws, cid=1, timeout=20):
    """(reply, the messages before it)"""
    before = []
    deadline = time.monotonic() + timeout
    while True:
        m = ws.recv_json(max(0.1, deadline - time.monotonic()))
        if m.get("id") == cid and "push" not in m:
            return m, before
        before.append(m)


def refused(ws, code, close):
    reply, _ = read_until_reply(ws)
    assert_error(reply, code, 1)
    got = ws.expect_close(20)
    assert got == close, "closed %r, want %r" % (got, close)
    return reply


def proxy_metric(h, name, kind="connect"):
    """herald_proxy_<name>_total summed over kinds (each test uses one)."""
    return h.metrics().get("herald_proxy_%s_total" % name, 0)


#---- connect ------------------------------------------------------------------

def test_connect_result():
    """The `connected` push first, then the reply, then a `subscribed` push
    for each of the answer's channels; info and roles count like a JWT's;
    the backend got the body and only the configured headers."""
    cfg = {"namespaces": {"staff": {"subscribe": "role:staff"}, "user": {"subscribe": "none"},
                          "news": {"publish": "subscribers"}}}
    with bf.Backend() as b:
        b.route("/c", ok_connect("42", expire_at=int(time.time()) + 3600, info={"name": "Ann"},
                                 roles=["staff"], channels=["news:all", "user:42"]))
        with herald(b, config=cfg, connect="/c") as h:
            ws = sock(h, {"Cookie": "sessionid=abc", "X-Secret": "never", "Origin": "http://o.example",
                          "User-Agent": "UA/1"}, data={"room": "lobby"})
            reply, before = read_until_reply(ws)
            assert [m.get("push") for m in before] == ["connected"], before
            hello = before[0]
            assert hello["user"] == "42" and isinstance(hello["expires_at"], int), hello
            r = assert_result(reply)
            assert r["user"] == "42" and r["client"] == hello["client"], (r, hello)
            subs = {ws.recv_push("subscribed", 20)["channel"] for _ in range(2)}
            assert subs == {"news:all", "user:42"}, subs
            # the roles of the answer: staff:* needs role staff
            assert_result(ws.cmd("subscribe", channel="staff:room"))
            # the info of the answer is in presence-less `from`
            assert_result(ws.cmd("publish", channel="news:all", data={"t": 1}))
            pub = ws.recv_push("message", 20)
            assert pub["from"]["info"] == {"name": "Ann"} and pub["from"]["user"] == "42", pub
            [req] = b.got("/c")
            body = json.loads(req["body"])
            assert body == {"client": hello["client"], "transport": "websocket",
                            "remote_addr": "127.0.0.1", "data": {"room": "lobby"}}, body
            hdr = {k.lower(): v for k, v in req["headers"]}
            assert hdr["cookie"] == "sessionid=abc" and hdr["user-agent"] == "UA/1", hdr
            assert hdr["origin"] == "http://o.example" and hdr["x-herald-proxy-key"] == KEY, hdr
            assert "x-secret" not in hdr, hdr
            assert proxy_metric(h, "results", "connect") == 1


def test_connect_without_data_omits_it():
    with bf.Backend() as b:
        b.route("/c", ok_connect())
        with herald(b, connect="/c") as h:
            assert_result(read_until_reply(sock(h))[0])
            [req] = b.got("/c")
            assert "data" not in json.loads(req["body"]), req["body"]


def test_connect_error_and_disconnect():
    """error: the backend's code, then 4003; disconnect: its code and reason."""
    with bf.Backend() as b:
        b.route("/c", bf.script([
            bf.answer(200, {"error": {"code": "login_first", "message": "log in first"}}),
            bf.answer(200, {"disconnect": {"code": 4501, "reason": "banned for a while"}})]))
        with herald(b, connect="/c") as h:
            m = refused(sock(h), "login_first", 4003)
            assert m["error"]["message"] == "log in first", m
            ws = sock(h)
            msg = ws.recv(20)
            assert msg[0] == "close" and msg[1] == 4501 and msg[2] == "banned for a while", msg
            assert proxy_metric(h, "refusals", "connect") == 2


def test_backend_down_is_unavailable_1013():
    """Down: unavailable and close 1013 (clients retry with backoff); one
    call per connect, never retried by Herald."""
    port = bf.closed_port()
    with Herald(env={"HERALD_PROXY_CONNECT_URL": "http://127.0.0.1:%d/c" % port}) as h:
        for _ in range(3):
            refused(sock(h), "unavailable", 1013)
        assert proxy_metric(h, "errors", "connect") == 3
        assert proxy_metric(h, "requests", "connect") == 3
        assert "proxy_unavailable" in h.log()


def test_backend_slow_times_out():
    with bf.Backend() as b:
        b.route("/c", bf.block())
        with herald(b, env={"HERALD_PROXY_TIMEOUT": "1"}, connect="/c") as h:
            t0 = time.monotonic()
            refused(sock(h), "unavailable", 1013)
            assert time.monotonic() - t0 >= 0.9
            assert proxy_metric(h, "timeouts", "connect") == 1
            b.release()


def test_garbage_huge_status_redirect():
    """Not JSON, not one of the three answers, a field of the wrong type, a
    body over HERALD_PROXY_MAX_RESPONSE, a 500, a redirect (not followed:
    its target is never asked): each is unavailable and 1013."""
    with bf.Backend() as b:
        target = b.route("/target", ok_connect())
        b.route("/c", bf.script([
            bf.answer(200, b"<html>not json</html>"),
            bf.answer(200, {"something": "else"}),
            bf.answer(200, {"result": {"user": 42}}),
            bf.huge(4 << 20),
            bf.answer(500, {"result": {"user": "alice"}}),
            bf.answer(302, b"", {"Location": target}),
            bf.answer(307, b"", {"Location": target})]))
        with herald(b, env={"HERALD_PROXY_MAX_RESPONSE": "65536"}, connect="/c") as h:
            for _ in range(7):
                refused(sock(h), "unavailable", 1013)
            assert b.got("/target") == []
            assert proxy_metric(h, "errors", "connect") == 7
            assert h.running()


def test_bounded_inflight_and_queue():
    """One call in flight and one queued per loop: the third connect is
    unavailable at once (counted as rejected); the held ones complete."""
    with bf.Backend() as b:
        b.route("/c", bf.block(ok_connect()))
        env = {"HERALD_THREADS": "1", "HERALD_PROXY_MAX_INFLIGHT": "1",
               "HERALD_PROXY_MAX_QUEUE": "1"}
        with herald(b, env=env, connect="/c") as h:
            first, second = sock(h), sock(h)
            b.wait_concurrent(1)
            wait_until(lambda: h.metrics().get(
                'herald_proxy_queued', 0) == 1, 20, what="a queued call")
            refused(sock(h), "unavailable", 1013)
            assert proxy_metric(h, "rejected", "connect") == 1
            b.release()
            for ws in (first, second):
                assert_result(read_until_reply(ws)[0])
            assert b.max_concurrent == 1, b.max_concurrent


#---- JWT or proxy ---------------------------------------------------------------

def test_precedence_jwt_default():
    """A JWT (connect command or handshake) is checked as before: the
    backend is not asked."""
    with bf.Backend() as b:
        b.route("/c", ok_connect("from-backend"))
        with herald(b, connect="/c") as h:
            reply, _ = read_until_reply(sock(h, token=h.token("jwt-user")))
            assert assert_result(reply)["user"] == "jwt-user"
            ws = h.client("jwt-user2")  # the handshake's Authorization
            assert ws.hello["user"] == "jwt-user2"
            assert b.got("/c") == []


def test_precedence_proxy():
    """HERALD_PROXY_CONNECT_PRECEDENCE=proxy: no JWT is checked - not the
    handshake's, not the command's; the backend decides (and gets the
    Authorization header, a forwarded one)."""
    with bf.Backend() as b:
        b.route("/c", ok_connect("from-backend"))
        with herald(b, env={"HERALD_PROXY_CONNECT_PRECEDENCE": "proxy"}, connect="/c") as h:
            tok = h.token("jwt-user")
            reply, before = read_until_reply(sock(h, {"Authorization": "Bearer " + tok}, token=tok))
            assert assert_result(reply)["user"] == "from-backend", reply
            assert before[0]["push"] == "connected" and before[0]["user"] == "from-backend"
            [req] = b.got("/c")
            assert dict((k.lower(), v) for k, v in req["headers"])["authorization"] == \
                "Bearer " + tok


#---- refresh ----------------------------------------------------------------------

def test_refresh_extends_then_expires():
    """At expire_at the refresh proxy is asked: a new expire_at extends,
    {"expired": true} closes 4001."""
    with bf.Backend() as b:
        b.route("/c", lambda hd, req: bf._send(hd, 200, {"result": {
            "user": "alice", "expire_at": int(time.time()) + 1}}))
        b.route("/r", bf.script([
            lambda hd, req: bf._send(hd, 200, {"result": {"expire_at": int(time.time()) + 1}}),
            bf.answer(200, {"result": {"expired": True}})]))
        with herald(b, connect="/c", refresh="/r") as h:
            ws = sock(h, {"Cookie": "s=1"})
            assert_result(read_until_reply(ws)[0])
            # about 2 s of deadlines; 20 s is generous, and below the 30 s
            # lws once waited when a refresh's answer armed the next deadline
            # outside its service (ws_conn.c, ws_arm)
            assert ws.expect_close(20) == 4001
            reqs = b.got("/r")
            assert len(reqs) == 2, reqs
            body = json.loads(reqs[0]["body"])
            assert body["user"] == "alice" and set(body) == {"client", "user"}, body
            assert dict((k.lower(), v) for k, v in reqs[0]["headers"])["cookie"] == "s=1"


def test_refresh_unavailable_keeps_the_connection():
    """A refresh the backend cannot answer does not log anyone out; no
    refresh proxy: close 4001 at expire_at."""
    with bf.Backend() as b:
        b.route("/c", lambda hd, req: bf._send(hd, 200, {"result": {
            "user": "alice", "expire_at": int(time.time()) + 1}}))
        b.route("/r", bf.answer(503, b""))
        with herald(b, connect="/c", refresh="/r") as h:
            ws = sock(h)
            assert_result(read_until_reply(ws)[0])
            wait_until(lambda: len(b.got("/r")) >= 1, 20, what="a refresh call")
            assert_result(ws.cmd("ping"))
        with herald(b, connect="/c") as h:
            ws = sock(h)
            assert_result(read_until_reply(ws)[0])
            assert ws.expect_close(30) == 4001


#---- subscribe, publish, rpc ------------------------------------------------------

SUB_NS = {"namespaces": {
    "team": {"subscribe": "authenticated", "subscribe_proxy": True, "publish": "subscribers"},
    "closed": {"subscribe": "none", "subscribe_proxy": True},
}}
PUB_NS = {"namespaces": {
    "mod": {"subscribe": "authenticated", "publish": "authenticated", "publish_proxy": True},
}}


def test_subscribe_proxy():
    """Namespace rules first (a refusal there never reaches the backend);
    the backend's error code reaches the client; allowed: subscribed."""
    def decide(hd, req):
        call = json.loads(req["body"])
        if call["channel"] == "team:" + call["user"]:
            bf._send(hd, 200, {"result": {}})
        else:
            bf._send(hd, 200, {"error": {"code": "not_your_team", "message": "no"}})
    with bf.Backend() as b:
        b.route("/s", decide)
        with herald(b, config=SUB_NS, subscribe="/s") as h:
            ws = h.client("alice")
            assert assert_result(ws.cmd("subscribe", channel="team:alice"))["channel"] == \
                "team:alice"
            assert_error(ws.cmd("subscribe", channel="team:bob"), "not_your_team")
            assert_error(ws.cmd("subscribe", channel="closed:x"), "forbidden")
            assert [json.loads(r["body"])["channel"] for r in b.got("/s")] == \
                ["team:alice", "team:bob"]
            # a subscription the backend allowed delivers
            assert_result(ws.cmd("publish", channel="team:alice", data="hi"))
            assert ws.recv_push("message", 20)["data"] == "hi"


def test_publish_proxy_replaces_or_refuses():
    def decide(hd, req):
        call = json.loads(req["body"])
        if call["data"] == "bad":
            bf._send(hd, 200, {"error": {"code": "moderated", "message": "not that"}})
        elif call["data"] == "edit":
            bf._send(hd, 200, {"result": {"data": {"edited": call["data"]}}})
        else:
            bf._send(hd, 200, {"result": {}})
    with bf.Backend() as b:
        b.route("/p", decide)
        with herald(b, config=PUB_NS, publish="/p") as h:
            sub = h.subscriber("mod:room", "bob")
            ws = h.client("alice")
            assert_error(ws.cmd("publish", channel="mod:room", data="bad"), "moderated")
            assert_result(ws.cmd("publish", channel="mod:room", data="edit"))
            assert_result(ws.cmd("publish", channel="mod:room", data="as is"))
            assert sub.recv_push("message", 20)["data"] == {"edited": "edit"}
            assert sub.recv_push("message", 20)["data"] == "as is"
            call = json.loads(b.got("/p")[0]["body"])
            assert call["user"] == "alice" and call["channel"] == "mod:room", call
            # a backend's publication (REST) is not sent to the proxy
            assert h.publish("mod:room", "rest").status_code == 200
            assert sub.recv_push("message", 20)["data"] == "rest"
            assert len(b.got("/p")) == 3


def test_rpc_and_method_routing():
    with bf.Backend() as b:
        b.route("/rpc", bf.echo())
        b.route("/orders", lambda hd, req: bf._send(hd, 200, {"result": {"data": "orders"}}))
        b.route("/err", bf.answer(200, {"error": {"code": "no_such_order", "message": "?"}}))
        env = {"HERALD_PROXY_RPC_METHODS": "orders.=%s,orders.err=%s"
               % (b.url("/orders"), b.url("/err"))}
        with herald(b, env=env, rpc="/rpc") as h:
            ws = h.client("alice")
            r = assert_result(ws.cmd("rpc", method="whoami", data={"x": 1}))
            assert r["data"]["body"] == {"client": ws.hello["client"], "user": "alice",
                                         "method": "whoami", "data": {"x": 1}}, r
            assert assert_result(ws.cmd("rpc", method="orders.list"))["data"] == "orders"
            assert_error(ws.cmd("rpc", method="orders.err1"), "no_such_order")
            assert_error(ws.cmd("rpc", method=""), "bad_request")
        with herald(b, connect="/rpc") as h:  # no RPC proxy
            assert_error(h.client("alice").cmd("rpc", method="x"), "not_found")


def test_rpc_needs_connect_first():
    with bf.Backend() as b:
        b.route("/rpc", bf.echo())
        with herald(b, rpc="/rpc") as h:
            ws = h.ws()
            assert ws.connect("/ws") == 101
            assert_error(ws.cmd("rpc", method="x"), "unauthorized")
            assert b.got("/rpc") == []


if __name__ == "__main__":
    run_tests(globals())
