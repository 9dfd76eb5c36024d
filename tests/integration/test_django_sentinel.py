#!/usr/bin/python3
"""The Django Channels bridge (SPEC section 6) on Redis Sentinel, and its
refusal with Redis Cluster (issue 18). The real, unmodified channels_redis
4.0 from Debian, with its `sentinels` host form; real redis-server and
redis-sentinel processes (1 master, 1 replica, 3 sentinels); real Herald
nodes on HERALD_REDIS_URL=redis+sentinel://.

- group_send from both layers reaches WebSocket subscribers on both nodes,
  before and after the master is SIGKILLed and the replica promoted (the
  nodes follow the sentinels and join the groups again on the new master);
- HERALD_DJANGO_CHANNELS with redis+cluster:// stops the start with a
  reason: channels_redis cannot use Redis Cluster.
"""

from contextlib import ExitStack

from asgiref.sync import async_to_sync
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer

from harness import Herald, cluster_nodes, run_tests, wait_until
from redis_topology import RedisCluster, SentinelSet

CONFIG = {"namespaces": {
    "": {"subscribe": "authenticated", "publish": "authenticated"},
}}


def sentinel_layer(mode, s):
    """A channels_redis layer that finds the master through the sentinels
    (channels_redis' documented host form)."""
    host = {"sentinels": [("127.0.0.1", n.port) for n in s.sentinels], "master_name": s.name}
    cls = RedisPubSubChannelLayer if mode == "pubsub" else RedisChannelLayer
    return cls(hosts=[host])


def joined(mode, master, group, count):
    """`count` Herald nodes are in the group on this master."""
    if mode == "pubsub":
        return master.cmd("PUBSUB", "NUMSUB", "asgi__group__" + group)[1] == count
    return len([m for m in master.cmd("ZRANGE", "asgi:group:" + group, 0, -1)
                if m.startswith("herald.")]) == count


def check_group_send_across_a_failover(mode):
    with SentinelSet(down_after_ms=1000) as s, ExitStack() as st:
        a, b = cluster_nodes(st, s.url(), 2, {"HERALD_DJANGO_CHANNELS": mode}, CONFIG)
        ws = [a.user("alice"), b.user("bob")]
        for w in ws:
            w.subscribe("news")
        wait_until(lambda: joined(mode, s.master(), "news", 2), what="both nodes in the group")
        async_to_sync(sentinel_layer(mode, s).group_send)("news", {"type": "n", "i": 1})
        for w in ws:
            assert w.messages(1)[0]["data"] == {"type": "n", "i": 1}
        old = s.kill_master()
        new = s.wait_failover(old)
        for h in (a, b):
            h.wait_ready(60)
        for w in ws:
            w.recv_push("subscribed", timeout=30)  # renewed (plain: recovered false)
        wait_until(lambda: joined(mode, new, "news", 2), 30, what="both nodes in the group again")
        async_to_sync(sentinel_layer(mode, s).group_send)("news", {"type": "n", "i": 2})
        for w in ws:
            assert w.messages(1, timeout=10)[0]["data"] == {"type": "n", "i": 2}


def test_redis_layer_group_send_across_a_failover():
    check_group_send_across_a_failover("redis")


def test_pubsub_layer_group_send_across_a_failover():
    check_group_send_across_a_failover("pubsub")


def test_refused_with_redis_cluster():
    with RedisCluster() as c:
        h = Herald(env={"HERALD_DJANGO_CHANNELS": "redis"}, redis=c.url(), config=CONFIG)
        p = h.run(["serve"], timeout=10)
        h.discard()
        assert p.returncode != 0 and b"channels_redis does not support Redis Cluster" in p.stderr, \
            (p.returncode, p.stderr)


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=120)
