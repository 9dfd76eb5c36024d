"""backend_fixture.py - a real HTTP backend for the tests of Herald's backend
client, proxies and event webhooks (no tests here).

Backend is Python's ThreadingHTTPServer speaking HTTP/1.1 with keep-alive
(one thread per connection), optionally over TLS, on a free loopback port,
run in a background thread of the test process. What it answers is set per
path with `route(path, fn)`; the helpers below build the usual behaviours:

  answer(status, body, headers)   a fixed answer (body: bytes, str or JSON)
  echo()                          200 {"result": {"data": {path, headers, body}}}
  block(then)                     waits until `release()` (or 60 s), then `then`
  gate(bound, total, then)        holds each request until `bound` are held at
                                  once (or the last `total` ones are all in):
                                  shows that a client's concurrency reaches its
                                  bound exactly and never passes it
  huge(nbytes, chunked)           200 with nbytes of body, streamed
  script([fn, fn, ...])           the n-th request gets the n-th behaviour (the
                                  last one repeats)

It counts what a client cannot hide: TCP connections accepted
(`connections`), requests per path (`hits`), requests being handled at once
(`concurrent`, `max_concurrent`), and keeps every request (`requests`: path,
headers, body).

make_ca(dir) writes a throwaway CA and a server certificate it signed (for
127.0.0.1 only) with the openssl command line.
"""

import http.server
import json
import os
import socket
import ssl
import subprocess
import threading
import time

import ports


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 4096  # a connect storm must not overflow the backlog
    allow_reuse_address = True

    def __init__(self, addr, backend):
        self.backend = backend
        super().__init__(addr, _Handler)

    def get_request(self):
        sock, addr = super().get_request()
        # http.server writes headers and body separately: without this
        # every answer would wait for the client's delayed ACK (Nagle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.backend.lock:
            self.backend.connections += 1
        if self.backend.tls_context:
            # the handshake happens on the handler's first read, in its own
            # thread: a client that refuses the certificate blocks nobody
            sock = self.backend.tls_context.wrap_socket(sock, server_side=True,
                                                        do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        pass  # clients that hang up (timeouts, oversized bodies) are expected


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def log_message(self, fmt, *args):
        pass

    def _serve(self):
        b = self.server.backend
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        req = {"method": self.command, "path": path, "query": self.path[len(path) + 1:],
               "headers": [(k, v) for k, v in self.headers.items()], "body": body}
        with b.lock:
            b.requests.append(req)
            b.hits[path] = b.hits.get(path, 0) + 1
            b.concurrent += 1
            b.max_concurrent = max(b.max_concurrent, b.concurrent)
            b.cond.notify_all()  # wait_concurrent
            fn = b.routes.get(path)
        try:
            if fn is None:
                _send(self, 404, b"no route", {"Content-Type": "text/plain"})
            else:
                fn(self, req)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True
        finally:
            with b.lock:
                b.concurrent -= 1
                b.served += 1
                b.cond.notify_all()

    do_POST = _serve
    do_GET = _serve


def _send(handler, status, body, headers=None):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    handler.send_response(status)
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    for k, v in hdrs.items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class Backend:
    """A threaded HTTP/1.1 server on 127.0.0.1 (a context manager)."""

    def __init__(self, tls=None):
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.routes = {}
        self.requests = []
        self.hits = {}
        self.connections = 0
        self.concurrent = 0
        self.max_concurrent = 0
        self.served = 0
        self.released = threading.Event()
        self.tls_context = None
        if tls:
            self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_context.load_cert_chain(*tls)
        self.server = _Server(("127.0.0.1", 0), self)
        self.port = self.server.server_address[1]
        self.scheme = "https" if tls else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def url(self, path, host="127.0.0.1"):
        return "%s://%s:%d%s" % (self.scheme, host, self.port, path)

    def route(self, path, fn):
        with self.lock:
            self.routes[path] = fn
        return self.url(path)

    def release(self):
        """Lets every blocked request (block()) go on."""
        self.released.set()
        with self.lock:
            self.cond.notify_all()

    def got(self, path):
        """The requests received on path, in order."""
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def wait_concurrent(self, n, timeout=30):
        """Waits until n requests are being handled at once."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.concurrent < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("the backend never had %d requests at once (%d)"
                                         % (n, self.concurrent))
                self.cond.wait(left)


#---- behaviours -------------------------------------------------------------

def answer(status=200, body=b"", headers=None):
    return lambda h, req: _send(h, status, body, headers)


def echo():
    def fn(h, req):
        try:
            parsed = json.loads(req["body"] or b"null")
        except ValueError:
            parsed = req["body"].decode("latin-1")
        _send(h, 200, {"result": {"data": {"path": req["path"], "headers": req["headers"],
                                           "body": parsed}}})
    return fn


def block(then=None):
    then = then or answer(200, {"result": {}})

    def fn(h, req):
        h.server.backend.released.wait(60)
        then(h, req)
    return fn


def gate(bound, total, then=None):
    """Holds requests in generations: a generation is let go as soon as
    `bound` requests are held, or when every one of the `total` expected
    requests has arrived."""
    then = then or answer(200, {"result": {}})
    state = {"held": 0, "generation": 0, "arrived": 0}

    def fn(h, req):
        b = h.server.backend
        with b.lock:
            state["arrived"] += 1
            state["held"] += 1
            gen = state["generation"]
            if state["held"] >= bound or state["arrived"] >= total:
                state["generation"] += 1
                state["held"] = 0
                b.cond.notify_all()
            else:
                deadline = time.monotonic() + 60
                while state["generation"] == gen and time.monotonic() < deadline:
                    b.cond.wait(deadline - time.monotonic())
        then(h, req)
    return fn


def huge(nbytes, chunked=False):
    """200 with nbytes of JSON-ish filler, streamed in 64 KiB pieces: the
    server never holds the body, the client must stop reading it."""
    piece = b"x" * 65536

    def fn(h, req):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header("Content-Length", str(nbytes))
        h.end_headers()
        left = nbytes
        while left > 0:
            n = min(left, len(piece))
            if chunked:
                h.wfile.write(b"%x\r\n" % n + piece[:n] + b"\r\n")
            else:
                h.wfile.write(piece[:n])
            left -= n
        if chunked:
            h.wfile.write(b"0\r\n\r\n")
    return fn


def script(fns):
    """The n-th request gets fns[n] (the last one repeats)."""
    count = {"n": 0}
    lock = threading.Lock()

    def fn(h, req):
        with lock:
            i = min(count["n"], len(fns) - 1)
            count["n"] += 1
        fns[i](h, req)
    return fn


#---- certificates -----------------------------------------------------------

def make_ca(directory):
    """A CA and a server certificate it signed for IP 127.0.0.1 only.
    Returns (ca_cert, server_cert, server_key) paths."""
    ca_key, ca_cert = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.pem")
    key, csr, cert = (os.path.join(directory, n) for n in ("srv.key", "srv.csr", "srv.pem"))
    ext = os.path.join(directory, "srv.ext")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", ca_key, "-out", ca_cert, "-days", "2", "-subj", "/CN=Herald test CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=backend")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
        "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext)
    return ca_cert, cert, key


def closed_port():
    """A loopback port nobody listens on, and nobody will: reserved for this
    process (ports.py), so connecting to it is refused for as long as the
    test runs (a port bound and closed again could be taken meanwhile)."""
    return ports.reserve_port()
