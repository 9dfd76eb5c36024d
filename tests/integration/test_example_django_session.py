"""examples/django's session login (issue 17): Django's own login form, nginx
serving Django and Herald on one origin, sockets authenticated by the session
cookie through Herald's connect proxy (no JWT anywhere), a subscribe check
and an RPC answered by ordinary Django views (chat/proxy.py), and a worker
consumer (chat/consumers.py, runworker herald-lifecycle) receiving Herald's
lifecycle events. run.sh starts everything on free ports.

test_site_and_views runs today: nginx serves Django at / and Herald at /ws
and /herald.js (a JWT socket through nginx works), refuses /herald/ to
browsers; the proxy views answer Herald's own proxy client
(herald-backend-tool, with run.sh's HERALD_PROXY_* settings) for a logged-in
and a logged-out session, a foreign Origin, team members and others, RPC
methods and a logged-out refresh; the worker turns herald.* events (sent as
Herald's bridge will send them) into "activity" pushes and handles every
event type.

test_session_sockets waits for the proxy to be wired into the connection
paths (gateway/): a socket with the session cookie and no token connects as
the user, is subscribed to user:<name> by the connect answer, chats, calls the
RPC, is refused team:board by the subscribe view (and bob team:staff), a
socket without a session or from another origin is refused (the backend's
code, then close 4003), Herald's herald.disconnect reaches the worker (bob
sees alice go offline with code 1000), and logging out closes the session's
other socket with 4001 through the refresh view.
"""

import json
import os
import re
import subprocess
import time

import requests

from examples_harness import Example, port_open
from harness import WS, assert_error, assert_result, authenticate, run_tests, wait_until
from test_backend_client import tool_path
from test_example_django import herald_in_group, manage

PASSWORD = "correct-horse-42"
PROXY_KEY = "k" * 32
PORTS = ("REDIS_PORT", "HERALD_PORT", "DJANGO_PORT", "NGINX_PORT")


def project(layer="redis", session_check=60):
    return Example("django", ports=PORTS,
                   env={"DJANGO_CHANNEL_LAYER": layer, "HERALD_JWT_SECRET": "d" * 40,
                        "DEMO_PASSWORD": PASSWORD, "HERALD_PROXY_KEY": PROXY_KEY,
                        "HERALD_SESSION_CHECK": session_check})


def site(ex, path=""):
    return ex.url("NGINX_PORT", path)


def start(ex):
    ex.wait_http(site(ex, "/healthz"), timeout=120)
    wait_until(lambda: "a Herald token" in ex.output(), 30, what="run.sh's last lines")
    return ex


def example_dir(ex):
    m = re.search(r"logs: (\S+)\)", ex.output())
    assert m, ex.output()
    return m.group(1)


def login(ex, user, password=PASSWORD):
    """Django's login form through nginx, as a browser fills it: a session
    (requests.Session) holding the sessionid cookie."""
    s = requests.Session()
    r = s.get(site(ex, "/"), timeout=10)
    assert r.url == site(ex, "/accounts/login/?next=/"), r.url  # the page wants a login
    r = s.post(site(ex, "/accounts/login/"),
               data={"username": user, "password": password, "next": "/",
                     "csrfmiddlewaretoken": s.cookies["csrftoken"]},
               allow_redirects=False, timeout=10)
    assert r.status_code == 302 and r.headers["Location"] == "/", (r.status_code, r.text[:300])
    assert s.cookies.get("sessionid")
    return s


def call(ex, kind, *args):
    """Herald's own proxy client (gateway/proxy_call.c through
    herald-backend-tool) calling the Django views as the running Herald does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    django = ex.url("DJANGO_PORT")
    env.update({"HERALD_PROXY_KEY": PROXY_KEY,
                "HERALD_PROXY_CONNECT_URL": django + "/herald/connect",
                "HERALD_PROXY_REFRESH_URL": django + "/herald/refresh",
                "HERALD_PROXY_SUBSCRIBE_URL": django + "/herald/subscribe",
                "HERALD_PROXY_RPC_URL": django + "/herald/rpc"})
    p = subprocess.run([tool_path(), "call", kind] + list(args), capture_output=True, text=True,
                       timeout=60, env=env)
    assert p.returncode == 0, (p.stdout, p.stderr[-2000:])
    out = json.loads(p.stdout)
    [answer] = out["answers"]
    return answer


def send_event(ex, layer, event):
    """What Herald's bridge sends to HERALD_EVENTS_DJANGO_CHANNEL:
    channel_layer.send("herald-lifecycle", event), through channels_redis."""
    code = ("import asyncio, json, sys\n"
            "from channels_redis.core import RedisChannelLayer\n"
            "from channels_redis.pubsub import RedisPubSubChannelLayer\n"
            "cls = RedisPubSubChannelLayer if sys.argv[1] == 'pubsub' else RedisChannelLayer\n"
            "layer = cls(hosts=[sys.argv[2]])\n"
            "async def main():\n"
            "    await layer.send('herald-lifecycle', json.loads(sys.argv[3]))\n"
            "    if hasattr(layer, 'close_pools'):\n"
            "        await layer.close_pools()\n"
            "    else:\n"
            "        await layer.flush()\n"
            "asyncio.run(main())\n")
    url = "redis://127.0.0.1:%d/0" % ex.ports["REDIS_PORT"]
    p = subprocess.run(["/usr/bin/python3", "-c", code, layer, url, json.dumps(event)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr[-2000:]


def next_push(ws, kind="message", channel=None, timeout=20.0):
    """The next push of kind (on channel), skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        m = ws.recv_json(max(0.1, deadline - time.monotonic()))
        if m.get("push") == kind and (channel is None or m.get("channel") == channel):
            return m


def session_socket(ex, session=None, origin="site", data=None):
    """A socket through nginx with the session's cookie (and the site's
    Origin, as the page's browser sends it), upgraded, and its `connect`
    command sent without a token. Returns (ws, connect command id)."""
    headers = {}
    if session is not None:
        headers["Cookie"] = "sessionid=" + session.cookies["sessionid"]
    if origin:
        headers["Origin"] = site(ex) if origin == "site" else origin
    ws = WS(ex.ports["NGINX_PORT"], timeout=20)
    assert ws.connect("/ws", headers) == 101, ws.http_body
    cmd = {"id": 1, "op": "connect"}
    if data is not None:
        cmd["data"] = data
    ws.send_json(cmd)
    return ws


def connected(ws):
    """Reads the connect reply and the `connected` push (either order)."""
    reply = hello = None
    deadline = time.monotonic() + 20
    while reply is None or hello is None:
        m = ws.recv_json(max(0.1, deadline - time.monotonic()))
        if m.get("id") == 1:
            reply = assert_result(m)
        elif m.get("push") == "connected":
            hello = m
    return hello, reply


def refused(ws, code):
    """The connect's error reply carries the backend's code, then close 4003."""
    m = ws.recv_json(20)
    assert_error(m, code, 1)
    assert ws.expect_close(20) == 4003
    return m


#---- runs today ---------------------------------------------------------------

def test_site_and_views():
    with project() as ex:
        start(ex)
        # one origin: Django at /, Herald at /herald.js and /ws
        r = requests.get(site(ex, "/"), allow_redirects=False, timeout=10)
        assert r.status_code == 302 and r.headers["Location"] == "/accounts/login/?next=/", r
        r = requests.get(site(ex, "/herald.js"), timeout=10)
        assert r.status_code == 200 and "export class Herald" in r.text, r.status_code
        assert r.headers["Content-Type"].startswith("application/javascript")
        for path in ("/herald/connect", "/herald/rpc"):  # Herald's calls, not the browser's
            assert requests.post(site(ex, path), json={}, timeout=10).status_code == 404
        token = manage(ex, "herald_token", "alice").strip()
        ws = authenticate(WS(ex.ports["NGINX_PORT"]), token)  # a JWT socket through nginx
        assert ws.hello["user"] == "alice"

        # the login form and the page
        alice = login(ex, "alice")
        page = alice.get(site(ex, "/"), timeout=10)
        assert page.status_code == 200 and 'new Herald("/ws")' in page.text
        assert '<b id="me">alice</b>' in page.text
        bad = requests.Session()
        bad.get(site(ex, "/accounts/login/"), timeout=10)
        r = bad.post(site(ex, "/accounts/login/"), allow_redirects=False, timeout=10,
                     data={"username": "alice", "password": "wrong", "next": "/",
                           "csrfmiddlewaretoken": bad.cookies["csrftoken"]})
        assert r.status_code == 200 and "Wrong username or password" in r.text

        # the views answer Herald's own proxy client
        cookie = "Cookie: sessionid=" + alice.cookies["sessionid"]
        origin = "Origin: " + site(ex)
        a = call(ex, "connect", "--header", cookie, "--header", origin,
                 "--remote-addr", "203.0.113.9")
        assert a["outcome"] == "result" and a["user"] == "alice", a
        assert a["channels"] == ["user:alice"] and a["info"] == {"name": "alice"}, a
        assert 0 < a["expire_at"] - time.time() <= 61, a
        assert call(ex, "connect", "--header", origin) == {
            "outcome": "error", "code": "unauthorized", "message": "log in first"}
        assert call(ex, "connect", "--header", cookie, "--header", "Origin: https://evil.example") \
            == {"outcome": "error", "code": "forbidden", "message": "sockets of this site only"}
        assert call(ex, "subscribe", "--user", "alice", "--channel", "team:staff") == \
            {"outcome": "result"}
        for user, team in (("alice", "board"), ("bob", "staff")):
            a = call(ex, "subscribe", "--user", user, "--channel", "team:" + team)
            assert a == {"outcome": "error", "code": "forbidden",
                         "message": "only members of team %s" % team}, a
        assert call(ex, "rpc", "--user", "alice", "--method", "whoami", "--data", "null") == {
            "outcome": "result", "data": {"username": "alice", "staff": False, "teams": ["staff"]}}
        assert call(ex, "rpc", "--user", "bob", "--method", "whoami")["data"]["teams"] == []
        assert call(ex, "rpc", "--user", "alice", "--method", "nope") == {
            "outcome": "error", "code": "not_found", "message": "no method nope"}
        a = call(ex, "refresh", "--user", "alice", "--header", cookie)
        assert a["outcome"] == "result" and a["expire_at"] > time.time(), a
        assert call(ex, "refresh", "--user", "bob", "--header", cookie) == {
            "outcome": "result", "expired": True}
        # Django's views refuse calls without Herald's key
        r = requests.post(ex.url("DJANGO_PORT", "/herald/connect"), timeout=10,
                          json={"client": "n.1", "transport": "websocket", "remote_addr": "x"})
        assert r.status_code == 403, r.status_code

        # logging out ends the session: the refresh view says so
        alice.get(site(ex, "/accounts/logout/"), timeout=10)
        assert call(ex, "refresh", "--user", "alice", "--header", cookie) == {
            "outcome": "result", "expired": True}
        assert call(ex, "connect", "--header", cookie, "--header", origin)["code"] == "unauthorized"

        # the worker: Herald's lifecycle events (as its bridge sends them) become
        # "activity" pushes; every event type has a handler
        assert_result(ws.cmd("subscribe", channel="activity"))
        wait_until(lambda: herald_in_group(ex, "redis", "activity"), 10, what="Herald in activity")
        events = [
            {"type": "herald.connect", "client": "n.1", "user": "alice",
             "transport": "websocket", "node": "n"},
            {"type": "herald.subscribe", "client": "n.1", "user": "alice", "channel": "team:staff"},
            {"type": "herald.channel.occupied", "channel": "team:staff"},
            {"type": "herald.unsubscribe", "client": "n.1", "user": "alice",
             "channel": "team:staff"},
            {"type": "herald.channel.vacated", "channel": "team:staff"},
            {"type": "herald.disconnect", "client": "n.1", "user": "alice", "code": 1000,
             "duration_ms": 1234, "node": "n"},
        ]
        for e in events:
            send_event(ex, "redis", e)
        assert next_push(ws, channel="activity")["data"] == {"type": "user.online",
                                                              "user": "alice"}
        assert next_push(ws, channel="activity")["data"] == {
            "type": "user.offline", "user": "alice", "code": 1000, "duration_ms": 1234}
        with open(os.path.join(example_dir(ex), "worker.log")) as f:
            log = f.read()
        for line in ("alice subscribed to team:staff", "channel team:staff has subscribers",
                     "alice unsubscribed from team:staff",
                     "channel team:staff has no subscribers left",
                     "alice disconnected (n.1, code 1000 after 1234 ms)"):
            assert line in log, (line, log[-2000:])
        assert "Traceback" not in log, log[-3000:]
        ws.close()
        assert ex.stop() == 143
        for p in ex.ports.values():
            assert not port_open(p), "port %d still open after run.sh stopped" % p


#---- waits for the proxy's wiring into gateway/ -------------------------------

def test_session_sockets():
    with project(session_check=3) as ex:
        start(ex)
        alice, bob = login(ex, "alice"), login(ex, "bob")

        # no session: the connect view's code, then 4003; the same from a page
        # of another origin that the browser sends the cookie with
        refused(session_socket(ex, None), "unauthorized")
        refused(session_socket(ex, alice, origin="https://evil.example"), "forbidden")

        # alice's page: no token, the session cookie; connected as alice and
        # subscribed at once to user:alice (the connect answer's channels)
        a = session_socket(ex, alice, data={"page": "/"})
        hello, reply = connected(a)
        assert hello["user"] == "alice" and reply["user"] == "alice", (hello, reply)
        assert isinstance(hello["expires_at"], int), hello
        assert next_push(a, "subscribed")["channel"] == "user:alice"
        manage(ex, "notify", "alice", "hello alice")
        assert next_push(a, channel="user:alice")["data"] == {"type": "notification",
                                                               "text": "hello alice"}

        # bob watches the lobby and the activity channel
        b = session_socket(ex, bob)
        assert connected(b)[0]["user"] == "bob"
        for ch in ("chat:lobby", "activity"):
            assert_result(b.cmd("subscribe", channel=ch))
        wait_until(lambda: herald_in_group(ex, "redis", "activity"), 10, what="Herald in activity")

        # the chat, with no JWT anywhere
        assert_result(a.cmd("subscribe", channel="chat:lobby"))
        assert_result(a.cmd("publish", channel="chat:lobby", data={"text": "hi bob"}))
        m = next_push(b, channel="chat:lobby")
        assert m["data"] == {"text": "hi bob"} and m["from"]["user"] == "alice", m

        # an RPC and the subscribe check, answered by Django views
        assert assert_result(a.cmd("rpc", method="whoami", data=None)) == {
            "data": {"username": "alice", "staff": False, "teams": ["staff"]}}
        assert_error(a.cmd("rpc", method="nope", data={}), "not_found")
        assert_result(a.cmd("subscribe", channel="team:staff"))
        assert_error(a.cmd("subscribe", channel="team:board"), "forbidden")
        assert_error(b.cmd("subscribe", channel="team:staff"), "forbidden")

        # alice's second tab; closing the first: Herald's herald.disconnect
        # reaches the worker, which tells the activity channel
        a2 = session_socket(ex, alice)
        assert connected(a2)[0]["user"] == "alice"
        a.close()
        deadline = time.monotonic() + 30
        while True:  # (the refused sockets above were nobody's: user null)
            m = next_push(b, channel="activity", timeout=max(0.1, deadline - time.monotonic()))
            if m["data"]["type"] == "user.offline" and m["data"]["user"] == "alice":
                break
        assert m["data"]["code"] == 1000, m
        assert isinstance(m["data"]["duration_ms"], int) and m["data"]["duration_ms"] >= 0, m

        # logging out: the refresh view finds no session, Herald closes 4001
        alice.get(site(ex, "/accounts/logout/"), timeout=10)
        assert a2.expect_close(30) == 4001
        # bob's session stands: still connected, still served
        assert assert_result(b.cmd("rpc", method="whoami", data=None))["data"]["username"] == "bob"
        b.close()
        assert ex.stop() == 143


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=240)
