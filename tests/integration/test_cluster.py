"""Cluster mode: real redis-server(s), two or three real Herald processes.

(Why one file of ~1,150 lines: the cluster's behaviours share the nodes'
fixtures and ACL helpers below; Sentinel and Redis Cluster, which need
their own topology, have test_redis_sentinel.py and test_redis_cluster.py.)

Cross-node delivery and one order per channel, server-side membership,
presence and join/leave across nodes, a SIGKILLed node's presence expiring,
history and recovery across nodes, a backend publishing with redis-cli only,
Redis outages, and two Redis shards.
"""

import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from contextlib import ExitStack

from harness import Herald, Redis, RespConn, cluster_nodes, assert_error, assert_result, run_tests, wait_until

NAMESPACES = {"namespaces": {
    "chat": {"subscribe": "authenticated", "publish": "subscribers", "presence": True,
             "join_leave": True, "history_size": 5, "history_ttl": 300},
    "feed": {"subscribe": "authenticated", "publish": "none", "history_size": 100,
             "history_ttl": 300},
    "": {"subscribe": "authenticated", "publish": "authenticated"},
}}

REDIS_CLI = "/usr/bin/redis-cli"


def nodes(stack, redis_url, n=2, env=None, config=NAMESPACES):
    """n nodes on one Redis; presence entries of a dead node expire in 3 s."""
    return cluster_nodes(stack, redis_url, n, dict({"HERALD_PRESENCE_TTL": "3"}, **(env or {})),
                         config)


def test_cross_node_delivery_and_one_order():
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        wa, wb = a.user("alice"), b.user("bob")
        wa.subscribe("news")
        wb.subscribe("news")
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
        got_a = [(m["data"]["from"], m["data"]["i"]) for m in wa.messages(200)]
        got_b = [(m["data"]["from"], m["data"]["i"]) for m in wb.messages(200)]
        assert got_a == got_b, "the two nodes saw different orders"
        for tag in "ab":
            seq = [i for f, i in got_a if f == tag]
            assert seq == list(range(100)), "publisher %s out of order" % tag
        # a publish from a WebSocket client on node B reaches node A
        r2 = wb.cmd("publish", channel="news", data={"ws": 1})
        assert_result(r2)
        assert wa.messages(1)[0]["data"] == {"ws": 1}


def test_backend_publishes_with_redis_cli_only():
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        wa, wb = a.user("alice"), b.user("bob")
        wa.subscribe("news")
        top = wb.subscribe("feed:x")["offset"]
        wait_until(lambda: r.cmd("PUBSUB", "NUMSUB", "herald:ch:feed:x")[1] == 1, what="subscribed")
        cli = [REDIS_CLI, "-p", str(r.port)]
        p = subprocess.run(cli + ["FCALL", "herald_publish", "0", "news", '{"title":"hi"}'],
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 0 and p.stdout.strip() == "0", p.stdout + p.stderr
        assert wa.messages(1)[0] == {"push": "message", "channel": "news", "data": {"title": "hi"}}
        # a history channel: recorded, offset returned, delivered with it
        p = subprocess.run(cli + ["FCALL", "herald_publish", "0", "feed:x", '{"n":1}'],
                           capture_output=True, text=True, timeout=10)
        assert p.stdout.strip() == str(top + 1), p.stdout + p.stderr
        m = wb.messages(1)[0]
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
        assert wa.messages(1)[0]["data"] == 2
        assert a.metrics().get("herald_redis_bad_messages_total", 0) >= 1


def test_members_add_remove_across_nodes():
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        w1, w2 = b.user("carol"), b.user("carol")
        other = a.user("dave")
        for w in (w1, w2, other):  # for the markers below
            w.subscribe("marker")
        resp = a.http("POST", "/api/v1/channels/news/members", json={"user": "carol"},
                      headers=a.api_headers())
        assert resp.status_code == 204, resp.text
        for w in (w1, w2):
            assert w.recv_push("subscribed")["channel"] == "news"
        a.publish("news", {"n": 1})
        for w in (w1, w2):
            assert w.messages(1)[0]["data"] == {"n": 1}
        # dave was not made a member: no push, no publication before a marker
        marker = other.assert_quiet_until_marker(a.publish, "marker")
        for w in (w1, w2):
            assert w.messages(1)[0]["data"] == marker
        resp = a.http("DELETE", "/api/v1/channels/news/members/carol", headers=a.api_headers())
        assert resp.status_code == 204, resp.text
        for w in (w1, w2):
            assert w.recv_push("unsubscribed")["channel"] == "news"
        a.publish("news", {"n": 2})
        # neither of carol's sockets gets it
        marker = w1.assert_quiet_until_marker(a.publish, "marker")
        assert w2.recv_json() == {"push": "message", "channel": "marker", "data": marker}
        assert other.messages(1)[0]["data"] == marker
        # needs a backend
        resp = a.http("POST", "/api/v1/channels/news/members", json={"user": "carol"})
        assert resp.status_code == 401


def test_disconnect_and_delete_user_on_every_node():
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        w = b.user("erin")
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


def node_clients(r, node, field="id"):
    """A node's connections as {name: Redis client id}: herald:<node>:sub
    (SUBSCRIBE), herald:<node>:cmd (loop 0's commands) and
    herald:<node>:cmd<N> (loop N's own); with field="cmd", the last command
    Redis ran on each (CLIENT LIST's fields)."""
    out = {}
    for line in r.cmd("CLIENT", "LIST").splitlines():
        f = dict(kv.split("=", 1) for kv in line.split(" ") if "=" in kv)
        if f.get("name", "").startswith("herald:%s:" % node):
            out[f["name"].split(":")[-1]] = f[field]
    return out


def layer_connection_names(h):
    """What node_clients names for h: one subscriber connection, and one
    command connection per loop thread."""
    threads = int(h.env["HERALD_THREADS"])
    return sorted(["sub", "cmd"] + ["cmd%d" % i for i in range(1, threads)])


def process_redis_client_ids(r, pid):
    """Redis client ids of every connection process `pid` holds to r (the
    channel layer's and the user store's alike): its sockets' local ports,
    from /proc, matched against CLIENT LIST's addr."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    out = []
    for line in r.cmd("CLIENT", "LIST").splitlines():
        f = dict(kv.split("=", 1) for kv in line.split(" ") if "=" in kv)
        if int(f["addr"].rsplit(":", 1)[1]) in ports:
            out.append(f["id"])
    return out


def cut_off_while_deleting(r, a, b, user, meanwhile=None):
    """Node b, stopped, loses every Redis connection it has (the channel
    layer's command and subscriber connections, its user store's) while
    `user` is deleted through node a; meanwhile() runs before b resumes."""
    ids = process_redis_client_ids(r, b.proc.pid)
    assert len(ids) >= 3, ids  # the layer's cmd(s) + sub, store
    b.proc.send_signal(signal.SIGSTOP)
    try:
        for cid in ids:
            r.cmd("CLIENT", "KILL", "ID", cid)
        resp = a.http("DELETE", "/api/v1/users/%s" % user["id"], headers=a.api_headers())
        assert resp.status_code == 204
        if meanwhile:
            meanwhile()
    finally:
        b.proc.send_signal(signal.SIGCONT)


def test_revocation_missed_during_an_outage_is_caught_up():
    """Node b is cut off from Redis - every connection, its user store's
    included - while a user is deleted through node a: when b reconnects it
    reloads the revocations (on a fresh store connection, not the dead
    one), refuses the token and closes the user's sockets."""
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        user = a.create_user("gina", "a long password 1")
        tok = a.login("gina", "a long password 1")["access_token"]
        w = b.client("x", token=tok)
        wait_until(lambda: sorted(node_clients(r, "n1")) == layer_connection_names(b),
                   what="node b's connections")
        # the store has a connection too once it served a request
        assert b.http("GET", "/api/v1/users/me", headers={"Authorization": "Bearer " + tok}).status_code == 200
        cut_off_while_deleting(r, a, b, user)
        assert w.expect_close(10) == 4003
        ws = b.ws()
        assert ws.connect("/ws", {"Authorization": "Bearer " + tok}) == 401


def test_revocation_reload_retried_until_it_succeeds():
    """Every Redis connection of node b dies (its user store's too) while a
    user is deleted through node a. b's reload of the revocations must not
    fail on the store's dead connection, and while the reload cannot succeed
    (here: the revocation hash is unreadable) b retries, stays not ready,
    and closes the user's socket once it can read them."""
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        user = a.create_user("hana", "a long password 1")
        tok = a.login("hana", "a long password 1")["access_token"]
        w = b.client("x", token=tok)
        # b's user store has a connection of its own (it verified nothing
        # yet: make it use one)
        assert b.http("GET", "/api/v1/users/me", headers={"Authorization": "Bearer " + tok}).status_code == 200
        def hide_revocations():
            # the revocation is recorded; hide it behind a key of the wrong type
            r.cmd("RENAME", "herald:revoked", "herald:revoked-saved")
            r.cmd("SET", "herald:revoked", "not a hash")

        cut_off_while_deleting(r, a, b, user, hide_revocations)
        # the layer is back, the reload keeps failing: not ready, socket open
        wait_until(lambda: b.metrics().get("herald_redis_shards_connected") == 1, timeout=15,
                   what="node b's channel layer reconnected")
        wait_until(lambda: "reload revocations" in b.log(), timeout=10, what="the reload's failure logged")
        assert b.http("GET", "/readyz").status_code == 503
        assert_result(w.cmd("ping"))
        r.cmd("DEL", "herald:revoked")
        r.cmd("RENAME", "herald:revoked-saved", "herald:revoked")
        assert w.expect_close(15) == 4003
        b.wait_ready(15)
        ws = b.ws()
        assert ws.connect("/ws", {"Authorization": "Bearer " + tok}) == 401


def RedisAs(r, user, password):
    """A RESP connection to r authenticated as an ACL user."""
    return RespConn(r.port, user=user, password=password)


def signed_control(secret, body, topic="herald:control"):
    """A control message as a node signs it (README, Cluster mode)."""
    key = hmac.new(secret.encode(), b"herald control v1", hashlib.sha256).digest()
    text = json.dumps(body, separators=(",", ":"))
    mac = hmac.new(key, (topic + "\n" + text).encode(), hashlib.sha256).hexdigest()
    return mac + " " + text


def test_forged_control_messages_are_refused():
    """A backend account allowed to PUBLISH on herald:* (the rights README
    used to document) can reach the control topic. Nodes obey only what a
    node signed with the cluster's secret, recently, once: forged
    member_add / revoke / disconnect, a replayed message, one signed with
    another secret or stamped too long ago are dropped and counted."""
    from harness import RedisError
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        r.cmd("ACL", "SETUSER", "backend", "on", ">backend-pw", "resetkeys", "~herald:*",
              "resetchannels", "&herald:*", "-@all", "+fcall", "+publish", "+subscribe")
        be = RedisAs(r, "backend", "backend-pw")
        alice, mallory = a.user("alice"), b.user("mallory")
        alice.subscribe("user:alice")
        mallory.subscribe("sync")
        admin = b.user("root", roles=["admin"])

        def forge(body):
            assert be.cmd("PUBLISH", "herald:control", body) >= 1

        forge(json.dumps({"op": "member_add", "user": "mallory", "channel": "user:alice"}))
        forge(json.dumps({"op": "revoke", "user": "root", "at": int(time.time()) + 86400}))
        forge(json.dumps({"op": "disconnect", "user": "alice", "code": 4003}))
        # signed with a secret that is not the cluster's
        forge(signed_control("not the secret", {"op": "disconnect", "user": "alice",
                                                "ts": int(time.time() * 1000), "nonce": "n1"}))
        # signed, but stamped two minutes ago
        forge(signed_control(a.secret, {"op": "disconnect", "user": "alice",
                                        "ts": int(time.time() * 1000) - 120000, "nonce": "n2"}))
        # one Redis connection carries the control topic and the channels'
        # topics to a node, in publish order: once mallory has this, node b
        # has handled the forgeries
        a.publish("sync", 1)
        got = [mallory.recv_json() for _ in range(1)]
        assert got == [{"push": "message", "channel": "sync", "data": 1}], got
        # nothing happened: alice is connected, mallory subscribed to nothing,
        # the admin's token still works
        assert_result(alice.cmd("ping"))
        assert_result(mallory.cmd("ping"))
        assert_result(admin.cmd("ping"))
        a.publish("user:alice", {"private": 1})
        assert alice.messages(1)[0]["data"] == {"private": 1}
        # a member_add obeyed would have put alice's message before this
        mallory.assert_quiet_until_marker(a.publish, "sync")
        wait_until(lambda: all(h.metrics().get("herald_redis_control_rejected_total", 0) >= 5
                               for h in (a, b)), what="five refusals on each node")
        ws = b.ws()
        assert ws.connect("/ws", {"Authorization": "Bearer " + b.jwt(sub="root", roles=["admin"])}) == 101
        # a real control message, captured and replayed by the backend
        spy = RedisAs(r, "backend", "backend-pw")
        spy.cmd("SUBSCRIBE", "herald:control")
        resp = a.http("POST", "/api/v1/users/mallory/disconnect", headers=a.api_headers())
        assert resp.status_code == 204
        assert mallory.expect_close() == 4003
        kind, topic, captured = spy.reply()
        assert kind == "message" and topic == "herald:control", (kind, topic)
        m2 = b.user("mallory")
        before = b.metrics().get("herald_redis_control_rejected_total", 0)
        forge(captured)
        wait_until(lambda: b.metrics().get("herald_redis_control_rejected_total", 0) > before,
                   what="the replay refused")
        assert_result(m2.cmd("ping"))
        # a freshly signed one is obeyed (what the test knows, a node knows)
        forge(signed_control(a.secret, {"op": "disconnect", "user": "mallory", "code": 4003,
                                        "ts": int(time.time() * 1000), "nonce": secrets.token_hex(16)}))
        assert m2.expect_close() == 4003


def docs_acl_line():
    """The `redis-cli ACL SETUSER ...` line the Security section of
    docs/operations.md gives for backends, as written."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                           "operations.md")) as f:
        lines = [l.strip() for l in f if l.strip().startswith("redis-cli ACL SETUSER")]
    assert len(lines) == 1, lines
    return lines[0]


def test_docs_backend_acl_publishes_and_nothing_more():
    """The documented least-privilege account for backends can publish into plain
    and history channels with FCALL (Redis 7 checks the function's own
    commands against it), and cannot reach the control topic or the user
    store."""
    import shlex
    from harness import RedisError
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        w = b.user("alice")
        w.subscribe("news")
        w.subscribe("feed:acl")
        argv = shlex.split(docs_acl_line())
        assert argv[:3] == ["redis-cli", "ACL", "SETUSER"], argv
        p = subprocess.run([REDIS_CLI, "-p", str(r.port)] + argv[1:], capture_output=True,
                           text=True, timeout=10)
        assert p.returncode == 0 and p.stdout.strip() == "OK", p.stdout + p.stderr
        be = RedisAs(r, argv[3], "CHANGE-ME")
        assert be.cmd("FCALL", "herald_publish", "0", "news", '{"n":1}') == 0
        assert be.cmd("FCALL", "herald_publish", "0", "feed:acl", '{"n":2}') == 1
        assert be.cmd("FCALL", "herald_publish", "0", "feed:acl", '{"n":3}') == 2
        assert [m["data"] for m in w.messages(3)] == [{"n": 1}, {"n": 2}, {"n": 3}]
        for forbidden in (("PUBLISH", "herald:control", "{}"), ("HGETALL", "herald:revoked"),
                          ("HSET", "herald:user:x", "roles", '["admin"]'), ("KEYS", "*"),
                          ("SUBSCRIBE", "herald:control"), ("FUNCTION", "DELETE", "herald")):
            try:
                be.cmd(*forbidden)
                raise AssertionError("the documented backend account may %r" % (forbidden,))
            except RedisError as e:
                assert "NOPERM" in str(e), (forbidden, str(e))


def test_presence_and_join_leave_across_nodes():
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        wa = a.user("alice", info={"name": "Alice"})
        wa.subscribe("chat:room")
        assert wa.recv_push("join")["user"] == "alice"
        wb = b.user("bob")
        wb.subscribe("chat:room")
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
        wb = b.user("bob")
        wb.subscribe("chat:room")
        wa = a.user("alice")
        wa.subscribe("chat:room")
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
        w = a.user("alice")
        res = w.subscribe("feed:f")
        epoch, top = res["epoch"], res["offset"]
        assert res["recovered"] is False and res["publications"] == []
        for i in range(3):
            assert a.publish("feed:f", i).json()["offset"] == top + i + 1
        got = w.messages(3)
        last = got[-1]["offset"]
        w.close()
        # missed while away
        for i in range(3, 6):
            b.publish("feed:f", i)
        w2 = b.user("alice")
        res = w2.subscribe("feed:f", since={"offset": last, "epoch": epoch})
        assert res["recovered"] is True, res
        assert [p["data"] for p in res["publications"]] == [3, 4, 5]
        assert res["epoch"] == epoch and res["offset"] == last + 3
        # live publications follow without a gap or a duplicate
        a.publish("feed:f", 6)
        m = w2.messages(1)[0]
        assert m["data"] == 6 and m["offset"] == last + 4
        # the history op and REST
        h = w2.cmd("history", channel="feed:f", limit=2)["result"]
        assert [p["data"] for p in h["publications"]] == [5, 6] and h["epoch"] == epoch
        h = a.http("GET", "/api/v1/channels/feed:f/history?since=%d&epoch=%s" % (last + 2, epoch),
                   headers=a.api_headers()).json()
        assert [p["data"] for p in h["publications"]] == [5, 6], h


def history_reads(r, channel):
    """The herald_history calls for channel in r's slow log (every command
    is logged: see test_history_reads_are_batched_per_channel)."""
    n = 0
    for e in r.cmd("SLOWLOG", "GET", "-1"):
        args = [a.decode() if isinstance(a, bytes) else a for a in e[3]]
        if len(args) > 3 and args[0].upper() == "FCALL" and args[1].endswith("_history") \
                and channel in args[3:]:
            n += 1
    return n


def test_history_reads_are_batched_per_channel():
    """Subscribers of a history channel that come while its read is in
    flight share the next read (issue 20: after a restart a room's clients
    come back together): one FCALL for all of them, and each gets what
    it missed after its own position, recovered; a position of another
    epoch is read alone and not recovered; one without `since` gets the
    position. The read in flight is held with CLIENT PAUSE WRITE (FCALL
    is a write): every subscribe that reaches the node meanwhile waits."""
    n = 20
    with Redis() as r, ExitStack() as st:
        (a,) = nodes(st, r, n=1)
        w = a.user("alice")
        res = w.subscribe("feed:b")  # the channel stays subscribed on this node
        epoch, top = res["epoch"], res["offset"]
        for i in range(10):
            a.publish("feed:b", i)
        assert len(w.messages(10)) == 10
        clients = [a.user("u%d" % i) for i in range(n + 2)]
        r.cmd("CONFIG", "SET", "slowlog-log-slower-than", "0")
        r.cmd("CONFIG", "SET", "slowlog-max-len", "100000")
        r.cmd("SLOWLOG", "RESET")
        r.cmd("CLIENT", "PAUSE", "60000", "WRITE")
        try:
            ids = []
            for i, c in enumerate(clients):
                if i < n:
                    since = {"offset": top + i % 10, "epoch": epoch}
                elif i == n:
                    since = {"offset": top + 3, "epoch": "1-x"}  # another epoch
                else:
                    since = None
                cid = c.next_id()
                msg = {"id": cid, "op": "subscribe", "channel": "feed:b"}
                if since:
                    msg["since"] = since
                c.send_json(msg)
                c.send_ping(b"sent")
                ids.append(cid)
            # each subscribe was handed to the channel layer before its pong
            for c in clients:
                c.wait_pong(b"sent")
        finally:
            r.cmd("CLIENT", "UNPAUSE")
        results = [assert_result(c.wait_reply(cid, timeout=30)) for c, cid in zip(clients, ids)]
        for i, res in enumerate(results[:n]):
            assert res["recovered"] is True and res["epoch"] == epoch, (i, res)
            assert res["offset"] == top + 10, (i, res)
            assert [p["data"] for p in res["publications"]] == list(range(i % 10, 10)), (i, res)
        assert results[n]["recovered"] is False and results[n]["epoch"] == epoch, results[n]
        assert results[n + 1]["offset"] == top + 10 and results[n + 1]["publications"] == []
        # the first read, one for the batch, one for the other epoch's
        # position; a subscribe the node took only after the first read
        # came back would add one more batch
        reads = history_reads(r, "feed:b")
        print("history reads for %d subscribers: %d" % (n + 2, reads))
        assert 2 <= reads <= 5, reads
        # live publications follow, once each, without a gap
        a.publish("feed:b", 10)
        for i, c in enumerate(clients):
            m = c.messages(1)[0]
            assert m["data"] == 10 and m["offset"] == top + 11, (i, m)


def test_not_recovered_after_trim_and_epoch_change():
    with Redis() as r, ExitStack() as st:
        (a,) = nodes(st, r, n=1)
        w = a.user("alice")
        res = w.subscribe("chat:t")  # history_size 5
        epoch = res["epoch"]
        since = res["offset"]
        w.close()
        for i in range(8):
            a.publish("chat:t", i)
        w = a.user("alice")
        res = w.subscribe("chat:t", since={"offset": since, "epoch": epoch})
        assert res["recovered"] is False  # trimmed: only the last 5 are kept
        assert [p["data"] for p in res["publications"]] == [3, 4, 5, 6, 7]
        top = res["offset"]
        w.close()
        # the stream's epoch changes when its metadata is gone
        r.cmd("DEL", "herald:history-meta:chat:t")
        w = a.user("alice")
        res = w.subscribe("chat:t", since={"offset": top, "epoch": epoch})
        assert res["recovered"] is False and res["epoch"] != epoch


def test_redis_outage():
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        wa1, wa2, wb = a.user("alice"), a.user("bob"), b.user("carol")
        for w in (wa1, wa2, wb):
            w.subscribe("news")
        res = wa1.subscribe("feed:o")
        a.publish("feed:o", 1)
        assert wa1.messages(1)[0]["data"] == 1
        r.halt()
        wait_until(lambda: not a.ready() and not b.ready(), what="readyz 503")
        assert a.http("GET", "/readyz").status_code == 503
        assert a.http("GET", "/healthz").status_code == 200
        # plain channels: this node's subscribers only, said in the answer
        resp = a.publish("news", "during")
        assert resp.json().get("local_only") is True
        for w in (wa1, wa2):
            assert w.messages(1)[0]["data"] == "during"
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
            assert w.recv_push("subscribed", timeout=10) == {"push": "subscribed", "channel": "news",
                                                          "recovered": False}
        got = {}
        for _ in range(2):
            p = wa1.recv_push("subscribed", timeout=10)
            got[p["channel"]] = p
        assert got["news"] == {"push": "subscribed", "channel": "news", "recovered": False}
        assert got["feed:o"]["recovered"] is False and got["feed:o"]["epoch"] != res["epoch"], got
        # and delivery works across nodes again, in order; "during" was for
        # node a's subscribers only, never sent on later
        b.publish("news", "after")
        a.publish("news", "after, from a")
        for w in (wa1, wa2, wb):
            assert [m["data"] for m in w.messages(2, timeout=10)] == ["after", "after, from a"]


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
        w = a.user("alice")
        w.subscribe("feed:r")
        a.publish("feed:r", 1)
        assert w.messages(1)[0]["data"] == 1
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
        wa, wb = a.user("alice"), b.user("bob")
        chans = ["s%d" % i for i in range(12)]
        for c in chans:
            wa.subscribe(c)
            wb.subscribe(c)
        on1 = [c for c in chans if r1.cmd("PUBSUB", "NUMSUB", "herald:ch:" + c)[1] == 2]
        on2 = [c for c in chans if r2.cmd("PUBSUB", "NUMSUB", "herald:ch:" + c)[1] == 2]
        assert on1 and on2 and sorted(on1 + on2) == sorted(chans), (on1, on2)
        for c in chans:
            a.publish(c, c)
        for w in (wa, wb):
            assert sorted(m["data"] for m in w.messages(12)) == sorted(chans)
        # history lives on the channel's shard
        (a.publish("feed:z", 1))
        shard = r1 if r1.cmd("EXISTS", "herald:history:feed:z") else r2
        other = r2 if shard is r1 else r1
        assert other.cmd("EXISTS", "herald:history:feed:z") == 0
        # the control channel lives on the first shard
        assert r1.cmd("PUBSUB", "NUMSUB", "herald:control")[1] == 2


def test_connection_close_after_a_layer_answer():
    """In cluster mode a publish is answered when Redis has answered, after
    the request's callback returned: Connection: close must close at once
    (`herald publish`, which waits for the close, took ~30 s a call)."""
    from test_rest import request_then_eof
    with Redis() as r, ExitStack() as st:
        (a,) = nodes(st, r, n=1)
        w = a.user("alice")
        w.subscribe("news")
        body = json.dumps({"channel": "news", "data": {"n": 1}}).encode()
        assert request_then_eof(a.port, "POST", "/api/v1/publish", body,
                                {"Content-Type": "application/json", "X-API-Key": a.api_key}) == 200
        assert w.messages(1)[0]["data"] == {"n": 1}
        p = a.run(["publish", "news", '{"n":2}', "--url", a.base], timeout=10)
        assert p.returncode == 0, p.stderr
        assert w.messages(1)[0]["data"] == {"n": 2}


def test_reads_create_no_keys_and_meta_follows_history_ttl():
    """A history read or a subscription of a channel nobody published to
    created <p>:history-meta:<ch> kept 7 days whatever history_ttl said (one
    socket could create millions of keys a day). Reads create no key; a
    subscription creates the meta (the epoch the first publication will
    take) for 60 s, kept alive only while a node has subscribers; the first
    publication gives it history_ttl (300 s here)."""
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        w = a.user("alice")
        before = sorted(r.keys("herald:*"))
        for i in range(30):
            res = assert_result(w.cmd("history", channel="feed:h%d" % i))
            assert res["offset"] == 0 and res["publications"] == [], res
            resp = b.http("GET", "/api/v1/channels/feed:r%d/history" % i, headers=b.api_headers())
            assert resp.status_code == 200 and resp.json()["offset"] == 0
        assert sorted(r.keys("herald:*")) == before, set(r.keys("herald:*")) - set(before)
        for i in range(30):
            w.subscribe("feed:s%d" % i)
            assert_result(w.cmd("unsubscribe", channel="feed:s%d" % i))
        created = set(r.keys("herald:*")) - set(before)
        assert created == {"herald:history-meta:feed:s%d" % i for i in range(30)}, created
        for k in created:
            assert 0 < r.cmd("TTL", k) <= 60, (k, r.cmd("TTL", k))
        # a subscriber from before the first publication recovers into it
        early = w.subscribe("feed:p")
        assert early["offset"] == 0
        a.publish("feed:p", 1)
        ttl = r.cmd("TTL", "herald:history-meta:feed:p")
        assert 0 < ttl <= 300, ttl
        assert w.messages(1)[0]["offset"] == 1
        w.close()
        b.publish("feed:p", 2)
        res = b.user("alice").subscribe("feed:p", since={"offset": 1, "epoch": early["epoch"]})
        assert res["recovered"] is True and [p["data"] for p in res["publications"]] == [2], res
        # the subscriber's node renews the meta (presence_ttl 3: every second)
        t0, p0 = time.monotonic(), r.cmd("PTTL", "herald:history-meta:feed:p")
        wait_until(lambda: time.monotonic() - t0 > 1.5 and r.cmd("PTTL", "herald:history-meta:feed:p")
                   > p0 - (time.monotonic() - t0) * 1000 + 500, timeout=10,
                   what="the meta's TTL renewed")


def same_slot_names(prefix, n=2):
    """n channel names whose SHA-1 starts with the same 3 hex digits: one
    slot of the old per-slot epoch counter (functions.lua's unborn_epoch)."""
    seen = {}
    i = 0
    while True:
        name = "%s%d" % (prefix, i)
        seen.setdefault(hashlib.sha1(name.encode()).hexdigest()[:3], []).append(name)
        for names in seen.values():
            if len(names) >= n:
                return names[:n]
        i += 1


def test_early_subscribers_keep_their_epoch():
    """Subscribers of a history channel from before its first publication
    were told an epoch counted per slot of channel names: when another
    channel of the slot was born first, this one was born under another
    epoch, and their next resubscription with `since` said recovered: false
    although nothing was lost (the scale bench's storm: 364 of 1,900
    rooms). The epoch they are told is the one the stream is born with."""
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        x, y = same_slot_names("feed:slot")
        wx = a.user("alice")
        early = wx.subscribe(x)
        assert early["offset"] == 0
        # another channel of the old slot is born first
        b.publish(y, "y")
        a.publish(x, 1)
        m = wx.messages(1)[0]
        assert m["offset"] == 1
        wx.close()
        b.publish(x, 2)
        res = b.user("alice").subscribe(x, since={"offset": 1, "epoch": early["epoch"]})
        assert res["recovered"] is True and res["epoch"] == early["epoch"], res
        assert [p["data"] for p in res["publications"]] == [2], res


def test_restart_from_an_older_snapshot_gives_a_new_epoch():
    """A Redis that restarts from persistence older than its last
    acknowledged write (an RDB snapshot here; an AOF with appendfsync
    everysec after a crash alike) has lost the stream's tail: the next
    publication took an offset already delivered, in the same epoch, and a
    client resuming from that offset was told recovered: true while it had
    missed the new publication (the chaos soak's finding 5). The stream gets
    a new epoch; every subscriber hears recovered: false; what is published
    afterwards is delivered."""
    with Redis() as r, ExitStack() as st:
        (a,) = nodes(st, r, n=1)
        w, w2 = a.user("alice"), a.user("bob")
        res = w.subscribe("feed:snap")
        w2.subscribe("feed:snap")
        for i in (1, 2):
            a.publish("feed:snap", i)
        r.cmd("SAVE")
        a.publish("feed:snap", 3)  # acknowledged, delivered, not in the snapshot
        assert [m["data"] for m in w.messages(3)] == [1, 2, 3]
        assert [(m["data"], m["offset"]) for m in w2.messages(3)][-1] == (3, 3)
        w2.close()
        r.halt()
        wait_until(lambda: not a.ready(), what="readyz 503")
        r.start()
        a.wait_ready(15)
        p = w.recv_push("subscribed", timeout=15)
        assert p["recovered"] is False and p["epoch"] != res["epoch"], p
        top = p["offset"]
        a.publish("feed:snap", 4)
        m = w.messages(1)[0]
        assert m["data"] == 4 and m["offset"] == top + 1, (m, p)
        # a client that saw offset 3 (publication 3) is not told it recovered
        # (its offset 3 is not this epoch's offset 3)
        res2 = a.user("bob").subscribe("feed:snap", since={"offset": 3, "epoch": res["epoch"]})
        assert res2["recovered"] is False and res2["epoch"] == p["epoch"], res2


def test_offsets_beyond_1e14():
    """Lua formats numbers above 1e14 as 1e+14: a stream id no XADD or
    XRANGE takes. Publications, subscribe and history with such offsets
    work."""
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        big = 10 ** 14
        a.publish("feed:big", 0)
        epoch = assert_result(a.user("x").cmd("history", channel="feed:big"))["epoch"]
        r.cmd("HSET", "herald:history-meta:feed:big", "s", big)
        w = b.user("alice")
        res = w.subscribe("feed:big", since={"offset": big + 5, "epoch": epoch})
        assert res["recovered"] is False and res["offset"] == big, res
        assert a.publish("feed:big", 1).json() == {"offset": big + 1}
        assert w.messages(1)[0]["offset"] == big + 1
        h = assert_result(w.cmd("history", channel="feed:big", since={"offset": big, "epoch": epoch}))
        assert [p["offset"] for p in h["publications"]] == [big + 1], h
        res = a.user("bob").subscribe("feed:big", since={"offset": big, "epoch": epoch})
        assert res["recovered"] is True and [p["data"] for p in res["publications"]] == [1], res


def test_publish_function_refuses_what_nodes_cannot_deliver():
    """FCALL herald_publish took anything Lua's JSON decoder takes (NaN,
    0x10, raw control characters, 1e400, 2^64, duplicate keys...), answered
    success, and every node dropped the push. It answers an error instead;
    what it accepts, every node delivers."""
    from harness import RedisError
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        w = b.user("alice")
        w.subscribe("news")
        hw = a.user("bob")
        hw.subscribe("feed:v")
        deep = "[" * 64 + "]" * 64
        refused = ["NaN", "-Infinity", "Infinity", "0x10", "01", "+1", "1.", ".5", "1e", "'a'",
                   '"a\tb"', '"\x01"', "1e400", "-1e400",
                   str(2 ** 63), str(-2 ** 63 - 1), "18446744073709551616", '{"a":1,"a":2}',
                   '{"a":1,"\\u0061":2}', '{"a\\u0000":1}', '"\\ud800"', '"\\udc00x"',
                   '"\\u12"', '"\\q"', "[1,]", "{\"a\":1,}", "[1 2]", "{1:2}", "", " ",
                   "true false", "nul", "[" + deep + "]", b'"\xff"', b'"\xc0\x80"',
                   b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"', b'"caf\xc3"', "{\"a\"}"]
        for bad in refused:
            for ch in ("news", "feed:v"):
                try:
                    got = r.cmd("FCALL", "herald_publish", "0", ch, bad)
                except RedisError as e:
                    assert "JSON" in str(e), (bad, str(e))
                else:
                    raise AssertionError("FCALL accepted %r on %s: %r" % (bad, ch, got))
        accepted = ['"a\\u0000b"', "1e-400", str(2 ** 63 - 1), str(-2 ** 63), "-0", "0.5e+3",
                    '"\\u00e9\\ud83d\\ude00 caf\u00e9"', deep, ' {"a" : [1, {"b":null}], "c":true} ',
                    '{"a":1,"A":2}', '"\x7f"', "[]", "{}"]
        for good in accepted:
            assert r.cmd("FCALL", "herald_publish", "0", "news", good) == 0
            assert r.cmd("FCALL", "herald_publish", "0", "feed:v", good) > 0
        got = [m["data"] for m in w.messages(len(accepted))]
        assert got == [json.loads(g) for g in accepted], got
        got = [m["data"] for m in hw.messages(len(accepted))]
        assert got == [json.loads(g) for g in accepted], got
        hist = assert_result(hw.cmd("history", channel="feed:v"))["publications"]
        assert [p["data"] for p in hist] == [json.loads(g) for g in accepted], hist
        for h in (a, b):
            assert h.metrics().get("herald_redis_bad_messages_total", 0) == 0


def test_nul_and_nesting_the_same_on_every_path():
    """\u0000 in data: REST answered 200 and an offset in cluster mode, then
    every node dropped the push and history answered null. It is delivered
    from REST, WebSocket and FCALL alike. Data nested 64 deep is accepted,
    deeper refused on every path before Redis (was: unavailable past 1000)."""
    from harness import RedisError
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        w = b.user("alice")
        w.subscribe("news")
        w.subscribe("feed:n")
        pub = a.user("bob")
        pub.subscribe("news")  # publish: authenticated (default namespace)
        for ch in ("news", "feed:n"):
            r1 = a.http("POST", "/api/v1/publish", json={"channel": ch, "data": {"s": "rest\u0000"}},
                        headers=a.api_headers())
            assert r1.status_code == 200, r1.text
            assert w.messages(1)[0]["data"] == {"s": "rest\u0000"}
            r.cmd("FCALL", "herald_publish", "0", ch, '"fcall\\u0000"')
            assert w.messages(1)[0]["data"] == "fcall\u0000"
        assert_result(pub.cmd("publish", channel="news", data="ws\u0000"))
        assert w.messages(1)[0]["data"] == "ws\u0000"
        hist = assert_result(w.cmd("history", channel="feed:n"))["publications"]
        assert [p["data"] for p in hist] == [{"s": "rest\u0000"}, "fcall\u0000"], hist
        deep = 0
        for _ in range(64):
            deep = {"k": deep}
        assert a.http("POST", "/api/v1/publish", json={"channel": "feed:n", "data": deep},
                      headers=a.api_headers()).status_code == 200
        assert_result(pub.cmd("publish", channel="news", data=deep))
        r.cmd("FCALL", "herald_publish", "0", "news", json.dumps(deep))
        assert [m["data"] for m in w.messages(3)] == [deep] * 3
        too = [deep]
        resp = a.http("POST", "/api/v1/publish", json={"channel": "feed:n", "data": too},
                      headers=a.api_headers())
        assert resp.status_code == 400, resp.text
        assert_error(pub.cmd("publish", channel="news", data=too), "bad_request")
        try:
            r.cmd("FCALL", "herald_publish", "0", "news", json.dumps(too))
            raise AssertionError("FCALL accepted data nested 65 deep")
        except RedisError as e:
            assert "deeper than 64" in str(e), e
        # nothing refused went out: a marker on each channel comes next
        for ch in ("feed:n", "news"):
            w.assert_quiet_until_marker(a.publish, ch)


def test_publisher_identity_across_nodes():
    """A client's publication carries "from" (user, client id, the token's
    info) to every node and into Redis' history; backend publications
    (REST, FCALL) carry none."""
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        alice = a.user("alice", info={"name": "Alice"})
        bob = b.user("bob")
        for w in (alice, bob):
            w.subscribe("chat:id")
            w.subscribe("plain")
        for w in (alice, bob):
            while w.pending:
                w.pending.popleft()
        me = {"user": "alice", "client": alice.hello["client"], "info": {"name": "Alice"}}
        assert_result(alice.cmd("publish", channel="chat:id", data={"text": "hi", "from": "mallory"}))
        m = [x for x in bob.messages(1)][0]
        assert m["from"] == me and m["data"] == {"text": "hi", "from": "mallory"}, m
        assert_result(alice.cmd("publish", channel="plain", data=1))
        assert bob.messages(1)[0]["from"] == me
        a.publish("chat:id", "backend")
        r.cmd("FCALL", "herald_publish", "0", "chat:id", '"redis"')
        got = bob.messages(2)
        assert [("from" in x) for x in got] == [False, False], got
        hist = b.http("GET", "/api/v1/channels/chat:id/history", headers=b.api_headers()).json()
        assert [p.get("from") for p in hist["publications"]] == [me, None, None], hist
        # a backend cannot pass it through the documented command's
        # arguments as data either: "from" in data stays data
        r.cmd("FCALL", "herald_publish", "0", "plain", '{"from":{"user":"root"}}')
        m = bob.messages(1)[0]
        assert "from" not in m and m["data"] == {"from": {"user": "root"}}, m


def test_presence_announced_at_once_after_redis_restarts_empty():
    """Redis restarts without its data: a node re-announces its presence
    entries as soon as it is back, not at its next refresh (presence_ttl/3:
    20 s here)."""
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r, env={"HERALD_PRESENCE_TTL": "60"})
        w = a.user("alice")
        w.subscribe("chat:room")
        rest = lambda: [c["user"] for c in b.http("GET", "/api/v1/channels/chat:room/presence",
                                                   headers=b.api_headers()).json().get("clients", [])]
        assert rest() == ["alice"]
        r.halt()
        r.start()
        for h in (a, b):
            h.wait_ready(15)
        wait_until(lambda: rest() == ["alice"], timeout=10, what="alice's presence re-announced")


def test_refused_credentials_said_once_and_the_shard_stays_down():
    """Redis stops accepting the node's credentials (its ACL user is gone;
    the default user still lets anyone in): the node says "authentication
    failed" once, in Redis' words, and stays down - it used to log the
    shard up and down at every retry. Back up once the user is back."""
    with Redis() as r, ExitStack() as st:
        r.cmd("ACL", "SETUSER", "hnode", "on", ">node-pw", "~*", "&*", "+@all")
        url = "redis://hnode:node-pw@127.0.0.1:%d/0" % r.port
        (a,) = nodes(st, url, n=1)
        reconnects = lambda: a.metrics().get("herald_redis_reconnects_total", 0)
        before = reconnects()
        r.cmd("ACL", "DELUSER", "hnode")  # also closes its connections
        wait_until(lambda: reconnects() >= before + 4, timeout=30, what="four attempts to reconnect")
        assert a.http("GET", "/readyz").status_code == 503
        log = a.log()
        tail = log[log.index("is down"):]
        assert " is up" not in tail, tail
        assert tail.count("authentication failed") == 1, tail
        assert "WRONGPASS" in tail, tail
        assert " is up" not in tail, tail
        r.cmd("ACL", "SETUSER", "hnode", "on", ">node-pw", "~*", "&*", "+@all")
        a.wait_ready(20)
        assert " is up" in a.log()[a.log().index("authentication failed"):]


def loop_connections(h, loop):
    """herald_loop_connections of one loop thread."""
    text = h.http("GET", "/metrics").text
    for line in text.splitlines():
        if line.startswith("herald_loop_connections{") and 'loop="%d"' % loop in line:
            return int(float(line.split()[-1]))
    raise AssertionError("no herald_loop_connections for loop %d" % loop)


def client_on_loop(h, name, loop, tries=40):
    """An authenticated WS client that the kernel handed to loop thread
    `loop` (SO_REUSEPORT spreads connections over the loops): opens clients
    until one raises that loop's connection count."""
    for _ in range(tries):
        before = loop_connections(h, loop)
        w = h.user(name)
        if loop_connections(h, loop) == before + 1:
            return w
    raise AssertionError("no client landed on loop %d in %d tries" % (loop, tries))


def test_each_loop_publishes_on_its_own_connection():
    """A client on loop 1 publishes on loop 1's own connection to Redis
    (herald:<node>:cmd1), not through loop 0's (it used to hop to loop 0
    and back). That connection killed alone costs what it carried and no
    more: the shard stays up, nobody is told their subscription was renewed,
    and the next publication goes out on a new connection."""
    with Redis() as r, ExitStack() as st:
        (a,) = nodes(st, r, n=1, env={"HERALD_THREADS": "2"})
        wait_until(lambda: sorted(node_clients(r, "n0")) == ["cmd", "cmd1", "sub"],
                   what="loop 1's connection")
        w = client_on_loop(a, "alice", 1)
        w.subscribe("news")
        assert_result(w.cmd("publish", channel="news", data=1))
        assert w.messages(1)[0]["data"] == 1
        last = node_clients(r, "n0", "cmd")
        assert last["cmd1"] == "publish" and last["cmd"] != "publish", last
        # the same from REST is loop-agnostic: it only has to keep working
        assert a.publish("news", 2).status_code == 200
        assert w.messages(1)[0]["data"] == 2
        old = node_clients(r, "n0")["cmd1"]
        r.cmd("CLIENT", "KILL", "ID", old)
        wait_until(lambda: "loop 1's connection to redis shard 0 closed" in a.log(),
                   what="loop 1 to notice")
        reply = w.cmd("publish", channel="news", data=3)
        assert_result(reply)
        assert w.messages(1)[0]["data"] == 3  # nothing else (no renewal push) first
        assert a.ready()
        assert node_clients(r, "n0")["cmd1"] != old
        assert node_clients(r, "n0", "cmd")["cmd1"] == "publish"


def test_presence_entry_in_redis_once_subscribed():
    """A subscriber's presence entry is in Redis by the time it has its
    subscribe reply, whichever loop it is on: another node's presence read
    right after finds it (the entry goes out on the subscriber's loop, and
    was queued behind the reply, not before it)."""
    with Redis() as r, ExitStack() as st:
        a, b = nodes(st, r)
        missing = []
        for i in range(8):
            w = client_on_loop(a, "u%d" % i, i % 2)
            w.subscribe("chat:room")
            rest = b.http("GET", "/api/v1/channels/chat:room/presence", headers=b.api_headers())
            if w.hello["client"] not in [c["client"] for c in rest.json()["clients"]]:
                missing.append((i % 2, w.hello["client"]))
        assert not missing, missing


def test_layer_log_lines_follow_the_log_format():
    """The channel layer logs through the gateway's logger: with JSON logs
    (the harness' default) its lines - a shard down and up again, a
    malformed push, a forged control message - are JSON objects with an
    event like every other line (they were bare "herald: ..." text)."""
    with Redis() as r, ExitStack() as st:
        (a,) = nodes(st, r, n=1)
        w = a.user("alice")
        w.subscribe("news")
        r.cmd("PUBLISH", "herald:ch:news", "not json")
        r.cmd("PUBLISH", "herald:control", "0" * 64 + ' {"op":"revoke","user":"x"}')
        # (read before Redis goes: a killed server may reset the connection
        # with the messages still unread)
        wait_until(lambda: a.metrics().get("herald_redis_control_rejected_total") == 1,
                   what="the forged control message refused")
        r.halt()
        wait_until(lambda: not a.ready(), what="readyz 503")
        r.start()
        a.wait_ready(15)
        events = []
        for line in a.log().splitlines():
            assert line.startswith("{"), line
            events.append(json.loads(line)["event"])
        for e in ("redis_shard_up", "redis_shard_down", "redis_bad_push", "control_rejected"):
            assert e in events, (e, events)


def test_redis_error_text_in_the_log():
    """A command Redis refuses is reported in Redis' words (here NOPERM for
    INFO at start-up: the log said "redis: INFO failed")."""
    with Redis() as r:
        r.cmd("ACL", "SETUSER", "noinfo", "on", ">pw", "~*", "&*", "+@all", "-info")
        h = Herald(redis="redis://noinfo:pw@127.0.0.1:%d/0" % r.port)
        p = h.run(["serve"], timeout=10)
        h.discard()
        assert p.returncode != 0 and b"NOPERM" in p.stderr, p.stderr


def test_cluster_needs_a_configured_secret():
    with Redis() as r:
        h = Herald(env={"HERALD_JWT_SECRET": None}, redis=r)
        p = h.run(["serve"], timeout=10)
        h.discard()
        assert p.returncode != 0 and b"HERALD_JWT_SECRET" in p.stderr


def test_public_key_cluster_signs_control_with_the_cluster_secret():
    """With a public key there is no shared JWT secret: control messages need
    HERALD_CLUSTER_SECRET (refused at start without it), and then work."""
    import tempfile
    d = tempfile.mkdtemp()
    key, pub = os.path.join(d, "k.pem"), os.path.join(d, "p.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", key], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True,
                   capture_output=True)
    env = {"HERALD_JWT_SECRET": None, "HERALD_JWT_PUBLIC_KEY": pub, "HERALD_JWT_PRIVATE_KEY": key}
    with Redis() as r, ExitStack() as st:
        h = Herald(env=env, redis=r)
        p = h.run(["serve"], timeout=10)
        cfgfile = os.path.join(d, "c.json")
        with open(cfgfile, "w") as f:
            f.write("{}")
        c = h.run(["check-config", cfgfile], timeout=10)
        h.discard()
        assert p.returncode != 0 and b"HERALD_CLUSTER_SECRET" in p.stderr, p.stderr
        assert c.returncode == 2 and b"HERALD_CLUSTER_SECRET" in c.stderr, c.stderr
        env["HERALD_CLUSTER_SECRET"] = secrets.token_hex(32)
        a, b = nodes(st, r, env=env)
        w = b.client("x", token=b.token("ivy"))
        resp = a.http("POST", "/api/v1/users/ivy/disconnect", headers=a.api_headers())
        assert resp.status_code == 204
        assert w.expect_close() == 4003


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=90)
