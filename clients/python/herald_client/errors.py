"""Herald's errors as exceptions.

Every REST error of Herald is RFC 9457 problem+json ({"type", "title",
"status", "detail"}); each status has its own class, so callers catch what
they mean: ``except herald_client.NotFound``.
"""


class HeraldError(Exception):
    """An error answer from Herald, or no answer at all (status None)."""

    status = None

    def __init__(self, detail, status=None, title=None, type=None, body=None, retry_after=None):
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        self.title = title
        self.type = type
        self.body = body
        self.retry_after = retry_after

    def __str__(self):
        if self.status is None:
            return self.detail
        return "%s %s: %s" % (self.status, self.title or "", self.detail)


class BadRequest(HeraldError):
    status = 400


class Unauthorized(HeraldError):
    """Missing or wrong API key / token."""
    status = 401


class Forbidden(HeraldError):
    """Authenticated, but not a backend (a user token without admin/publisher)."""
    status = 403


class NotFound(HeraldError):
    """Unknown user, or presence/history not enabled for the channel's namespace."""
    status = 404


class Conflict(HeraldError):
    status = 409


class PayloadTooLarge(HeraldError):
    status = 413


class ValidationError(HeraldError):
    """422: valid JSON with missing or invalid fields (e.g. a bad channel name)."""
    status = 422


class RateLimited(HeraldError):
    status = 429


class ServerError(HeraldError):
    """A 5xx other than 503."""
    status = 500


class Unavailable(ServerError):
    """503: Herald is shutting down or its Redis is unreachable; nothing was done."""
    status = 503


class ConnectionFailed(HeraldError):
    """No HTTP answer: the connection could not be opened, or broke."""


class ConnectionLost(ConnectionFailed):
    """The connection broke after the request was sent: Herald may have acted on
    it. Raised as is for publish and broadcast, which are not retried then."""


_BY_STATUS = {c.status: c for c in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict,
                                     PayloadTooLarge, ValidationError, RateLimited, Unavailable)}


def error_for(status, body, retry_after=None):
    """The exception for an error answer (body: the parsed JSON or None)."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else HeraldError)
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("error_description") or body.get("error") or ""
        return cls(str(detail), status, body.get("title"), body.get("type"), body, retry_after)
    return cls("HTTP %d" % status, status, None, None, body, retry_after)
