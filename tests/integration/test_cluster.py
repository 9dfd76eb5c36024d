"""Cluster mode: real redis-server(s), two or three real Herald processes.

Cross-node delivery and one order per channel, server-side membership,
presence and join/leave across nodes, a SIGKILLed node's presence expiring,
history and recovery across nodes, a backend publishing with redis-cli only,
Redis outages, and two Redis shards.
"""

import json
import os
import secrets
import signal
import subprocess
import threading
import time
from contextlib import ExitStack

from harness import Herald, Redis, assert_error, assert_result, run_tests, wait_until

NAMESPACES = {"namespaces": {
    "chat": {"subscribe": "authenticated", "publish": "subscribers", "presence": True,
             "join_leave": True, "history_size": 5, "history_ttl": 300},
    "feed": {"subscribe": "authenticated", "publish": "none", "history_size": 100,
             "history_ttl": 300},
    "": {"subscribe": "authenticated", "publish": "authenticated"},
}}

REDIS_CLI = "/usr/bin/redis-cli"


def nodes(stack, redis_url, n=2, env=None, config=NAMESPACES):
    """n Herald nodes sharing one secret, one API key and one Redis."""
    secret, key = secrets.token_hex(24), secrets.token_hex(16)
    out = []
    for i in range(n):
        e = {"HERALD_JWT_SECRET": secret, "HERALD_API_KEY": key, "HERALD_NODE_ID": "n%d" % i,
             "HERALD_PRESENCE_TTL": "3"}
        e.update(env or {})
        h = Herald(env=e, redis=redis_url, config=config)
        h.secret, h.api_key = secret, key
        out.append(stack.enter_context(h))
    for h in out:
        h.wait_ready()
    return out


def sub(ws, channel, **kw):
    r = ws.cmd("subscribe", channel=channel, **kw)
    assert_result(r)
    return r["result"]


def client(h, name, **kw):
    return h.client(name, token=h.jwt(sub=name, **kw))


def messages(ws, n, timeout=5.0):
    out = []
    while len(out) < n:
        m = ws.recv_json(timeout)
        if m.get("push") == "message":
            out.append(m)
    return out


def test_cross_node_delivery_and_one_order():
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        wa, wb = client(a, "alice"), client(b, "bob")
        sub(wa, "news")
        sub(wb, "news")
        # one Redis subscription per channel per node, whatever the threads
        wait_until(lambda: r.cmd("PUBSUB", "NUMSUB", "herald:ch:news")[1] == 2,
                   what="two node subscriptions")
        # publishers on both nodes, interleaved, concurrently
        def pub(h, tag):
            for i in range(100):
                h.publish("news", {"from": tag, "i": i})
        ts = [threading.Thread(target=pub, args=(a, "a")), threading.Thread(target=pub, args=(b, "b"))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        got_a = [(m["data"]["from"], m["data"]["i"]) for m in messages(wa, 200)]
        got_b = [(m["data"]["from"], m["data"]["i"]) for m in messages(wb, 200)]
        assert got_a == got_b, "the two nodes saw different orders"
        for tag in "ab":
            seq = [i for f, i in got_a if f == tag]
            assert seq == list(range(100)), "publisher %s out of order" % tag
        # a publish from a WebSocket client on node B reaches node A
        r2 = wb.cmd("publish", channel="news", data={"ws": 1})
        assert_result(r2)
        assert messages(wa, 1)[0]["data"] == {"ws": 1}


def test_backend_publishes_with_redis_cli_only():
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        wa, wb = client(a, "alice"), client(b, "bob")
        sub(wa, "news")
        top = sub(wb, "feed:x")["offset"]
        wait_until(lambda: r.cmd("PUBSUB", "NUMSUB", "herald:ch:feed:x")[1] == 1, what="subscribed")
        cli = [REDIS_CLI, "-p", str(r.port)]
        p = subprocess.run(cli + ["FCALL", "herald_publish", "0", "news", '{"title":"hi"}'],
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 0 and p.stdout.strip() == "0", p.stdout + p.stderr
        assert messages(wa, 1)[0] == {"push": "message", "channel": "news", "data": {"title": "hi"}}
        # a history channel: recorded, offset returned, delivered with it
        p = subprocess.run(cli + ["FCALL", "herald_publish", "0", "feed:x", '{"n":1}'],
                           capture_output=True, text=True, timeout=10)
        assert p.stdout.strip() == str(top + 1), p.stdout + p.stderr
        m = messages(wb, 1)[0]
        assert m["offset"] == top + 1 and m["data"] == {"n": 1}
        h = a.http("GET", "/api/v1/channels/feed:x/history", headers=a.api_headers()).json()
        assert [p["data"] for p in h["publications"]] == [{"n": 1}], h
        # refused: not JSON, bad channel name
        p = subprocess.run(cli + ["FCALL", "herald_publish", "0", "news", "{nope"],
                           capture_output=True, text=True, timeout=10)
        assert "JSON" in p.stdout + p.stderr
        p = subprocess.run(cli + ["FCALL", "herald_publish", "0", "bad channel", "1"],
                           capture_output=True, text=True, timeout=10)
        assert "invalid channel" in p.stdout + p.stderr
        # garbage published straight on a topic is dropped and counted, the
        # subscriber is not disturbed
        r.cmd("PUBLISH", "herald:ch:news", "not json")
        a.publish("news", 2)
        assert messages(wa, 1)[0]["data"] == 2
        assert a.metrics().get("herald_redis_bad_messages_total", 0) >= 1


def test_members_add_remove_across_nodes():
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        w1, w2 = client(b, "carol"), client(b, "carol")
        other = client(a, "dave")
        for w in (w1, w2, other):  # for the markers below
            sub(w, "marker")
        resp = a.http("POST", "/api/v1/channels/news/members", json={"user": "carol"},
                      headers=a.api_headers())
        assert resp.status_code == 204, resp.text
        for w in (w1, w2):
            assert w.recv_push("subscribed")["channel"] == "news"
        a.publish("news", {"n": 1})
        for w in (w1, w2):
            assert messages(w, 1)[0]["data"] == {"n": 1}
        # dave was not made a member: no push, no publication before a marker
        marker = other.assert_quiet_until_marker(a.publish, "marker")
        for w in (w1, w2):
            assert messages(w, 1)[0]["data"] == marker
        resp = a.http("DELETE", "/api/v1/channels/news/members/carol", headers=a.api_headers())
        assert resp.status_code == 204, resp.text
        for w in (w1, w2):
            assert w.recv_push("unsubscribed")["channel"] == "news"
        a.publish("news", {"n": 2})
        # neither of carol's sockets gets it
        marker = w1.assert_quiet_until_marker(a.publish, "marker")
        assert w2.recv_json() == {"push": "message", "channel": "marker", "data": marker}
        assert messages(other, 1)[0]["data"] == marker
        # needs a backend
        resp = a.http("POST", "/api/v1/channels/news/members", json={"user": "carol"})
        assert resp.status_code == 401


def test_disconnect_and_delete_user_on_every_node():
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        w = client(b, "erin")
        resp = a.http("POST", "/api/v1/users/erin/disconnect", headers=a.api_headers())
        assert resp.status_code == 204
        assert w.expect_close() == 4003
        user = a.create_user("frank", "a long password 1")
        tok = a.login("frank", "a long password 1")["access_token"]
        w = b.client("x", token=tok)
        resp = a.http("DELETE", "/api/v1/users/%s" % user["id"], headers=a.api_headers())
        assert resp.status_code == 204
        assert w.expect_close() == 4003
        # node B refuses the deleted user's token at once (revocation)
        ws = b.ws()
        assert ws.connect("/ws", {"Authorization": "Bearer " + tok}) == 401


def node_client_ids(r, node):
    """Redis client ids of a node's connections (named herald:<node>:cmd|sub)."""
    out = []
    for line in r.cmd("CLIENT", "LIST").splitlines():
        f = dict(kv.split("=", 1) for kv in line.split(" ") if "=" in kv)
        if f.get("name", "").startswith("herald:%s:" % node):
            out.append(f["id"])
    return out


def test_revocation_missed_during_an_outage_is_caught_up():
    """Node b is cut off from Redis while a user is deleted through node a:
    when b reconnects it reloads the revocations, refuses the token and
    closes the user's sockets."""
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        user = a.create_user("gina", "a long password 1")
        tok = a.login("gina", "a long password 1")["access_token"]
        w = b.client("x", token=tok)
        ids = node_client_ids(r, "n1")
        assert len(ids) == 2, ids
        b.proc.send_signal(signal.SIGSTOP)
        try:
            for cid in ids:
                r.cmd("CLIENT", "KILL", "ID", cid)
            resp = a.http("DELETE", "/api/v1/users/%s" % user["id"], headers=a.api_headers())
            assert resp.status_code == 204
        finally:
            b.proc.send_signal(signal.SIGCONT)
        assert w.expect_close(10) == 4003
        ws = b.ws()
        assert ws.connect("/ws", {"Authorization": "Bearer " + tok}) == 401


def test_presence_and_join_leave_across_nodes():
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        wa = client(a, "alice", info={"name": "Alice"})
        sub(wa, "chat:room")
        assert wa.recv_push("join")["user"] == "alice"
        wb = client(b, "bob")
        sub(wb, "chat:room")
        j = wa.recv_push("join")
        assert j["user"] == "bob" and j["client"] == wb.hello["client"]
        assert wb.recv_push("join")["user"] == "bob"
        pres = wb.cmd("presence", channel="chat:room")["result"]["clients"]
        assert sorted(c["user"] for c in pres) == ["alice", "bob"], pres
        assert [c["info"] for c in pres if c["user"] == "alice"] == [{"name": "Alice"}]
        rest = a.http("GET", "/api/v1/channels/chat:room/presence", headers=a.api_headers()).json()
        assert sorted(c["client"] for c in rest["clients"]) == sorted(
            [wa.hello["client"], wb.hello["client"]])
        sub_reply = wb.cmd("unsubscribe", channel="chat:room")
        assert_result(sub_reply)
        lv = wa.recv_push("leave")
        assert lv["user"] == "bob"
        pres = wa.cmd("presence", channel="chat:room")["result"]["clients"]
        assert [c["user"] for c in pres] == ["alice"]
        # a namespace without presence answers not_found
        assert_error(wa.cmd("presence", channel="news"), "not_found")


def test_killed_node_leaves_presence_after_ttl():
    # a 6 s TTL, refreshed every 2 s: a refresh may run 4 s late on a loaded
    # machine before an entry of a live node lapses (3 s left only 2 s)
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r, env={"HERALD_PRESENCE_TTL": "6"})
        wb = client(b, "bob")
        sub(wb, "chat:room")
        wa = client(a, "alice")
        sub(wa, "chat:room")
        pres = lambda: sorted(c["user"] for c in wa.cmd("presence", channel="chat:room")["result"]["clients"])
        assert pres() == ["alice", "bob"]
        # refreshes keep a live node's entries past the TTL (the time itself
        # is what this waits for)
        time.sleep(7)
        assert pres() == ["alice", "bob"]
        b.proc.kill()
        b.proc.wait()
        b.killed = True
        wait_until(lambda: pres() == ["alice"], timeout=20, what="bob's entry to expire")


def test_history_and_recovery_across_nodes():
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        w = client(a, "alice")
        res = sub(w, "feed:f")
        epoch, top = res["epoch"], res["offset"]
        assert res["recovered"] is False and res["publications"] == []
        for i in range(3):
            assert a.publish("feed:f", i).json()["offset"] == top + i + 1
        got = messages(w, 3)
        last = got[-1]["offset"]
        w.close()
        # missed while away
        for i in range(3, 6):
            b.publish("feed:f", i)
        w2 = client(b, "alice")
        res = sub(w2, "feed:f", since={"offset": last, "epoch": epoch})
        assert res["recovered"] is True, res
        assert [p["data"] for p in res["publications"]] == [3, 4, 5]
        assert res["epoch"] == epoch and res["offset"] == last + 3
        # live publications follow without a gap or a duplicate
        a.publish("feed:f", 6)
        m = messages(w2, 1)[0]
        assert m["data"] == 6 and m["offset"] == last + 4
        # the history op and REST
        h = w2.cmd("history", channel="feed:f", limit=2)["result"]
        assert [p["data"] for p in h["publications"]] == [5, 6] and h["epoch"] == epoch
        h = a.http("GET", "/api/v1/channels/feed:f/history?since=%d&epoch=%s" % (last + 2, epoch),
                   headers=a.api_headers()).json()
        assert [p["data"] for p in h["publications"]] == [5, 6], h


def test_not_recovered_after_trim_and_epoch_change():
    with Redis() as r, ExitStack() as st:
        (a,) = nodes(st, r, n=1)
        w = client(a, "alice")
        res = sub(w, "chat:t")  # history_size 5
        epoch = res["epoch"]
        since = res["offset"]
        w.close()
        for i in range(8):
            a.publish("chat:t", i)
        w = client(a, "alice")
        res = sub(w, "chat:t", since={"offset": since, "epoch": epoch})
        assert res["recovered"] is False  # trimmed: only the last 5 are kept
        assert [p["data"] for p in res["publications"]] == [3, 4, 5, 6, 7]
        top = res["offset"]
        w.close()
        # the stream's epoch changes when its metadata is gone
        r.cmd("DEL", "herald:history-meta:chat:t")
        w = client(a, "alice")
        res = sub(w, "chat:t", since={"offset": top, "epoch": epoch})
        assert res["recovered"] is False and res["epoch"] != epoch


def test_redis_outage():
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        wa1, wa2, wb = client(a, "alice"), client(a, "bob"), client(b, "carol")
        for w in (wa1, wa2, wb):
            sub(w, "news")
        res = sub(wa1, "feed:o")
        a.publish("feed:o", 1)
        assert messages(wa1, 1)[0]["data"] == 1
        r.halt()
        wait_until(lambda: not a.ready() and not b.ready(), what="readyz 503")
        assert a.http("GET", "/readyz").status_code == 503
        assert a.http("GET", "/healthz").status_code == 200
        # plain channels: this node's subscribers only, said in the answer
        resp = a.publish("news", "during")
        assert resp.json().get("local_only") is True
        for w in (wa1, wa2):
            assert messages(w, 1)[0]["data"] == "during"
        # (wb never gets it: checked after the outage, where a publication
        # of node a that it had kept would come first)
        # history channels cannot take an offset: 503
        resp = a.http("POST", "/api/v1/publish", json={"channel": "feed:o", "data": 2},
                      headers=a.api_headers())
        assert resp.status_code == 503 and resp.headers["Content-Type"].startswith("application/problem+json")
        # memory stays bounded while Redis is away
        rss0 = rss_kb(a)
        for i in range(300):
            a.http("POST", "/api/v1/publish", json={"channel": "feed:o", "data": "x" * 1000},
                   headers=a.api_headers())
        assert rss_kb(a) - rss0 < 20000
        r.start()
        for h in (a, b):
            h.wait_ready(15)
        # every subscriber is told its subscription was renewed; the history
        # channel's stream is gone with the Redis data (no persistence), so
        # it is not recovered and has a new epoch
        for w in (wa2, wb):
            assert w.recv_push("subscribed", timeout=10) == {"push": "subscribed", "channel": "news"}
        got = {}
        for _ in range(2):
            p = wa1.recv_push("subscribed", timeout=10)
            got[p["channel"]] = p
        assert got["news"] == {"push": "subscribed", "channel": "news"}
        assert got["feed:o"]["recovered"] is False and got["feed:o"]["epoch"] != res["epoch"], got
        # and delivery works across nodes again, in order; "during" was for
        # node a's subscribers only, never sent on later
        b.publish("news", "after")
        a.publish("news", "after, from a")
        for w in (wa1, wa2, wb):
            assert [m["data"] for m in messages(w, 2, timeout=10)] == ["after", "after, from a"]


def rss_kb(h):
    with open("/proc/%d/status" % h.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_history_channel_recovered_after_redis_restart_with_data():
    """Redis comes back with its data (a restart of the server process keeps
    the keys here because the node outage is simulated by pausing clients):
    the node reads what it missed and says recovered: true."""
    with Redis() as r, ExitStack() as st:
        (a,) = nodes(st, r, n=1)
        w = client(a, "alice")
        sub(w, "feed:r")
        a.publish("feed:r", 1)
        assert messages(w, 1)[0]["data"] == 1
        # drop the node's connections; publish meanwhile from a backend
        r.cmd("CLIENT", "KILL", "TYPE", "pubsub")
        r.cmd("FCALL", "herald_publish", "0", "feed:r", "2")
        a.wait_ready(10)
        got = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(m.get("push") == "subscribed" for m in got):
            got.append(w.recv_json(10))
        pushes = [m for m in got if m.get("push") == "subscribed"]
        assert pushes and pushes[0]["recovered"] is True, got
        datas = [m["data"] for m in got if m.get("push") == "message"]
        assert 2 in datas, got


def test_two_shards():
    with Redis() as r1, Redis() as r2, ExitStack() as st:
        url = "%s,%s" % (r1.url, r2.url)
        a, b = nodes(st, url)
        wa, wb = client(a, "alice"), client(b, "bob")
        chans = ["s%d" % i for i in range(12)]
        for c in chans:
            sub(wa, c)
            sub(wb, c)
        on1 = [c for c in chans if r1.cmd("PUBSUB", "NUMSUB", "herald:ch:" + c)[1] == 2]
        on2 = [c for c in chans if r2.cmd("PUBSUB", "NUMSUB", "herald:ch:" + c)[1] == 2]
        assert on1 and on2 and sorted(on1 + on2) == sorted(chans), (on1, on2)
        for c in chans:
            a.publish(c, c)
        for w in (wa, wb):
            assert sorted(m["data"] for m in messages(w, 12)) == sorted(chans)
        # history lives on the channel's shard
        (a.publish("feed:z", 1))
        shard = r1 if r1.cmd("EXISTS", "herald:history:feed:z") else r2
        other = r2 if shard is r1 else r1
        assert other.cmd("EXISTS", "herald:history:feed:z") == 0
        # the control channel lives on the first shard
        assert r1.cmd("PUBSUB", "NUMSUB", "herald:control")[1] == 2


def test_cluster_needs_a_configured_secret():
    with Redis() as r:
        h = Herald(env={"HERALD_JWT_SECRET": None}, redis=r)
        p = h.run(["serve"], timeout=10)
        h.discard()
        assert p.returncode != 0 and b"HERALD_JWT_SECRET" in p.stderr


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=90)
