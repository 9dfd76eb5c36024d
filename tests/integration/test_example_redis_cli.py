"""examples/redis-cli, run for real: run.sh starts redis-server and Herald in
cluster mode, and publish.sh's demo backend publishes with nothing but
`redis-cli FCALL herald_publish 0 CHANNEL JSON` into a plain channel
("status") and a history channel ("feed:events"); a WebSocket client sees
both, with offsets, history and recovery on the history channel. publish.sh's
one-shot form prints 0 or the offset and fails on Redis' error replies.
"""

import json
import time

from examples_harness import Example, port_open, run_script
from harness import WS, assert_result, authenticate, make_jwt, run_tests, wait_until

SECRET = "r" * 40


def token(sub="viewer"):
    return make_jwt({"sub": sub, "exp": int(time.time()) + 600}, SECRET)


def next_message(ws, channel, timeout=10.0):
    while True:
        m = ws.recv_json(timeout)
        if m.get("push") == "message" and m["channel"] == channel:
            return m


def test_backend_with_redis_cli_only():
    with Example("redis-cli", ports=("REDIS_PORT", "HERALD_PORT"),
                 env={"HERALD_JWT_SECRET": SECRET, "INTERVAL": "0.2"}) as ex:
        ex.wait_http(ex.url("HERALD_PORT", "/readyz"))
        redis_url = "redis://127.0.0.1:%d/0" % ex.ports["REDIS_PORT"]
        ws = authenticate(WS(ex.ports["HERALD_PORT"]), token())

        # the plain channel: live only, no offset
        assert_result(ws.cmd("subscribe", channel="status"))
        m = next_message(ws, "status")
        assert "offset" not in m and set(m["data"]) == {"host", "load", "time"}, m
        assert isinstance(m["data"]["load"], float) and abs(m["data"]["time"] - time.time()) < 60

        # the history channel: what was published before the subscribe is kept
        wait_until(lambda: "event 3 is offset 3" in ex.output(), 30, what="three events")
        res = assert_result(ws.cmd("subscribe", channel="feed:events"))
        assert res["offset"] >= 3 and res["epoch"], res
        hist = assert_result(ws.cmd("history", channel="feed:events", limit=100))
        assert [p["data"] for p in hist["publications"][:3]] == \
            [{"n": i, "text": "event %d" % i} for i in (1, 2, 3)], hist
        live = next_message(ws, "feed:events")
        assert live["offset"] > res["offset"] and live["data"]["n"] == live["offset"], live
        # a client that was away recovers what it missed, in order
        ws2 = authenticate(WS(ex.ports["HERALD_PORT"]), token("late"))
        res2 = assert_result(ws2.cmd("subscribe", channel="feed:events",
                                     since={"offset": 1, "epoch": res["epoch"]}))
        assert res2["recovered"] is True, res2
        assert [p["offset"] for p in res2["publications"]] == list(range(2, res2["offset"] + 1))

        # publish.sh's one-shot form, into a plain and a history channel
        assert_result(ws.cmd("subscribe", channel="news"))
        p = run_script("redis-cli", "publish.sh", ["news", '{"title":"hi"}'],
                       env={"REDIS_URL": redis_url})
        assert p.returncode == 0 and p.stdout.strip() == "0", (p.returncode, p.stdout, p.stderr)
        assert next_message(ws, "news") == {"push": "message", "channel": "news",
                                            "data": {"title": "hi"}}
        assert_result(ws.cmd("subscribe", channel="feed:deploys"))
        p = run_script("redis-cli", "publish.sh", ["feed:deploys", json.dumps({"v": "1.2"})],
                       env={"REDIS_URL": redis_url})
        assert p.returncode == 0 and p.stdout.strip() == "1", (p.returncode, p.stdout, p.stderr)
        assert next_message(ws, "feed:deploys") == {"push": "message", "channel": "feed:deploys",
                                                    "data": {"v": "1.2"}, "offset": 1}
        # Redis' error replies fail the script
        for args, err in ((["bad channel", "{}"], "ERR invalid channel name"),
                          (["news", "{not json"], "ERR data must be JSON text")):
            p = run_script("redis-cli", "publish.sh", args, env={"REDIS_URL": redis_url})
            assert p.returncode != 0 and err in p.stdout + p.stderr, (args, p)
        ws.close()
        ws2.close()
        assert ex.stop() == 143
        for port in ex.ports.values():
            assert not port_open(port), "port %d still open after run.sh stopped" % port


def test_demo_backend_rounds_and_prefix():
    """COUNT bounds the demo; HERALD_REDIS_PREFIX names the function."""
    with Example("redis-cli", ports=("REDIS_PORT", "HERALD_PORT"),
                 env={"HERALD_JWT_SECRET": SECRET, "INTERVAL": "0.1", "COUNT": "3",
                      "HERALD_REDIS_PREFIX": "my-app"}) as ex:
        # run.sh passes HERALD_REDIS_PREFIX to Herald and publish.sh alike;
        # the demo ends after three rounds, and run.sh with it
        ex.proc.wait(60)
        out = ex.output()
        assert "event 3 is offset 3 of feed:events" in out and "event 4" not in out, out
        assert ex.proc.returncode == 0, out


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=120)
