"""herald_client.proxy - answer Herald's backend proxy calls (connect,
refresh, subscribe, publish, rpc) from Django or FastAPI.

Herald POSTs a JSON object to the URL configured for each proxy
(HERALD_PROXY_CONNECT_URL, ...) with the configured headers of the
client's own request - its Cookie header above all, so Django's session
middleware sees the browser's session - and, when HERALD_PROXY_KEY is set,
an ``X-Herald-Proxy-Key`` header. The backend answers 200 with exactly one
of ``{"result": ...}``, ``{"error": {"code", "message"}}`` or
``{"disconnect": {"code": 4500-4999, "reason"}}``; anything else makes the
call "unavailable" for the client. This module builds those answers, checked
by the same rules Herald applies (so a mistake raises ValueError here
instead of turning into "unavailable" there), parses the requests, and
wraps Django views and FastAPI routes:

Django (views.py)::

    from herald_client.proxy import django_view, connect_result, ProxyError

    @django_view("connect", key=settings.HERALD_PROXY_KEY)
    def herald_connect(request, call):
        if not request.user.is_authenticated:
            raise ProxyError("unauthorized", "log in first")
        return connect_result(str(request.user.pk), info={"name": request.user.username})

FastAPI::

    from herald_client.proxy import fastapi_call, rpc_result, ProxyRequest

    @app.post("/herald/rpc")
    async def herald_rpc(call: ProxyRequest = Depends(fastapi_call("rpc", key=KEY))):
        return rpc_result({"echo": call.data})

Only the standard library is needed; Django and FastAPI are imported by the
wrappers that use them.
"""

import hmac
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

KINDS = ("connect", "refresh", "subscribe", "publish", "rpc")
PROXY_KEY_HEADER = "X-Herald-Proxy-Key"

# Herald's limits (gateway/proxy.h): what it accepts in an answer.
MAX_USER = 255
MAX_ROLES = 64
MAX_ROLE = 255
MAX_CODE = 64
MAX_MESSAGE = 1024
MAX_REASON = 123  # a WebSocket close frame's reason
MAX_EXPIRE = 253402300799  # the end of year 9999, unix seconds
DEFAULT_MAX_CHANNEL_LEN = 255

_CODE = re.compile(r"[a-z][a-z0-9_]*\Z")
_CHANNEL = re.compile(r"[A-Za-z0-9_.:@=,-]+\Z")
_UNSET = object()


class ProxyRequestError(ValueError):
    """The body is not a proxy request Herald would send."""


class ProxyError(Exception):
    """Raise in a wrapped handler to answer {"error": {"code", "message"}}:
    the client gets that error code (for connect: then close 4003)."""

    def __init__(self, code: str, message: str = ""):
        super().__init__(message or code)
        self.code, self.message = code, message


class ProxyDisconnect(Exception):
    """Raise in a wrapped handler to answer {"disconnect": ...}: Herald
    closes the client's connection with code (4500-4999) and reason."""

    def __init__(self, code: int, reason: str = ""):
        super().__init__(reason or str(code))
        self.code, self.reason = code, reason


@dataclass(frozen=True)
class ProxyRequest:
    """One call from Herald. Fields a kind does not carry are None (and so
    is user for an anonymous connection); has_data tells an absent ``data``
    from a JSON null."""

    kind: str
    client: str
    user: Optional[str] = None
    transport: Optional[str] = None
    remote_addr: Optional[str] = None
    channel: Optional[str] = None
    method: Optional[str] = None
    data: Any = None
    has_data: bool = False


# fields each kind must carry (besides "client")
_REQUIRED = {
    "connect": ("transport", "remote_addr"),
    "refresh": ("user",),
    "subscribe": ("user", "channel"),
    "publish": ("user", "channel"),
    "rpc": ("user", "method"),
}


def parse_request(kind: str, body) -> ProxyRequest:
    """Parses Herald's request body (bytes, str, or an already decoded
    dict) for a call of kind. Raises ProxyRequestError when it is not one."""
    if kind not in KINDS:
        raise ValueError("unknown proxy kind %r (one of %s)" % (kind, ", ".join(KINDS)))
    if isinstance(body, (bytes, bytearray)):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ProxyRequestError("the body is not UTF-8") from None
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            raise ProxyRequestError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise ProxyRequestError("the body is not a JSON object")
    fields = {}
    for name in ("client",) + _REQUIRED[kind]:
        value = body.get(name)
        if name == "user" and value is None and "user" in body:
            fields[name] = None  # an anonymous connection
            continue
        if not isinstance(value, str) or not value:
            raise ProxyRequestError("%r is missing or not a string" % name)
        fields[name] = value
    has_data = "data" in body
    if kind in ("publish", "rpc") and not has_data:
        raise ProxyRequestError("'data' is missing")
    return ProxyRequest(kind=kind, data=body.get("data"), has_data=has_data, **fields)


def check_key(headers, key: Optional[str]) -> bool:
    """True when key is unset, or when headers (a case-insensitive mapping
    such as Django's request.headers or Starlette's, or a plain dict)
    carry X-Herald-Proxy-Key equal to key (compared in constant time)."""
    if not key:
        return True
    got = headers.get(PROXY_KEY_HEADER)
    if got is None and isinstance(headers, Mapping):
        got = next((v for k, v in headers.items() if k.lower() == PROXY_KEY_HEADER.lower()),
                   None)
    if not isinstance(got, str):
        return False
    return hmac.compare_digest(got.encode(), key.encode())


#---- answers -------------------------------------------------------------------

def _text(value, what, max_len, may_be_empty=False):
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError("%s must be a string without NUL characters" % what)
    n = len(value.encode("utf-8"))
    if n > max_len or (n == 0 and not may_be_empty):
        raise ValueError("%s must be %d to %d bytes of UTF-8" % (what, 0 if may_be_empty else 1,
                                                                 max_len))
    return value


def _expire(value, what="expire_at"):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EXPIRE:
        raise ValueError("%s must be whole unix seconds (0 = does not expire)" % what)
    return value


def connect_result(user: str, *, expire_at: Optional[int] = None, info: Optional[dict] = None,
                   roles: Optional[Iterable[str]] = None,
                   channels: Optional[Iterable[str]] = None,
                   max_channel_len: int = DEFAULT_MAX_CHANNEL_LEN) -> dict:
    """The connection is authenticated as user; with expire_at (unix s) the
    refresh proxy is asked before then (else the connection closes 4001);
    info is shown in presence; roles count in namespace rules; channels are
    subscribed at once (server-side subscriptions)."""
    result = {"user": _text(user, "user", MAX_USER)}
    if expire_at is not None:
        result["expire_at"] = _expire(expire_at)
    if info is not None:
        if not isinstance(info, dict):
            raise ValueError("info must be a dict (a JSON object)")
        result["info"] = info
    if roles is not None:
        roles = list(roles)
        if len(roles) > MAX_ROLES:
            raise ValueError("at most %d roles" % MAX_ROLES)
        result["roles"] = [_text(r, "a role", MAX_ROLE) for r in roles]
    if channels is not None:
        channels = list(channels)
        for c in channels:
            if (not isinstance(c, str) or not _CHANNEL.match(c)
                    or len(c.encode()) > max_channel_len):
                raise ValueError("%r is not a channel name (1 to %d of A-Z a-z 0-9 _ . : @ = , -)"
                                 % (c, max_channel_len))
        result["channels"] = channels
    return {"result": result}


def refresh_result(expire_at: int) -> dict:
    """The session still stands: the connection now expires at expire_at
    (0: no longer expires)."""
    return {"result": {"expire_at": _expire(expire_at)}}


def refresh_expired() -> dict:
    """The session is over: Herald closes the connection with 4001."""
    return {"result": {"expired": True}}


def subscribe_result() -> dict:
    """The subscription is allowed."""
    return {"result": {}}


def publish_result(data: Any = _UNSET) -> dict:
    """The publication is allowed, as sent - or with data instead."""
    return {"result": {} if data is _UNSET else {"data": data}}


def rpc_result(data: Any) -> dict:
    """The reply to the client's rpc: {"id", "result": {"data": data}}."""
    return {"result": {"data": data}}


def error(code: str, message: str = "") -> dict:
    """The client gets {"error": {"code", "message"}} (connect: then close
    4003). Codes are lowercase words such as "forbidden" or "not_found"."""
    if not isinstance(code, str) or not _CODE.match(code) or len(code) > MAX_CODE:
        raise ValueError("code must be 1 to %d of [a-z0-9_], starting with a letter" % MAX_CODE)
    return {"error": {"code": code, "message": _text(message, "message", MAX_MESSAGE, True)}}


def disconnect(code: int, reason: str = "") -> dict:
    """Herald closes the client's connection with code (4500-4999)."""
    if isinstance(code, bool) or not isinstance(code, int) or not 4500 <= code <= 4999:
        raise ValueError("a disconnect code is 4500 to 4999")
    return {"disconnect": {"code": code, "reason": _text(reason, "reason", MAX_REASON, True)}}


def answer_for(exc: Exception) -> dict:
    """The answer for a ProxyError or ProxyDisconnect raised by a handler."""
    if isinstance(exc, ProxyDisconnect):
        return disconnect(exc.code, exc.reason)
    return error(exc.code, exc.message)


#---- Django --------------------------------------------------------------------

def django_view(kind: str, key: Optional[str] = None):
    """Decorates fn(request, call) -> answer dict into a Django view for
    Herald's `kind` proxy: POST only (405), the proxy key checked (403),
    the body parsed (400), ProxyError / ProxyDisconnect turned into their
    answers, the answer sent as JSON. CSRF does not apply (Herald is no
    browser; the key authenticates it). request.user is the browser's user
    when HERALD_PROXY_HEADERS forwards Cookie (the default)."""
    if kind not in KINDS:
        raise ValueError("unknown proxy kind %r" % kind)
    import functools

    from django.http import HttpResponseNotAllowed, JsonResponse
    from django.views.decorators.csrf import csrf_exempt

    def deco(fn):
        @csrf_exempt
        @functools.wraps(fn)
        def view(request, *args, **kwargs):
            if request.method != "POST":
                return HttpResponseNotAllowed(["POST"])
            if not check_key(request.headers, key):
                return JsonResponse({"detail": "bad or missing %s" % PROXY_KEY_HEADER},
                                    status=403)
            try:
                call = parse_request(kind, request.body)
            except ProxyRequestError as e:
                return JsonResponse({"detail": str(e)}, status=400)
            try:
                answer = fn(request, call, *args, **kwargs)
            except (ProxyError, ProxyDisconnect) as e:
                answer = answer_for(e)
            return JsonResponse(answer)
        return view
    return deco


#---- FastAPI -------------------------------------------------------------------

def fastapi_call(kind: str, key: Optional[str] = None):
    """A FastAPI dependency that checks the proxy key (403) and parses the
    request (400) of Herald's `kind` proxy: `call: ProxyRequest =
    Depends(fastapi_call("connect", key=KEY))`. The route returns an answer
    dict; add_fastapi_handlers(app) lets it raise ProxyError instead."""
    if kind not in KINDS:
        raise ValueError("unknown proxy kind %r" % kind)
    from fastapi import HTTPException, Request

    async def dependency(request: Request) -> ProxyRequest:
        if not check_key(request.headers, key):
            raise HTTPException(status_code=403, detail="bad or missing %s" % PROXY_KEY_HEADER)
        try:
            return parse_request(kind, await request.body())
        except ProxyRequestError as e:
            raise HTTPException(status_code=400, detail=str(e)) from None
    return dependency


def add_fastapi_handlers(app) -> None:
    """Makes ProxyError and ProxyDisconnect raised in routes (or their
    dependencies) answer Herald as error / disconnect (200)."""
    from fastapi.responses import JSONResponse

    async def handler(request, exc):
        return JSONResponse(answer_for(exc))
    app.add_exception_handler(ProxyError, handler)
    app.add_exception_handler(ProxyDisconnect, handler)
