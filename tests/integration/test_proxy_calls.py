"""The backend proxy calls of SPEC §8 (gateway/proxy_call.c over
gateway/backend.c, answers checked by gateway/proxy.c), driven by
herald-backend-tool against a real HTTP backend (backend_fixture.py), with
the configuration read from HERALD_PROXY_* exactly as herald reads it:
what the backend receives (body, forwarded headers only, the proxy key),
each kind of answer, and every failure a client sees as "unavailable" -
down, slow, garbage, huge, wrong status, redirect, over the bounds - with
the metrics counting each; a connect storm of 5,000 through a pool of 32
backend connections."""

import json
import os
import subprocess

import backend_fixture as bf
from harness import run_tests
from test_backend_client import tool_path


def call(kind, *args, env=None, timeout=120):
    """Runs `herald-backend-tool call KIND ARGS...` with HERALD_* from env;
    returns its JSON report."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    e.update(env or {})
    p = subprocess.run([tool_path(), "call", kind] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=timeout, env=e)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr[-2000:])
    out = json.loads(p.stdout)
    assert out["clean"], out
    out["log"] = p.stderr
    return out


def only(out):
    [a] = out["answers"]
    return a


def test_connect_request_and_result():
    with bf.Backend() as b:
        url = b.route("/herald/connect", bf.answer(200, {"result": {
            "user": "42", "expire_at": 1900000000, "info": {"name": "Ann"},
            "roles": ["staff"], "channels": ["news", "user:42"], "later": "ignored"}}))
        out = call("connect", "--client", "n1.7", "--remote-addr", "10.1.2.3",
                   "--data", '{"room": "lobby"}',
                   "--header", "Cookie: sessionid=abc; csrftoken=x",
                   "--header", "User-Agent: Mozilla/5.0",
                   "--header", "X-Secret: never forwarded",
                   "--header", "Origin: https://app.example",
                   env={"HERALD_PROXY_CONNECT_URL": url, "HERALD_PROXY_KEY": "k3y"})
        assert only(out) == {"outcome": "result", "user": "42", "expire_at": 1900000000,
                             "info": {"name": "Ann"}, "roles": ["staff"],
                             "channels": ["news", "user:42"]}, out
        [req] = b.got("/herald/connect")
        assert json.loads(req["body"]) == {"client": "n1.7", "transport": "websocket",
                                           "remote_addr": "10.1.2.3", "data": {"room": "lobby"}}
        names = [k.lower() for k, _ in req["headers"]]
        h = dict((k.lower(), v) for k, v in req["headers"])
        assert h["cookie"] == "sessionid=abc; csrftoken=x"
        assert h["user-agent"] == "Mozilla/5.0" and h["origin"] == "https://app.example"
        assert h["x-herald-proxy-key"] == "k3y" and h["content-type"] == "application/json"
        assert "x-secret" not in names, names
        assert out["stats"] == {"requests": 1, "results": 1, "refusals": 0, "errors": 0,
                                "timeouts": 0, "rejected": 0, "latency_count": 1}, out


def test_configured_headers_only():
    """HERALD_PROXY_HEADERS replaces the default list; nothing else passes."""
    with bf.Backend() as b:
        url = b.route("/c", bf.answer(200, {"result": {"user": "u"}}))
        call("connect", "--header", "Cookie: a=1", "--header", "X-Request-Id: r-1",
             "--header", "Authorization: Bearer t",
             env={"HERALD_PROXY_CONNECT_URL": url, "HERALD_PROXY_HEADERS": "X-Request-Id"})
        [req] = b.got("/c")
        names = {k.lower() for k, _ in req["headers"]}
        assert "x-request-id" in names and not names & {"cookie", "authorization",
                                                        "x-herald-proxy-key"}, names


def test_error_and_disconnect_answers():
    with bf.Backend() as b:
        env = {"HERALD_PROXY_SUBSCRIBE_URL": b.route("/sub", bf.answer(200, {
                   "error": {"code": "forbidden", "message": "members only"}})),
               "HERALD_PROXY_CONNECT_URL": b.route("/conn", bf.answer(200, {
                   "disconnect": {"code": 4501, "reason": "banned"}}))}
        out = call("subscribe", "--user", "u1", "--channel", "chat:a", env=env)
        assert only(out) == {"outcome": "error", "code": "forbidden",
                             "message": "members only"}, out
        assert out["stats"]["refusals"] == 1
        assert json.loads(b.got("/sub")[0]["body"]) == {"client": "test.1", "user": "u1",
                                                        "channel": "chat:a"}
        out = call("connect", env=env)
        assert only(out) == {"outcome": "disconnect", "close_code": 4501,
                             "reason": "banned"}, out


def test_refresh_publish_rpc_results():
    with bf.Backend() as b:
        env = {"HERALD_PROXY_CONNECT_URL": b.route("/c", bf.answer(200, {"result": {"user": "u"}})),
               "HERALD_PROXY_REFRESH_URL": b.route("/r", bf.script([
                   bf.answer(200, {"result": {"expire_at": 1900000600}}),
                   bf.answer(200, {"result": {"expired": True}})])),
               "HERALD_PROXY_PUBLISH_URL": b.route("/p", bf.answer(200, {
                   "result": {"data": {"text": "***"}}})),
               "HERALD_PROXY_RPC_URL": b.route("/rpc", bf.echo()),
               "HERALD_PROXY_RPC_METHODS": "billing.=" + b.url("/billing")}
        b.route("/billing", bf.echo())
        assert only(call("refresh", "--user", "u", env=env))["expire_at"] == 1900000600
        assert only(call("refresh", "--user", "u", env=env))["expired"] is True
        a = only(call("publish", "--user", "u", "--channel", "chat:a", "--data",
                      '{"text": "damn"}', env=env))
        assert a == {"outcome": "result", "data": {"text": "***"}}, a
        assert json.loads(b.got("/p")[0]["body"])["data"] == {"text": "damn"}
        # rpc: the longest configured prefix picks the URL, the rest go to the default
        a = only(call("rpc", "--user", "u", "--method", "billing.invoice", "--data", "[1]",
                      env=env))
        assert a["outcome"] == "result" and a["data"]["path"] == "/billing", a
        assert a["data"]["body"] == {"client": "test.1", "user": "u",
                                     "method": "billing.invoice", "data": [1]}
        a = only(call("rpc", "--user", "u", "--method", "orders.list", env=env))
        assert a["data"]["path"] == "/rpc" and a["data"]["body"]["data"] is None, a


def test_not_configured_is_unavailable_at_once():
    out = call("rpc", "--user", "u", "--method", "x")
    assert out["immediate"] == 1 and only(out)["outcome"] == "unavailable", out
    assert "no URL" in only(out)["why"]


def test_bad_answers_are_unavailable_and_counted():
    """Status not 200, a redirect (not followed), garbage, a valid JSON that
    is not a valid answer, a huge body: each is unavailable, logged, and
    counted as an error."""
    cases = {
        "/500": (bf.answer(500, b"oops", {"Content-Type": "text/plain"}), "status 500"),
        "/204": (bf.answer(204, b""), "status 204"),
        "/moved": (bf.answer(302, b"", {"Location": "/ok"}), "status 302"),
        "/html": (bf.answer(200, b"<html>login</html>", {"Content-Type": "text/html"}),
                  "not JSON"),
        "/user-int": (bf.answer(200, {"result": {"user": 42}}), "result.user"),
        "/both": (bf.answer(200, {"result": {"user": "u"}, "error": {"code": "x"}}),
                  "more than one"),
        "/huge": (bf.huge(50 << 20), "HERALD_PROXY_MAX_RESPONSE"),
    }
    with bf.Backend() as b:
        b.route("/ok", bf.answer(200, {"result": {"user": "u"}}))
        for path, (fn, why) in cases.items():
            url = b.route(path, fn)
            out = call("connect", env={"HERALD_PROXY_CONNECT_URL": url,
                                       "HERALD_PROXY_MAX_RESPONSE": "65536"})
            a = only(out)
            assert a["outcome"] == "unavailable" and why in a["why"], (path, a)
            assert out["stats"]["errors"] == 1 and out["stats"]["results"] == 0, (path, out)
            assert "proxy_unavailable" in out["log"] and why in out["log"], out["log"]
        assert "/ok" not in b.hits  # the redirect was not followed


def test_backend_down_and_slow():
    out = call("connect", env={
        "HERALD_PROXY_CONNECT_URL": "http://127.0.0.1:%d/c" % bf.closed_port()})
    a = only(out)
    assert a["outcome"] == "unavailable" and "cannot reach the backend" in a["why"], a
    assert out["stats"]["errors"] == 1
    with bf.Backend() as b:
        url = b.route("/slow", bf.block())
        out = call("connect", "--count", 3, env={
            "HERALD_PROXY_CONNECT_URL": url, "HERALD_PROXY_TIMEOUT": "1",
            "HERALD_PROXY_MAX_INFLIGHT": "1"}, timeout=60)
        assert out["outcomes"] == {"unavailable": 3}, out
        assert all("HERALD_PROXY_TIMEOUT" in a["why"] for a in out["answers"]), out
        assert out["stats"]["timeouts"] == 3 and out["stats"]["latency_count"] == 3, out
        assert b.hits["/slow"] == 1  # two timed out waiting for the one slot


def test_over_the_bounds_is_rejected_at_once():
    with bf.Backend() as b:
        url = b.route("/block", bf.block(bf.answer(200, {"result": {"user": "u"}})))
        env = {"HERALD_PROXY_CONNECT_URL": url, "HERALD_PROXY_MAX_INFLIGHT": "2",
               "HERALD_PROXY_MAX_QUEUE": "1"}
        e = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        e.update(env)
        p = subprocess.Popen([tool_path(), "call", "connect", "--count", "5"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        b.wait_concurrent(2)
        b.release()
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == 0, stderr
        out = json.loads(stdout)
        assert out["immediate"] == 2, out
        assert out["outcomes"] == {"unavailable": 2, "result": 3}, out
        assert all("HERALD_PROXY_MAX_QUEUE" in a["why"] for a in out["answers"][:2]), out
        assert out["stats"]["rejected"] == 2 and out["stats"]["latency_count"] == 3, out
        assert out["stats"]["requests"] == 5, out
        assert b.hits["/block"] == 3


def test_connect_storm_is_pooled():
    """5,000 connects at once on a node allowing 64 calls in flight over two
    loops: this loop's 32 run at once at most, on at most 32 backend
    connections, and all 5,000 are answered."""
    with bf.Backend() as b:
        url = b.route("/connect", bf.gate(32, 5000, bf.answer(200, {"result": {"user": "u"}})))
        out = call("connect", "--count", 5000, "--loops", 2, env={
            "HERALD_PROXY_CONNECT_URL": url, "HERALD_PROXY_MAX_INFLIGHT": "64",
            "HERALD_PROXY_MAX_QUEUE": "5000", "HERALD_PROXY_TIMEOUT": "60"})
        assert out["outcomes"] == {"result": 5000}, out["outcomes"]
        assert b.max_concurrent == 32 and b.connections <= 32, (b.max_concurrent, b.connections)


def test_close_answers_outstanding_calls():
    with bf.Backend() as b:
        url = b.route("/c", bf.script([bf.answer(200, {"result": {"user": "u"}}), bf.block()]))
        out = call("connect", "--count", 4, "--close-after", 1,
                   env={"HERALD_PROXY_CONNECT_URL": url, "HERALD_PROXY_MAX_INFLIGHT": "2"})
        assert out["outcomes"] == {"result": 1, "unavailable": 3}, out
        assert all(a["why"] == "Herald is shutting down" for a in out["answers"][1:]), out


def test_https_backend_with_configured_ca():
    import tempfile
    ca, cert, key = bf.make_ca(tempfile.mkdtemp(prefix="herald-proxy-tls-"))
    with bf.Backend(tls=(cert, key)) as b:
        url = b.route("/c", bf.answer(200, {"result": {"user": "tls-user"}}))
        a = only(call("connect", env={"HERALD_PROXY_CONNECT_URL": url}))
        assert a["outcome"] == "unavailable" and "certificate" in a["why"], a
        a = only(call("connect", env={"HERALD_PROXY_CONNECT_URL": url,
                                      "HERALD_PROXY_CA_FILE": ca}))
        assert a == {"outcome": "result", "user": "tls-user"}, a


def test_herald_runs_with_proxies_configured():
    """With proxy URLs set, every loop of a real herald gets its proxy client
    (a libcurl multi on its libuv loop), serves, and shuts down cleanly
    (exit 0; under ASan: nothing leaked)."""
    from harness import Herald
    with bf.Backend() as b:
        url = b.route("/c", bf.answer(200, {"result": {"user": "u"}}))
        with Herald(env={"HERALD_PROXY_CONNECT_URL": url, "HERALD_PROXY_RPC_URL": url,
                         "HERALD_PROXY_CA_FILE": None}) as h:
            text = h.http("GET", "/metrics").text
            assert 'herald_proxy_requests_total{node="test",kind="connect"} 0' in text, text
            assert h.stop() == 0, h.log_tail()


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=180)
