"""REST API: publish and broadcast with every credential form, problem+json
errors, status codes, health endpoints and Prometheus metrics."""

import json
import re
import socket
import subprocess

from harness import Herald, assert_problem, parse_metrics, run_tests, wait_eof, wait_until

PUBLISH = "/api/v1/publish"
BROADCAST = "/api/v1/broadcast"

REQUIRED_METRICS = [
    "herald_connections", "herald_subscriptions", "herald_messages_received_total",
    "herald_messages_sent_total", "herald_bytes_received_total", "herald_bytes_sent_total",
    "herald_slow_consumer_closes_total", "herald_publications_total", "herald_http_requests_total",
]


def post_json(h, path, body, headers=None):
    return h.http("POST", path, json=body, headers=headers)


def assert_ok_empty(r):
    assert r.status_code == 200, "HTTP %d: %s" % (r.status_code, r.text[:300])
    assert r.headers.get("Content-Type", "").split(";")[0].strip() == "application/json", \
        r.headers.get("Content-Type")
    assert r.json() == {}, r.text


#---- publish -----------------------------------------------------------------

def test_publish_with_x_api_key_reaches_subscribers():
    with Herald() as h:
        a, b = h.subscriber("news", "alice"), h.subscriber("news", "bob")
        r = post_json(h, PUBLISH, {"channel": "news", "data": {"headline": "hi"}}, h.api_headers())
        assert_ok_empty(r)
        for ws in (a, b):
            assert ws.recv_push() == {"push": "message", "channel": "news", "data": {"headline": "hi"}}


def test_publish_with_authorization_apikey():
    with Herald() as h:
        ws = h.subscriber("news")
        r = post_json(h, PUBLISH, {"channel": "news", "data": 1}, {"Authorization": "ApiKey " + h.api_key})
        assert_ok_empty(r)
        assert ws.recv_push()["data"] == 1


def test_publish_with_backend_bearer_tokens():
    with Herald() as h:
        ws = h.subscriber("news")
        for role in ("publisher", "admin"):
            tok = h.token("svc", roles=[role])
            r = post_json(h, PUBLISH, {"channel": "news", "data": role}, {"Authorization": "Bearer " + tok})
            assert_ok_empty(r)
            assert ws.recv_push()["data"] == role


def test_publish_accepts_any_of_several_api_keys():
    with Herald(env={"HERALD_API_KEY": "k-one,k-two"}) as h:
        for key in ("k-one", "k-two"):
            assert_ok_empty(post_json(h, PUBLISH, {"channel": "c", "data": 0}, {"X-API-Key": key}))
        assert_problem(post_json(h, PUBLISH, {"channel": "c", "data": 0}, {"X-API-Key": "k-one,k-two"}), 401)


def test_publish_auth_failures():
    with Herald() as h:
        body = {"channel": "news", "data": 1}
        ws = h.subscriber("news")
        assert_problem(post_json(h, PUBLISH, body), 401)
        assert_problem(post_json(h, PUBLISH, body, {"X-API-Key": "wrong"}), 401)
        assert_problem(post_json(h, PUBLISH, body, {"X-API-Key": ""}), 401)
        assert_problem(post_json(h, PUBLISH, body, {"Authorization": "ApiKey wrong"}), 401)
        assert_problem(post_json(h, PUBLISH, body, {"Authorization": "Bearer not.a.jwt"}), 401)
        expired = h.jwt(sub="svc", roles=["admin"], exp=1)
        assert_problem(post_json(h, PUBLISH, body, {"Authorization": "Bearer " + expired}), 401)
        assert_problem(post_json(h, PUBLISH, body, {"Authorization": "Basic YTpi"}), 401)
        user = h.token("alice")
        assert_problem(post_json(h, PUBLISH, body, {"Authorization": "Bearer " + user}), 403)
        ws.assert_quiet_until_marker(h.publish, "news")  # none of them published


def test_publish_body_validation():
    with Herald() as h:
        key = h.api_headers()
        ws = h.subscriber("ok")
        for raw in ["{", "not json", "{\"channel\":\"ok\",\"data\":}", "", "\xff\xfe"]:
            r = h.http("POST", PUBLISH, data=raw.encode("latin-1"),
                       headers=dict(key, **{"Content-Type": "application/json"}))
            assert_problem(r, 400)
        for body in [{}, {"data": 1}, {"channel": "ok"}, {"channel": "", "data": 1},
                     {"channel": "bad name", "data": 1}, {"channel": "x" * 256, "data": 1},
                     {"channel": 5, "data": 1}, {"channel": None, "data": 1}]:
            assert_problem(post_json(h, PUBLISH, body, key), 422)
        for raw in ["[]", "42", "\"str\""]:
            r = h.http("POST", PUBLISH, data=raw, headers=dict(key, **{"Content-Type": "application/json"}))
            assert r.status_code in (400, 422), "non-object body %r: HTTP %d" % (raw, r.status_code)
            assert_problem(r, r.status_code)
        ws.assert_quiet_until_marker(h.publish, "ok")  # none of them published
        assert_ok_empty(post_json(h, PUBLISH, {"channel": "ok", "data": None}, key))
        assert ws.recv_push() == {"push": "message", "channel": "ok", "data": None}


def test_body_over_default_limit_is_413():
    with Herald() as h:
        ws = h.subscriber("big")
        pad = "x" * (1024 * 1024)
        r = h.http("POST", PUBLISH, data=json.dumps({"channel": "big", "data": pad}),
                   headers=dict(h.api_headers(), **{"Content-Type": "application/json"}))
        assert_problem(r, 413)
        ws.assert_quiet_until_marker(h.publish, "big")
        assert h.healthy()


def test_body_limit_is_configurable_and_exact():
    with Herald(env={"HERALD_MAX_BODY": "1000"}) as h:
        ws = h.subscriber("edge")
        def body_of(size):
            base = json.dumps({"channel": "edge", "data": ""})
            return json.dumps({"channel": "edge", "data": "y" * (size - len(base))})
        hdrs = dict(h.api_headers(), **{"Content-Type": "application/json"})
        assert len(body_of(1000)) == 1000
        assert_ok_empty(h.http("POST", PUBLISH, data=body_of(1000), headers=hdrs))
        assert len(ws.recv_push()["data"]) == 1000 - len(json.dumps({"channel": "edge", "data": ""}))
        assert_problem(h.http("POST", PUBLISH, data=body_of(1001), headers=hdrs), 413)
        ws.assert_quiet_until_marker(h.publish, "edge")


#---- broadcast ---------------------------------------------------------------

def test_broadcast_reports_per_channel_in_order():
    with Herald() as h:
        a, b = h.subscriber("a", "alice"), h.subscriber("b", "bob")
        r = post_json(h, BROADCAST, {"channels": ["a", "bad name", "b"], "data": {"k": "v"}}, h.api_headers())
        assert r.status_code == 200, (r.status_code, r.text)
        resp = r.json().get("responses")
        assert isinstance(resp, list) and len(resp) == 3, r.text
        assert resp[0] == {"channel": "a", "result": {}}, resp
        assert resp[2] == {"channel": "b", "result": {}}, resp
        assert resp[1].get("channel") == "bad name" and "result" not in resp[1], resp
        err = resp[1].get("error")
        assert isinstance(err, dict) and err.get("code") == "bad_request" \
            and isinstance(err.get("message"), str), resp
        assert a.recv_push() == {"push": "message", "channel": "a", "data": {"k": "v"}}
        assert b.recv_push() == {"push": "message", "channel": "b", "data": {"k": "v"}}


def test_broadcast_auth_and_validation():
    with Herald() as h:
        body = {"channels": ["a"], "data": 1}
        assert_problem(post_json(h, BROADCAST, body), 401)
        assert_problem(post_json(h, BROADCAST, body, {"X-API-Key": "nope"}), 401)
        assert_problem(post_json(h, BROADCAST, body, {"Authorization": "Bearer " + h.token("alice")}), 403)
        key = h.api_headers()
        assert_problem(h.http("POST", BROADCAST, data="{\"channels\":[", headers=key), 400)
        for bad in [{"data": 1}, {"channels": "a", "data": 1}, {"channels": ["a"]},
                    {"channels": [1, 2], "data": 1}, {"channels": {"a": 1}, "data": 1}]:
            r = post_json(h, BROADCAST, bad, key)
            if bad.get("channels") == [1, 2] and r.status_code == 200:
                # also acceptable: per-channel errors for non-string entries
                assert all("error" in e for e in r.json()["responses"]), r.text
                continue
            assert_problem(r, 422)
        tok = h.token("svc", roles=["publisher"])
        r = post_json(h, BROADCAST, body, {"Authorization": "Bearer " + tok})
        assert r.status_code == 200 and r.json() == {"responses": [{"channel": "a", "result": {}}]}, r.text


#---- routing, health, metrics ------------------------------------------------

def test_unknown_path_is_404_problem():
    with Herald() as h:
        for path in ("/nope", "/api/v1/nope", "/api/v2/publish", "/api/v1/publish/extra"):
            assert_problem(h.http("GET", path), 404)
        assert_problem(h.http("POST", "/api/v1/nothing", json={}, headers=h.api_headers()), 404)


def test_wrong_method_is_405_with_allow():
    with Herald() as h:
        for method, path, allowed in [("GET", PUBLISH, "POST"), ("PUT", PUBLISH, "POST"),
                                      ("DELETE", BROADCAST, "POST"), ("POST", "/healthz", "GET"),
                                      ("POST", "/readyz", "GET"), ("POST", "/metrics", "GET")]:
            r = h.http(method, path, headers=h.api_headers())
            assert_problem(r, 405)
            allow = [m.strip().upper() for m in r.headers.get("Allow", "").split(",")]
            assert allowed in allow, "%s %s: Allow %r should list %s" % (method, path, r.headers.get("Allow"), allowed)


def test_health_and_ready():
    with Herald() as h:
        assert h.http("GET", "/healthz").status_code == 200
        assert h.http("GET", "/readyz").status_code == 200


def test_metrics_names_and_format():
    with Herald() as h:
        r = h.http("GET", "/metrics")
        assert r.status_code == 200
        assert r.headers.get("Content-Type", "").startswith("text/plain"), r.headers.get("Content-Type")
        m = parse_metrics(r.text)
        missing = [n for n in REQUIRED_METRICS if n not in m]
        assert not missing, "metrics missing: %r" % missing
        for n in REQUIRED_METRICS:
            kind = "counter" if n.endswith("_total") else "gauge"
            assert ("# TYPE %s %s" % (n, kind)) in r.text or ("# TYPE %s " % n) in r.text, \
                "no # TYPE line for %s" % n


def test_metrics_follow_traffic():
    with Herald() as h:
        m0 = h.metrics()
        ws = h.subscriber("m")
        wait_until(lambda: h.metrics()["herald_connections"] == m0["herald_connections"] + 1,
                   what="herald_connections +1")
        assert h.metrics()["herald_subscriptions"] >= m0["herald_subscriptions"] + 1
        for i in range(3):
            h.publish("m", i)
        assert [ws.recv_push()["data"] for _ in range(3)] == [0, 1, 2]
        m1 = h.metrics()
        assert m1["herald_publications_total"] >= m0["herald_publications_total"] + 3, (m0, m1)
        assert m1["herald_messages_sent_total"] >= m0["herald_messages_sent_total"] + 3
        assert m1["herald_messages_received_total"] >= m0["herald_messages_received_total"] + 1
        assert m1["herald_bytes_sent_total"] > m0["herald_bytes_sent_total"]
        assert m1["herald_bytes_received_total"] > m0["herald_bytes_received_total"]
        assert m1["herald_http_requests_total"] >= m0["herald_http_requests_total"] + 4
        ws.close()
        wait_until(lambda: h.metrics()["herald_connections"] == m0["herald_connections"],
                   what="herald_connections back down")
        assert h.metrics()["herald_subscriptions"] == m0["herald_subscriptions"]


#---- Connection: close -------------------------------------------------------

def request_then_eof(port, method, path, body=b"", headers=None, timeout=10.0):
    """Sends one HTTP/1.1 request with Connection: close on a raw socket and
    reads until the server closes the connection. Returns the status code;
    fails when the connection is still open `timeout` seconds later (the
    answer alone is not enough: the client waits for the close)."""
    head = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1:%d" % port,
            "Connection: close", "Content-Length: %d" % len(body)]
    head += ["%s: %s" % kv for kv in (headers or {}).items()]
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        buf = wait_eof(s, timeout)
    finally:
        s.close()
    status = re.match(rb"HTTP/1\.1 (\d{3})", buf)
    assert status, "no HTTP answer before the close: %r" % buf[:200]
    return int(status.group(1))


def test_connection_close_honoured_after_a_worker_answers():
    """Register and login are answered by an auth worker (Argon2id), after
    the request's callback has returned: Connection: close must still close
    the connection right after the answer."""
    with Herald() as h:
        body = json.dumps({"username": "cc-user", "password": "a long password 1"}).encode()
        st = request_then_eof(h.port, "POST", "/api/v1/users", body,
                              {"Content-Type": "application/json", "X-API-Key": h.api_key})
        assert st == 201, st
        form = b"grant_type=password&username=cc-user&password=a+long+password+1"
        st = request_then_eof(h.port, "POST", "/api/v1/auth/token", form,
                              {"Content-Type": "application/x-www-form-urlencoded"})
        assert st == 200, st
        # and an answer given inside the callback, as before
        assert request_then_eof(h.port, "GET", "/healthz") == 200


#---- request framing (RFC 9112 section 6.3) ----------------------------------

def raw_request(h, head):
    """Sends one request's bytes on a new connection and reads until the
    server closes it (every case here closes after its answer). Returns
    (status, headers text, body)."""
    s = socket.create_connection(("127.0.0.1", h.port), timeout=10)
    try:
        s.sendall(head)
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    top, _, body = buf.partition(b"\r\n\r\n")
    assert top.startswith(b"HTTP/1.1 "), buf[:200]
    return int(top[9:12]), top.decode("latin-1"), body


def test_bodyless_post_without_content_length_is_an_empty_body():
    """What `curl -X POST` sends: no Content-Length, no Transfer-Encoding,
    so no body (RFC 9112 section 6.3). Disconnect answers 204 (it was 411);
    publish reads the empty body as malformed JSON (400, not 411); the
    connection closes after the answer either way."""
    with Herald() as h:
        user = h.create_user("dora", "correct horse battery staple")
        ws = h.client(sub=user["id"])
        key = h.api_key.encode()
        status, head, _ = raw_request(
            h, b"POST /api/v1/users/%s/disconnect HTTP/1.1\r\nHost: t\r\nX-API-Key: %s\r\n\r\n"
            % (user["id"].encode(), key))
        assert status == 204, head
        assert "connection: close" in head.lower(), head
        assert ws.expect_close() == 4003
        status, head, body = raw_request(
            h, b"POST /api/v1/publish HTTP/1.1\r\nHost: t\r\nX-API-Key: %s\r\n\r\n" % key)
        assert status == 400, (head, body)
        # the documented command, as written: curl sends no Content-Length
        ws = h.client(sub=user["id"])
        out = subprocess.run(["curl", "-fsS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                              h.base + "/api/v1/users/%s/disconnect" % user["id"],
                              "-H", "X-API-Key: " + h.api_key],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and out.stdout == "204", (out.returncode, out.stdout, out.stderr)
        assert ws.expect_close() == 4003
        assert h.healthy()


def test_chunked_bodies_and_bad_lengths_are_still_refused():
    """Chunked bodies get 411, ambiguous or malformed lengths 400; each
    closes the connection."""
    with Herald() as h:
        key = h.api_key.encode()
        base = b"POST /api/v1/publish HTTP/1.1\r\nHost: t\r\nX-API-Key: %s\r\n" % key
        body = b'{"channel":"c","data":1}'
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        for extra, want in [(b"Transfer-Encoding: chunked\r\n\r\n" + chunked, 411),
                            (b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n"
                             % len(body) + body, 400),
                            (b"Content-Length: 1x\r\n\r\n" + body, 400),
                            (b"Content-Length: -1\r\n\r\n" + body, 400)]:
            status, head, _ = raw_request(h, base + extra)
            assert status == want, (extra, head)
            assert "connection: close" in head.lower(), head
        assert h.healthy()


if __name__ == "__main__":
    run_tests(globals())
