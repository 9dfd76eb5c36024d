"""The Python client (clients/python, package herald_client) against a real
Herald: every call of the sync and the asyncio client, typed errors, tokens
minted with HS256 (standard library), RS256 and ES256 (PyJWT, and the
cryptography fallback) accepted by Herald, the retry rules against a
scripted HTTP server, a real 503 during a Redis outage, and a pip install
(the documented one, into a virtualenv, runs in md/docs/clients/python.md).
"""

import asyncio
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from harness import REPO, Herald, Redis, assert_result, run_tests, wait_until

sys.path.insert(0, os.path.join(REPO, "clients", "python"))

import herald_client  # noqa: E402
from herald_client import (AsyncHerald, ConnectionFailed, ConnectionLost, Herald as Client,  # noqa: E402
                           NotFound, Unauthorized, Unavailable, mint_token)

CONFIG = {"namespaces": {
    "chat": {"subscribe": "authenticated", "publish": "subscribers", "presence": True},
    "feed": {"subscribe": "authenticated", "publish": "none", "history_size": 10,
             "history_ttl": 300},
    "talk": {"subscribe": "authenticated", "publish": "authenticated", "history_size": 10},
}}


def test_sync_client():
    with Herald(config=CONFIG) as h:
        c = Client(h.base, api_key=h.api_key)
        w = h.client("alice", token=h.jwt(sub="alice"))
        assert_result(w.cmd("subscribe", channel="news"))
        assert c.publish("news", {"title": "hi"}) == {}
        assert w.messages(1)[0]["data"] == {"title": "hi"}
        r = c.broadcast(["news", "feed:x"], 2)
        assert [x["channel"] for x in r] == ["news", "feed:x"] and r[1]["result"]["offset"] == 1, r
        assert w.messages(1)[0]["data"] == 2
        # history
        c.publish("feed:x", 3)
        hist = c.history("feed:x", limit=1)
        assert [p["data"] for p in hist["publications"]] == [3] and hist["offset"] == 2, hist
        assert [p["offset"] for p in c.history("feed:x", since=1, epoch=hist["epoch"])
                ["publications"]] == [2]
        # who published: "from" for a client's publication, none for a backend's
        w2 = h.client("carol", token=h.jwt(sub="carol", info={"name": "Carol"}))
        assert_result(w2.cmd("publish", channel="talk:t", data="by carol"))
        c.publish("talk:t", "by the backend")
        pubs = c.history("talk:t")["publications"]
        assert [p.get("from") for p in pubs] == [
            {"user": "carol", "client": w2.hello["client"], "info": {"name": "Carol"}}, None], pubs
        # members, presence
        assert c.add_member("chat:lobby", "alice") is None
        assert w.recv_push("subscribed")["channel"] == "chat:lobby"
        assert [p["user"] for p in c.presence("chat:lobby")] == ["alice"]
        c.remove_member("chat:lobby", "alice")
        assert w.recv_push("unsubscribed")["channel"] == "chat:lobby"
        # typed errors
        try:
            c.presence("news")
            raise AssertionError("presence where it is off")
        except NotFound as e:
            assert e.status == 404 and e.detail and e.body["status"] == 404
        try:
            Client(h.base, api_key="wrong").publish("news", 1)
            raise AssertionError("a wrong key was accepted")
        except Unauthorized as e:
            assert e.status == 401
        for bad in ("bad channel", "", "x" * 256):
            try:
                c.publish(bad, 1)
                raise AssertionError("accepted channel %r" % bad)
            except ValueError:
                pass
        # a service token instead of an API key
        svc = Client(h.base, token=mint_token(h.secret, "svc", roles=["publisher"]))
        svc.publish("news", "from a token")
        assert w.messages(1)[0]["data"] == "from a token"
        # disconnect, delete a user
        c.disconnect("alice")
        assert w.expect_close() == 4003
        user = h.create_user("bob", "a long password 1")
        c.delete_user(user["id"])
        try:
            c.delete_user(user["id"])
            raise AssertionError("deleted twice")
        except NotFound:
            pass
        # a publication after the kept connection idled (servers close idle ones)
        time.sleep(1.2)
        assert c.publish("news", 4) == {}
        c.close()


def test_async_client():
    with Herald(config=CONFIG) as h:
        w = h.client("alice", token=h.jwt(sub="alice"))
        assert_result(w.cmd("subscribe", channel="news"))

        def run(coro_fn):
            async def main():
                async with AsyncHerald(h.base, api_key=h.api_key) as c:
                    return await coro_fn(c)
            return asyncio.run(main())

        async def publishes(c):
            assert await c.publish("news", {"a": 1}) == {}
            results = await asyncio.gather(*(c.publish("news", i) for i in range(5)))
            assert results == [{}] * 5
            await c.add_member("chat:r", "alice")
        run(publishes)
        got = [m["data"] for m in w.messages(6)]
        assert got[0] == {"a": 1} and sorted(got[1:]) == list(range(5))
        # the membership is applied on the socket's loop after the 204
        assert w.recv_push("subscribed")["channel"] == "chat:r"

        async def reads(c):
            pres = await c.presence("chat:r")
            r = await c.broadcast(["feed:y"], "h")
            hist = await c.history("feed:y")
            try:
                await c.presence("news")
                raise AssertionError("presence where it is off")
            except NotFound:
                pass
            await c.remove_member("chat:r", "alice")
            return pres, r, hist
        pres, r, hist = run(reads)
        assert [p["user"] for p in pres] == ["alice"]
        assert r[0]["result"]["offset"] == 1 and hist["publications"][0]["data"] == "h"
        assert w.recv_push("unsubscribed")["channel"] == "chat:r"
        run(lambda c: c.disconnect("alice"))
        assert w.expect_close() == 4003


def keypair(kind, d):
    key, pub = os.path.join(d, kind + ".key"), os.path.join(d, kind + ".pub")
    if kind == "rsa":
        gen = ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
    else:
        gen = ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    subprocess.run(gen + ["-out", key], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True,
                   capture_output=True)
    with open(key) as f:
        return f.read(), pub


def test_tokens_herald_accepts():
    with Herald() as h:  # HS256 with the shared secret
        tok = mint_token(h.secret, "carol", ttl=60, info={"name": "C"}, channels=["vip:*"])
        w = h.client("x", token=tok)
        assert w.hello["user"] == "carol" and w.hello["expires_at"] > time.time()
        assert_result(w.cmd("subscribe", channel="vip:room"))
        bad = mint_token("not the secret", "carol")
        assert h.ws().connect("/ws", {"Authorization": "Bearer " + bad}) == 401
    d = tempfile.mkdtemp()
    try:
        for kind, alg in (("rsa", "RS256"), ("ec", "ES256")):
            key, pub = keypair(kind, d)
            with Herald(env={"HERALD_JWT_PUBLIC_KEY": pub, "HERALD_JWT_SECRET": None}) as h:
                for fallback in (False, True):  # PyJWT, then cryptography alone
                    saved = sys.modules.get("jwt")
                    if fallback:
                        sys.modules["jwt"] = None  # import jwt -> ImportError
                    try:
                        tok = mint_token(key, "dave", alg=alg)
                    finally:
                        if fallback:
                            if saved is None:
                                sys.modules.pop("jwt", None)
                            else:
                                sys.modules["jwt"] = saved
                    w = h.client("x", token=tok)
                    assert w.hello["user"] == "dave", (alg, fallback)
                    w.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Scripted(http.server.BaseHTTPRequestHandler):
    """Answers by the server's script: "503", "200", "drop" (read the request,
    close without answering)."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def handle_one(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        srv = self.server
        srv.requests.append((self.command, self.path))
        step = srv.script.pop(0) if srv.script else "200"
        if step == "drop":
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        body = json.dumps({"type": "about:blank", "title": "Service Unavailable", "status": 503,
                           "detail": "scripted"} if step == "503" else {"clients": []}).encode()
        self.send_response(int(step))
        self.send_header("Content-Type", "application/problem+json" if step == "503"
                         else "application/json")
        if step == "503":
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = handle_one


def scripted(script):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    srv.script, srv.requests = list(script), []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, "http://127.0.0.1:%d" % srv.server_address[1]


def check_retries(make, call):
    """make(url) -> client; call(client, name, *args) runs a call (sync or async)."""
    # 503 twice, then an answer: every call is repeated
    srv, url = scripted(["503", "503", "200"])
    assert call(make(url), "publish", "news", 1) == {"clients": []}
    assert len(srv.requests) == 3
    # out of retries: the typed error, with what Herald said
    srv.script = ["503"] * 4
    srv.requests.clear()
    try:
        call(make(url), "publish", "news", 1)
        raise AssertionError("no Unavailable")
    except Unavailable as e:
        assert e.status == 503 and e.detail == "scripted"
    assert len(srv.requests) == 4  # 1 + retries
    # the connection breaks after the request: reads are repeated...
    srv.script = ["drop", "200"]
    srv.requests.clear()
    assert call(make(url), "presence", "chat:x") == []
    assert len(srv.requests) == 2
    # ... a publication is not (it may have been made)
    srv.script = ["drop", "200"]
    srv.requests.clear()
    try:
        call(make(url), "publish", "news", 1)
        raise AssertionError("no ConnectionLost")
    except ConnectionLost:
        pass
    assert len(srv.requests) == 1
    srv.shutdown()
    srv.server_close()
    # nobody listening: retried with backoff, then ConnectionFailed
    t0 = time.monotonic()
    try:
        call(make(url), "publish", "news", 1)
        raise AssertionError("no ConnectionFailed")
    except ConnectionFailed as e:
        assert not isinstance(e, ConnectionLost)
    assert time.monotonic() - t0 < 2


def test_retries_sync():
    def call(c, name, *args):
        try:
            return getattr(c, name)(*args)
        finally:
            c.close()
    check_retries(lambda url: Client(url, api_key="k", backoff=0.01, max_backoff=0.05), call)


def test_retries_async():
    def call(c, name, *args):
        async def run():
            try:
                return await getattr(c, name)(*args)
            finally:
                await c.close()
        return asyncio.run(run())
    check_retries(lambda url: AsyncHerald(url, api_key="k", backoff=0.01, max_backoff=0.05), call)


def test_real_503_during_a_redis_outage():
    with Redis() as r, Herald(redis=r, config=CONFIG) as h:
        h.wait_ready()
        c = Client(h.base, api_key=h.api_key, retries=1)
        assert c.publish("feed:z", 1) == {"offset": 1}
        r.halt()
        wait_until(lambda: not h.ready(), what="readyz 503")
        t0 = time.monotonic()
        try:
            c.publish("feed:z", 2)
            raise AssertionError("a history publication was accepted without Redis")
        except Unavailable as e:
            assert e.status == 503 and e.retry_after == 1.0
        assert time.monotonic() - t0 >= 1.0  # it waited Retry-After before the retry
        assert c.publish("news", 3) == {"local_only": True}
        c.close()


def test_pip_install():
    d = tempfile.mkdtemp()
    try:
        src = os.path.join(d, "src")
        shutil.copytree(os.path.join(REPO, "clients", "python"), src,
                        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        target = os.path.join(d, "site")
        p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation",
                            "--no-deps", "--no-index", "--target", target, src],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        p = subprocess.run([sys.executable, "-c",
                            "import herald_client, sys; print(herald_client.__version__, "
                            "herald_client.__file__)"],
                           capture_output=True, text=True, env={"PYTHONPATH": target}, cwd=d)
        assert p.returncode == 0 and p.stdout.startswith(herald_client.__version__ + " " + target), \
            p.stdout + p.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=120)
