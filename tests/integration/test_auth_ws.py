"""WebSocket authorization over time and space: token expiry on live sockets
(for every way of authenticating), `refresh` re-arming or not re-arming the
expiry, the namespace rules as a full allowed/denied matrix, personal
channels, and the Origin allowlist.

Already covered elsewhere and not repeated here: the plain expiry close
(test_lifecycle.test_token_expiry_closes_4001), refresh keeping a socket open
(test_ws_protocol.test_refresh_extends_session), the `channels` claim
(test_ws_protocol.test_channels_claim_grants_subscribe), the basic role and
anonymous rules, and allowed origins getting 101 (test_lifecycle)."""

import os
import time

from harness import (Herald, assert_error, assert_not_spinning, assert_result, before, jwt_parts,
                     make_jwt, run_tests, with_lifetimes)


def exp_of(tok):
    return jwt_parts(tok)[1]["exp"]


def anonymous_client(h):
    ws = h.ws()
    assert ws.connect("/ws") == 101
    ws.send_json({"id": 1, "op": "connect"})
    ws.hello = ws.recv_push("connected")
    assert_result(ws.wait_reply(1))
    ws._next_id = 2
    return ws


def connect_op_client(h, tok):
    ws = h.ws()
    assert ws.connect("/ws") == 101
    ws.send_json({"id": 1, "op": "connect", "token": tok})
    ws.hello = ws.recv_push("connected")
    assert_result(ws.wait_reply(1))
    ws._next_id = 2
    return ws


def wait_close(ws, deadline_s):
    """Reads until the close; returns (code, reason, wall time of arrival)."""
    while True:
        msg = ws.recv(timeout=max(0.05, deadline_s - time.time()))
        if msg[0] == "close":
            return msg[1], msg[2], time.time()


def assert_expiry_close(ws, exp, what):
    """The socket closes 4001 "token expired" at exp: never before it (the
    token is valid until then), and within a generous bound after it (a
    loaded machine runs the timer late; a missing close still fails)."""
    code, reason, at = wait_close(ws, exp + 15)
    assert code == 4001, "%s: close %r %r, want 4001 at exp" % (what, code, reason)
    assert reason == "token expired", "%s: close reason %r, want 'token expired'" % (what, reason)
    assert at >= exp - 0.25, "%s: closed %.2fs before exp" % (what, exp - at)
    assert at <= exp + 10, "%s: closed %.2fs after exp" % (what, at - exp)


def token_for(h, sub, lifetime):
    """A token (minted here, no CLI run) valid for at least `lifetime` s."""
    return h.jwt(sub=sub, exp=int(time.time()) + lifetime + 1)


#---- expiry ------------------------------------------------------------------
# Each scenario runs with_lifetimes: its setup has to finish before the
# token's exp, and a loaded machine gets longer-lived tokens (see harness).

def test_expiry_applies_to_every_way_of_authenticating():
    with Herald() as h:
        def scenario(lifetime):
            tok = token_for(h, "u", lifetime)
            exp = exp_of(tok)
            channel = "news%d" % lifetime
            with before(exp, "three clients, subscriptions and a publication"):
                header = h.client(token=tok)
                query = h.client(token=tok, via="query")
                op = connect_op_client(h, tok)
                for ws in (header, query, op):
                    assert ws.hello.get("expires_at") == exp, ws.hello
                    assert_result(ws.cmd("subscribe", channel=channel))
                h.publish(channel, "before exp")  # a live, subscribed socket is closed all the same
                for ws in (header, query, op):
                    assert ws.recv_push()["data"] == "before exp"
            for ws, what in ((header, "Authorization header"), (query, "?token="), (op, "connect op")):
                assert_expiry_close(ws, exp, what)

        with_lifetimes(scenario)
        assert h.healthy()


def test_refresh_rearms_expiry_to_the_new_token():
    """A refresh must move the deadline, not just cancel it: a socket
    refreshed with a token of twice the lifetime outlives the first one and
    closes at the second's exp."""
    with Herald() as h:
        def scenario(lifetime):
            first = token_for(h, "u", lifetime)
            second = token_for(h, "u", 2 * lifetime)
            with before(exp_of(first), "connecting and refreshing"):
                ws = h.client(token=first)
                res = assert_result(ws.cmd("refresh", token=second))
            assert res.get("expires_at") == exp_of(second), \
                "refresh result %r, want expires_at %d" % (res, exp_of(second))
            time.sleep(max(0, exp_of(first) + 0.7 - time.time()))  # until past the first exp
            with before(exp_of(second), "a ping past the first token's exp"):
                assert_result(ws.cmd("ping"))  # still open
            assert_expiry_close(ws, exp_of(second), "refreshed socket")

        with_lifetimes(scenario)


def test_refresh_with_long_token_keeps_socket_past_original_exp():
    with Herald() as h:
        def scenario(lifetime):
            first = token_for(h, "u", lifetime)
            channel = "news%d" % lifetime
            with before(exp_of(first), "connecting, subscribing and refreshing"):
                ws = connect_op_client(h, first)  # refresh works for connect-op sessions too
                assert_result(ws.cmd("subscribe", channel=channel))
                longer = token_for(h, "u", 600)
                res = assert_result(ws.cmd("refresh", token=longer))
            assert res.get("expires_at") == exp_of(longer), res
            time.sleep(max(0, exp_of(first) + 1.2 - time.time()))  # until past the first exp
            h.publish(channel, "still here")
            assert ws.recv_push()["data"] == "still here"
            assert_result(ws.cmd("ping"))

        with_lifetimes(scenario)


def test_refused_refresh_leaves_original_expiry():
    with Herald() as h:
        def scenario(lifetime):
            tok = token_for(h, "u", lifetime)
            with before(exp_of(tok), "connecting and four refused refreshes"):
                ws = h.client(token=tok)
                assert_error(ws.cmd("refresh", token=token_for(h, "v", 600)), "forbidden")
                assert_error(ws.cmd("refresh", token=h.jwt(sub="u", exp=int(time.time()) - 10)),
                             "unauthorized")
                assert_error(ws.cmd("refresh", token="garbage"), "unauthorized")
                assert_error(ws.cmd("refresh"), "bad_request")
                assert_result(ws.cmd("ping"))  # refused refreshes do not close the socket
            assert ws.hello["user"] == "u"
            assert_expiry_close(ws, exp_of(tok), "socket after refused refreshes")

        with_lifetimes(scenario)


#---- namespace rules ---------------------------------------------------------

RULES = {"namespaces": {
    "lobby":   {"subscribe": "anonymous", "publish": "anonymous"},
    "feed":    {"subscribe": "anonymous", "publish": "none"},
    "members": {"subscribe": "authenticated", "publish": "authenticated"},
    "room":    {"subscribe": "authenticated", "publish": "subscribers"},
    "mods":    {"subscribe": "role:mod", "publish": "role:mod"},
    "sealed":  {"subscribe": "none", "publish": "none"},
}}

CHANNELS = ["lobby:1", "feed:1", "members:1", "room:1", "mods:1", "sealed:1", "news"]


def test_namespace_rule_matrix():
    """Every rule, for subscribe and publish, allowed and denied. A watcher
    subscribed to every channel must receive exactly the allowed publications."""
    with Herald(config=RULES, env={"HERALD_ANONYMOUS": "true"}) as h:
        watcher = h.client(token=h.jwt(sub="watcher", roles=["mod"], channels=["sealed:*"]))
        for ch in CHANNELS:
            assert_result(watcher.cmd("subscribe", channel=ch))
        anon = anonymous_client(h)
        user = h.client("ulla")
        mod = h.client("mo", roles=["mod"])
        modx = h.client("mox", roles=["moderator", "Mod", "mod:x"])  # near misses of role:mod
        svc = h.client("svc", roles=["publisher"])
        who = {"anon": anon, "user": user, "mod": mod, "modx": modx, "svc": svc}
        # (who, op, channel, allowed), in order: the room rule depends on subscribing first
        matrix = [
            ("anon", "sub", "lobby:1", True), ("anon", "pub", "lobby:1", True),
            ("anon", "sub", "feed:1", True), ("anon", "pub", "feed:1", False),
            ("anon", "sub", "members:1", False), ("anon", "pub", "members:1", False),
            ("anon", "sub", "room:1", False), ("anon", "pub", "room:1", False),
            ("anon", "sub", "mods:1", False), ("anon", "pub", "mods:1", False),
            ("anon", "sub", "sealed:1", False), ("anon", "pub", "sealed:1", False),
            ("anon", "sub", "news", False), ("anon", "pub", "news", False),
            ("anon", "sub", "user:ulla", False),
            ("user", "sub", "lobby:1", True), ("user", "pub", "lobby:1", True),
            ("user", "sub", "feed:1", True), ("user", "pub", "feed:1", False),
            ("user", "sub", "members:1", True), ("user", "pub", "members:1", True),
            ("user", "pub", "room:1", False), ("user", "sub", "room:1", True), ("user", "pub", "room:1", True),
            ("user", "sub", "mods:1", False), ("user", "pub", "mods:1", False),
            ("user", "sub", "sealed:1", False), ("user", "pub", "sealed:1", False),
            ("user", "sub", "news", True), ("user", "pub", "news", False),
            ("mod", "sub", "mods:1", True), ("mod", "pub", "mods:1", True),
            ("mod", "sub", "sealed:1", False), ("mod", "pub", "sealed:1", False),
            ("mod", "pub", "members:1", True),
            ("modx", "sub", "mods:1", False), ("modx", "pub", "mods:1", False),
            ("modx", "sub", "members:1", True),
            ("svc", "pub", "sealed:1", True), ("svc", "pub", "feed:1", True), ("svc", "pub", "mods:1", True),
        ]
        expected = []
        problems = []
        for name, op, ch, allowed in matrix:
            ws = who[name]
            if op == "sub":
                reply = ws.cmd("subscribe", channel=ch)
            else:
                data = "%s->%s" % (name, ch)
                reply = ws.cmd("publish", channel=ch, data=data)
                if allowed:
                    expected.append((ch, data))
            ok = "result" in reply
            if ok != allowed:
                problems.append("%s %s %s: %r (want %s)" % (name, op, ch, reply, "allowed" if allowed else "forbidden"))
            elif not allowed and reply.get("error", {}).get("code") != "forbidden":
                problems.append("%s %s %s: %r (want error forbidden)" % (name, op, ch, reply))
        assert not problems, "namespace rules broken:\n  " + "\n  ".join(problems)
        got = []
        for _ in expected:
            m = watcher.recv_push()
            got.append((m["channel"], m["data"]))
        assert sorted(got) == sorted(expected), "watcher got %r, want %r" % (got, expected)
        watcher.assert_quiet_until_marker(h.publish, "news")


def test_connect_deadline_after_anonymous_connect_does_not_spin():
    """An anonymous connection (no expiry) whose connect deadline passes
    after it connected: lws 4.1.6 ignores LWS_SET_TIMER_USEC_CANCEL, the
    deadline fired anyway, and re-arming from the timer with that value
    spun its loop at 100% CPU, deaf to every socket on it."""
    with Herald(config=RULES, env={"HERALD_ANONYMOUS": "true", "HERALD_CONNECT_TIMEOUT": "1",
                                   "HERALD_THREADS": "1"}) as h:
        anon = anonymous_client(h)
        authed = h.client("ulla")
        time.sleep(2.5)  # both 1 s deadlines have passed (their timers may run late: the
        # spin check below watches for up to 10 s)
        assert_not_spinning(h.proc.pid, "herald with two connections past their connect deadline")
        assert_result(anon.cmd("ping", timeout=10))
        assert_result(authed.cmd("ping", timeout=10))
        assert_result(anon.cmd("subscribe", channel="lobby:x", timeout=10))


def test_anonymous_connection_stays_anonymous():
    """An anonymous socket has no user to act as: no personal channel, and
    publishing where only subscribers may publish needs a subscription it
    cannot get."""
    with Herald(config=RULES, env={"HERALD_ANONYMOUS": "true"}) as h:
        a = anonymous_client(h)
        assert a.hello.get("user") in (None, ""), "anonymous connected push names a user: %r" % a.hello
        for ch in ("user:", "user:anonymous", "user:null", "user:" + str(a.hello.get("user"))):
            reply = a.cmd("subscribe", channel=ch)
            assert "error" in reply and reply["error"].get("code") in ("forbidden", "bad_request"), (ch, reply)
        assert_result(a.cmd("subscribe", channel="lobby:x"))
        assert_result(a.cmd("ping"))


#---- personal channels -------------------------------------------------------

def test_personal_channel_reaches_every_connection_of_its_user_only():
    with Herald() as h:
        tok = h.token("alice")
        mine = [h.client(token=tok), h.client(token=tok, via="query"), connect_op_client(h, tok)]
        for ws in mine:
            assert_result(ws.cmd("subscribe", channel="user:alice"))
        alice2 = h.client("alice2")
        assert_result(alice2.cmd("subscribe", channel="user:alice2"))
        for other, ch in [(alice2, "user:alice"), (mine[0], "user:alice2"), (mine[0], "user:alic"),
                          (mine[0], "user:ALICE"), (h.client("root", roles=["admin"]), "user:alice"),
                          (h.client("pub", roles=["publisher"]), "user:alice")]:
            assert_error(other.cmd("subscribe", channel=ch), "forbidden")
        mail = h.client("bob@example.com")
        assert_result(mail.cmd("subscribe", channel="user:bob@example.com"))
        h.publish("user:alice", {"n": 1})
        h.publish("user:alice2", {"n": 2})
        h.publish("user:bob@example.com", {"n": 3})
        for ws in mine:
            assert ws.recv_push() == {"push": "message", "channel": "user:alice", "data": {"n": 1}}
        assert alice2.recv_push()["data"] == {"n": 2}
        assert mail.recv_push()["data"] == {"n": 3}
        # and nothing else: markers on each socket's own channel come next
        marker = mine[0].assert_quiet_until_marker(h.publish, "user:alice")
        for ws in mine[1:]:
            assert ws.recv_json() == {"push": "message", "channel": "user:alice", "data": marker}
        alice2.assert_quiet_until_marker(h.publish, "user:alice2")
        mail.assert_quiet_until_marker(h.publish, "user:bob@example.com")


#---- origins -----------------------------------------------------------------

def test_disallowed_origin_is_403_before_auth():
    with Herald(env={"HERALD_ALLOWED_ORIGINS": "https://a.example", "HERALD_ANONYMOUS": "true"}) as h:
        tok = h.token("alice")
        for path, headers in [("/ws", {"Authorization": "Bearer " + tok}), ("/ws?token=" + tok, {}),
                              ("/ws", {})]:
            for origin in ("https://b.example", "null", "http://a.example", "https://a.example:8443"):
                ws = h.ws()
                status = ws.connect(path, dict(headers, Origin=origin))
                assert status == 403, "Origin %s on %s (%s): HTTP %s, want 403" % (
                    origin, path.split("?")[0] + ("?token" if "?" in path else ""), list(headers), status)
            ws = h.ws()
            assert ws.connect(path, dict(headers, Origin="https://a.example")) == 101, (path, headers)
            ws.close()
        assert h.healthy()


def test_key_rotation_by_kid():
    """HERALD_JWT_KID names the primary key and HERALD_JWT_KEYS keeps the old
    one during a rotation: tokens of either key connect (chosen by kid), a
    kid nobody configured and an old-key token without kid are refused, and
    tokens Herald issues carry the primary kid."""
    old = "the-old-secret-0123456789-0123456789"
    with Herald(env={"HERALD_JWT_KID": "k2", "HERALD_JWT_KEYS": "k1:" + old}) as h:
        now = int(time.time())
        claims = {"sub": "rot", "exp": now + 600, "iat": now}
        cases = [
            (make_jwt(claims, old, header_extra={"kid": "k1"}), 101),
            (make_jwt(claims, h.secret, header_extra={"kid": "k2"}), 101),
            (make_jwt(claims, old, header_extra={"kid": "k3"}), 401),
            (make_jwt(claims, old, header_extra={"kid": "k2"}), 401),  # wrong key for kid
            (make_jwt(claims, old), 401),  # no kid: only the primary key could match
        ]
        for token, want in cases:
            ws = h.ws()
            got = ws.connect("/ws", {"Authorization": "Bearer " + token})
            assert got == want, "kid %r: HTTP %s, want %s" % (jwt_parts(token)[0].get("kid"), got, want)
            ws.abort()
        issued = h.token("rot")
        assert jwt_parts(issued)[0].get("kid") == "k2", jwt_parts(issued)[0]
        ws = h.ws()
        assert ws.connect("/ws", {"Authorization": "Bearer " + issued}) == 101
        ws.abort()


if __name__ == "__main__":
    run_tests(globals())
