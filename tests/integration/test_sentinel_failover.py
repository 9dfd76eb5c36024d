#!/usr/bin/python3
"""Herald nodes on a Redis Sentinel set (HERALD_REDIS_URL=redis+sentinel://,
SPEC section 5 "High availability", issue 18): the master is SIGKILLed
under traffic and the sentinels promote the replica. Real redis-server and
redis-sentinel processes (tests/integration/redis_topology.py: 1 master, 1
replica, 3 sentinels on free loopback ports), real Herald nodes, real
WebSocket and HTTP clients.

What must hold (the issue's test):
  - every publication of a history channel acknowledged by Redis after the
    switch reaches every subscriber, on both nodes; the ones before it are
    delivered or the subscriber was told recovered: false; no duplicates;
    offsets only go up within an epoch;
  - a plain channel's subscribers are told recovered: false and get every
    publication sent once they were told;
  - /readyz went 503 during the switch and back to 200;
  - presence is right again within its TTL.
"""

import os
import signal
import time
from contextlib import ExitStack

from failover_fixture import (Publisher, ReadyMonitor, Recorder, check_history_subscriber, drain,
                              first_delivery_after)
from harness import Herald, cluster_nodes, run_tests, wait_until
from redis_topology import SentinelSet

CONFIG = {"namespaces": {
    "feed": {"subscribe": "authenticated", "publish": "none", "history_size": 5000,
             "history_ttl": 300},
    "chat": {"subscribe": "authenticated", "publish": "authenticated", "presence": True},
    "": {"subscribe": "authenticated", "publish": "authenticated"},
}}
PRESENCE_TTL = 3


def test_master_killed_under_traffic():
    with SentinelSet(down_after_ms=1000) as s, ExitStack() as st:
        a, b = cluster_nodes(st, s.url(), 2, {"HERALD_PRESENCE_TTL": str(PRESENCE_TTL)}, CONFIG)
        hist, plain = "feed:ha", "chat:ha"
        subs = {}
        for h, name in ((a, "alice"), (b, "bob")):
            w = h.user(name)
            w.subscribe(hist)
            w.subscribe(plain)
            subs[name] = (h, w, Recorder(w))
        for _, _, rec in subs.values():
            rec.start()
        mon = ReadyMonitor([a, b])
        mon.start()
        pub = Publisher([a, b], [hist, plain])
        pub.start()
        try:
            wait_until(lambda: len(pub.acked(hist)) >= 100, 60, what="100 publications before")
            t_kill = time.monotonic()
            old = s.kill_master()
            s.wait_failover(old, timeout=60)
            for h in (a, b):
                h.wait_ready(60)
            # every subscriber told its subscriptions were renewed
            for name, (_, _, rec) in subs.items():
                for ch in (hist, plain):
                    wait_until(lambda: rec.pushes("subscribed", ch), 60,
                               what="%s renewed on %s" % (name, ch))
            t_told = time.monotonic()
            n = len(pub.acked(hist))
            wait_until(lambda: len(pub.acked(hist)) >= n + 100, 60, what="100 publications after")
        finally:
            pub.done.set()
            pub.join(30)
        # the last publication of each channel reaches everyone: all before it did too
        drain(pub, {name: rec for name, (_, _, rec) in subs.items()}, mon, (hist, plain))

        for name, (_, _, rec) in subs.items():
            print(name, hist, "before/after/missing-before/told:",
                  check_history_subscriber(name, rec, pub, hist, t_kill))
            print(name, hist, "master killed -> first delivery after: %s s" %
                  first_delivery_after(rec, pub, hist, t_kill))
            renewals = [m for _, m in rec.pushes("subscribed", plain)]
            assert all(r["recovered"] is False for r in renewals), renewals
            seqs = [m["data"] for _, m in rec.pushes("message", plain)]
            assert len(seqs) == len(set(seqs)), "%s: duplicates on %s" % (name, plain)
            got = set(seqs)
            missing = [e[0] for e in pub.acked(plain) if e[1] > t_told and e[0] not in got]
            assert not missing, "%s: plain publications lost after the renewal: %r" % (name, missing)

        for base, changes in mon.changes.items():
            states = [ok for _, ok in changes]
            assert states[0] is True and False in states and states[-1] is True, (base, changes)

        # presence: both subscribers listed on both nodes within the TTL
        def both_present(h):
            r = h.http("GET", "/api/v1/channels/%s/presence" % plain, headers=h.api_headers())
            if r.status_code != 200:
                return False
            users = sorted(c["user"] for c in r.json()["clients"])
            return users == ["alice", "bob"]

        for h in (a, b):
            wait_until(lambda: both_present(h), 4 * PRESENCE_TTL, what="presence on %s" % h.base)


def test_publications_on_the_new_master_reach_a_node_that_comes_back_later():
    """A backend publishing on the new master (the documented FCALL, after
    asking the sentinels) while a node has not yet followed the failover
    (stopped here with SIGSTOP, so "later" is certain). The replica had
    everything the node had seen (WAIT), so the node's position is found
    in the new epoch's past: its subscribers get the new publications and
    are told recovered: true with the new epoch. Before, the node took the
    stream's top as its new position: the publications never reached them
    and they were told recovered: false."""
    with SentinelSet(down_after_ms=1000) as s, ExitStack() as st:
        (a,) = cluster_nodes(st, s.url(), 1, {"HERALD_PRESENCE_TTL": str(PRESENCE_TTL)}, CONFIG)
        w = a.user("alice")
        first = w.subscribe("feed:late")
        for i in (1, 2, 3):
            a.publish("feed:late", i)
        assert [m["data"] for m in w.messages(3)] == [1, 2, 3]
        assert s.master().cmd("WAIT", "1", "10000") == 1
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            old = s.kill_master()
            new = s.wait_failover(old, timeout=60)
            for i in (4, 5, 6):
                new.cmd("FCALL", "herald_publish", "0", "feed:late", str(i))
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        a.wait_ready(60)
        got = w.messages(3, timeout=30)
        assert [(m["data"], m["offset"]) for m in got] == [(4, 4), (5, 5), (6, 6)], got
        p = w.recv_push("subscribed", timeout=30)
        assert p["recovered"] is True and p["epoch"] != first["epoch"] and p["offset"] == 6, p
        a.publish("feed:late", 7)
        assert w.messages(1)[0]["data"] == 7
        # a client resuming from its position of the old epoch recovers too
        res = a.user("bob").subscribe("feed:late", since={"offset": 2, "epoch": first["epoch"]})
        assert res["recovered"] is True and res["epoch"] == p["epoch"], res
        assert [q["data"] for q in res["publications"]] == [3, 4, 5, 6, 7], res
        # one of an unrelated epoch does not
        res = a.user("bob").subscribe("feed:late", since={"offset": 2, "epoch": "1-x"})
        assert res["recovered"] is False, res


def test_user_store_follows_the_failover():
    """The user store (auth/store_redis.c, blocking hiredis on worker
    threads) finds the master through the sentinels too: a user created
    before the master dies logs in after the promotion, and a new one can
    be created (writes go to the new master, not to a demoted one)."""
    with SentinelSet(down_after_ms=1000) as s, ExitStack() as st:
        (a,) = cluster_nodes(st, s.url(), 1, {}, CONFIG)
        a.create_user("carol", "correct horse battery")
        assert s.master().cmd("WAIT", "1", "10000") == 1
        old = s.kill_master()
        s.wait_failover(old, timeout=60)
        a.wait_ready(60)
        wait_until(lambda: a.token_request(grant_type="password", username="carol",
                                           password="correct horse battery").status_code == 200,
                   30, what="carol logs in after the failover")
        a.create_user("dave", "battery staple horse")
        assert a.login("dave", "battery staple horse")["access_token"]


def test_sentinels_with_their_own_password():
    """Sentinels with requirepass: HERALD_REDIS_SENTINEL_PASSWORD gives it to
    them (the URL's password is the data nodes'); without it the node does
    not start, and says why (the sentinel's NOAUTH)."""
    with SentinelSet(password="data-pw", sentinel_password="sentinel-pw") as s, \
            ExitStack() as st:
        (a,) = cluster_nodes(st, s.url(), 1, {"HERALD_REDIS_SENTINEL_PASSWORD": "sentinel-pw"},
                             CONFIG)
        w = a.user("alice")
        w.subscribe("feed:pw")
        a.publish("feed:pw", 1)
        assert w.messages(1)[0]["data"] == 1
        h = Herald(env={"HERALD_JWT_SECRET": "x" * 32, "HERALD_API_KEY": "k"}, redis=s.url(),
                   config=CONFIG)
        p = h.run(["serve"], timeout=30)
        h.discard()
        assert p.returncode != 0 and b"NOAUTH" in p.stderr and b"sentinel" in p.stderr, \
            (p.returncode, p.stderr[-600:])


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=240)
