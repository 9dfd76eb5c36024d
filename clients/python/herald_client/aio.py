"""The asyncio client (standard library only): the same calls as Herald,
as coroutines, over asyncio streams."""

import asyncio
import ssl
import time

from . import _core
from .errors import ConnectionFailed, ConnectionLost


class AsyncHerald(_core.Api):
    """    h = AsyncHerald("http://127.0.0.1:8080", api_key="...")
        await h.publish("news", {"title": "hi"})
        await h.close()

    One kept-alive connection, used by one call at a time (an asyncio.Lock);
    retries as Herald (the sync client) does."""

    def __init__(self, url, api_key=None, token=None, timeout=10.0, retries=3, backoff=0.1,
                 max_backoff=2.0, ssl_context=None):
        self._target = _core.Target(url)
        self.api_key, self.token, self.timeout = api_key, token, timeout
        self._backoff = _core.Backoff(retries, backoff, max_backoff)
        self._ssl = ssl_context
        self._reader = self._writer = None
        self._used_at = 0.0
        self._lock = None

    async def close(self):
        await self._drop()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def _drop(self):
        w, self._reader, self._writer = self._writer, None, None
        if w is not None:
            w.close()
            try:
                await w.wait_closed()
            except OSError:
                pass

    async def _open(self):
        t = self._target
        ctx = (self._ssl or ssl.create_default_context()) if t.https else None
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(t.host, t.port, ssl=ctx), self.timeout)

    async def _exchange(self, req):
        t = self._target
        head = ["%s %s HTTP/1.1" % (req.method, t.prefix + req.path), "Host: " + t.host_header]
        for k, v in _core.headers(self.api_key, self.token, req.body).items():
            head.append("%s: %s" % (k, v))
        head.append("Content-Length: %d" % len(req.body or b""))
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (req.body or b""))
        await self._writer.drain()
        status_line = await self._reader.readline()
        if not status_line:
            raise ConnectionResetError("closed before answering")
        parts = status_line.decode("latin-1").split(" ", 2)
        status = int(parts[1])
        hdrs = {}
        while True:
            line = await self._reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if "content-length" in hdrs:
            raw = await self._reader.readexactly(int(hdrs["content-length"]))
        elif status in (204, 304) or req.method == "HEAD":
            raw = b""
        else:  # no length: the body ends with the connection
            raw = await self._reader.read()
            hdrs["connection"] = "close"
        return status, hdrs, raw

    async def _once(self, req):
        if self._writer is not None and req.kind == _core.ONCE and \
                time.monotonic() - self._used_at > _core.FRESH_AFTER_IDLE_S:
            await self._drop()
        reused = self._writer is not None
        if not reused:
            try:
                await self._open()
            except (OSError, asyncio.TimeoutError) as e:
                await self._drop()
                raise ConnectionFailed("cannot connect to %s:%d: %s"
                                       % (self._target.host, self._target.port, e)) from e
        try:
            status, hdrs, raw = await asyncio.wait_for(self._exchange(req), self.timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
            await self._drop()
            if reused and isinstance(e, (ConnectionResetError, BrokenPipeError)) and \
                    req.kind == _core.IDEMPOTENT:
                raise ConnectionFailed("kept-alive connection closed: %s" % e) from e
            raise ConnectionLost("connection lost during %s %s: %r" % (req.method, req.path, e)) from e
        self._used_at = time.monotonic()
        if hdrs.get("connection", "").lower() == "close":
            await self._drop()
        return status, hdrs.get("retry-after"), raw

    async def _call_async(self, req):
        if self._lock is None:
            self._lock = asyncio.Lock()
        attempt = 0
        while True:
            async with self._lock:
                try:
                    status, retry_after, raw = await self._once(req)
                    err = False
                except ConnectionLost:
                    if req.kind == _core.ONCE or attempt >= self._backoff.retries:
                        raise
                    err, retry_after = True, None
                except ConnectionFailed:
                    if attempt >= self._backoff.retries:
                        raise
                    err, retry_after = True, None
            if not err:
                if attempt >= self._backoff.retries or not _core.retryable_status(req, status):
                    return _core.outcome(req, status, retry_after, raw)
                retry_after = float(retry_after) if (retry_after or "").isdigit() else None
            await asyncio.sleep(self._backoff.delay(attempt, retry_after))
            attempt += 1

    def _call(self, req):
        return self._call_async(req)
