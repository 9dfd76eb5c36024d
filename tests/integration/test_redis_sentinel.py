"""Sentinel discovery and following (channels/redis_sentinel.c, through
tests/redis/redis_topo_probe) against real processes: one master, one
replica and three sentinels (redis_topology.SentinelSet), plus fake
sentinels that are dead, do not know the master, or lie about it.

Every wait is for an event (a probe report, a role, the sentinels'
agreement), bounded generously."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import free_port, run_tests  # noqa: E402
from redis_topology import FakeRedis, SentinelSet, Status, TopoProbe  # noqa: E402


def fake_sentinel(answer):
    """A sentinel (FakeRedis) whose SENTINEL get-master-addr-by-name answer
    is fixed: (ip, port) - a lie when that node is a replica - or None
    (it does not know the master)."""

    def reply(args):
        name = args[0].upper()
        if name == b"SENTINEL":
            return b"*-1\r\n" if answer is None else [answer[0], str(answer[1])]
        if name == b"SUBSCRIBE":
            return ["subscribe", args[1], 1]
        return Status("OK")

    return FakeRedis(reply)


def probe_for(s, sentinels, password=None, sentinel_password=None, poll_ms=60000):
    args = ["sentinel", "--sentinels", ",".join(sentinels), "--master", s.name,
            "--poll-ms", poll_ms]
    if password is not None:
        args += ["--password", password]
    if sentinel_password is not None:
        args += ["--sentinel-password", sentinel_password]
    return TopoProbe(args)


def is_master(port=None):
    return lambda e: e.get("event") == "master" and e.get("host") is not None and \
        (port is None or e["port"] == port)


def master_gone(e):
    return e.get("event") == "master" and e.get("host") is None


def log_named(name, text=None):
    return lambda e: e.get("event") == "log" and e["name"] == name and \
        (text is None or text in e["msg"])


def test_follows_a_failover():
    """The master is SIGKILLed: the sentinels promote the replica, the
    probe hears +switch-master (polling is off), says the old master is
    gone, checks the new one with ROLE and reports it. Passwords on the
    data nodes and, separately, on the sentinels."""
    with SentinelSet(password="data-pw", sentinel_password="sentinel-pw") as s:
        old = s.master()
        with probe_for(s, [x.addr for x in s.sentinels], password="data-pw",
                       sentinel_password="sentinel-pw") as p:
            p.wait(is_master(old.port), what="the master's address")
            mark = p.mark()
            s.kill_master()
            new = s.wait_failover(old)
            assert new is not old
            p.wait(master_gone, since=mark, what="the old master reported gone")
            ev = p.wait(is_master(), since=mark, timeout=60, what="the new master")
            assert ev["port"] == new.port, ev
            assert p.wait(log_named("sentinel_switch", "+switch-master"), since=mark)
            assert p.close() == 0


def test_lying_dead_and_ignorant_sentinels():
    """Sentinels asked in order: a dead one, one that does not know the
    master, one that names the replica (ROLE says slave, so it is not
    believed), then real ones. Only the real master is ever reported. A
    recheck reports it gone and then back."""
    with SentinelSet() as s:
        master = s.master()
        replica = [n for n in s.nodes if n is not master][0]
        dead = "127.0.0.1:%d" % free_port()
        ignorant, liar = fake_sentinel(None), fake_sentinel(("127.0.0.1", replica.port))
        try:
            with probe_for(s, [dead, ignorant.addr, liar.addr] +
                           [x.addr for x in s.sentinels]) as p:
                ev = p.wait(is_master(), what="a master")
                assert ev["port"] == master.port, ev
                p.wait(log_named("sentinel_unreachable", dead))
                p.wait(log_named("sentinel_unknown_master"))
                p.wait(log_named("sentinel_stale", "says it is a slave"))
                assert ignorant.seen["SENTINEL"] >= 1 and liar.seen["SENTINEL"] >= 1
                mark = p.mark()
                p.send("recheck")
                p.wait(master_gone, since=mark, what="the recheck")
                ev = p.wait(is_master(), since=mark, what="the master again")
                assert ev["port"] == master.port
                masters = [e["port"] for e in p.events if is_master()(e)]
                assert replica.port not in masters, masters
                assert p.close() == 0
        finally:
            ignorant.stop()
            liar.stop()


def test_wrong_sentinel_password():
    """Sentinels with a password Herald does not know: their own refusal
    (WRONGPASS) is what gets logged, no master is reported, and the
    follower keeps trying (a round that found nothing is logged)."""
    with SentinelSet(sentinel_password="sentinel-pw") as s:
        with probe_for(s, [x.addr for x in s.sentinels], sentinel_password="wrong") as p:
            p.wait(log_named("sentinel_unreachable", "WRONGPASS"))
            p.wait(log_named("sentinel_no_master"), what="the end of a round")
            assert not [e for e in p.events if e.get("event") == "master"]
            assert p.close() == 0


def test_subscription_moves_when_its_sentinel_dies():
    """The sentinel carrying the +switch-master subscription is killed;
    the follower subscribes on the next one and still follows the
    failover the two remaining sentinels perform."""
    with SentinelSet() as s:
        old = s.master()
        with probe_for(s, [x.addr for x in s.sentinels]) as p:
            p.wait(is_master(old.port))
            mark = p.mark()
            s.sentinels[0].kill()  # the probe subscribes on the first sentinel first
            p.wait(log_named("sentinel_sub_lost"), since=mark)
            p.wait(log_named("sentinel_subscribed", s.sentinels[1].addr), since=mark,
                   what="the subscription on the next sentinel")
            mark = p.mark()
            s.kill_master()
            new = s.wait_failover(old)
            ev = p.wait(is_master(new.port), since=mark, timeout=60, what="the new master")
            assert ev["port"] != old.port
            # learnt from the message, not by asking (polling is off)
            p.wait(log_named("sentinel_switch", "+switch-master"), since=mark)
            assert p.close() == 0


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=150)
