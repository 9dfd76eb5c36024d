"""test_http_pipeline_window.py - a REST publisher that keeps 16 POSTs in
flight on one keep-alive connection, as herald-loadgen --window 16 does.

`bench/run.py rest` (window 16) made Herald stop answering after a few
dozen to a few thousand publishes: 100% CPU in lws_http_action's loop
calling HTTP_BODY_COMPLETION for ever, SIGTERM ignored. Herald tells a
request lws parsed out of its own buffer (pipelined) from a freshly read
one by the bytes read from the socket since the last transaction
(gateway/http.c, parsed_from_buffer). That count was two system calls
(TCP_INFO, then SIOCINQ) and the client's next segment could land between
them: 257 bytes looked "read" that were not, a pipelined POST was served as
a fresh one, and lws fed it its own headers as body. A client that sends
its next request the moment an answer arrives - this one - is what makes
segments land while Herald completes a transaction.

The byte pattern is the loadgen's (same request shape and size, the window
refilled one request per answer, a reconnection that resends in order the
requests a 503 + close left unanswered). The race itself lives inside the
server, so no client can force it on every run: on the old code this test
stopped getting answers after 237 to 3655 answers in 4 of 6 runs with 4,000
answers, and after 318 to 5709 in 5 of 5 runs with 10,000 (7 Dec 2026); it
asks for 20,000. No wait here is a fixed time: each is an upper bound on an
event.
"""

import socket
import time

import requests

from harness import Herald, assert_not_spinning, run_tests

WINDOW = 16
ANSWERS = 20000  # answered requests (200 or 503) before the run counts as passed
STALL_S = 20.0  # no answer at all for this long: Herald stopped answering


def request(port, key, seq):
    """herald-loadgen's REST publish (send_rest_publish) for sequence seq:
    the same headers in the same order and a 129-byte body."""
    data = '{"p":0,"s":%d,"t":18695785539268,"x":"%s"}' % (seq, "x" * (62 - len(str(seq))))
    body = ('{"channel":"bench.0","data":%s}' % data).encode()
    head = ("POST /api/v1/publish HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-API-Key: %s\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (port, key, len(body)))
    return head.encode() + body


def parse_answers(buf):
    """Whole responses at the start of buf: ([status...], rest)."""
    out = []
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return out, buf
        head = buf[:end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(buf) < end + 4 + length:
            return out, buf
        out.append(int(head.split(" ", 2)[1]))
        buf = buf[end + 4 + length:]


def run_publisher(h):
    """Drives one windowed publisher until ANSWERS answers; returns the
    count of each status. Raises when Herald goes STALL_S without answering."""
    counts = {}
    next_seq = acked = 0  # requests sent / answered, in order
    answered = 0
    sock = None
    buf = b""
    while answered < ANSWERS:
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", h.port), timeout=STALL_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = b""
            # resend, in order, what the closed connection left unanswered
            pending = b"".join(request(h.port, h.api_key, s) for s in range(acked, next_seq))
            while next_seq - acked < WINDOW:
                pending += request(h.port, h.api_key, next_seq)
                next_seq += 1
            sock.sendall(pending)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise AssertionError("no answer for %.0f s after %d answers (%r): Herald stopped "
                                 "answering" % (STALL_S, answered, counts))
        except ConnectionResetError:
            chunk = b""
        statuses, buf = parse_answers(buf + chunk)
        more = b""
        for st in statuses:
            counts[st] = counts.get(st, 0) + 1
            answered += 1
            assert st in (200, 503), "unexpected answer %d after %r" % (st, counts)
            if st == 200:
                acked += 1
                more += request(h.port, h.api_key, next_seq)  # refill the window at once
                next_seq += 1
        if more and chunk:
            try:
                sock.sendall(more)
            except (BrokenPipeError, ConnectionResetError):
                chunk = b""
        if not chunk:  # closed (after a 503): reconnect and resend
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return counts


def test_windowed_publisher_never_stops_herald():
    with Herald() as h:
        t0 = time.monotonic()
        counts = run_publisher(h)
        assert counts.get(200, 0) > 0, counts
        # idle afterwards and answering; Herald.__exit__ then fails a server
        # that ignores SIGTERM
        assert_not_spinning(h.proc.pid, "herald after %r in %.1f s" % (counts, time.monotonic() - t0))
        r = requests.get(h.base + "/healthz", timeout=20)
        assert r.status_code == 200


if __name__ == "__main__":
    run_tests(globals())
