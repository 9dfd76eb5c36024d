"""The Redis Cluster topology manager (channels/redis_cluster.c, through
tests/redis/redis_topo_probe) against a real cluster of 3 masters and 3
replicas (redis_topology.RedisCluster): routing by slot, a function
library loaded on every master, sharded pub/sub, MOVED after a slot
migration, ASK while a slot is half-migrated, a CLUSTER FAILOVER and a
SIGKILLed master.

Every key and topic of one channel carries the channel's hash tag
(chan_tagged_key), as the Redis layer will name them.

Every wait is for an event (a probe report, a role, the nodes'
agreement), bounded generously."""

import itertools
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import run_tests  # noqa: E402
from redis_topology import FakeRedis, RedisCluster, RespError, Status, TopoProbe  # noqa: E402

# What the Redis layer's function library will do in cluster mode, in
# small: every key of the channel carries its tag, so one call touches the
# stream and publishes on the shard channel, in one slot.
LIBRARY = """#!lua name=probe
redis.register_function('probe_publish', function(keys, args)
  local ch, data = args[1], args[2]
  local off = redis.call('XADD', 'herald:history:{' .. ch .. '}', '*', 'd', data)
  redis.call('SPUBLISH', keys[1], data)
  return redis.call('XLEN', 'herald:history:{' .. ch .. '}')
end)
"""

_ids = itertools.count(1)


def topic(channel):
    return "herald:ch:{%s}" % channel


class Cluster(TopoProbe):
    """The probe in cluster mode, with a call() that waits for the answer."""

    def __init__(self, c, *extra):
        self.libfile = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        self.libfile.write(LIBRARY)
        self.libfile.close()
        args = ["cluster", "--seeds", ",".join(n.addr for n in c.nodes[:3]),
                "--load-function", self.libfile.name] + list(extra)
        if c.password is not None:
            args += ["--password", c.password]
        super().__init__(args)

    def close(self, timeout=20.0):
        try:
            return super().close(timeout)
        finally:
            os.unlink(self.libfile.name)

    def call(self, key, *argv, timeout=30.0):
        i = next(_ids)
        self.send({"id": i, "key": key, "argv": [str(a) for a in argv]})
        ev = self.wait(lambda e: e.get("id") == i, timeout=timeout, what="reply %d" % i)
        if "error" in ev:
            raise AssertionError("command %s failed: %s" % (argv, ev["error"]))
        return ev["reply"]

    def wait_ready(self, since=0):
        return self.wait(lambda e: e.get("event") == "ready" and e["ready"] == 1, since=since,
                         timeout=60, what="the cluster ready")

    def wait_active(self, channel, active=1, since=0, timeout=60):
        return self.wait(lambda e: e.get("event") == "subscribed" and e["channel"] == channel
                         and e["active"] == active, since=since, timeout=timeout,
                         what="%s active=%d" % (channel, active))

    def wait_message(self, channel, payload, since=0, timeout=30):
        return self.wait(lambda e: e.get("event") == "message" and e["channel"] == channel
                         and e["payload"] == payload, since=since, timeout=timeout,
                         what="message %r on %s" % (payload, channel))

    def index(self, ev, since=0):
        """Where the event ev (one that wait returned) is in events."""
        return next(i for i in range(since, len(self.events)) if self.events[i] is ev)

    def activity(self, channel, since=0):
        """The channel's subscribed reports (active 0/1) since an index."""
        return [e["active"] for e in self.events[since:]
                if e.get("event") == "subscribed" and e["channel"] == channel]

    def redirects(self, kind, since=0):
        return [e for e in self.logs(since) if e["name"] == "cluster_redirect" and
                (" answered %s " % kind) in e["msg"]]


def subscribe_on_every_master(c, p):
    """Subscribes p to a channel on every master of c; once every shard
    subscription is active, returns them as channels_on_every_master
    does (master port -> [name])."""
    per_master = channels_on_every_master(c)
    names = [n for v in per_master.values() for n in v]
    for n in names:
        p.send({"ssubscribe": topic(n)})
    for n in names:
        p.wait_active(topic(n))
    return per_master


def channels_on_every_master(c, count=1):
    """Channel names whose slots belong to every master (count each)."""
    want = {m.port: [] for m in c.masters()}
    for i in itertools.count():
        name = "chan%d" % i
        port = c.owner(c.keyslot(topic(name))).port
        if len(want[port]) < count:
            want[port].append(name)
        if all(len(v) == count for v in want.values()):
            return want


def test_routing_functions_and_sharded_pubsub():
    """Keys of every slot range reach their master; the function library is
    on every master; shard channels on every master are subscribed and
    deliver; a slot migrated away is found through MOVED, and while a slot
    is half-migrated ASK is followed; the subscription follows the slot."""
    with RedisCluster() as c, Cluster(c, "--refresh-ms", 600000) as p:
        p.wait_ready()
        ev = p.wait(lambda e: e.get("event") == "map")
        assert len(ev["masters"]) == 3 and ev["uncovered"] == 0
        for i in range(300):
            assert p.call("k%d" % i, "SET", "k%d" % i, "v%d" % i) == "OK"
        for i in range(0, 300, 7):
            assert p.call("k%d" % i, "GET", "k%d" % i) == "v%d" % i
            assert c.owner(c.keyslot("k%d" % i)).cmd("GET", "k%d" % i) == "v%d" % i
        assert not p.redirects("MOVED") and not p.redirects("ASK")

        per_master = subscribe_on_every_master(c, p)
        names = [n for v in per_master.values() for n in v]
        for n in names:
            # the Redis layer's publish: FCALL with the channel's tagged key
            assert p.call(topic(n), "FCALL", "probe_publish", 1, topic(n), n, "hello-" + n) == 1
            p.wait_message(topic(n), "hello-" + n)

        # MOVED: a slot nobody subscribes to moves while the probe is idle
        src = c.owner(c.keyslot("{moved}k"))
        dst = [m for m in c.masters() if m is not src][0]
        assert p.call("{moved}k", "SET", "{moved}k", "here") == "OK"
        mark = p.mark()
        c.migrate_slot(c.keyslot("{moved}k"), src, dst)
        assert p.call("{moved}k", "GET", "{moved}k") == "here"
        assert p.redirects("MOVED", mark), p.logs(mark)
        assert p.call("{moved}k", "GET", "{moved}k") == "here"  # the map knows now

        # ASK: the slot of a subscribed channel, half-migrated
        name = names[0]
        slot = c.keyslot(topic(name))
        src = c.owner(slot)
        dst = [m for m in c.masters() if m is not src][0]
        assert p.call(topic(name), "SET", "herald:k:{%s}" % name, "old") == "OK"
        mark = p.mark()
        c.begin_migration(slot, src, dst)
        assert c.move_keys(slot, src, dst) >= 2  # the key and the stream
        assert p.call(topic(name), "GET", "herald:k:{%s}" % name) == "old"
        assert p.call(topic(name), "SET", "herald:new:{%s}" % name, "x") == "OK"
        assert len(p.redirects("ASK", mark)) >= 2, p.logs(mark)
        direct = dst.connect()  # an importing slot answers only after ASKING
        assert direct.cmd("ASKING") == "OK"
        assert direct.cmd("EXISTS", "herald:new:{%s}" % name) == 1
        direct.close()
        # still subscribed at the source, which serves the shard channel
        # until the slot is handed over
        assert p.call(topic(name), "SPUBLISH", topic(name), "during") == 1
        p.wait_message(topic(name), "during", since=mark)
        c.finish_migration(slot, src, dst)
        # the source unsubscribed us by itself; the probe follows the slot
        p.wait_active(topic(name), 0, since=mark)
        p.wait_active(topic(name), 1, since=mark)
        assert p.call(topic(name), "FCALL", "probe_publish", 1, topic(name), name, "after") == 2
        p.wait_message(topic(name), "after", since=mark)
        assert p.close() == 0


def test_failovers():
    """CLUSTER FAILOVER on a replica, then a SIGKILLed master: the probe
    reads the new map, moves the shard channels of those slots to the new
    masters (reporting them inactive meanwhile, once per move), the function library is
    there, and publications reach subscribers again."""
    with RedisCluster() as c, Cluster(c) as p:
        p.wait_ready()
        per_master = subscribe_on_every_master(c, p)
        names = [n for v in per_master.values() for n in v]

        # a coordinated failover
        old = c.masters()[0]
        moved = per_master[old.port][0]
        replica = c.replica_of(old)
        mark = p.mark()
        c.failover(replica)
        ev = p.wait(lambda e: e.get("event") == "map" and replica.port in e["masters"],
                    since=mark, what="a map with the promoted replica")
        assert old.port not in ev["masters"]
        # the channel is subscribed at the new master once the probe knows
        # it: the activation that follows that map (publishing before it
        # would race the SSUBSCRIBE there)
        p.wait_active(topic(moved), 1, since=p.index(ev, mark) + 1)
        # (the reply is the stream's length: the function does not say
        # whether anyone received it)
        assert p.call(topic(moved), "FCALL", "probe_publish", 1, topic(moved), moved, "a") == 1
        p.wait_message(topic(moved), "a", since=mark)
        # one move, one outage: not resubscribed at the demoted master
        # (now a replica, which accepts SSUBSCRIBE) before the map said
        # where the slot went
        assert p.activity(topic(moved), mark) == [0, 1], p.events[mark:]

        # a master dies
        victim = [m for m in c.masters() if m.port != replica.port][0]
        lost = per_master[victim.port][0]
        mark = p.mark()
        heir = c.kill_master(victim)
        p.wait(lambda e: e.get("event") == "ready" and e["ready"] == 0, since=mark,
               what="not ready while a master is gone")
        p.wait_active(topic(lost), 0, since=mark)
        p.wait_ready(since=mark)
        p.wait_active(topic(lost), 1, since=mark)
        assert p.call(topic(lost), "FCALL", "probe_publish", 1, topic(lost), lost, "b") == 1
        p.wait_message(topic(lost), "b", since=mark)
        # the other channels kept working throughout
        for n in names:
            assert p.call(topic(n), "SPUBLISH", topic(n), "end") == 1
            p.wait_message(topic(n), "end", since=mark)
        assert heir.role() == "master"
        assert p.close() == 0


def test_master_restarted():
    """A master without a replica dies and comes back on its port: the
    probe is not ready meanwhile, retries it with backoff, and once it is
    back resubscribes its channel there (periodic map reads are off: the
    backoff alone brings it back)."""
    with RedisCluster(replicas=0) as c, Cluster(c, "--refresh-ms", 600000) as p:
        p.wait_ready()
        victim = c.masters()[1]
        name = channels_on_every_master(c)[victim.port][0]
        p.send({"ssubscribe": topic(name)})
        p.wait_active(topic(name))
        mark = p.mark()
        victim.kill()
        p.wait(lambda e: e.get("event") == "ready" and e["ready"] == 0, since=mark)
        p.wait_active(topic(name), 0, since=mark)
        victim.start()
        c.wait_healthy()
        p.wait_ready(since=mark)
        p.wait_active(topic(name), 1, since=mark)
        assert p.call(topic(name), "SPUBLISH", topic(name), "back") == 1
        p.wait_message(topic(name), "back", since=mark)
        assert p.close() == 0


def test_slot_moving_under_traffic():
    """A slot migrates back and forth between two masters six times while
    INCRs on one of its keys keep flowing; each time the test waits, with
    the slot half-migrated, until some INCRs were answered (they can only
    have run after ASK), then again after the hand-over. Every INCR is
    answered, and the counter equals the number of INCRs acknowledged:
    none ran twice, none was lost. The subscription follows the slot and
    still delivers at the end."""
    with RedisCluster(replicas=0) as c, Cluster(c, "--refresh-ms", 600000) as p:
        p.wait_ready()
        name = "churn"
        key = "herald:n:{%s}" % name
        slot = c.keyslot(topic(name))
        p.send({"ssubscribe": topic(name)})
        p.wait_active(topic(name))
        assert p.call(key, "INCR", key) == 1
        stop = threading.Event()
        sent = [None]  # the first INCR above

        def traffic():
            while not stop.is_set():
                i = next(_ids)
                p.send({"id": i, "key": key, "argv": ["INCR", key]})
                sent.append(i)
                time.sleep(0.005)  # a steady trickle, not a measurement

        def answered_from_now(n=5):
            """Until n INCRs sent from now on were answered."""
            since = p.mark()  # before `first`: their answers come after it
            first = len(sent)
            for _ in range(n):
                got = p.wait(lambda e: e.get("id") in sent[first:], since=since)
                since = p.events.index(got) + 1

        t = threading.Thread(target=traffic, daemon=True)
        mark = p.mark()
        t.start()
        try:
            a = c.owner(slot)
            b = [m for m in c.masters() if m is not a][0]
            for src, dst in [(a, b), (b, a)] * 3:
                c.begin_migration(slot, src, dst)
                c.move_keys(slot, src, dst)
                answered_from_now()  # through ASK: the key is at dst
                c.finish_migration(slot, src, dst)
                answered_from_now()
        finally:
            stop.set()
            t.join()
        answers = [p.wait(lambda e, i=i: e.get("id") == i, since=mark) for i in sent[1:]]
        failed = [e for e in answers if "error" in e or not isinstance(e.get("reply"), int)]
        assert not failed, failed[:5]
        assert p.call(key, "GET", key) == str(len(sent))
        assert len(p.redirects("ASK", mark)) >= 6 * 5, len(p.redirects("ASK", mark))
        # the last word on the subscription is "active" (now or soon)
        p.wait(lambda e: [x["active"] for x in p.events if x.get("event") == "subscribed"]
               [-1:] == [1], timeout=60, what="the subscription active again")
        last = p.mark()
        p.call(topic(name), "SPUBLISH", topic(name), "settled")
        p.wait_message(topic(name), "settled", since=last)
        assert p.close() == 0


def test_refused_initial_command():
    """A master that refuses the function library (here: the user may not
    run FUNCTION) is not ready, and the refusal is logged with Redis' own
    text; commands of other kinds still work."""
    with RedisCluster(replicas=0) as c:
        for m in c.masters():
            m.cmd("ACL", "SETUSER", "herald", "on", ">pw", "~*", "&*", "+@all", "-function")
        with Cluster(c, "--user", "herald", "--password", "pw") as p:
            ev = p.wait(lambda e: e.get("event") == "log" and e["name"] == "cluster_init_refused")
            assert "NOPERM" in ev["msg"], ev
            p.wait(lambda e: e.get("event") == "map")
            assert not [e for e in p.events if e.get("event") == "ready" and e["ready"] == 1]
            assert p.close() == 0


def test_seeds_that_answer_garbage():
    """Seeds that are no cluster nodes, answer the wrong type, contradict
    themselves or hang up are skipped (each logged with what was wrong) and
    the map is read from the next seed."""
    answers = {
        "disabled": lambda a: RespError("ERR This instance has cluster support disabled"),
        "wrong type": lambda a: Status("OK"),
        "overlap": lambda a: [[0, 10, ["127.0.0.1", 1, "a"]], [5, 20, ["127.0.0.1", 2, "b"]]],
        "hangs up": lambda a: FakeRedis.HANGUP,
        "not RESP": lambda a: b"HTTP/1.1 400 Bad Request\r\n\r\n",
    }
    fakes = [FakeRedis(lambda a, f=f: Status("OK") if a[0].upper() != b"CLUSTER" else f(a))
             for f in answers.values()]
    try:
        with RedisCluster(replicas=0) as c:
            seeds = ",".join([f.addr for f in fakes] + [c.nodes[0].addr])
            with TopoProbe(["cluster", "--seeds", seeds]) as p:
                p.wait(lambda e: e.get("event") == "ready" and e["ready"] == 1, timeout=60)
                bad = [e["msg"] for e in p.logs() if e["name"] == "cluster_map_read"]
                text = " | ".join(bad)
                for why in ("cluster support disabled", "not an array", "contradicts",
                            "protocol error", "closed the connection"):
                    assert why in text, text
                assert p.close() == 0
    finally:
        for f in fakes:
            f.stop()


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=240)
