"""Herald's HTTP client for the application's backend (gateway/backend.c:
libcurl multi on a libuv loop), driven by herald-backend-tool against a
real threaded HTTP server (backend_fixture.py): JSON POSTs and their
headers, keep-alive reuse counted on the server, the pool bound under 5,000
requests, the queue bound, timeouts (queued requests included), bounded
bodies, no redirects, TLS verified against a configured CA, a clean close
with requests in flight, and cancellation."""

import json
import os
import subprocess
import tempfile

import backend_fixture as bf
from harness import herald_bin, run_tests


def tool_path():
    return os.environ.get("HERALD_BACKEND_TOOL") or os.path.join(
        os.path.dirname(herald_bin()), "tests", "herald-backend-tool")


def post(url, *args, timeout=120, env=None):
    """Runs `herald-backend-tool post URL ARGS...`; returns its JSON report."""
    p = subprocess.run([tool_path(), "post", url] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=timeout, env=env)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr[-2000:])
    out = json.loads(p.stdout)
    assert out["clean"], out  # every uv handle closed: nothing leaked on the loop
    return out


def start_post(url, *args):
    return subprocess.Popen([tool_path(), "post", url] + [str(a) for a in args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p, timeout=120):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, (p.returncode, out, err[-2000:])
    report = json.loads(out)
    assert report["clean"], report
    return report


def headers_of(req):
    return {k.lower(): v for k, v in req["headers"]}


def test_json_post_with_headers():
    with bf.Backend() as b:
        url = b.route("/echo", bf.echo())
        body = json.dumps({"room": "lobby", "n": 1})
        out = post(url, "--body", body, "--header", "Cookie: sessionid=abc",
                   "--header", "X-Herald-Proxy-Key: k")
        assert out["status"] == {"ok": 1} and out["http"] == {"200": 1}, out
        [req] = b.got("/echo")
        h = headers_of(req)
        assert req["method"] == "POST" and json.loads(req["body"]) == json.loads(body)
        assert h["content-type"] == "application/json"
        assert h["cookie"] == "sessionid=abc" and h["x-herald-proxy-key"] == "k"
        assert "user-agent" not in h  # curl's own is not sent; the client's may be forwarded
        # over 1 MiB curl 7.88 would add "Expect: 100-continue" and wait for a 100
        url = b.route("/big-in", bf.answer(200, b"{}"))
        out = post(url, "--body-size", 1536 * 1024)
        assert out["status"] == {"ok": 1}, out
        [req] = b.got("/big-in")
        assert len(req["body"]) == 1536 * 1024 and "expect" not in headers_of(req)


def test_header_lines_cannot_smuggle():
    """A header line with CR or LF is refused before anything is sent."""
    with bf.Backend() as b:
        url = b.route("/echo", bf.echo())
        out = post(url, "--header", "Cookie: a\r\nX-Injected: 1")
        assert out["refused"] == {"failed": 1} and out["callbacks"] == 0, out
        assert b.got("/echo") == []


def test_keep_alive_reuse():
    """50 requests one after another travel on one connection."""
    with bf.Backend() as b:
        url = b.route("/echo", bf.echo())
        out = post(url, "--count", 50, "--max-inflight", 1)
        assert out["status"] == {"ok": 50}, out
        assert b.connections == 1, b.connections
        assert out["new_connections"] == 1, out


def test_pool_bounded_under_5000_requests():
    """5,000 requests at once through a client allowed 32 at a time: the
    server sees exactly 32 at once at most, on at most 32 connections, and
    every request is answered."""
    with bf.Backend() as b:
        url = b.route("/gate", bf.gate(32, 5000))
        out = post(url, "--count", 5000, "--max-inflight", 32, "--max-queue", 5000,
                   "--timeout-ms", 60000)
        assert out["status"] == {"ok": 5000}, out
        assert out["inflight_after_post"] == 32 and out["queued_after_post"] == 4968, out
        assert b.max_concurrent == 32, b.max_concurrent
        assert b.connections <= 32, b.connections
        assert out["new_connections"] == b.connections, (out, b.connections)


def test_queue_bound_refuses_at_once():
    """Over in-flight + queue, a request is refused without being sent."""
    with bf.Backend() as b:
        url = b.route("/block", bf.block())
        p = start_post(url, "--count", 10, "--max-inflight", 2, "--max-queue", 3)
        b.wait_concurrent(2)
        b.release()
        out = finish(p)
        assert out["refused"] == {"overloaded": 5}, out
        assert out["status"] == {"ok": 5}, out
        assert b.hits["/block"] == 5 and b.max_concurrent == 2


def test_timeout_includes_queueing():
    """A backend that never answers: the running request and the queued
    ones all end as timeouts, none waits for the backend."""
    with bf.Backend() as b:
        url = b.route("/block", bf.block())
        out = post(url, "--count", 3, "--max-inflight", 1, "--max-queue", 2,
                   "--timeout-ms", 400, timeout=60)
        assert out["status"] == {"timeout": 3}, out
        assert b.hits["/block"] == 1  # the queued two never reached the backend
        assert 400 <= out["max_elapsed_ms"] < 30000, out


def test_bodies_are_bounded():
    """A body over the limit ends the transfer (announced or chunked), one
    at the limit is taken; memory stays small while 100 MB are offered."""
    with bf.Backend() as b:
        at = b.route("/exact", bf.huge(65536))
        big = b.route("/big", bf.huge(100 << 20))
        chunked = b.route("/chunked", bf.huge(100 << 20, chunked=True))
        out = post(at, "--max-body", 65536)
        assert out["status"] == {"ok": 1} and out["http"] == {"200": 1}, out
        for url in (big, chunked):
            out = post(url, "--max-body", 65536, "--count", 3)
            assert out["status"] == {"too_large": 3}, out
            assert out["max_rss_kb"] < 60 * 1024, out


def test_redirects_not_followed():
    with bf.Backend() as b:
        b.route("/echo", bf.echo())
        url = b.route("/moved", bf.answer(302, b"", {"Location": b.url("/echo")}))
        out = post(url)
        assert out["status"] == {"ok": 1} and out["http"] == {"302": 1}, out
        assert "/echo" not in b.hits


def test_statuses_and_garbage_are_answers():
    """The client reports what came; judging it is the proxy's job."""
    with bf.Backend() as b:
        for status in (204, 404, 500, 503):
            url = b.route("/s%d" % status, bf.answer(status, b"" if status == 204 else b"x"))
            out = post(url)
            assert out["status"] == {"ok": 1} and out["http"] == {str(status): 1}, out
        url = b.route("/garbage", bf.answer(200, b"\x00\xff<html>not json", {}))
        out = post(url)
        assert out["status"] == {"ok": 1} and out["http"] == {"200": 1}, out


def test_environment_proxies_are_ignored():
    """http_proxy & co. (set for other programs) do not divert backend calls."""
    with bf.Backend() as b:
        url = b.route("/echo", bf.echo())
        dead = "http://127.0.0.1:%d" % bf.closed_port()
        env = dict(os.environ, http_proxy=dead, HTTP_PROXY=dead, https_proxy=dead,
                   ALL_PROXY=dead, all_proxy=dead)
        out = post(url, env=env)
        assert out["status"] == {"ok": 1}, out
        assert b.hits["/echo"] == 1


def test_unreachable_backend_fails():
    out = post("http://127.0.0.1:%d/connect" % bf.closed_port())
    assert out["status"] == {"failed": 1}, out
    assert any("onnect" in e for e in out["errors"]), out
    out = post("ftp://127.0.0.1/x")
    assert out["refused"] == {"failed": 1} and out["callbacks"] == 0, out


def test_tls_verified_against_the_configured_ca():
    d = tempfile.mkdtemp(prefix="herald-backend-tls-")
    ca, cert, key = bf.make_ca(d)
    with bf.Backend(tls=(cert, key)) as b:
        url = b.route("/echo", bf.echo())
        out = post(url)  # the system store does not know the test CA
        assert out["status"] == {"failed": 1}, out
        assert any("certificate" in e for e in out["errors"]), out
        assert "/echo" not in b.hits
        out = post(url, "--ca", ca, "--count", 5, "--max-inflight", 1)
        assert out["status"] == {"ok": 5}, out
        assert out["new_connections"] == 1  # TLS sessions kept alive too
        # the certificate names 127.0.0.1 only: the host name is checked
        out = post(b.url("/echo", host="localhost"), "--ca", ca)
        assert out["status"] == {"failed": 1}, out
        assert b.hits["/echo"] == 5


def test_close_answers_outstanding_requests():
    """Closing the client with requests in flight and queued: each callback
    runs once with "cancelled", and the loop closes cleanly."""
    with bf.Backend() as b:
        url = b.route("/first-fast", bf.script([bf.answer(200, {"result": {}}), bf.block()]))
        out = post(url, "--count", 6, "--max-inflight", 3, "--close-after", 1, timeout=60)
        assert out["callbacks"] == 6, out
        assert out["status"] == {"ok": 1, "cancelled": 5}, out


def test_cancelled_requests_never_call_back():
    with bf.Backend() as b:
        url = b.route("/first-fast", bf.script([bf.answer(200, {"result": {}}), bf.block()]))
        out = post(url, "--count", 6, "--max-inflight", 3, "--cancel-after", 1, timeout=60)
        assert out["callbacks"] == 1, out
        assert out["status"] == {"ok": 1, "cancelled_by_caller": 5}, out



def test_cancel_keeps_the_other_requests_deadlines():
    """Cancelling one request must not lose curl's timer: the request still
    running (its backend never answers) times out on time instead of
    waiting for the backend."""
    with bf.Backend() as b:
        url = b.route("/s", bf.script([bf.answer(200, {"result": {}}), bf.block(),
                                       bf.block()]))
        p = start_post(url, "--count", 3, "--max-inflight", 3, "--timeout-ms", 2000,
                       "--cancel-one-after", 1)
        out = finish(p, timeout=50)  # the blocked requests would hold it for 60 s
        assert out["status"] == {"ok": 1, "cancelled_by_caller": 1, "timeout": 1}, out
        assert out["max_elapsed_ms"] < 20000, out


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=180)
