"""Limits a public gateway needs: WebSocket connections per client address
and per user, handshakes per address per second, and X-Forwarded-For
honoured only from trusted proxies."""

import time

from harness import Herald, WS, assert_error, run_tests, wait_until


def upgrade(h, sub="alice", headers=None, token=True):
    ws = h.ws()
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = "Bearer " + h.jwt(sub=sub)
    return ws, ws.connect("/ws", hdrs)


def test_connections_per_address():
    with Herald(env={"HERALD_MAX_CONNS_PER_ADDRESS": "3", "HERALD_HANDSHAKE_RATE": "0"}) as h:
        held = []
        for i in range(3):
            ws, st = upgrade(h, sub="u%d" % i)
            assert st == 101
            held.append(ws)
        ws, st = upgrade(h, sub="u9")
        assert st == 429, st
        assert ws.http_headers.get("retry-after") == "1"
        assert "address" in ws.http_body.decode()
        # a closed connection gives its place back
        held[0].close()
        wait_until(lambda: upgrade(h, sub="u8")[1] == 101, what="a place to free up")
        # REST is not counted
        assert h.http("GET", "/healthz").status_code == 200


def test_connections_per_user_at_upgrade_and_connect():
    with Herald(env={"HERALD_MAX_CONNS_PER_USER": "2", "HERALD_HANDSHAKE_RATE": "0"}) as h:
        a = [upgrade(h, sub="carol")[1] for _ in range(2)]
        assert a == [101, 101]
        ws, st = upgrade(h, sub="carol")
        assert st == 429 and "user" in ws.http_body.decode()
        assert upgrade(h, sub="dave")[1] == 101  # other users are not affected
        # the same limit through the connect op
        ws, st = upgrade(h, token=False)
        assert st == 101
        reply = ws.cmd("connect", token=h.jwt(sub="carol"))
        assert_error(reply, "rate_limited")
        assert ws.expect_close() == 4029


def test_handshake_rate_per_address():
    with Herald(env={"HERALD_HANDSHAKE_RATE": "5", "HERALD_MAX_CONNS_PER_ADDRESS": "0"}) as h:
        statuses = []
        t0 = time.monotonic()
        for i in range(20):
            ws, st = upgrade(h, sub="r%d" % i)
            statuses.append(st)
            ws.abort()
        elapsed = time.monotonic() - t0
        # fixed one-second windows: at most 5 in each window the burst touched
        allowed = statuses.count(101)
        assert statuses[0] == 101 and 429 in statuses, statuses
        assert allowed <= 5 * (int(elapsed) + 2), (allowed, elapsed, statuses)
        time.sleep(2.1)  # a new one-second window
        assert upgrade(h, sub="r99")[1] == 101


def test_forwarded_for_only_from_trusted_proxies():
    env = {"HERALD_MAX_CONNS_PER_ADDRESS": "1", "HERALD_HANDSHAKE_RATE": "0"}
    # untrusted: X-Forwarded-For is ignored, every connection is 127.0.0.1
    with Herald(env=env) as h:
        assert upgrade(h, sub="a", headers={"X-Forwarded-For": "198.51.100.1"})[1] == 101
        assert upgrade(h, sub="b", headers={"X-Forwarded-For": "198.51.100.2"})[1] == 429
    # trusted: each client address counts on its own; entries a client wrote
    # further left do not help it
    env["HERALD_TRUSTED_PROXIES"] = "127.0.0.0/8,::1"
    with Herald(env=env) as h:
        assert upgrade(h, sub="a", headers={"X-Forwarded-For": "198.51.100.1"})[1] == 101
        assert upgrade(h, sub="b", headers={"X-Forwarded-For": "198.51.100.2"})[1] == 101
        assert upgrade(h, sub="c", headers={"X-Forwarded-For": "203.0.113.7, 198.51.100.1"})[1] == 429
        # a proxy chain: trusted hops on the right are skipped
        assert upgrade(h, sub="d", headers={"X-Forwarded-For": "198.51.100.3, 127.0.0.2"})[1] == 101
        # the proxy's own requests (no X-Forwarded-For) are not limited
        assert upgrade(h, sub="e")[1] == 101
        assert upgrade(h, sub="f")[1] == 101


def test_defaults_apply():
    """Without configuration the limits are on (the harness turns the
    per-address ones off for the other tests)."""
    with Herald(env={"HERALD_MAX_CONNS_PER_ADDRESS": None, "HERALD_HANDSHAKE_RATE": None}) as h:
        statuses = []
        for i in range(80):
            ws, st = upgrade(h, sub="d%d" % i)
            statuses.append(st)
            ws.abort()
            if st == 429:
                break
        assert 429 in statuses and statuses.index(429) >= 50, statuses


def test_bad_trusted_proxies_refused_at_start():
    h = Herald(env={"HERALD_TRUSTED_PROXIES": "10.0.0.0/99"})
    p = h.run(["serve"], timeout=10)
    h.discard()
    assert p.returncode != 0 and b"trusted_proxies" in p.stderr


if __name__ == "__main__":
    run_tests(globals())
