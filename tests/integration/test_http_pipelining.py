"""test_http_pipelining.py - HTTP/1.1 requests pipelined in one TCP write.

Two pipelined POSTs once put libwebsockets 4.1.6's loop into a 100% CPU
spin (see "Responses and pipelining" in gateway/http.c): every client
starved and SIGTERM was ignored. Herald must answer bodyless pipelined
requests in order, refuse a pipelined request with a body (503) and close
the connection cleanly - and stay idle and healthy afterwards. Raw
sockets, so the bytes really share one write.
"""

import requests

from harness import Herald, assert_not_spinning, assert_pipeline, run_tests

BODY = b'{"channel":"pipe","data":{"n":1}}'


def post(key=None, body=BODY):
    head = b"POST /api/v1/publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    if key:
        head += b"X-API-Key: " + key.encode() + b"\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


GET = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


def assert_idle_and_healthy(h):
    """No spin: a quiet second of CPU within ten (harness), and /healthz
    answers."""
    assert_not_spinning(h.proc.pid, "herald after the pipeline")
    r = requests.get(h.base + "/healthz", timeout=20)
    assert r.status_code == 200


# Herald's contract (README, "REST API"): bodyless pipelined requests are
# answered in order on a connection kept open; a pipelined request with a
# body gets 503 and the connection closes after the answers before it.
# Each case asserts exactly its outcome (assert_pipeline): "a prefix of the
# answers, then close" no longer passes.

def test_get_get_answered_in_order_and_kept_alive():
    with Herald() as h:
        assert_pipeline(h.port, GET + GET, [200, 200], closed=False)  # then a third GET on it
        assert_idle_and_healthy(h)


def test_post_post_without_credentials():
    with Herald() as h:
        assert_pipeline(h.port, post() + post(), [401, 503], closed=True)
        assert_idle_and_healthy(h)


def test_post_then_get():
    with Herald() as h:
        assert_pipeline(h.port, post() + GET, [401, 200], closed=False)
        assert_idle_and_healthy(h)


def test_authorised_post_with_body_then_get():
    with Herald() as h:
        sub = h.subscriber("pipe")
        assert_pipeline(h.port, post(h.api_key) + GET, [200, 200], closed=False)
        assert sub.recv_push()["data"] == {"n": 1}  # the publication happened once
        sub.assert_quiet_until_marker(h.publish, "pipe")
        assert_idle_and_healthy(h)


def test_body_after_bodyless_request_never_confused():
    """lws 4.1.6 hands such a request its own headers as body: Herald must
    refuse it (503) and close instead of serving it (no publication, no 400
    about bad JSON)."""
    with Herald() as h:
        sub = h.subscriber("pipe")
        assert_pipeline(h.port, GET + post(h.api_key) + GET, [200, 503], closed=True)
        sub.assert_quiet_until_marker(h.publish, "pipe")  # nothing was published
        assert_idle_and_healthy(h)


def test_get_post_get_and_many_connections():
    with Herald() as h:
        for _ in range(20):
            assert_pipeline(h.port, GET + post(h.api_key) + GET + post() + GET, [200, 503],
                            closed=True)
        assert_idle_and_healthy(h)


def test_keep_alive_sequence_unaffected():
    """Not pipelined: a client that waits for each answer keeps one
    connection for many requests with bodies."""
    with Herald() as h:
        with requests.Session() as sess:
            for i in range(200):
                r = sess.post(h.base + "/api/v1/publish", headers=h.api_headers(),
                              json={"channel": "k", "data": i}, timeout=20)
                assert r.status_code == 200, (i, r.status_code)
        assert_idle_and_healthy(h)


if __name__ == "__main__":
    run_tests(globals())
