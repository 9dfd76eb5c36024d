"""herald_client.proxy (clients/python): the answers and requests of SPEC §8's
proxies, and the Django and FastAPI wrappers served for real - Django 3.2's
session authentication (a user logged in through Django, the session cookie
forwarded by Herald's proxy client) behind wsgiref, and a FastAPI app under
uvicorn - called by herald-backend-tool, Herald's own proxy client."""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from harness import REPO, free_port, run_tests, wait_until
from test_backend_client import tool_path

sys.path.insert(0, os.path.join(REPO, "clients", "python"))

from herald_client import proxy as hp  # noqa: E402

KEY = "proxy-k3y"


def call(kind, *args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    e.update(env or {})
    p = subprocess.run([tool_path(), "call", kind] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=60, env=e)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr[-2000:])
    out = json.loads(p.stdout)
    [a] = out["answers"]
    return a


def raises(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s(%r, %r) did not raise %s" % (fn.__name__, args, kw, exc.__name__))


#---- pure ----------------------------------------------------------------------

def test_answers():
    assert hp.connect_result("42") == {"result": {"user": "42"}}
    assert hp.connect_result("42", expire_at=1900000000, info={"name": "Ann"}, roles=["staff"],
                             channels=["user:42", "news"]) == {"result": {
        "user": "42", "expire_at": 1900000000, "info": {"name": "Ann"}, "roles": ["staff"],
        "channels": ["user:42", "news"]}}
    assert hp.refresh_result(1900000600) == {"result": {"expire_at": 1900000600}}
    assert hp.refresh_expired() == {"result": {"expired": True}}
    assert hp.subscribe_result() == {"result": {}}
    assert hp.publish_result() == {"result": {}}
    assert hp.publish_result(None) == {"result": {"data": None}}
    assert hp.publish_result({"t": "***"}) == {"result": {"data": {"t": "***"}}}
    assert hp.rpc_result([1, 2]) == {"result": {"data": [1, 2]}}
    assert hp.error("forbidden", "no") == {"error": {"code": "forbidden", "message": "no"}}
    assert hp.disconnect(4500, "banned") == {"disconnect": {"code": 4500, "reason": "banned"}}
    # what Herald would refuse is refused here, with a reason
    for fn, args, kw in [
            (hp.connect_result, ("",), {}), (hp.connect_result, (42,), {}),
            (hp.connect_result, ("u" * 256,), {}), (hp.connect_result, ("a\x00b",), {}),
            (hp.connect_result, ("u",), {"expire_at": -1}),
            (hp.connect_result, ("u",), {"expire_at": 1.5}),
            (hp.connect_result, ("u",), {"expire_at": True}),
            (hp.connect_result, ("u",), {"info": [1]}),
            (hp.connect_result, ("u",), {"roles": [""]}),
            (hp.connect_result, ("u",), {"roles": ["r"] * 65}),
            (hp.connect_result, ("u",), {"channels": ["a b"]}),
            (hp.connect_result, ("u",), {"channels": ["x" * 256]}),
            (hp.refresh_result, (253402300800,), {}),
            (hp.error, ("Forbidden",), {}), (hp.error, ("9x",), {}), (hp.error, ("",), {}),
            (hp.error, ("x" * 65,), {}), (hp.error, ("x", "m" * 1025), {}),
            (hp.disconnect, (4499,), {}), (hp.disconnect, (5000,), {}),
            (hp.disconnect, (4500, "r" * 124), {}), (hp.disconnect, (4500, "é" * 62), {})]:
        raises(ValueError, fn, *args, **kw)
    assert hp.disconnect(4500, "r" * 123)["disconnect"]["reason"] == "r" * 123
    assert hp.answer_for(hp.ProxyError("not_found", "x")) == hp.error("not_found", "x")
    assert hp.answer_for(hp.ProxyDisconnect(4501, "bye")) == hp.disconnect(4501, "bye")


def test_requests():
    r = hp.parse_request("connect", b'{"client":"n.1","transport":"websocket",'
                                    b'"remote_addr":"10.0.0.1","data":{"a":1}}')
    assert (r.kind, r.client, r.transport, r.remote_addr, r.data, r.has_data) == \
        ("connect", "n.1", "websocket", "10.0.0.1", {"a": 1}, True)
    r = hp.parse_request("connect", '{"client":"n.1","transport":"sse","remote_addr":"::1"}')
    assert r.data is None and not r.has_data and r.user is None
    r = hp.parse_request("publish", {"client": "n.1", "user": "u", "channel": "c", "data": None})
    assert r.has_data and r.data is None and r.channel == "c"
    r = hp.parse_request("subscribe", {"client": "n.1", "user": None, "channel": "public:a"})
    assert r.user is None  # anonymous
    r = hp.parse_request("rpc", {"client": "n.1", "user": "u", "method": "m", "data": [1]})
    assert r.method == "m" and r.data == [1]
    for kind, body in [("connect", b"\xff"), ("connect", b"not json"), ("connect", b"[1]"),
                       ("connect", {"client": "n.1"}), ("refresh", {"client": "n.1"}),
                       ("subscribe", {"client": "n.1", "user": "u"}),
                       ("publish", {"client": "n.1", "user": "u", "channel": "c"}),
                       ("rpc", {"client": "n.1", "user": "u", "data": 1}),
                       ("rpc", {"client": 7, "user": "u", "method": "m", "data": 1}),
                       ("refresh", {"client": "n.1", "user": 5})]:
        raises(hp.ProxyRequestError, hp.parse_request, kind, body)
    raises(ValueError, hp.parse_request, "teleport", b"{}")


def test_check_key():
    assert hp.check_key({}, None) and hp.check_key({}, "")
    assert hp.check_key({"X-Herald-Proxy-Key": KEY}, KEY)
    assert hp.check_key({"x-herald-proxy-key": KEY}, KEY)  # a plain dict, any case
    assert not hp.check_key({"X-Herald-Proxy-Key": KEY + "x"}, KEY)
    assert not hp.check_key({}, KEY)


#---- Django, for real ----------------------------------------------------------

_django = {}


def django_app():
    """A Django project in this process: sessions, auth, a user, the proxy
    views; served by wsgiref on a free port. Returns (base_url, cookie)."""
    if _django:
        return _django["url"], _django["cookie"]
    import django
    from django.conf import settings
    from django.urls import path
    tmp = tempfile.mkdtemp(prefix="herald-django-proxy-")
    settings.configure(
        DEBUG=False, SECRET_KEY="test-only-secret", ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                        "django.contrib.sessions"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware",
                    "django.middleware.csrf.CsrfViewMiddleware",
                    "django.contrib.auth.middleware.AuthenticationMiddleware"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                               "NAME": os.path.join(tmp, "db.sqlite3")}},
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"], USE_TZ=True)
    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client
    call_command("migrate", verbosity=0)

    @hp.django_view("connect", key=KEY)
    def connect(request, call):
        if not request.user.is_authenticated:
            raise hp.ProxyError("unauthorized", "log in first")
        return hp.connect_result(str(request.user.pk), info={"name": request.user.username},
                                 channels=["user:%d" % request.user.pk])

    @hp.django_view("rpc", key=KEY)
    def rpc(request, call):
        if call.method == "kick":
            raise hp.ProxyDisconnect(4501, "kicked")
        return hp.rpc_result({"user": request.user.username, "echo": call.data})

    global urlpatterns
    urlpatterns = [path("herald/connect", connect), path("herald/rpc", rpc)]
    User.objects.create_user("alice", password="wonderland")
    c = Client(enforce_csrf_checks=True)
    assert c.login(username="alice", password="wonderland")
    cookie = "sessionid=%s" % c.cookies["sessionid"].value

    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from django.core.handlers.wsgi import WSGIHandler

    class Quiet(WSGIRequestHandler):
        def log_message(self, *a):
            pass
    server = make_server("127.0.0.1", 0, WSGIHandler(), server_class=WSGIServer,
                         handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _django.update(url="http://127.0.0.1:%d" % server.server_address[1], cookie=cookie)
    return _django["url"], cookie


def test_django_session_auth_through_the_connect_proxy():
    """The browser's Django session cookie, forwarded by Herald's proxy
    client, authenticates the connection: no JWT anywhere."""
    url, cookie = django_app()
    env = {"HERALD_PROXY_CONNECT_URL": url + "/herald/connect", "HERALD_PROXY_KEY": KEY}
    a = call("connect", "--header", "Cookie: " + cookie, "--header", "User-Agent: test",
             env=env)
    assert a["outcome"] == "result" and a["info"] == {"name": "alice"}, a
    assert a["channels"] == ["user:%s" % a["user"]]
    # no session: the view's ProxyError reaches the client as an error
    a = call("connect", env=env)
    assert a == {"outcome": "error", "code": "unauthorized", "message": "log in first"}, a
    # a forged session cookie is nobody
    a = call("connect", "--header", "Cookie: sessionid=forged", env=env)
    assert a["outcome"] == "error", a
    # without the key (not Herald): 403, unavailable for the client
    a = call("connect", "--header", "Cookie: " + cookie,
             env={"HERALD_PROXY_CONNECT_URL": url + "/herald/connect"})
    assert a["outcome"] == "unavailable" and "status 403" in a["why"], a


def test_django_rpc_and_disconnect():
    url, cookie = django_app()
    env = {"HERALD_PROXY_RPC_URL": url + "/herald/rpc", "HERALD_PROXY_KEY": KEY}
    a = call("rpc", "--user", "1", "--method", "echo", "--data", '{"n": 1}',
             "--header", "Cookie: " + cookie, env=env)
    assert a == {"outcome": "result", "data": {"user": "alice", "echo": {"n": 1}}}, a
    a = call("rpc", "--user", "1", "--method", "kick", "--data", "null", env=env)
    assert a == {"outcome": "disconnect", "close_code": 4501, "reason": "kicked"}, a


#---- FastAPI, for real ---------------------------------------------------------

def test_fastapi_dependencies():
    import uvicorn
    from fastapi import Depends, FastAPI, Request

    app = FastAPI()
    hp.add_fastapi_handlers(app)
    sessions = {"s3ss10n": "bob"}

    def session_user(request: Request) -> str:
        user = sessions.get(request.cookies.get("session", ""))
        if not user:
            raise hp.ProxyError("unauthorized", "no session")
        return user

    @app.post("/herald/connect")
    async def connect(call: hp.ProxyRequest = Depends(hp.fastapi_call("connect", key=KEY)),
                      user: str = Depends(session_user)):
        return hp.connect_result(user, expire_at=int(time.time()) + 3600)

    @app.post("/herald/subscribe")
    async def subscribe(call: hp.ProxyRequest = Depends(hp.fastapi_call("subscribe", key=KEY))):
        if not call.channel.startswith("team:"):
            raise hp.ProxyError("forbidden", "teams only")
        return hp.subscribe_result()

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan="off"))
    t = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    t.start()
    try:
        wait_until(lambda: server.started, timeout=30, what="uvicorn")
        base = "http://127.0.0.1:%d" % port
        env = {"HERALD_PROXY_CONNECT_URL": base + "/herald/connect",
               "HERALD_PROXY_SUBSCRIBE_URL": base + "/herald/subscribe",
               "HERALD_PROXY_KEY": KEY}
        a = call("connect", "--header", "Cookie: session=s3ss10n", env=env)
        assert a["outcome"] == "result" and a["user"] == "bob" and a["expire_at"] > time.time()
        a = call("connect", env=env)
        assert a == {"outcome": "error", "code": "unauthorized", "message": "no session"}, a
        a = call("subscribe", "--user", "bob", "--channel", "team:red", env=env)
        assert a == {"outcome": "result"}, a
        a = call("subscribe", "--user", "bob", "--channel", "news", env=env)
        assert a == {"outcome": "error", "code": "forbidden", "message": "teams only"}, a
        env["HERALD_PROXY_KEY"] = "wrong"
        a = call("subscribe", "--user", "bob", "--channel", "team:red", env=env)
        assert a["outcome"] == "unavailable" and "status 403" in a["why"], a
    finally:
        server.should_exit = True
        t.join(30)


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=120)
