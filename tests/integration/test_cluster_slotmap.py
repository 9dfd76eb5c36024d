#!/usr/bin/python3
"""Herald nodes on a Redis Cluster whose slot map keeps changing (issue 18,
"the slot map changing every second"): 3 masters + 3 replicas
(tests/integration/redis_topology.py), two Herald nodes with
HERALD_REDIS_URL=redis+cluster://, history channels whose slots move
between masters about once a second while publications flow. A file of
its own so that test_cluster_failover.py stays within CTest's 300 s."""

import time
from contextlib import ExitStack

from failover_fixture import Publisher, ReadyMonitor, check_history_subscriber, drain, recorders
from harness import cluster_nodes, run_tests, wait_until
from redis_topology import RedisCluster
from test_cluster_failover import CONFIG, one_per_master


def test_slot_map_changing_every_second():
    """The slot map changes about once a second for ~12 s: the slots of two
    history channels move back and forth between the masters
    (SETSLOT MIGRATING/IMPORTING, MIGRATE, SETSLOT NODE) while
    publications flow into them and into a channel whose slot stays put,
    through both nodes. Every acknowledged publication reaches both
    subscribers, none twice, offsets going up; the nodes stay ready; at
    the end each channel's history lives on the master owning its slot
    and a last publication per channel is delivered through it."""
    with RedisCluster() as c, ExitStack() as st:
        a, b = cluster_nodes(st, c.url(), 2, {"HERALD_PRESENCE_TTL": "3"}, CONFIG)
        hist = one_per_master(c, "feed:s")
        ports = sorted(hist)
        moving = [hist[ports[0]], hist[ports[1]]]
        channels = moving + [hist[ports[2]]]
        subs = recorders(((a, "alice"), (b, "bob")), channels)
        mon = ReadyMonitor([a, b])
        mon.start()
        pub = Publisher([a, b], channels, rate=30)
        pub.start()

        def flowing(n):
            k = {ch: len(pub.acked(ch)) for ch in channels}
            wait_until(lambda: all(len(pub.acked(ch)) >= k[ch] + n for ch in channels), 60,
                       what="publications flowing")

        moves = []
        try:
            flowing(20)
            t_start = time.monotonic()
            i = 0
            while time.monotonic() - t_start < 12:
                ch = moving[i % 2]
                slot = c.keyslot(ch)
                src = c.owner(slot)
                others = sorted((m for m in c.masters() if m is not src), key=lambda m: m.port)
                dst = others[(i // 2) % len(others)]
                c.begin_migration(slot, src, dst)
                c.move_keys(slot, src, dst)
                c.finish_migration(slot, src, dst)
                moves.append((round(time.monotonic() - t_start, 2), ch, src.port, dst.port))
                i += 1
                flowing(5)  # the next move once publications went through the new map,
                # and (pacing of the churn, not a wait for an event) not before
                # i * 0.5 s: each of the two slots moves about once a second
                delay = t_start + i * 0.5 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            flowing(30)
        finally:
            pub.done.set()
            pub.join(30)
        print("moves (t, channel, from, to):", moves)
        assert len(moves) >= 16, moves
        drain(pub, subs, mon, channels)
        for name, rec in subs.items():
            for ch in channels:
                r = check_history_subscriber(name, rec, pub, ch, t_start, renewed=False)
                print(name, ch, "before/after/missing-before/told:", r)
                assert r[2] == 0, (name, ch, r)
        # the nodes never stopped being ready
        for base, changes in mon.changes.items():
            assert all(ok for _, ok in changes), (base, changes)
        # each channel's stream is where its slot is, and still serves
        for ch in channels:
            owner = c.owner(c.keyslot(ch))
            assert owner.cmd("EXISTS", "herald:history-meta:{%s}" % ch) == 1, (ch, owner.port)
            slot = c.keyslot(ch)
            for m in c.masters():
                if m is not owner:  # no copy left behind (a node answers MOVED for the key)
                    assert m.cmd("CLUSTER", "COUNTKEYSINSLOT", slot) == 0, (ch, m.port)
        w = b.user("carl")
        for ch in channels:
            w.subscribe(ch)
        for ch in channels:
            a.publish(ch, "end-" + ch)
        got = w.messages(len(channels), timeout=15)
        assert sorted(m["data"] for m in got) == sorted("end-" + ch for ch in channels), got


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=240)
