"""test_loadgen_rest_resend.py - herald-loadgen's REST publisher resends only
the requests that got no answer.

`bench/run.py rest --rest-windows 16` reported duplicate deliveries. Herald
answers a pipelined POST 503 and closes (gateway/http.c, "Responses and
pipelining") after sending every answer it owes; the loadgen then
reconnects and resends the unanswered requests. But when the server's close
found the loadgen still sending, its send() failed (EPIPE) and the loadgen
closed the socket at once (conn_flush), without reading the 200 and the 503
waiting in its receive buffer: the request answered 200 was resent and
published twice.

This server plays Herald's part on each connection: it reads two requests,
answers the first 200 and the second 503 with Connection: close, and closes
with the rest of the pipeline unread (a reset, as a server that does not
read on). It announces a small MSS, so the loadgen's send buffer cannot take
its whole window of 60 KB requests and the loadgen is still sending when
the reset comes. A request whose sequence was answered 200 and arrives again
is the bug. No wait is a fixed time: each is an upper bound on an event.
"""

import fcntl
import json
import os
import re
import socket
import struct
import subprocess
import threading

from harness import herald_bin, run_tests, wait_until

COUNT = 8  # publications: four connections of one 200 and one 503
SIOCOUTQNSD = 0x894B  # bytes in the send queue not yet sent


def bench_bin(name):
    return os.path.join(os.path.dirname(os.path.abspath(herald_bin())), "bench", name)


def read_request(conn, buf):
    """One whole request from conn (buf: bytes already read): (body, rest),
    or (None, buf) at EOF."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", buf[:end])
            need = end + 4 + (int(m.group(1)) if m else 0)
            if len(buf) >= need:
                return buf[end + 4:need], buf[need:]
        chunk = conn.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk


def answer(status, title, close):
    return ("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: 2\r\n%s\r\n{}"
            % (status, title, "Connection: close\r\n" if close else "")).encode()


class Server:
    """Answers 200 then 503 + close on each connection; records the
    sequence numbers ("s" in the publication's data) of every request."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.answered = []  # sequences answered 200, in order
        self.received = []  # every request's sequence, in order
        self.errors = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                self.connection(conn)
            except Exception as e:  # reported by the test
                self.errors.append(repr(e))
            finally:
                conn.close()  # unread requests behind: a reset

    def connection(self, conn):
        buf, seqs = b"", []
        for _ in range(2):
            body, buf = read_request(conn, buf)
            if body is None:
                return
            seqs.append(json.loads(body)["data"]["s"])
        self.received += seqs
        self.answered.append(seqs[0])
        conn.sendall(answer(200, "OK", False) + answer(503, "Service Unavailable", True))
        conn.shutdown(socket.SHUT_WR)
        # the answers and the FIN are on their way before the close's reset
        wait_until(lambda: struct.unpack("i", fcntl.ioctl(conn, SIOCOUTQNSD, b"\0" * 4))[0] == 0,
                   20, 0.001, "the answers sent")

    def close(self):
        self.sock.close()


def test_answered_requests_are_not_resent():
    s = Server()
    try:
        p = subprocess.run(
            [bench_bin("herald-loadgen"), "--host", "127.0.0.1", "--port", str(s.port),
             "--secret", "s", "--api-key", "k", "--tag", "resend", "--subs", "0",
             "--rest-pubs", "1", "--window", "16", "--count", str(COUNT), "--size", "60000",
             "--timeout", "60"], capture_output=True, text=True, timeout=120)
    finally:
        s.close()
    assert not s.errors, s.errors
    assert p.returncode == 0, (p.returncode, p.stderr[-3000:])
    r = json.loads(p.stdout.strip().splitlines()[-1])
    again = [q for q in s.received if s.received.count(q) > 1 and q in s.answered]
    assert not again, ("answered 200, then sent again", again, s.received)
    # each connection: one 200 and one 503 (refused, not resent)
    assert s.answered == list(range(0, COUNT, 2)), s.received
    assert r["publish"]["acked"] == COUNT // 2, r["publish"]


if __name__ == "__main__":
    run_tests(globals())
