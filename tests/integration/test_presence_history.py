"""Embedded mode (no Redis): presence, join/leave, history and recovery from
memory, server-side membership, through real sockets and real HTTP."""

import json

from harness import Herald, assert_error, assert_result, run_tests

CONFIG = {"namespaces": {
    "chat": {"subscribe": "authenticated", "publish": "subscribers", "presence": True,
             "join_leave": True, "history_size": 3, "history_ttl": 300},
    "big": {"subscribe": "authenticated", "publish": "authenticated", "history_size": 5000},
    "": {"subscribe": "authenticated", "publish": "authenticated"},
}}


def test_presence_and_join_leave():
    with Herald(config=CONFIG) as h:
        a = h.user("alice", info={"color": "red"})
        a.subscribe("chat:r")
        assert a.recv_push("join")["user"] == "alice"
        b = h.user("bob")
        b.subscribe("chat:r")
        assert a.recv_push("join")["client"] == b.hello["client"]
        pres = a.cmd("presence", channel="chat:r")["result"]["clients"]
        assert sorted(c["user"] for c in pres) == ["alice", "bob"]
        assert [c["info"] for c in pres if c["user"] == "alice"] == [{"color": "red"}]
        rest = h.http("GET", "/api/v1/channels/chat:r/presence", headers=h.api_headers())
        assert rest.status_code == 200 and len(rest.json()["clients"]) == 2
        b.close()
        assert a.recv_push("leave")["user"] == "bob"
        pres = a.cmd("presence", channel="chat:r")["result"]["clients"]
        assert [c["user"] for c in pres] == ["alice"]
        # only where enabled; and only for those allowed to subscribe
        assert_error(a.cmd("presence", channel="plain"), "not_found")
        assert h.http("GET", "/api/v1/channels/plain/presence",
                      headers=h.api_headers()).status_code == 404
        assert_error(a.cmd("presence", channel="user:bob"), "forbidden")
        assert h.http("GET", "/api/v1/channels/chat:r/presence").status_code == 401


def test_history_and_recovery():
    with Herald(config=CONFIG) as h:
        a = h.user("alice")
        res = a.subscribe("chat:h")
        assert res["offset"] == 0 and res["recovered"] is False and res["epoch"]
        epoch = res["epoch"]
        for i in range(2):
            r = a.cmd("publish", channel="chat:h", data=i)
            assert r["result"]["offset"] == i + 1
        got = a.messages(2)
        assert [m["offset"] for m in got] == [1, 2]
        a.close()
        h.publish("chat:h", 2)
        b = h.user("alice")
        res = b.subscribe("chat:h", since={"offset": 2, "epoch": epoch})
        assert res["recovered"] is True and [p["data"] for p in res["publications"]] == [2]
        # trimmed (size 3): offsets 1..5 with only 3..5 kept
        h.publish("chat:h", 3)
        h.publish("chat:h", 4)
        b.messages(2)
        c = h.user("alice")
        res = c.subscribe("chat:h", since={"offset": 0, "epoch": epoch})
        assert res["recovered"] is False and [p["offset"] for p in res["publications"]] == [3, 4, 5]
        res = h.user("alice").subscribe("chat:h", since={"offset": 5, "epoch": "bogus"})
        assert res["recovered"] is False
        hist = c.cmd("history", channel="chat:h", limit=2)["result"]
        assert [p["data"] for p in hist["publications"]] == [3, 4] and hist["offset"] == 5
        rest = h.http("GET", "/api/v1/channels/chat:h/history?limit=1", headers=h.api_headers())
        assert rest.status_code == 200 and [p["data"] for p in rest.json()["publications"]] == [4]
        bad = h.http("GET", "/api/v1/channels/chat:h/history?limit=-1", headers=h.api_headers())
        assert bad.status_code == 422
        assert_error(c.cmd("history", channel="plain"), "not_found")
        # a REST publish answers the offset too
        assert h.publish("chat:h", 5).json() == {"offset": 6}


def vm_data_kb(h):
    """The process' data segment (heap and anonymous mappings): grows with
    what is allocated even where the pages are never touched (calloc)."""
    with open("/proc/%d/status" % h.proc.pid) as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1])
    raise AssertionError("no VmData")


def test_reading_unpublished_channels_creates_nothing():
    """A history read or a subscription of a channel nobody published to
    allocated a whole ring (history_size entries, never freed without a
    TTL): 1,500 reads of "big:*" channels (5,000 entries each) took ~180 MB.
    Now nothing is kept until a publication, and the first publication
    continues the stream its early subscribers were told about."""
    with Herald(config=CONFIG) as h:
        socks = [h.user("reader%d" % i) for i in range(10)]
        assert_result(socks[0].cmd("history", channel="big:warmup"))
        before = vm_data_kb(h)
        n = 0
        for i, w in enumerate(socks):
            for j in range(100):
                r = w.cmd("history", channel="big:h%d-%d" % (i, j))
                assert assert_result(r)["offset"] == 0 and r["result"]["publications"] == []
                n += 1
            for j in range(50):
                w.subscribe("big:s%d-%d" % (i, j))
                assert_result(w.cmd("unsubscribe", channel="big:s%d-%d" % (i, j)))
                n += 1
        for j in range(200):
            r = h.http("GET", "/api/v1/channels/big:r%d/history" % j, headers=h.api_headers())
            assert r.status_code == 200 and r.json()["offset"] == 0, r.text
            n += 1
        grown = vm_data_kb(h) - before
        assert grown < 30000, "%d reads of unpublished channels grew the data segment by %d KB" % (n, grown)
        # a subscriber from before the first publication recovers into it
        w = socks[0]
        res = w.subscribe("big:late")
        h.publish("big:late", 1)
        assert w.messages(1)[0]["offset"] == 1
        w.close()
        h.publish("big:late", 2)
        res2 = h.user("reader0").subscribe("big:late", since={"offset": 1, "epoch": res["epoch"]})
        assert res2["recovered"] is True and [p["data"] for p in res2["publications"]] == [2], res2


def test_publications_carry_the_publisher():
    """A client's publication carries "from": the server's word on who sent
    it (user, client id, the token's info), never taken from the data; a
    backend's has none; history and recovery keep it."""
    with Herald(config=CONFIG) as h:
        a = h.user("alice", info={"name": "Alice"})
        b = h.user("bob")
        for w in (a, b):
            w.subscribe("chat:f")
        while a.pending:
            a.pending.popleft()
        me = {"user": "alice", "client": a.hello["client"], "info": {"name": "Alice"}}
        r = a.cmd("publish", channel="chat:f", data={"text": "hi", "from": "bob"})
        assert assert_result(r)["offset"] == 1
        for w in (a, b):
            m = w.messages(1)[0]
            assert m == {"push": "message", "channel": "chat:f", "offset": 1,
                         "data": {"text": "hi", "from": "bob"}, "from": me}, m
        h.publish("chat:f", {"text": "from the backend"})
        m = b.messages(1)[0]
        assert "from" not in m and m["offset"] == 2, m
        assert_result(b.cmd("publish", channel="chat:f", data="b1"))
        bob = {"user": "bob", "client": b.hello["client"], "info": {}}
        assert b.messages(1)[0]["from"] == bob
        hist = b.cmd("history", channel="chat:f")["result"]["publications"]
        assert [p.get("from") for p in hist] == [me, None, bob], hist
        rest = h.http("GET", "/api/v1/channels/chat:f/history", headers=h.api_headers()).json()
        assert [p.get("from") for p in rest["publications"]] == [me, None, bob], rest
        res = h.user("carol").subscribe("chat:f", since={"offset": 0, "epoch": hist and
                                                       b.cmd("history", channel="chat:f")["result"]["epoch"]})
        assert [p.get("from") for p in res["publications"]] == [me, None, bob], res
        # plain channels too
        b.subscribe("room")
        assert_result(a.cmd("publish", channel="room", data=2))
        assert b.messages(1)[0] == {"push": "message", "channel": "room", "data": 2, "from": me}


def test_nul_and_nesting_in_data():
    """\u0000 in data is accepted and delivered on every path (it used to be
    refused over WebSocket and answered null by history); data may nest 64
    levels, deeper is refused the same way everywhere."""
    with Herald(config=CONFIG) as h:
        a = h.user("alice")
        a.subscribe("chat:z")
        assert_result(a.cmd("publish", channel="chat:z", data={"s": "a\u0000b"}))
        assert a.messages(1)[0]["data"] == {"s": "a\u0000b"}
        h.publish("chat:z", "\u0000")
        assert a.messages(1)[0]["data"] == "\u0000"
        hist = a.cmd("history", channel="chat:z")["result"]["publications"]
        assert [p["data"] for p in hist] == [{"s": "a\u0000b"}, "\u0000"], hist
        # a NUL in a member Herald reads as a name is not that name
        assert_error(a.cmd("pub\u0000lish", channel="chat:z", data=1), "bad_request")
        assert_error(a.cmd("subscribe", channel="chat:z", since={"offset": 0, "epoch": "e\u0000"}),
                     "bad_request")
        assert_error(a.cmd("subscribe", channel="chat:z\u0000x"), "bad_request")
        # a NUL in an object key is refused (no JSON parser Herald uses keeps it)
        a.send_json({"id": 90, "op": "publish", "channel": "chat:z", "data": {"a\u0000": 1}})
        assert_error(a.recv_json(), "bad_request")  # no id: the JSON did not parse
        deep = 1
        for _ in range(64):
            deep = [deep]
        assert_result(a.cmd("publish", channel="chat:z", data=deep))
        assert a.messages(1)[0]["data"] == deep
        assert_error(a.cmd("publish", channel="chat:z", data=[deep]), "bad_request")
        r = h.http("POST", "/api/v1/publish", json={"channel": "chat:z", "data": {"x": deep}},
                   headers=h.api_headers())
        assert r.status_code == 400 and "64" in r.json()["detail"], r.text
        r = h.http("POST", "/api/v1/broadcast", json={"channels": ["chat:z"], "data": [deep]},
                   headers=h.api_headers())
        assert r.status_code == 400, r.text
        a.assert_quiet_until_marker(h.publish, "chat:z")  # nothing refused was delivered


def test_history_epoch_changes_with_restart():
    with Herald(config=CONFIG) as h:
        a = h.user("alice")
        epoch = a.subscribe("chat:e")["epoch"]
        h.publish("chat:e", 1)
    with Herald(config=CONFIG) as h2:
        res = h2.user("alice").subscribe("chat:e", since={"offset": 1, "epoch": epoch})
        assert res["recovered"] is False and res["epoch"] != epoch


def test_members_add_remove():
    with Herald(config=CONFIG) as h:
        ws = [h.user("carol") for _ in range(3)]
        other = h.user("dave")
        for w in ws + [other]:  # for the markers below
            w.subscribe("marker")
        r = h.http("POST", "/api/v1/channels/news/members", json={"user": "carol"},
                   headers=h.api_headers())
        assert r.status_code == 204, r.text
        for w in ws:
            assert w.recv_push("subscribed") == {"push": "subscribed", "channel": "news"}
        h.publish("news", "hi")
        for w in ws:
            assert w.messages(1)[0]["data"] == "hi"
        # dave was not made a member: nothing reaches him before a marker
        marker = other.assert_quiet_until_marker(h.publish, "marker")
        for w in ws:
            assert w.messages(1)[0]["data"] == marker
        r = h.http("DELETE", "/api/v1/channels/news/members/carol", headers=h.api_headers())
        assert r.status_code == 204
        for w in ws:
            assert w.recv_push("unsubscribed")["channel"] == "news"
        h.publish("news", "bye")
        # none of carol's three sockets gets it
        marker = ws[0].assert_quiet_until_marker(h.publish, "marker")
        for w in ws[1:] + [other]:
            assert w.recv_json() == {"push": "message", "channel": "marker", "data": marker}
        # bad input
        r = h.http("POST", "/api/v1/channels/bad%20name/members", json={"user": "carol"},
                   headers=h.api_headers())
        assert r.status_code in (404, 422)
        r = h.http("POST", "/api/v1/channels/news/members", json={"user": 5},
                   headers=h.api_headers())
        assert r.status_code == 422 and r.headers["Content-Type"].startswith("application/problem+json")
        r = h.http("POST", "/api/v1/channels/news/members", data="{", headers=h.api_headers())
        assert r.status_code == 400


if __name__ == "__main__":
    run_tests(globals())
