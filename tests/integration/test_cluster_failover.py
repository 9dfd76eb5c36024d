#!/usr/bin/python3
"""Herald nodes on a Redis Cluster (HERALD_REDIS_URL=redis+cluster://, SPEC
section 5 "High availability", issue 18): 3 masters + 3 replicas built
with redis-cli --cluster create on free loopback ports
(tests/integration/redis_topology.py), two Herald nodes, history and plain
channels on all three shards, publications flowing all along while
  1. a replica takes over with CLUSTER FAILOVER,
  2. a channel's slot is migrated (SETSLOT MIGRATING/IMPORTING, MIGRATE:
     ASK and MOVED on the way),
  3. a master is SIGKILLed and its replica promoted.
Nothing is lost on history channels: every publication is delivered, or
(only for the SIGKILLed master's tail, asynchronous replication) the
subscriber was told recovered: false; no duplicates."""

import subprocess
import time
from contextlib import ExitStack

from failover_fixture import (Publisher, ReadyMonitor, check_history_subscriber, drain, recorders,
                              first_delivery_after)
from harness import cluster_nodes, run_tests, wait_until
from redis_topology import RedisCluster

CONFIG = {"namespaces": {
    "feed": {"subscribe": "authenticated", "publish": "none", "history_size": 5000,
             "history_ttl": 300},
    "chat": {"subscribe": "authenticated", "publish": "authenticated", "presence": True},
    "": {"subscribe": "authenticated", "publish": "authenticated"},
}}


def one_per_master(c, prefix):
    """Channel names prefix0, prefix1, ... one whose slot each master owns
    (the hash tag is the channel name). Returns {master port: name}."""
    want = {m.port for m in c.masters()}
    out = {}
    i = 0
    while len(out) < len(want):
        name = "%s%d" % (prefix, i)
        port = c.owner(c.keyslot(name)).port
        out.setdefault(port, name)
        i += 1
    return out


def test_failover_migration_and_kill_under_traffic():
    with RedisCluster() as c, ExitStack() as st:
        a, b = cluster_nodes(st, c.url(), 2, {"HERALD_PRESENCE_TTL": "3"}, CONFIG)
        hist = one_per_master(c, "feed:h")
        plain = one_per_master(c, "chat:p")
        channels = sorted(hist.values()) + sorted(plain.values())
        subs = recorders(((a, "alice"), (b, "bob")), channels)
        mon = ReadyMonitor([a, b])
        mon.start()
        pub = Publisher([a, b], channels, rate=35)  # 6 channels: ~200 publications/s
        pub.start()
        ports = sorted(hist)
        try:
            def flowing(n=60):
                k = len(pub.acked(hist[ports[0]]))
                wait_until(lambda: all(len(pub.acked(ch)) >= k + n // 3 for ch in hist.values()),
                           60, what="publications flowing")

            t0 = time.monotonic()
            events = []
            flowing()
            # 1. a manual failover of the first master
            m0 = c.node_at(ports[0])
            events.append(("failover", round(time.monotonic() - t0, 2)))
            c.failover(c.replica_of(m0))
            events.append(("failed over", round(time.monotonic() - t0, 2)))
            flowing()
            # 2. the second channel's slot moves to the third master
            slot = c.keyslot(hist[ports[1]])
            events.append(("migrate", round(time.monotonic() - t0, 2)))
            c.migrate_slot(slot, c.node_at(ports[1]), c.node_at(ports[2]))
            events.append(("migrated", round(time.monotonic() - t0, 2)))
            flowing()
            # 3. the third master dies
            t_kill = time.monotonic()
            events.append(("kill", round(t_kill - t0, 2)))
            c.kill_master(c.node_at(ports[2]))
            events.append(("promoted", round(time.monotonic() - t0, 2)))
            for h in (a, b):
                h.wait_ready(60)
            flowing(120)
        finally:
            pub.done.set()
            pub.join(30)
        drain(pub, subs, mon, channels)
        print("plain channels by master:", plain, "masters", ports)
        for name, rec in subs.items():
            for port, ch in sorted(hist.items()):
                r = check_history_subscriber(name, rec, pub, ch, t_kill, renewed=False)
                print(name, ch, "before/after/missing-before/told:", r)
                if port == ports[2]:
                    print(name, ch, "master killed -> first delivery after: %s s" %
                          first_delivery_after(rec, pub, ch, t_kill))
                if port != ports[2]:  # only the killed master may have lost a tail
                    assert r[2] == 0, (name, ch, r)
            for ch in plain.values():
                seqs = [m["data"] for _, m in rec.pushes("message", ch)]
                dups = sorted({q for q in seqs if seqs.count(q) > 1})
                assert not dups, "%s: duplicates on %s: %r at %r (events %r)" % (
                    name, ch, dups, [round(t - t0, 2) for t, m in rec.pushes("message", ch)
                                     if m["data"] in dups], events)


def backend_publish(c, channel, data):
    """The documented backend command for Redis Cluster (docs/cluster.md):
    redis-cli -c follows MOVED and ASK."""
    seed = c.any_node()
    out = subprocess.run(
        ["/usr/bin/redis-cli", "-c", "-p", str(seed.port), "FCALL", "herald_publish", "2",
         "herald:history-meta:{%s}" % channel, "herald:history:{%s}" % channel, channel, data],
        capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and not out.stdout.startswith("(error)") and \
        "ERR" not in out.stdout, (out.stdout, out.stderr)
    return out.stdout.strip()


def test_publications_while_a_slot_migrates():
    """While a history channel's slot is MIGRATING (its keys still on the
    old owner), publications through Herald and through the backend
    command run where the keys are; then the keys move (MIGRATE must not
    find the channel's keys already created on the new owner: BUSYKEY),
    and the stream goes on there in the same epoch. Before, the functions
    were routed by the channel's topic, a key that never exists: every call
    went to the new owner at once (ASK), started a new stream there, and
    the migration failed."""
    with RedisCluster() as c, ExitStack() as st:
        a, b = cluster_nodes(st, c.url(), 2, {"HERALD_PRESENCE_TTL": "3"}, CONFIG)
        ch = "feed:mig"
        w = b.user("alice")
        first = w.subscribe(ch)
        for i in (1, 2):
            a.publish(ch, i)
        assert backend_publish(c, ch, "3") == "3"
        slot = c.keyslot(ch)
        src = c.owner(slot)
        dst = [m for m in c.masters() if m is not src][0]
        c.begin_migration(slot, src, dst)
        for i in (4, 5):
            a.publish(ch, i)
        assert backend_publish(c, ch, "6") == "6"
        assert c.move_keys(slot, src, dst) >= 2
        a.publish(ch, 7)  # ASK: the keys are on the new owner now
        c.finish_migration(slot, src, dst)
        a.publish(ch, 8)  # MOVED, then the new map
        assert backend_publish(c, ch, "9") == "9"
        got = w.messages(9, timeout=15)
        assert [(m["data"], m["offset"]) for m in got] == [(i, i) for i in range(1, 10)], got
        res = a.user("bob").subscribe(ch, since={"offset": 3, "epoch": first["epoch"]})
        # a slot migration gives the stream a new epoch (functions.lua): the
        # position of before is found in it
        assert res["recovered"] is True and res["epoch"] != first["epoch"], res
        assert [p["data"] for p in res["publications"]] == [4, 5, 6, 7, 8, 9], res


def test_backend_publish_needs_the_declared_keys():
    """In Redis Cluster the publish function refuses a call that does not
    declare the channel's keys (it would run on the wrong node while the
    slot migrates), with a reply that says which."""
    with RedisCluster() as c:
        with ExitStack() as st:
            cluster_nodes(st, c.url(), 1, {}, CONFIG)
            seed = c.any_node()
            out = subprocess.run(
                ["/usr/bin/redis-cli", "-c", "-p", str(seed.port), "FCALL", "herald_publish", "1",
                 "herald:ch:{news}", "news", "{}"], capture_output=True, text=True, timeout=30)
            assert "declare the keys" in out.stdout + out.stderr and \
                "herald:history-meta:{news} herald:history:{news}" in out.stdout + out.stderr, out


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=280)
