"""Lifecycle events (SPEC §8) end to end: real herald processes, real
WebSocket clients, a real webhook (backend_fixture.py), a real Redis and
channels_redis reading the Django Channels channel. connect, disconnect
(with the close code and the duration), subscribe, unsubscribe, and
channel occupied / vacated exactly once cluster-wide across two nodes."""

import json
import time
from contextlib import ExitStack

from asgiref.sync import async_to_sync
from channels_redis.core import RedisChannelLayer

import backend_fixture as bf
from harness import Herald, Redis, assert_result, cluster_nodes, run_tests, wait_until

CONFIG = {"namespaces": {"": {"subscribe": "authenticated", "publish": "authenticated"}}}


def hook_events(b, path="/events"):
    out = []
    for req in b.got(path):
        out.extend(json.loads(req["body"])["events"])
    return out


def of_type(events, t, **match):
    return [e for e in events if e["type"] == t and all(e.get(k) == v for k, v in match.items())]


def test_webhook_connect_subscribe_disconnect():
    with bf.Backend() as b:
        url = b.route("/events", bf.answer(200, b"{}"))
        with Herald(env={"HERALD_EVENTS_WEBHOOK_URL": url, "HERALD_PROXY_KEY": "k"},
                    config=CONFIG) as h:
            ws = h.client("alice")
            client = ws.hello["client"]
            assert_result(ws.cmd("subscribe", channel="room"))
            assert_result(ws.cmd("unsubscribe", channel="room"))
            assert_result(ws.cmd("subscribe", channel="room2"))
            t0 = time.monotonic()
            ws.send_close(1000)
            assert ws.expect_close(10) == 1000
            wait_until(lambda: of_type(hook_events(b), "herald.disconnect"), 20,
                       what="herald.disconnect")
            ev = hook_events(b)
            assert of_type(ev, "herald.connect") == [{
                "type": "herald.connect", "client": client, "user": "alice",
                "transport": "websocket", "node": "test"}], ev
            [d] = of_type(ev, "herald.disconnect")
            assert d["client"] == client and d["user"] == "alice" and d["code"] == 1000, d
            assert d["node"] == "test" and 0 <= d["duration_ms"] < 60000 + (time.monotonic() - t0) * 1000
            subs = [(e["type"], e["channel"]) for e in ev
                    if e["type"] in ("herald.subscribe", "herald.unsubscribe")]
            assert subs == [("herald.subscribe", "room"), ("herald.unsubscribe", "room"),
                            ("herald.subscribe", "room2"), ("herald.unsubscribe", "room2")], subs
            for e in of_type(ev, "herald.subscribe") + of_type(ev, "herald.unsubscribe"):
                assert e["client"] == client and e["user"] == "alice", e
            # one node: its own first/last subscriber is the cluster's
            occ = [(e["type"], e["channel"]) for e in ev if e["type"].startswith("herald.channel")]
            assert occ == [("herald.channel.occupied", "room"), ("herald.channel.vacated", "room"),
                           ("herald.channel.occupied", "room2"),
                           ("herald.channel.vacated", "room2")], occ
            for req in b.got("/events"):
                assert dict((k.lower(), v) for k, v in req["headers"])["x-herald-proxy-key"] == "k"


def test_server_close_code_and_dropped_tcp():
    """The disconnect's code: the server's close code (4001 at the connect
    deadline is unauthenticated: no event; a token's expiry is), or 1006
    for a TCP connection that just ended."""
    with bf.Backend() as b:
        url = b.route("/events", bf.answer(200, b"{}"))
        with Herald(env={"HERALD_EVENTS_WEBHOOK_URL": url}, config=CONFIG) as h:
            a = h.user("exp", exp=int(time.time()) + 1)
            assert a.expect_close(20) == 4001
            d = h.client("dropper")
            d.sock.close()
            wait_until(lambda: len(of_type(hook_events(b), "herald.disconnect")) == 2, 20,
                       what="two disconnects")
            codes = {e["user"]: e["code"] for e in of_type(hook_events(b), "herald.disconnect")}
            assert codes == {"exp": 4001, "dropper": 1006}, codes


def test_occupied_vacated_once_across_two_nodes():
    """Subscribers of one channel on two nodes: occupied once when the
    first arrives anywhere, vacated once when the last anywhere leaves,
    whichever node they were on."""
    with bf.Backend() as b, Redis() as r, ExitStack() as st:
        url = b.route("/events", bf.answer(200, b"{}"))
        n0, n1 = cluster_nodes(st, r, 2, env={"HERALD_EVENTS_WEBHOOK_URL": url}, config=CONFIG)

        def occ():
            return [(e["type"], e["channel"]) for e in hook_events(b)
                    if e["type"].startswith("herald.channel")]
        a = n0.subscriber("lobby", "alice")
        wait_until(lambda: occ() == [("herald.channel.occupied", "lobby")], 20, what="occupied")
        c = n1.subscriber("lobby", "carol")
        a2 = n0.subscriber("lobby", "ann")
        assert_result(a.cmd("unsubscribe", channel="lobby"))
        assert_result(c.cmd("unsubscribe", channel="lobby"))
        # a marker: n1's next occupancy event comes after everything above
        m = n1.subscriber("marker", "mark")
        wait_until(lambda: ("herald.channel.occupied", "marker") in occ(), 20, what="marker")
        assert occ() == [("herald.channel.occupied", "lobby"),
                         ("herald.channel.occupied", "marker")], occ()
        assert_result(a2.cmd("unsubscribe", channel="lobby"))
        wait_until(lambda: ("herald.channel.vacated", "lobby") in occ(), 20, what="vacated")
        m.send_close(1000)
        wait_until(lambda: ("herald.channel.vacated", "marker") in occ(), 20, what="vacated")
        got = occ()
        assert got.count(("herald.channel.occupied", "lobby")) == 1, got
        assert got.count(("herald.channel.vacated", "lobby")) == 1, got
        # the nodes' events name them
        nodes = {e["node"] for e in of_type(hook_events(b), "herald.connect")}
        assert nodes == {"n0", "n1"}, nodes


def test_django_channel_events():
    """HERALD_EVENTS_DJANGO_CHANNEL: the events arrive on the Channels
    channel in the layer's format, read by channels_redis itself."""
    with Redis() as r, ExitStack() as st:
        (h,) = cluster_nodes(st, r, 1, env={"HERALD_DJANGO_CHANNELS": "redis",
                                             "HERALD_EVENTS_DJANGO_CHANNEL": "herald-lifecycle"},
                             config=CONFIG)
        ws = h.client("alice")
        assert_result(ws.cmd("subscribe", channel="room"))
        ws.send_close(4000)
        assert ws.expect_close(10) == 4000
        L = RedisChannelLayer(hosts=[r.url])
        got = []
        while not got or got[-1]["type"] != "herald.disconnect":
            got.append(async_to_sync(L.receive)("herald-lifecycle"))
        types = [e["type"] for e in got]
        assert types[0] == "herald.connect" and "herald.subscribe" in types, types
        assert "herald.channel.occupied" in types, types
        d = got[-1]
        assert d["user"] == "alice" and d["code"] == 4000 and d["client"] == ws.hello["client"], d
        assert isinstance(d["duration_ms"], int), d


if __name__ == "__main__":
    run_tests(globals())
