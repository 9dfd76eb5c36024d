"""The synchronous client (standard library only)."""

import http.client
import socket
import ssl
import threading
import time

from . import _core
from .errors import ConnectionFailed, ConnectionLost


class Herald(_core.Api):
    """A backend's connection to Herald's REST API.

        h = Herald("http://127.0.0.1:8080", api_key="...")
        h.publish("news", {"title": "hi"})

    api_key or token (a JWT with role admin or publisher) authenticates.
    Calls are thread-safe (one kept-alive connection, used by one call at a
    time). Failed calls are retried `retries` times with exponential backoff
    and jitter when that is safe: see README.md (this package's).
    """

    def __init__(self, url, api_key=None, token=None, timeout=10.0, retries=3, backoff=0.1,
                 max_backoff=2.0, ssl_context=None):
        self._target = _core.Target(url)
        self.api_key, self.token, self.timeout = api_key, token, timeout
        self._backoff = _core.Backoff(retries, backoff, max_backoff)
        self._ssl = ssl_context
        self._conn = None
        self._used_at = 0.0
        self._lock = threading.Lock()

    def close(self):
        with self._lock:
            self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _drop(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _open(self):
        t = self._target
        if t.https:
            ctx = self._ssl or ssl.create_default_context()
            conn = http.client.HTTPSConnection(t.host, t.port, timeout=self.timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(t.host, t.port, timeout=self.timeout)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _once(self, req):
        """One attempt: (status, Retry-After, body). Raises ConnectionFailed
        when nothing was sent, ConnectionLost when the answer was lost."""
        if self._conn is not None and req.kind == _core.ONCE and \
                time.monotonic() - self._used_at > _core.FRESH_AFTER_IDLE_S:
            self._drop()
        reused = self._conn is not None
        if not reused:
            try:
                self._conn = self._open()
            except (OSError, http.client.HTTPException) as e:
                self._conn = None
                raise ConnectionFailed("cannot connect to %s:%d: %s"
                                       % (self._target.host, self._target.port, e)) from e
        try:
            self._conn.request(req.method, self._target.prefix + req.path, body=req.body,
                               headers=_core.headers(self.api_key, self.token, req.body))
            resp = self._conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self._drop()
            if reused and isinstance(e, (http.client.RemoteDisconnected, BrokenPipeError,
                                         ConnectionResetError)) and req.kind == _core.IDEMPOTENT:
                raise ConnectionFailed("kept-alive connection closed: %s" % e) from e
            raise ConnectionLost("connection lost during %s %s: %s" % (req.method, req.path, e)) from e
        self._used_at = time.monotonic()
        if resp.will_close:
            self._drop()
        return resp.status, resp.getheader("Retry-After"), raw

    def _call(self, req):
        attempt = 0
        while True:
            with self._lock:
                try:
                    status, retry_after, raw = self._once(req)
                except ConnectionLost:
                    if req.kind == _core.ONCE or attempt >= self._backoff.retries:
                        raise
                    err, status, retry_after = True, None, None
                except ConnectionFailed:
                    if attempt >= self._backoff.retries:
                        raise
                    err, status, retry_after = True, None, None
                else:
                    err = False
            if not err:
                if attempt >= self._backoff.retries or not _core.retryable_status(req, status):
                    return _core.outcome(req, status, retry_after, raw)
                retry_after = float(retry_after) if (retry_after or "").isdigit() else None
            time.sleep(self._backoff.delay(attempt, retry_after))
            attempt += 1
