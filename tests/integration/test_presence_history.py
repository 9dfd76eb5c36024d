"""Embedded mode (no Redis): presence, join/leave, history and recovery from
memory, server-side membership, through real sockets and real HTTP."""

from harness import Herald, assert_error, assert_result, run_tests

CONFIG = {"namespaces": {
    "chat": {"subscribe": "authenticated", "publish": "subscribers", "presence": True,
             "join_leave": True, "history_size": 3, "history_ttl": 300},
    "": {"subscribe": "authenticated", "publish": "authenticated"},
}}


def client(h, name, **claims):
    return h.client(name, token=h.jwt(sub=name, **claims))


def sub(ws, channel, **kw):
    r = ws.cmd("subscribe", channel=channel, **kw)
    assert_result(r)
    return r["result"]


def msgs(ws, n):
    out = []
    while len(out) < n:
        m = ws.recv_json()
        if m.get("push") == "message":
            out.append(m)
    return out


def test_presence_and_join_leave():
    with Herald(config=CONFIG) as h:
        a = client(h, "alice", info={"color": "red"})
        sub(a, "chat:r")
        assert a.recv_push("join")["user"] == "alice"
        b = client(h, "bob")
        sub(b, "chat:r")
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
        a = client(h, "alice")
        res = sub(a, "chat:h")
        assert res["offset"] == 0 and res["recovered"] is False and res["epoch"]
        epoch = res["epoch"]
        for i in range(2):
            r = a.cmd("publish", channel="chat:h", data=i)
            assert r["result"]["offset"] == i + 1
        got = msgs(a, 2)
        assert [m["offset"] for m in got] == [1, 2]
        a.close()
        h.publish("chat:h", 2)
        b = client(h, "alice")
        res = sub(b, "chat:h", since={"offset": 2, "epoch": epoch})
        assert res["recovered"] is True and [p["data"] for p in res["publications"]] == [2]
        # trimmed (size 3): offsets 1..5 with only 3..5 kept
        h.publish("chat:h", 3)
        h.publish("chat:h", 4)
        msgs(b, 2)
        c = client(h, "alice")
        res = sub(c, "chat:h", since={"offset": 0, "epoch": epoch})
        assert res["recovered"] is False and [p["offset"] for p in res["publications"]] == [3, 4, 5]
        res = sub(client(h, "alice"), "chat:h", since={"offset": 5, "epoch": "bogus"})
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


def test_history_epoch_changes_with_restart():
    with Herald(config=CONFIG) as h:
        a = client(h, "alice")
        epoch = sub(a, "chat:e")["epoch"]
        h.publish("chat:e", 1)
    with Herald(config=CONFIG) as h2:
        res = sub(client(h2, "alice"), "chat:e", since={"offset": 1, "epoch": epoch})
        assert res["recovered"] is False and res["epoch"] != epoch


def test_members_add_remove():
    with Herald(config=CONFIG) as h:
        ws = [client(h, "carol") for _ in range(3)]
        other = client(h, "dave")
        for w in ws + [other]:  # for the markers below
            sub(w, "marker")
        r = h.http("POST", "/api/v1/channels/news/members", json={"user": "carol"},
                   headers=h.api_headers())
        assert r.status_code == 204, r.text
        for w in ws:
            assert w.recv_push("subscribed") == {"push": "subscribed", "channel": "news"}
        h.publish("news", "hi")
        for w in ws:
            assert msgs(w, 1)[0]["data"] == "hi"
        # dave was not made a member: nothing reaches him before a marker
        marker = other.assert_quiet_until_marker(h.publish, "marker")
        for w in ws:
            assert msgs(w, 1)[0]["data"] == marker
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
