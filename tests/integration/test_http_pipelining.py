"""test_http_pipelining.py - HTTP/1.1 requests pipelined in one TCP write.

Two pipelined POSTs once put libwebsockets 4.1.6's loop into a 100% CPU
spin (see "Responses and pipelining" in gateway/http.c): every client
starved and SIGTERM was ignored. Herald must answer pipelined requests in
order, or answer what it can and close the connection cleanly - and stay
idle and healthy afterwards. Raw sockets, so the bytes really share one
write.
"""

import os
import re
import socket
import time

import requests

from harness import Herald, run_tests

BODY = b'{"channel":"pipe","data":{"n":1}}'


def post(key=None, body=BODY):
    head = b"POST /api/v1/publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    if key:
        head += b"X-API-Key: " + key.encode() + b"\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


GET = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


def cpu_seconds(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / float(os.sysconf("SC_CLK_TCK"))


def exchange(h, data, settle=1.5):
    """Sends data in one write; returns (status codes in order, closed?)."""
    s = socket.create_connection(("127.0.0.1", h.port))
    s.sendall(data)
    s.settimeout(0.2)
    buf, closed, deadline = b"", False, time.monotonic() + settle
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            closed = True
            break
        buf += chunk
    # a response follows the previous body directly: no line break before it
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", buf)]
    return s, statuses, closed


def assert_idle_and_healthy(h):
    """No spin: the server burns (almost) no CPU while idle, and answers."""
    c0 = cpu_seconds(h.proc.pid)
    time.sleep(1.0)
    used = cpu_seconds(h.proc.pid) - c0
    assert used < 0.3, "server used %.2f s of CPU in 1 s of idle (spinning)" % used
    r = requests.get(h.base + "/healthz", timeout=2)
    assert r.status_code == 200


def check_answers_then_close_or_all(statuses, closed, want):
    """The pipeline is answered in order; the server may refuse a pipelined
    request (503, and then close the connection) instead of serving it."""
    assert statuses, "no answer at all"
    served = statuses[:-1] if statuses[-1] == 503 and closed else statuses
    assert served == want[:len(served)], "answers %r, want a prefix of %r" % (statuses, want)
    assert len(statuses) == len(want) or closed, \
        "answered %r of %r and left the connection hanging" % (statuses, want)


def test_get_get_answered_in_order_and_kept_alive():
    with Herald() as h:
        s, statuses, closed = exchange(h, GET + GET)
        assert statuses == [200, 200] and not closed, (statuses, closed)
        s.sendall(GET)  # the connection is still usable
        s.settimeout(3)
        assert b"HTTP/1.1 200" in s.recv(65536)
        s.close()
        assert_idle_and_healthy(h)


def test_post_post_without_credentials():
    with Herald() as h:
        s, statuses, closed = exchange(h, post() + post())
        check_answers_then_close_or_all(statuses, closed, [401, 401])
        s.close()
        assert_idle_and_healthy(h)


def test_post_then_get():
    with Herald() as h:
        s, statuses, closed = exchange(h, post() + GET)
        check_answers_then_close_or_all(statuses, closed, [401, 200])
        s.close()
        assert_idle_and_healthy(h)


def test_authorised_post_with_body_then_get():
    with Herald() as h:
        sub = h.subscriber("pipe")
        s, statuses, closed = exchange(h, post(h.api_key) + GET)
        check_answers_then_close_or_all(statuses, closed, [200, 200])
        assert sub.recv_push(timeout=3)["data"] == {"n": 1}  # the publication happened once
        sub.assert_quiet(0.3)
        s.close()
        assert_idle_and_healthy(h)


def test_body_after_bodyless_request_never_confused():
    """lws 4.1.6 hands such a request its own headers as body: Herald must
    close instead of serving it (no publication, no 400 about bad JSON)."""
    with Herald() as h:
        sub = h.subscriber("pipe")
        s, statuses, closed = exchange(h, GET + post(h.api_key) + GET)
        check_answers_then_close_or_all(statuses, closed, [200, 200, 200])
        if len(statuses) < 2 or statuses[1] != 200:  # refused: nothing may have been published
            sub.assert_quiet(0.5)
        s.close()
        assert_idle_and_healthy(h)


def test_get_post_get_and_many_connections():
    with Herald() as h:
        socks = []
        for _ in range(20):
            s, statuses, closed = exchange(h, GET + post(h.api_key) + GET + post() + GET, settle=0.5)
            check_answers_then_close_or_all(statuses, closed, [200, 200, 200, 401, 200])
            socks.append(s)
        assert_idle_and_healthy(h)
        for s in socks:
            s.close()


def test_keep_alive_sequence_unaffected():
    """Not pipelined: a client that waits for each answer keeps one
    connection for many requests with bodies."""
    with Herald() as h:
        with requests.Session() as sess:
            for i in range(200):
                r = sess.post(h.base + "/api/v1/publish", headers=h.api_headers(),
                              json={"channel": "k", "data": i}, timeout=5)
                assert r.status_code == 200, (i, r.status_code)
        assert_idle_and_healthy(h)


if __name__ == "__main__":
    run_tests(globals())
