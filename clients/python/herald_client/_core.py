"""What the sync and asyncio clients share: the API calls as request
descriptions, answer handling, and the retry policy. No I/O here."""

import json
import random
import re
from urllib.parse import urlencode, urlsplit

from .errors import error_for

_CHANNEL = re.compile(r"^[A-Za-z0-9_.:@=,-]{1,255}$")
_SEGMENT_BAD = re.compile(r"[/?#%\s]")

# Retry classes
IDEMPOTENT = "idempotent"  # reads, membership, disconnect, delete: safe to repeat
ONCE = "once"              # publish, broadcast: repeated only when Herald surely did not take it

# An HTTP connection kept this long without use is replaced before sending a
# publication: servers close idle connections, and a publication written
# into one that is being closed could not be told apart from a lost one.
FRESH_AFTER_IDLE_S = 1.0


class Request:
    __slots__ = ("method", "path", "body", "kind", "extract")

    def __init__(self, method, path, body=None, kind=IDEMPOTENT, extract=None):
        self.method = method
        self.path = path
        self.body = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        self.kind = kind
        self.extract = extract


def channel(name):
    if not isinstance(name, str) or not _CHANNEL.match(name):
        raise ValueError("invalid channel name %r (1-255 of A-Z a-z 0-9 _ . : @ = , -)" % (name,))
    return name


def segment(value, what):
    """A user id in a URL path: Herald does not decode %-escapes there."""
    if not isinstance(value, str) or not value or _SEGMENT_BAD.search(value):
        raise ValueError("invalid %s %r for a URL path" % (what, value))
    return value


class Target:
    """Where Herald is: scheme, host, port, path prefix (from the base URL)."""

    def __init__(self, url):
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("expected an http:// or https:// URL, got %r" % (url,))
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.prefix = u.path.rstrip("/")
        self.host_header = u.netloc.rsplit("@", 1)[-1]


def headers(api_key, token, body):
    h = {"Accept": "application/json"}
    if api_key:
        h["X-API-Key"] = api_key
    elif token:
        h["Authorization"] = "Bearer " + token
    if body is not None:
        h["Content-Type"] = "application/json"
    return h


def outcome(req, status, retry_after_header, raw):
    """The result of an answer, or raises the matching HeraldError."""
    body = None
    if raw:
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
    if 200 <= status < 300:
        return req.extract(body) if req.extract else body
    retry_after = None
    if retry_after_header:
        try:
            retry_after = float(retry_after_header)
        except ValueError:
            pass
    raise error_for(status, body, retry_after)


def retryable_status(req, status):
    """503 means Herald did nothing (shutting down, Redis away): any call may
    be repeated. A proxy's 502/504 may come after Herald acted: reads only."""
    if status == 503:
        return True
    return req.kind == IDEMPOTENT and status in (502, 504)


class Backoff:
    """Exponential backoff with full jitter, honouring Retry-After."""

    def __init__(self, retries=3, base=0.1, cap=2.0, max_retry_after=5.0):
        self.retries = retries
        self.base = base
        self.cap = cap
        self.max_retry_after = max_retry_after

    def delay(self, attempt, retry_after=None):
        d = random.uniform(0, min(self.cap, self.base * (2 ** attempt)))
        if retry_after:
            d = max(d, min(retry_after, self.max_retry_after))
        return d


class Api:
    """The calls; a subclass's _call(Request) performs them (returning the
    result, or for the asyncio client an awaitable of it)."""

    def _call(self, req):  # pragma: no cover - provided by the clients
        raise NotImplementedError

    def publish(self, channel_name, data):
        """Publishes data (any JSON value) to a channel: {} or {"offset": N}
        in history namespaces ("local_only": true during a Redis outage)."""
        return self._call(Request("POST", "/api/v1/publish",
                                  {"channel": channel(channel_name), "data": data}, ONCE))

    def broadcast(self, channels, data):
        """Publishes data to several channels: a list of {"channel", "result"
        | "error"} in the order given."""
        names = [channel(c) for c in channels]
        return self._call(Request("POST", "/api/v1/broadcast", {"channels": names, "data": data},
                                  ONCE, extract=lambda b: b["responses"]))

    def add_member(self, channel_name, user):
        """Every connection of `user`, on every node, joins the channel
        (Django Channels' group_add)."""
        return self._call(Request("POST", "/api/v1/channels/%s/members" % channel(channel_name),
                                  {"user": segment(user, "user")}))

    def remove_member(self, channel_name, user):
        """The reverse of add_member (group_discard)."""
        return self._call(Request("DELETE", "/api/v1/channels/%s/members/%s"
                                  % (channel(channel_name), segment(user, "user"))))

    def presence(self, channel_name):
        """The channel's subscribers, cluster-wide: [{"client", "user", "info"}]."""
        return self._call(Request("GET", "/api/v1/channels/%s/presence" % channel(channel_name),
                                  extract=lambda b: b["clients"]))

    def history(self, channel_name, limit=None, since=None, epoch=None):
        """{"publications": [{"offset", "data", "from"?}], "offset", "epoch"}:
        the newest `limit`, or those after offset `since` of stream `epoch`.
        "from" ({"user", "client", "info"}) is Herald's word on the client
        connection that published; backend publications have none."""
        q = {k: v for k, v in (("limit", limit), ("since", since), ("epoch", epoch))
             if v is not None}
        path = "/api/v1/channels/%s/history" % channel(channel_name)
        return self._call(Request("GET", path + ("?" + urlencode(q) if q else "")))

    def disconnect(self, user):
        """Closes every connection of `user` on every node (4003); the user is kept."""
        return self._call(Request("POST", "/api/v1/users/%s/disconnect" % segment(user, "user")))

    def delete_user(self, user_id):
        """Deletes a user of Herald's store: its sockets close, its tokens stop working."""
        return self._call(Request("DELETE", "/api/v1/users/%s" % segment(user_id, "user id")))
