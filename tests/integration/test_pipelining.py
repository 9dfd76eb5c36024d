"""HTTP/1.1 pipelining: several requests in one TCP write, on raw sockets.

libwebsockets 4.1.6 mishandles a request whose bytes it stashed in its
per-connection buflist (they arrived in the same read as an earlier
request): lws_http_action() then loops "while the buflist holds bytes,
lws_read_h1()" without checking that anything was consumed, so a pipelined
request *with a body* turned the loop into a 100% CPU spin, deaf to every
client (GET + POST, POST + POST). And while a request with a body waits for
its answer, lws calls BODY_COMPLETION again on every loop iteration; a
handler that re-dispatches on it runs again and again (a pipelined login
became hundreds of Argon2 logins).

Herald's contract (README, "REST API"): pipelined requests without a body
are answered in order; a pipelined request with a body (or one a worker
answers) gets 503 and the connection closes after the answers before it.
In every case the server must be idle (no CPU burned) and healthy
afterwards. Every read waits for the answer it needs, with a generous bound.
"""

from harness import Herald, assert_not_spinning, assert_pipeline, run_tests

PUBLISH = b"/api/v1/publish"
BODY = b'{"channel":"pipe","data":{"n":1}}'


def request(method, path, body=None, headers=(), length=True):
    out = b"%s %s HTTP/1.1\r\nHost: t\r\n" % (method, path)
    for h in headers:
        out += h.encode() + b"\r\n"
    if body is not None:
        out += b"Content-Type: application/json\r\n"
        if length:
            out += b"Content-Length: %d\r\n" % len(body)
    return out + b"\r\n" + (body or b"")


def GET(path=b"/healthz"):
    return request(b"GET", path)


def POST(key=None, body=BODY, length=True):
    return request(b"POST", PUBLISH, body, ["X-API-Key: " + key] if key else [], length)


def assert_idle_and_healthy(h):
    """No spin: a quiet second of CPU within ten (harness); /healthz still
    answers on a new connection."""
    assert h.running(), "herald died:\n%s" % h.log_tail()
    assert_not_spinning(h.proc.pid, "herald after the pipeline")
    assert_pipeline(h.port, GET(), [200], closed=False)


#---- the cases ---------------------------------------------------------------
# The contract (README, "REST API"): pipelined requests without a body are
# answered in order on a connection kept open; a pipelined request with a
# body (or one a worker answers) gets 503 and the connection closes after
# the answers before it. Each case asserts exactly that outcome: a server
# that answers only a prefix and closes fails.

def test_get_get():
    with Herald() as h:
        assert_pipeline(h.port, GET(b"/healthz") + GET(b"/readyz"), [200, 200], closed=False)
        assert_idle_and_healthy(h)


def test_post_post_without_credentials():
    with Herald() as h:
        assert_pipeline(h.port, POST() + POST(), [401, 503], closed=True)
        assert_idle_and_healthy(h)


def test_post_then_get():
    with Herald() as h:
        assert_pipeline(h.port, POST() + GET(), [401, 200], closed=False)
        assert_idle_and_healthy(h)


def test_post_with_body_then_get_publishes_once():
    with Herald() as h:
        sub = h.subscriber("pipe")
        assert_pipeline(h.port, POST(h.api_key) + GET(), [200, 200], closed=False)
        assert sub.recv_push()["data"] == {"n": 1}
        sub.assert_quiet_until_marker(h.publish, "pipe")  # once
        assert_idle_and_healthy(h)


def test_get_then_post_with_body():
    """The request with a body comes second: lws parses it out of its
    buflist and used to spin. It is refused (503, then close) and nothing
    is published."""
    with Herald() as h:
        sub = h.subscriber("pipe")
        assert_pipeline(h.port, GET() + POST(h.api_key) + GET(b"/readyz"), [200, 503], closed=True)
        sub.assert_quiet_until_marker(h.publish, "pipe")
        assert_idle_and_healthy(h)


def test_pipelined_login_runs_once():
    """An asynchronous handler (Argon2 on a worker) must run once: lws
    repeats BODY_COMPLETION while the answer is pending."""
    with Herald() as h:
        h.create_user("bob", "correct horse battery staple")
        form = b"grant_type=password&username=bob&password=correct+horse+battery+staple"
        login = (b"POST /api/v1/auth/token HTTP/1.1\r\nHost: t\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(form), form))
        bodies = assert_pipeline(h.port, login + GET(), [200, 200], closed=False)
        assert b"access_token" in bodies[0], bodies[0][:200]
        assert_idle_and_healthy(h)
        # the username's failure budget was not burned by repeated attempts
        assert "access_token" in h.login("bob", "correct horse battery staple")


def test_post_without_content_length_then_get():
    """No Content-Length and no Transfer-Encoding means no body (RFC 9112
    section 6.3), but lws 4.1.6 waits for up to 100 MB of "body" and
    swallows the GET. Herald serves the POST with an empty body (400 for
    publish) and closes the connection: the GET is not answered."""
    with Herald() as h:
        assert_pipeline(h.port, POST(h.api_key, length=False) + GET(), [400], closed=True)
        assert_idle_and_healthy(h)


if __name__ == "__main__":
    run_tests(globals())
