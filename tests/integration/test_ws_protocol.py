"""WebSocket protocol: handshake authentication, the connect op, commands,
replies, permissions, fan-out order, and interoperability with the standard
`websockets` client library."""

import asyncio
import json
import os
import re
import time

import websockets

from harness import (OP_CONT, OP_TEXT, Herald, assert_error, assert_result, before, jwt_parts, make_jwt,
                     run_tests, wait_until, with_lifetimes)

CLIENT_ID = re.compile(r"^test\.\d+$")
CHAT = {"namespaces": {"chat": {"subscribe": "authenticated", "publish": "subscribers"}}}


def check_connected(push, sub, token):
    assert push.get("push") == "connected", push
    assert CLIENT_ID.match(str(push.get("client"))), "client id %r is not test.<n>" % push.get("client")
    assert push.get("user") == sub, push
    assert push.get("expires_at") == jwt_parts(token)[1]["exp"], \
        "expires_at %r != token exp %r" % (push.get("expires_at"), jwt_parts(token)[1]["exp"])


#---- handshake authentication -------------------------------------------------

def test_bearer_header_gets_connected_push_first():
    with Herald() as h:
        tok = h.token("alice")
        ws = h.ws()
        assert ws.connect("/ws", {"Authorization": "Bearer " + tok}) == 101
        check_connected(ws.recv_json(), "alice", tok)
        assert_result(ws.cmd("ping"))


def test_query_token_gets_connected_push():
    with Herald() as h:
        tok = h.token("bob", ttl=120)
        ws = h.ws()
        assert ws.connect("/ws?token=" + tok) == 101
        push = ws.recv_json()
        check_connected(push, "bob", tok)
        assert abs(push["expires_at"] - (time.time() + 120)) < 10, push


def test_client_ids_are_distinct():
    with Herald() as h:
        a, b = h.client("alice"), h.client("alice")
        assert a.hello["client"] != b.hello["client"], (a.hello, b.hello)


def bad_tokens(h):
    now = int(time.time())
    good = h.jwt()
    head, body, sig = good.split(".")
    forged_body = make_jwt({"sub": "mallory", "exp": now + 3600}, h.secret).split(".")[1]
    return {
        "garbage": "not-a-jwt",
        "empty segments": "..",
        "wrong secret": make_jwt({"sub": "alice", "exp": now + 3600}, "wrong-secret"),
        "expired": make_jwt({"sub": "alice", "exp": now - 60}, h.secret),
        "alg none": make_jwt({"sub": "alice", "exp": now + 3600}, h.secret, alg="none"),
        "alg none, HMAC signature kept": make_jwt({"sub": "alice", "exp": now + 3600}, h.secret,
                                                  alg="none") + sig,
        "HS512": make_jwt({"sub": "alice", "exp": now + 3600}, h.secret, alg="HS512"),
        "RS256 header, HMAC signature": make_jwt({"sub": "alice", "exp": now + 3600}, h.secret,
                                                 alg="RS256"),
        "missing sub": make_jwt({"exp": now + 3600}, h.secret),
        "payload swapped": head + "." + forged_body + "." + sig,
        "signature stripped": head + "." + body + ".",
    }


def test_bad_tokens_refused_with_401_before_upgrade():
    with Herald() as h:
        for name, tok in bad_tokens(h).items():
            for how in ("header", "query"):
                ws = h.ws()
                if how == "header":
                    status = ws.connect("/ws", {"Authorization": "Bearer " + tok})
                else:
                    status = ws.connect("/ws?token=" + tok)
                assert status == 401, "%s token via %s: HTTP %s, want 401" % (name, how, status)
        assert h.healthy()


def test_token_without_exp_refused():
    # SPEC §2: "exp is enforced"; a token that never expires is not accepted.
    with Herald() as h:
        ws = h.ws()
        tok = make_jwt({"sub": "alice"}, h.secret)
        assert ws.connect("/ws", {"Authorization": "Bearer " + tok}) == 401


def test_token_not_yet_valid_refused():
    # SPEC §2: nbf is enforced where present.
    with Herald() as h:
        ws = h.ws()
        tok = h.jwt(nbf=int(time.time()) + 3600)
        assert ws.connect("/ws", {"Authorization": "Bearer " + tok}) == 401


def test_python_crafted_token_accepted():
    with Herald() as h:
        tok = h.jwt(sub="carol")
        ws = h.client(token=tok)
        check_connected(ws.hello, "carol", tok)


#---- the connect op ----------------------------------------------------------

def test_connect_op_sends_connected_push_then_reply():
    with Herald() as h:
        tok = h.token("alice")
        ws = h.ws()
        assert ws.connect("/ws") == 101
        ws.send_json({"id": 1, "op": "connect", "token": tok})
        push = ws.recv_json()
        check_connected(push, "alice", tok)
        reply = ws.recv_json()
        assert reply.get("id") == 1, "second message should be the reply to id 1: %r" % reply
        res = assert_result(reply)
        assert res.get("client") == push["client"] and res.get("user") == "alice" \
            and res.get("expires_at") == push["expires_at"], (res, push)
        assert_result(ws.cmd("ping"))


def test_connect_op_with_bad_token_closes_4001():
    with Herald() as h:
        ws = h.ws()
        assert ws.connect("/ws") == 101
        ws.send_json({"id": 1, "op": "connect", "token": bad_tokens(h)["wrong secret"]})
        assert_error(ws.recv_json(), "unauthorized", cid=1)
        assert ws.expect_close() == 4001


def test_connect_op_with_expired_token_closes_4001():
    with Herald() as h:
        ws = h.ws()
        assert ws.connect("/ws") == 101
        ws.send_json({"id": 1, "op": "connect", "token": bad_tokens(h)["expired"]})
        assert_error(ws.recv_json(), "unauthorized", cid=1)
        assert ws.expect_close() == 4001


def test_no_connect_within_timeout_closes_4001():
    with Herald(env={"HERALD_CONNECT_TIMEOUT": "1"}) as h:
        ws = h.ws()
        t0 = time.monotonic()
        assert ws.connect("/ws") == 101
        assert ws.expect_close(timeout=20) == 4001
        elapsed = time.monotonic() - t0
        # never before the timeout; after it within a bound generous enough
        # for a loaded machine (no close at all fails above)
        assert 0.5 <= elapsed <= 15, "closed after %.2fs with a 1 s connect timeout" % elapsed


def test_authenticated_client_not_closed_by_connect_timeout():
    with Herald(env={"HERALD_CONNECT_TIMEOUT": "1"}) as h:
        ws = h.client("alice")
        time.sleep(1.6)
        assert_result(ws.cmd("ping"))


def test_ops_before_connect_are_unauthorized_and_connection_stays():
    with Herald() as h:
        ws = h.ws()
        assert ws.connect("/ws") == 101
        assert_error(ws.cmd("subscribe", channel="news"), "unauthorized", cid=1)
        assert_error(ws.cmd("ping"), "unauthorized", cid=2)
        ws.send_json({"id": 3, "op": "connect", "token": h.token("alice")})
        ws.recv_push("connected")
        assert_result(ws.wait_reply(3))
        assert_result(ws.cmd("subscribe", channel="news"))


def test_connect_without_token_refused_when_not_anonymous():
    with Herald() as h:
        ws = h.ws()
        assert ws.connect("/ws") == 101
        ws.send_json({"id": 1, "op": "connect"})
        assert_error(ws.recv_json(), "unauthorized", cid=1)
        assert ws.expect_close() == 4001


def test_anonymous_connect_when_enabled():
    with Herald(env={"HERALD_ANONYMOUS": "true"}) as h:
        ws = h.ws()
        assert ws.connect("/ws") == 101
        ws.send_json({"id": 1, "op": "connect"})
        push = ws.recv_push("connected")
        assert push.get("user") == "" and CLIENT_ID.match(str(push.get("client"))), push
        res = assert_result(ws.wait_reply(1))
        assert res.get("user") == "" and res.get("client") == push["client"], res
        assert_result(ws.cmd("ping"))


#---- commands ----------------------------------------------------------------

def test_ping_subscribe_unsubscribe_results():
    with Herald() as h:
        ws = h.client()
        assert assert_result(ws.cmd("ping")) == {}
        res = assert_result(ws.cmd("subscribe", channel="news"))
        assert res.get("channel") == "news", res
        res = assert_result(ws.cmd("subscribe", channel="news"))
        assert res.get("channel") == "news", "subscribing twice must not be an error: %r" % res
        assert assert_result(ws.cmd("unsubscribe", channel="news")) == {}
        assert assert_result(ws.cmd("unsubscribe", channel="never-subscribed")) == {}


def test_every_command_gets_exactly_one_reply():
    with Herald() as h:
        ws = h.client()
        ids = []
        for op, args in [("ping", {}), ("subscribe", {"channel": "a"}), ("nope", {}),
                         ("subscribe", {"channel": "bad name"}), ("unsubscribe", {"channel": "a"}),
                         ("publish", {"channel": "a", "data": 1})]:
            cid = ws.next_id()
            ids.append(cid)
            msg = {"id": cid, "op": op}
            msg.update(args)
            ws.send_json(msg)
        last = ws.cmd("ping")
        assert_result(last)
        got = sorted(m.get("id") for m in ws.pending)
        assert got == ids, "replies by id %r, want exactly one each for %r" % (got, ids)


# (raw text, id the reply must carry or None when no usable id exists)
MALFORMED = [
    ("not json", None),
    ("{\"id\":1,", None),
    ("[1,2,3]", None),
    ("\"a string\"", None),
    ("42", None),
    ("null", None),
    ("", None),
    ("{}", None),
    ("{\"op\":\"ping\"}", None),
    ("{\"id\":0,\"op\":\"ping\"}", None),
    ("{\"id\":-3,\"op\":\"ping\"}", None),
    ("{\"id\":\"7\",\"op\":\"ping\"}", None),
    ("{\"id\":1.5,\"op\":\"ping\"}", None),
    ("{\"id\":true,\"op\":\"ping\"}", None),
    ("{\"id\":11}", 11),
    ("{\"id\":12,\"op\":7}", 12),
    ("{\"id\":13,\"op\":\"frobnicate\"}", 13),
    ("{\"id\":14,\"op\":\"subscribe\"}", 14),
    ("{\"id\":15,\"op\":\"subscribe\",\"channel\":5}", 15),
    ("{\"id\":16,\"op\":\"subscribe\",\"channel\":null}", 16),
    ("{\"id\":17,\"op\":\"unsubscribe\"}", 17),
    ("{\"id\":18,\"op\":\"unsubscribe\",\"channel\":[\"a\"]}", 18),
    ("{\"id\":19,\"op\":\"publish\",\"channel\":\"a\"}", 19),
    ("{\"id\":20,\"op\":\"publish\",\"data\":1}", 20),
    ("{\"id\":21,\"op\":\"publish\",\"channel\":{},\"data\":1}", 21),
]


def test_malformed_messages_get_bad_request_and_connection_survives():
    with Herald() as h:
        # a publisher, so publish errors can only be about the malformed fields
        ws = h.client("svc", roles=["publisher"])
        for text, cid in MALFORMED:
            ws.send_text(text)
            reply = ws.recv_json()
            assert_error(reply, "bad_request")
            if cid is not None:
                assert reply.get("id") == cid, "reply to %r has id %r" % (text, reply.get("id"))
            else:
                rid = reply.get("id")
                assert not (type(rid) is int and rid > 0), "reply to %r has id %r" % (text, rid)
        assert_result(ws.cmd("subscribe", channel="after"))
        assert_result(ws.cmd("publish", channel="after", data={"still": "alive"}))
        assert ws.recv_push()["data"] == {"still": "alive"}


def test_invalid_channel_names_are_bad_request():
    with Herald() as h:
        ws = h.client("svc", roles=["admin"])
        for name in ["", "a" * 256, "has space", "slash/x", "star*", "hash#", "quote\"",
                     "caf\u00e9", "tab\tx", "new\nline", "percent%"]:
            assert_error(ws.cmd("subscribe", channel=name), "bad_request")
            assert_error(ws.cmd("publish", channel=name, data=1), "bad_request")
        for name in ["a" * 255, "A-z_0.9:x@y=z,w", "x", "ns:sub:deeper"]:
            res = assert_result(ws.cmd("subscribe", channel=name))
            assert res.get("channel") == name, res


def test_subscription_limit_gives_too_large():
    with Herald(env={"HERALD_MAX_SUBSCRIPTIONS": "3"}) as h:
        ws = h.client()
        for ch in ("c1", "c2", "c3"):
            assert_result(ws.cmd("subscribe", channel=ch))
        assert_error(ws.cmd("subscribe", channel="c4"), "too_large")
        assert_result(ws.cmd("subscribe", channel="c1"))  # already held: not a new one
        assert_result(ws.cmd("unsubscribe", channel="c1"))
        assert_result(ws.cmd("subscribe", channel="c4"))
        assert_error(ws.cmd("subscribe", channel="c5"), "too_large")


#---- permissions -------------------------------------------------------------

def test_normal_user_cannot_publish_in_default_namespace():
    with Herald() as h:
        ws = h.client("alice")
        assert_result(ws.cmd("subscribe", channel="news"))
        assert_error(ws.cmd("publish", channel="news", data="hi"), "forbidden")
        h.publish("news", "from backend")
        assert ws.recv_push()["data"] == "from backend"


def test_publisher_and_admin_roles_publish_anywhere_and_see_own_messages():
    with Herald(config=CHAT) as h:
        for role in ("publisher", "admin"):
            ws = h.client("svc-" + role, roles=[role])
            for ch in ("news", "chat:room", "user:someone"):
                if ch != "user:someone":
                    assert_result(ws.cmd("subscribe", channel=ch))
                assert_result(ws.cmd("publish", channel=ch, data={"by": role, "ch": ch}))
            got = [ws.recv_push() for _ in range(2)]
            assert [(m["channel"], m["data"]) for m in got] == \
                [("news", {"by": role, "ch": "news"}), ("chat:room", {"by": role, "ch": "chat:room"})], got


def test_subscribers_namespace_lets_only_subscribers_publish():
    with Herald(config=CHAT) as h:
        alice, bob, carol = h.client("alice"), h.client("bob"), h.client("carol")
        for ws in (alice, bob):
            assert_result(ws.cmd("subscribe", channel="chat:x"))
        assert_result(alice.cmd("publish", channel="chat:x", data={"text": "hello"}))
        for ws in (alice, bob):
            msg = ws.recv_push()
            assert (msg.get("channel"), msg.get("data")) == ("chat:x", {"text": "hello"}), msg
        assert_error(carol.cmd("publish", channel="chat:x", data="intruder"), "forbidden")
        assert_error(alice.cmd("publish", channel="other", data="x"), "forbidden")
        assert_result(alice.cmd("unsubscribe", channel="chat:x"))
        assert_error(alice.cmd("publish", channel="chat:x", data="gone"), "forbidden")
        bob.assert_quiet_until_marker(h.publish, "chat:x")


def test_personal_channel_only_for_its_user():
    with Herald() as h:
        a1, a2, bob = h.client("alice"), h.client("alice"), h.client("bob")
        for ws in (a1, a2):
            assert_result(ws.cmd("subscribe", channel="user:alice"))
        assert_error(bob.cmd("subscribe", channel="user:alice"), "forbidden")
        assert_result(bob.cmd("subscribe", channel="user:bob"))
        h.publish("user:alice", {"note": "for alice"})
        for ws in (a1, a2):
            assert ws.recv_push() == {"push": "message", "channel": "user:alice", "data": {"note": "for alice"}}
        bob.assert_quiet_until_marker(h.publish, "user:bob")


NAMESPACES = {"namespaces": {
    "private": {"subscribe": "none", "publish": "none"},
    "vip": {"subscribe": "role:vip", "publish": "role:vip"},
    "open": {"subscribe": "anonymous", "publish": "none"},
}}


def test_channels_claim_grants_subscribe():
    with Herald(config=NAMESPACES) as h:
        plain = h.client("alice")
        assert_error(plain.cmd("subscribe", channel="private:team-a"), "forbidden")
        ws = h.client(token=h.jwt(sub="bob", channels=["private:team-*", "private:exact"]))
        assert_result(ws.cmd("subscribe", channel="private:team-a"))
        assert_result(ws.cmd("subscribe", channel="private:exact"))
        assert_error(ws.cmd("subscribe", channel="private:other"), "forbidden")
        assert_error(ws.cmd("subscribe", channel="private:exactly"), "forbidden")
        assert_error(ws.cmd("publish", channel="private:team-a", data=1), "forbidden")
        h.publish("private:team-a", "backends may publish even where publish is none")
        assert ws.recv_push()["channel"] == "private:team-a"


def test_role_rule():
    with Herald(config=NAMESPACES) as h:
        vip, pleb = h.client("v", roles=["vip"]), h.client("p", roles=["other"])
        assert_result(vip.cmd("subscribe", channel="vip:lounge"))
        assert_result(vip.cmd("publish", channel="vip:lounge", data="cheers"))
        assert vip.recv_push()["data"] == "cheers"
        assert_error(pleb.cmd("subscribe", channel="vip:lounge"), "forbidden")
        assert_error(pleb.cmd("publish", channel="vip:lounge", data="x"), "forbidden")


def test_anonymous_rules():
    with Herald(config=NAMESPACES, env={"HERALD_ANONYMOUS": "true"}) as h:
        ws = h.ws()
        assert ws.connect("/ws") == 101
        ws.send_json({"id": 1, "op": "connect"})
        ws.recv_push("connected")
        assert_result(ws.wait_reply(1))
        ws._next_id = 2
        assert_error(ws.cmd("subscribe", channel="news"), "forbidden")
        assert_result(ws.cmd("subscribe", channel="open:lobby"))
        h.publish("open:lobby", "welcome")
        assert ws.recv_push()["data"] == "welcome"


def test_refresh_extends_session():
    with Herald() as h:
        def scenario(lifetime):
            short = h.jwt(sub="alice", exp=int(time.time()) + lifetime + 1)
            exp = jwt_parts(short)[1]["exp"]
            fresh = h.jwt(sub="alice", exp=int(time.time()) + 600)
            with before(exp, "connecting and refreshing"):
                ws = h.client(token=short)
                res = assert_result(ws.cmd("refresh", token=fresh))
                assert res.get("expires_at") == jwt_parts(fresh)[1]["exp"], res
                reply = ws.cmd("refresh", token=h.jwt(sub="mallory", exp=int(time.time()) + 600))
                assert "error" in reply and reply["error"].get("code") in (
                    "unauthorized", "forbidden", "bad_request"), reply
            time.sleep(max(0, exp + 1 - time.time()))  # until past the old token's exp
            assert_result(ws.cmd("ping"))  # the old token's expiry no longer applies

        with_lifetimes(scenario)


#---- delivery ----------------------------------------------------------------

def test_two_subscribers_receive_200_publications_in_order():
    with Herald() as h:
        a, b = h.subscriber("feed", "alice"), h.subscriber("feed", "bob")
        pub = h.client("svc", roles=["publisher"])
        assert_result(pub.cmd("subscribe", channel="feed"))
        for i in range(200):
            assert assert_result(pub.cmd("publish", channel="feed", data={"n": i})) == {}
        for ws in (a, b, pub):
            got = [ws.recv_push() for _ in range(200)]
            assert all(m["channel"] == "feed" for m in got)
            ns = [m["data"]["n"] for m in got]
            assert ns == list(range(200)), "order/loss for %s: %r" % (ws.hello["user"], ns[:20])


def test_fanout_to_many_clients():
    with Herald() as h:
        clients = [h.client(token=h.jwt(sub="u%d" % i)) for i in range(50)]
        for ws in clients:
            assert_result(ws.cmd("subscribe", channel="crowd"))
        for i in range(5):
            h.publish("crowd", i)
        for ws in clients:
            assert [ws.recv_push()["data"] for _ in range(5)] == [0, 1, 2, 3, 4]


def test_unsubscribed_client_stops_receiving():
    with Herald() as h:
        ws = h.client()
        assert_result(ws.cmd("subscribe", channel="x"))
        assert_result(ws.cmd("subscribe", channel="y"))
        h.publish("x", 1)
        assert ws.recv_push()["data"] == 1
        assert_result(ws.cmd("unsubscribe", channel="x"))
        h.publish("x", 2)
        h.publish("y", 3)
        msg = ws.recv_push()
        assert (msg["channel"], msg["data"]) == ("y", 3), "got %r after unsubscribing from x" % msg


def test_many_subscriptions_on_one_connection_grow_and_shrink():
    """A connection holds its first subscription inline, a few in an array
    and many in a map (gateway/conn.c): every step of the way it receives
    exactly the channels it holds, in order, and unsubscribing back to none
    and subscribing again works."""
    with Herald() as h:
        ws = h.client()
        names = ["many.%d" % i for i in range(40)]

        def check(held):
            # one publication to each of the 40 channels, then a marker on a
            # held one: exactly the held ones arrive, in order, then the marker
            for n in names:
                h.publish(n, n)
            marker = min(held)
            h.publish(marker, "end")
            got = [ws.recv_push() for _ in range(len(held) + 1)]
            assert [(m["channel"], m["data"]) for m in got] == \
                [(n, n) for n in names if n in held] + [(marker, "end")], got

        held = []
        for n in names:  # 1 inline, then arrays of 4, 8, 16, then the map
            assert assert_result(ws.cmd("subscribe", channel=n))["channel"] == n
            held.append(n)
            if len(held) in (1, 2, 5, 16, 17, 40):
                check(set(held))
        assert_result(ws.cmd("subscribe", channel="many.7"))  # held: not a second one
        for n in names[::2]:
            assert_result(ws.cmd("unsubscribe", channel=n))
        check(set(names[1::2]))
        for n in names[1::2]:
            assert_result(ws.cmd("unsubscribe", channel=n))
        assert_result(ws.cmd("subscribe", channel="many.3"))
        check({"many.3"})
    with Herald() as h:  # shrinking within the array, down to none and back
        ws = h.client()
        for n in ("a", "b", "c"):
            assert_result(ws.cmd("subscribe", channel=n))
        for n in ("b", "a", "c"):
            assert_result(ws.cmd("unsubscribe", channel=n))
        assert_result(ws.cmd("subscribe", channel="c"))
        for n in ("a", "b", "c"):
            h.publish(n, n)
        m = ws.recv_push()
        assert (m["channel"], m["data"]) == ("c", "c"), m


def test_data_of_any_json_type_round_trips():
    values = [None, True, 0, -1.5, "text", "\u00e9\u4e2d\U0001F600", [1, [2, {"a": None}]],
              {"nested": {"deep": [1, 2, 3]}, "s": "quote\" backslash\\ nl\n"}]
    with Herald() as h:
        ws = h.subscriber("types")
        for v in values:
            h.publish("types", v)
        for v in values:
            msg = ws.recv_push()
            assert msg["channel"] == "types" and msg["data"] == v and "data" in msg, (v, msg)


def test_ws_ping_frame_is_answered_with_pong():
    with Herald() as h:
        ws = h.client()
        ws.send_ping(b"are-you-there")
        assert ws.wait_pong(b"are-you-there")
        assert_result(ws.cmd("ping"))


def test_fragmented_command_is_reassembled():
    with Herald() as h:
        ws = h.client()
        text = json.dumps({"id": 99, "op": "subscribe", "channel": "frag"}).encode()
        ws.send_frame(OP_TEXT, text[:5], fin=False)
        ws.send_ping(b"between")  # control frames may interleave fragments
        ws.send_frame(OP_CONT, text[5:12], fin=False)
        ws.send_frame(OP_CONT, text[12:], fin=True)
        reply = ws.wait_reply(99)
        assert assert_result(reply).get("channel") == "frag", reply
        ws.wait_pong(b"between")


def test_client_close_is_answered():
    with Herald() as h:
        ws = h.client()
        ws.send_close(1000, "bye")
        kind, code, _ = ws.recv()
        assert (kind, code) == ("close", 1000), (kind, code)


#---- a standard client library -----------------------------------------------

async def _interop(h, user_tok, pub_tok):
    uri = "ws://127.0.0.1:%d/ws" % h.port
    async with websockets.connect(uri, extra_headers={"Authorization": "Bearer " + user_tok}) as user, \
            websockets.connect(uri + "?token=" + pub_tok) as pub:
        for ws in (user, pub):
            hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert hello["push"] == "connected", hello
        await user.send(json.dumps({"id": 1, "op": "subscribe", "channel": "lib"}))
        reply = json.loads(await asyncio.wait_for(user.recv(), 5))
        assert reply["id"] == 1 and reply["result"]["channel"] == "lib", reply
        await pub.send(json.dumps({"id": 1, "op": "publish", "channel": "lib", "data": {"via": "websockets"}}))
        reply = json.loads(await asyncio.wait_for(pub.recv(), 5))
        assert reply == {"id": 1, "result": {}}, reply
        msg = json.loads(await asyncio.wait_for(user.recv(), 5))
        # a client's publication: the server says who sent it
        assert msg.pop("from", {}).get("user") == "svc", msg
        assert msg == {"push": "message", "channel": "lib", "data": {"via": "websockets"}}, msg
        pong = await user.ping(b"lib-ping")
        await asyncio.wait_for(pong, 5)
    assert user.close_code == 1000, user.close_code


async def _interop_refused(h):
    uri = "ws://127.0.0.1:%d/ws?token=bogus" % h.port
    try:
        async with websockets.connect(uri):
            pass
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code
    return 101


async def _keepalive(h, tok):
    """Idle, the library pings every 0.5 s; the connection stays open until
    three of its keepalive pings have been answered. The pong timeout is
    generous (a loaded machine answers late): an unanswered ping still
    fails the test, by the wait below or by the library closing 1011."""
    uri = "ws://127.0.0.1:%d/ws" % h.port
    async with websockets.connect(uri, extra_headers={"Authorization": "Bearer " + tok},
                                  ping_interval=0.5, ping_timeout=20) as ws:
        await asyncio.wait_for(ws.recv(), 20)  # connected
        answered = []
        library_ping = ws.ping

        async def counted_ping(data=None):  # the keepalive task calls self.ping()
            waiter = await library_ping(data)
            waiter.add_done_callback(
                lambda f: answered.append(1) if not f.cancelled() and f.exception() is None else None)
            return waiter

        ws.ping = counted_ping
        deadline = time.monotonic() + 40
        while len(answered) < 3:  # idle: only the library's keepalive pings flow
            assert not ws.closed, "closed while idle: %r %r" % (ws.close_code, ws.close_reason)
            assert time.monotonic() < deadline, "%d keepalive pings answered in 40 s" % len(answered)
            await asyncio.sleep(0.1)
        await ws.send(json.dumps({"id": 1, "op": "ping"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert reply == {"id": 1, "result": {}}, reply


def test_websockets_keepalive_keeps_idle_connection_open():
    with Herald() as h:
        try:
            asyncio.run(asyncio.wait_for(_keepalive(h, h.jwt(sub="alice")), 90))
        except websockets.exceptions.ConnectionClosed as e:
            raise AssertionError("idle connection closed by the client library's keepalive: %s" % e)


def _tcp_timer(local_port, remote_port):
    """(timer kind, ticks until it fires) of the IPv4 socket local_port ->
    remote_port, from /proc/net/tcp ("tr": 0 none, 1 retransmit, 2
    keepalive, ...; "tm->when" in clock ticks)."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            lport = int(cols[1].split(":")[1], 16)
            rport = int(cols[2].split(":")[1], 16)
            if (lport, rport) == (local_port, remote_port):
                tr, when = cols[5].split(":")
                return int(tr, 16), int(when, 16)
    return None


def test_idle_websocket_socket_has_tcp_keepalive():
    """lws' validity timer (a PING after 300 s idle) is off, because lws
    inserted it into a sorted list per connection (docs/benchmarks.md,
    "Scale"); the kernel's keepalive finds vanished peers instead: every
    accepted socket carries a keepalive timer ~300 s ahead."""
    with Herald() as h:
        ws = h.client()
        assert_result(ws.cmd("ping"))
        key = (h.port, ws.sock.getsockname()[1])
        # while the reply is unacknowledged the retransmit timer shows instead
        wait_until(lambda: (_tcp_timer(*key) or (None,))[0] == 2, timeout=20,
                   what="a keepalive timer on the server's socket")
        kind, when = _tcp_timer(*key)
        assert when > 250 * os.sysconf("SC_CLK_TCK"), "keepalive fires in %r ticks" % when


def test_websockets_library_interoperates():
    with Herald() as h:
        user_tok, pub_tok = h.token("alice"), h.token("svc", roles=["publisher"])
        asyncio.run(asyncio.wait_for(_interop(h, user_tok, pub_tok), 20))
        assert asyncio.run(_interop_refused(h)) == 401


if __name__ == "__main__":
    run_tests(globals())
