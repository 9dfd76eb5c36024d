"""examples/fastapi, run for real: its run.sh starts Herald (embedded mode) and
the FastAPI app (uvicorn, Debian's python3-fastapi) on free ports; users
register and log in through the app's own OAuth2 password login, take a Herald
token from the app, connect real WebSockets to Herald with it, and see the
app's domain event (POST /orders) arrive on their personal and the public
channel, published by the app through clients/python. The "ten lines" of
docs/integrations/fastapi.md run as written there.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

import requests

from examples_harness import Example, http_ok, port_open
from harness import (REPO, WS, Herald, assert_error, assert_result, authenticate, free_port,
                     jwt_parts, run_tests, wait_until)

PASSWORD = "correct horse battery"


def shop():
    return Example("fastapi", ports=("HERALD_PORT", "APP_PORT"),
                   env={"HERALD_JWT_SECRET": "s" * 40, "HERALD_API_KEY": "example-key"})


class App:
    def __init__(self, ex):
        self.base = ex.url("APP_PORT")

    def register(self, username, password=PASSWORD):
        return requests.post(self.base + "/users", json={"username": username, "password": password},
                             timeout=10)

    def login(self, username, password=PASSWORD):
        return requests.post(self.base + "/token",
                             data={"grant_type": "password", "username": username,
                                   "password": password}, timeout=10)

    def get(self, path, access):
        return requests.get(self.base + path, headers={"Authorization": "Bearer " + access},
                            timeout=10)

    def post(self, path, access, body):
        return requests.post(self.base + path, json=body,
                             headers={"Authorization": "Bearer " + access}, timeout=10)

    def user(self, username):
        """Registers and logs in: (user id, the app's access token)."""
        r = self.register(username)
        assert r.status_code == 201, (r.status_code, r.text)
        r = self.login(username)
        assert r.status_code == 200, (r.status_code, r.text)
        body = r.json()
        assert body["token_type"] == "bearer" and body["access_token"], body
        me = self.get("/me", body["access_token"]).json()
        assert me["username"] == username, me
        return me["id"], body["access_token"]


def herald_socket(ex, app, access):
    """A real WebSocket to Herald with the token the app issued."""
    r = app.get("/herald-token", access)
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    assert body["url"] == "ws://127.0.0.1:%d/ws" % ex.ports["HERALD_PORT"], body
    return authenticate(WS(ex.ports["HERALD_PORT"]), body["token"]), body


def next_message(ws, timeout=5.0):
    while True:
        m = ws.recv_json(timeout)
        if m.get("push") == "message":
            return m


def test_login_token_and_order_events():
    with shop() as ex:
        ex.wait_http(ex.url("APP_PORT", "/healthz"))
        app = App(ex)
        alice_id, alice = app.user("alice")
        bob_id, bob = app.user("bob")
        assert alice_id != bob_id
        # the app's own login: wrong passwords, unknown users, no token
        assert app.login("alice", "wrong password").status_code == 401
        assert app.login("nobody").status_code == 401
        assert app.register("alice").status_code == 409
        assert app.register("carol", "short").status_code == 422
        assert app.get("/herald-token", "not-a-token").status_code == 401
        assert requests.post(app.base + "/orders", json={"item": "x"}, timeout=10).status_code == 401

        # the Herald token the app minted (HS256, clients/python)
        wa, tok = herald_socket(ex, app, alice)
        head, claims, _ = jwt_parts(tok["token"])
        assert head["alg"] == "HS256" and claims["sub"] == str(alice_id), (head, claims)
        assert claims["info"] == {"name": "alice"} and claims["exp"] - claims["iat"] == 900, claims
        assert wa.hello["user"] == str(alice_id), wa.hello
        assert tok["channels"] == ["user:%d" % alice_id, "orders"], tok
        for ch in tok["channels"]:
            assert_result(wa.cmd("subscribe", channel=ch))
        wb, _ = herald_socket(ex, app, bob)
        assert_result(wb.cmd("subscribe", channel="orders"))
        # Herald keeps alice's channel hers, whatever token bob's app gave him
        assert_error(wb.cmd("subscribe", channel="user:%d" % alice_id), "forbidden")

        # the domain event
        r = app.post("/orders", alice, {"item": "teapot", "quantity": 2})
        assert r.status_code == 201, (r.status_code, r.text)
        order = r.json()["order"]
        assert r.json()["notified"] is True and order["item"] == "teapot", r.json()
        got = [next_message(wa), next_message(wa)]
        by_channel = {m["channel"]: m["data"] for m in got}
        assert by_channel == {
            "user:%d" % alice_id: {"type": "order.created", "order": order},
            "orders": {"type": "order.created", "item": "teapot", "quantity": 2},
        }, got
        assert next_message(wb) == {"push": "message", "channel": "orders",
                                    "data": {"type": "order.created", "item": "teapot",
                                             "quantity": 2}}
        # bob's order: bob's channel (nobody listens) and the public one
        r = app.post("/orders", bob, {"item": "kettle"})
        assert r.status_code == 201 and r.json()["notified"] is True, r.text
        assert next_message(wa)["data"] == {"type": "order.created", "item": "kettle",
                                            "quantity": 1}
        # ... and nothing of bob's reaches alice: a marker published on
        # "orders" after the app's publications comes next
        def publish(channel, data):
            r = requests.post(ex.url("HERALD_PORT", "/api/v1/publish"), timeout=10,
                              headers={"X-API-Key": "example-key"},
                              json={"channel": channel, "data": data})
            assert r.status_code == 200, (r.status_code, r.text)

        marker = wa.assert_quiet_until_marker(publish, "orders")
        assert next_message(wb)["data"] == {"type": "order.created", "item": "kettle",
                                            "quantity": 1}
        assert next_message(wb)["data"] == marker
        assert app.post("/orders", bob, {"item": "x", "quantity": 0}).status_code == 422

        # the page a person would open loads herald.js from Herald
        page = requests.get(app.base + "/", timeout=10)
        assert page.status_code == 200 and \
            'from "http://127.0.0.1:%d/herald.js"' % ex.ports["HERALD_PORT"] in page.text
        wa.close()
        wb.close()
        assert ex.stop() == 143
        # run.sh stopped what it started
        assert not port_open(ex.ports["HERALD_PORT"]) and not port_open(ex.ports["APP_PORT"])


def test_order_kept_when_herald_is_down():
    """HERALD_URL names a Herald that is not running: run.sh starts only the
    app; orders are still taken, answered notified: false."""
    with Example("fastapi", ports=("APP_PORT",),
                 env={"HERALD_URL": "http://127.0.0.1:%d" % free_port(),
                      "HERALD_JWT_SECRET": "s" * 40, "HERALD_API_KEY": "k"}) as ex:
        ex.wait_http(ex.url("APP_PORT", "/healthz"))
        app = App(ex)
        _, access = app.user("dave")
        r = app.post("/orders", access, {"item": "teapot"})
        assert r.status_code == 201, r.text
        assert r.json()["notified"] is False, r.json()
        assert r.json()["order"]["id"] == 1


def test_finds_debians_python_when_the_first_python3_lacks_fastapi():
    """A python3 first on PATH without FastAPI (pyenv's, a virtualenv's: here
    Debian's without its site-packages) and no PYTHON: run.sh uses Debian's
    /usr/bin/python3, where apt-get installed FastAPI, instead of dying
    "python3 lacks FastAPI"."""
    shim = tempfile.mkdtemp(prefix="herald-python-shim-")
    with open(os.path.join(shim, "python3"), "w") as f:
        f.write("#!/bin/sh\nexec /usr/bin/python3 -S \"$@\"\n")
    os.chmod(os.path.join(shim, "python3"), 0o755)
    try:
        env = {"PYTHON": "", "PATH": shim + ":" + os.environ.get("PATH", "/usr/bin:/bin"),
               "HERALD_URL": "http://127.0.0.1:%d" % free_port(),
               "HERALD_JWT_SECRET": "s" * 40, "HERALD_API_KEY": "k"}
        assert subprocess.run([os.path.join(shim, "python3"), "-c", "import fastapi"],
                              capture_output=True).returncode != 0, "the shim sees FastAPI"
        with Example("fastapi", ports=("APP_PORT",), env=env) as ex:
            ex.wait_http(ex.url("APP_PORT", "/healthz"))
            assert "lacks FastAPI" not in ex.output(), ex.output()
    finally:
        shutil.rmtree(shim, ignore_errors=True)


def readme_ten_lines():
    """The first python block of docs/integrations/fastapi.md."""
    with open(os.path.join(REPO, "docs", "integrations", "fastapi.md")) as f:
        text = f.read()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_readme_ten_lines():
    """The docs' ten lines, as written there, with a stand-in for the app's
    login dependency (current_user): the token they issue opens a socket,
    the order they publish reaches it."""
    code = readme_ten_lines()
    assert "mint_token" in code and "herald.publish" in code, code
    d = tempfile.mkdtemp(prefix="herald-readme-fastapi-")
    with open(os.path.join(d, "readme_app.py"), "w") as f:
        f.write("from types import SimpleNamespace\n"
                "def current_user():\n    return SimpleNamespace(id=7)\n\n" + code)
    with Herald() as h:
        port = free_port()
        env = dict(os.environ, HERALD_URL=h.base, HERALD_API_KEY=h.api_key,
                   HERALD_JWT_SECRET=h.secret, PYTHONDONTWRITEBYTECODE="1",
                   PYTHONPATH=os.path.join(REPO, "clients", "python"))
        log = open(os.path.join(d, "uvicorn.log"), "wb")
        app = subprocess.Popen([sys.executable, "-m", "uvicorn", "readme_app:app", "--app-dir", d,
                                "--host", "127.0.0.1", "--port", str(port)], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
        try:
            base = "http://127.0.0.1:%d" % port
            wait_until(lambda: app.poll() is not None or http_ok(base + "/docs"), 60,
                       what="uvicorn")
            assert app.poll() is None, open(log.name).read()
            tok = requests.get(base + "/herald-token", timeout=10).json()["token"]
            ws = authenticate(h.ws(), tok)
            assert ws.hello["user"] == "7"
            assert_result(ws.cmd("subscribe", channel="user:7"))
            r = requests.post(base + "/orders", json={"item": "teapot"}, timeout=10)
            assert r.status_code == 200 and r.json() == {"item": "teapot"}, r.text
            assert next_message(ws) == {"push": "message", "channel": "user:7",
                                        "data": {"type": "order.created",
                                                 "order": {"item": "teapot"}}}
        finally:
            app.terminate()
            app.wait(10)
            log.close()
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=120)
