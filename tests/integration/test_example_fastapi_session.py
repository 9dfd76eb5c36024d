"""examples/fastapi's cookie session (issue 17): POST /login sets the app's
session cookie, and Herald's backend proxy asks the app's /herald/* routes
(FastAPI dependencies of herald_client.proxy) about sockets that come with
that cookie and no token; namespace order has "subscribe_proxy": true
(order:<id> for its buyer only) and the app answers the orders.list RPC.

test_session_routes runs today: the cookie login, the /session page, the
routes answering Herald's own proxy client (herald-backend-tool with run.sh's
HERALD_PROXY_* settings): the cookie's user, no cookie, another origin, the
buyer and another user on order:<id>, the RPC, refresh before and after
logout, and the proxy key required.

test_session_sockets waits for the proxy's wiring into the connection paths
(gateway/): a socket to Herald with the cookie and no token connects as the
user id, is subscribed to user:<id> and orders by the connect answer, calls
the RPC, may watch its own order (and receives its shipping), is refused
another's (forbidden); no cookie: unauthorized and 4003; logout: 4001.
"""

import json
import os
import subprocess
import time

import requests

from examples_harness import Example
from harness import WS, assert_error, assert_result, run_tests, wait_until
from test_backend_client import tool_path
from test_example_django_session import connected, next_push, refused
from test_example_fastapi import PASSWORD, App

PROXY_KEY = "p" * 32


def shop(session_check=60):
    return Example("fastapi", ports=("HERALD_PORT", "APP_PORT"),
                   env={"HERALD_JWT_SECRET": "s" * 40, "HERALD_API_KEY": "example-key",
                        "HERALD_PROXY_KEY": PROXY_KEY, "HERALD_SESSION_CHECK": session_check})


def cookie_login(app, username):
    """Registers, then POST /login: a requests.Session holding the cookie."""
    assert app.register(username).status_code == 201
    s = requests.Session()
    r = s.post(app.base + "/login", data={"username": username, "password": PASSWORD}, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text)
    assert "HttpOnly" in r.headers["Set-Cookie"] and "SameSite=lax" in r.headers["Set-Cookie"]
    return s, r.json()["id"]


def call(ex, kind, *args):
    """Herald's own proxy client calling the app's routes as the running Herald does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    app = ex.url("APP_PORT")
    env.update({"HERALD_PROXY_KEY": PROXY_KEY,
                "HERALD_PROXY_CONNECT_URL": app + "/herald/connect",
                "HERALD_PROXY_REFRESH_URL": app + "/herald/refresh",
                "HERALD_PROXY_SUBSCRIBE_URL": app + "/herald/subscribe",
                "HERALD_PROXY_RPC_URL": app + "/herald/rpc"})
    p = subprocess.run([tool_path(), "call", kind] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=60, env=env)
    assert p.returncode == 0, (p.stdout, p.stderr[-2000:])
    [answer] = json.loads(p.stdout)["answers"]
    return answer


def test_session_routes():
    with shop() as ex:
        ex.wait_http(ex.url("APP_PORT", "/healthz"))
        app = App(ex)
        alice, alice_id = cookie_login(app, "alice")
        bob, bob_id = cookie_login(app, "bob")
        page = alice.get(app.base + "/session", timeout=10).text
        assert 'new Herald("ws://127.0.0.1:%d/ws")' % ex.ports["HERALD_PORT"] in page
        assert alice.get(app.base + "/me", timeout=10).json()["username"] == "alice"  # the cookie
        r = alice.post(app.base + "/orders", json={"item": "teapot"}, timeout=10)
        assert r.status_code == 201, r.text
        order = r.json()["order"]["id"]

        cookie = "Cookie: shop_session=" + alice.cookies["shop_session"]
        origin = "Origin: " + app.base
        a = call(ex, "connect", "--header", cookie, "--header", origin)
        assert a["outcome"] == "result" and a["user"] == str(alice_id), a
        assert a["channels"] == ["user:%d" % alice_id, "orders"] and a["info"] == {"name": "alice"}
        assert 0 < a["expire_at"] - time.time() <= 61, a
        assert call(ex, "connect", "--header", origin) == {
            "outcome": "error", "code": "unauthorized", "message": "log in first"}
        assert call(ex, "connect", "--header", cookie, "--header", "Origin: http://localhost:1") \
            == {"outcome": "error", "code": "forbidden", "message": "sockets of this site only"}
        assert call(ex, "subscribe", "--user", alice_id, "--channel", "order:%d" % order) == \
            {"outcome": "result"}
        for user, ch in ((bob_id, "order:%d" % order), (alice_id, "order:999"),
                         (alice_id, "order:x")):
            assert call(ex, "subscribe", "--user", user, "--channel", ch) == {
                "outcome": "error", "code": "forbidden", "message": "not your order"}, (user, ch)
        assert call(ex, "rpc", "--user", alice_id, "--method", "orders.list") == {
            "outcome": "result", "data": [{"id": order, "item": "teapot", "quantity": 1}]}
        assert call(ex, "rpc", "--user", bob_id, "--method", "orders.list")["data"] == []
        assert call(ex, "rpc", "--user", alice_id, "--method", "nope")["code"] == "not_found"
        a = call(ex, "refresh", "--user", alice_id, "--header", cookie)
        assert a["outcome"] == "result" and a["expire_at"] > time.time(), a
        assert call(ex, "refresh", "--user", bob_id, "--header", cookie) == {
            "outcome": "result", "expired": True}
        r = requests.post(app.base + "/herald/connect", timeout=10,
                          json={"client": "n.1", "transport": "websocket", "remote_addr": "x"})
        assert r.status_code == 403, r.status_code

        assert alice.post(app.base + "/logout", timeout=10).status_code == 204
        assert call(ex, "refresh", "--user", alice_id, "--header", cookie) == {
            "outcome": "result", "expired": True}
        assert alice.get(app.base + "/me", timeout=10).status_code == 401
        assert ex.stop() == 143


#---- waits for the proxy's wiring into gateway/ -------------------------------

def socket(ex, session, origin=True):
    """A socket to Herald with the app's cookie and no token; connect sent."""
    headers = {}
    if session is not None:
        headers["Cookie"] = "shop_session=" + session.cookies["shop_session"]
    if origin:
        headers["Origin"] = ex.url("APP_PORT")
    ws = WS(ex.ports["HERALD_PORT"], timeout=20)
    assert ws.connect("/ws", headers) == 101, ws.http_body
    ws.send_json({"id": 1, "op": "connect"})
    return ws


def test_session_sockets():
    with shop(session_check=3) as ex:
        ex.wait_http(ex.url("APP_PORT", "/healthz"))
        app = App(ex)
        alice, alice_id = cookie_login(app, "alice")
        bob, _ = cookie_login(app, "bob")
        refused(socket(ex, None), "unauthorized")

        a = socket(ex, alice)
        hello, _ = connected(a)
        assert hello["user"] == str(alice_id), hello
        subscribed = {next_push(a, "subscribed")["channel"], next_push(a, "subscribed")["channel"]}
        assert subscribed == {"user:%d" % alice_id, "orders"}, subscribed

        order = alice.post(app.base + "/orders", json={"item": "kettle"}, timeout=10).json()
        oid = order["order"]["id"]
        got = {next_push(a)["channel"], next_push(a)["channel"]}
        assert got == {"user:%d" % alice_id, "orders"}, got
        assert assert_result(a.cmd("rpc", method="orders.list", data=None)) == {
            "data": [{"id": oid, "item": "kettle", "quantity": 1}]}
        assert_result(a.cmd("subscribe", channel="order:%d" % oid))
        assert alice.post(app.base + "/orders/%d/ship" % oid, timeout=10).json()["notified"]
        assert next_push(a, channel="order:%d" % oid)["data"] == {"type": "order.shipped",
                                                                  "id": oid}
        b = socket(ex, bob)
        connected(b)
        assert_error(b.cmd("subscribe", channel="order:%d" % oid), "forbidden")

        # logout: Herald's refresh call finds no session and closes 4001
        assert alice.post(app.base + "/logout", timeout=10).status_code == 204
        assert a.expect_close(30) == 4001
        wait_until(lambda: assert_result(b.cmd("ping")) == {}, 5, what="bob still served")
        b.close()
        assert ex.stop() == 143


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=180)
