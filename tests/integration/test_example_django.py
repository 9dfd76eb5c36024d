"""examples/django, run for real with both channels_redis layers: its run.sh
starts redis-server, Herald in cluster mode with the Django bridge, the
project's Channels worker and Django's development server on free ports. A
WebSocket client of Herald, with a token from `manage.py herald_token`,
receives what the project's ordinary Channels code sends:

- the view POST /news/ (async_to_sync(channel_layer.group_send)("news", ...));
- the management commands `notify USER TEXT` (group "user..USER", Herald's
  personal channel user:USER) and `announce chat:lobby TEXT` (group "chat..lobby");
- the worker consumer (runworker herald-events), which answers a chat
  publication the browser made (namespace chat -> django_channel) with a
  group_send back into the room.
"""

import os
import subprocess
import sys

import requests

from examples_harness import EXAMPLES, Example, port_open
from harness import WS, assert_result, authenticate, jwt_parts, run_tests, wait_until

SECRET = "d" * 40
DJANGO_DIR = os.path.join(EXAMPLES, "django")


def project(layer):
    return Example("django", ports=("REDIS_PORT", "HERALD_PORT", "DJANGO_PORT", "NGINX_PORT"),
                   env={"DJANGO_CHANNEL_LAYER": layer, "HERALD_JWT_SECRET": SECRET})


def manage(ex, *args):
    """python3 manage.py ARGS in the example's directory, with what run.sh
    exports (the settings read REDIS_URL, DJANGO_CHANNEL_LAYER, HERALD_JWT_SECRET)."""
    env = dict(ex.env)
    env["REDIS_URL"] = "redis://127.0.0.1:%d/0" % ex.ports["REDIS_PORT"]
    env["PYTHONPATH"] = os.path.join(EXAMPLES, "..", "clients", "python")
    p = subprocess.run([sys.executable, "manage.py"] + list(args), cwd=DJANGO_DIR, env=env,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, "manage.py %s: %s%s" % (" ".join(args), p.stdout, p.stderr)
    return p.stdout


def redis_cli(ex, *args):
    p = subprocess.run(["redis-cli", "-p", str(ex.ports["REDIS_PORT"])] + list(args),
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def herald_in_group(ex, layer, group):
    """Herald has joined the Channels group (so a group_send reaches it)."""
    if layer == "pubsub":
        return redis_cli(ex, "PUBSUB", "NUMSUB", "asgi__group__" + group)[1] == "1"
    return any(m.startswith("herald.") for m in redis_cli(ex, "ZRANGE", "asgi:group:" + group,
                                                          "0", "-1"))


def next_message(ws, timeout=10.0):
    while True:
        m = ws.recv_json(timeout)
        if m.get("push") == "message":
            return m


def check_project(layer):
    with project(layer) as ex:
        ex.wait_http(ex.url("DJANGO_PORT", "/healthz"), timeout=90)
        token = manage(ex, "herald_token", "alice").strip()
        assert jwt_parts(token)[1]["sub"] == "alice"
        # run.sh prints one too
        wait_until(lambda: any(line.startswith("eyJ") for line in ex.output().splitlines()), 30,
                   what="run.sh to print a token")
        ws = authenticate(WS(ex.ports["HERALD_PORT"]), token)
        for ch in ("news", "user:alice", "chat:lobby"):
            assert_result(ws.cmd("subscribe", channel=ch))
        for group in ("news", "user..alice", "chat..lobby"):
            wait_until(lambda: herald_in_group(ex, layer, group), 10, what="Herald in " + group)

        # a Django view
        r = requests.post(ex.url("DJANGO_PORT", "/news/"), json={"title": "hi"}, timeout=10)
        assert r.status_code == 200 and r.json() == {"sent": True}, (r.status_code, r.text)
        assert next_message(ws) == {"push": "message", "channel": "news",
                                    "data": {"type": "news.item", "title": "hi"}}
        assert requests.post(ex.url("DJANGO_PORT", "/news/"), data="x",
                             timeout=10).status_code == 400

        # a management command, to the personal channel
        manage(ex, "notify", "alice", "your order shipped")
        assert next_message(ws) == {"push": "message", "channel": "user:alice",
                                    "data": {"type": "notification", "text": "your order shipped"}}

        # another command, to a namespaced channel (group "chat..lobby")
        manage(ex, "announce", "chat:lobby", "welcome")
        assert next_message(ws) == {"push": "message", "channel": "chat:lobby",
                                    "data": {"type": "announcement", "from": "django",
                                             "text": "welcome"}}

        # the browser publishes; the Channels worker answers in the room
        if layer == "pubsub":  # pub/sub keeps nothing for a worker not yet listening
            wait_until(lambda: redis_cli(ex, "PUBSUB", "NUMSUB", "herald-events")[1] == "1", 30,
                       what="the worker to listen")
        assert_result(ws.cmd("publish", channel="chat:lobby", data={"text": "!ping"}))
        assert next_message(ws)["data"] == {"text": "!ping"}
        assert next_message(ws) == {"push": "message", "channel": "chat:lobby",
                                    "data": {"type": "chat.bot", "from": "bot", "text": "pong, alice"}}
        ws.close()
        assert ex.stop() == 143
        for p in ex.ports.values():
            assert not port_open(p), "port %d still open after run.sh stopped" % p


def test_redis_layer():
    check_project("redis")


def test_pubsub_layer():
    check_project("pubsub")


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=150)
