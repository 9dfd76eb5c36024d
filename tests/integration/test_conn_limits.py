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


def xff_status(h, sub, xff):
    return upgrade(h, sub=sub, headers={"X-Forwarded-For": xff})[1]


def test_forwarded_for_read_whole_and_never_unlimited():
    """Behind a trusted proxy the header is read whole (a long chain was
    copied into 1 KiB, failed, and the request counted as the proxy's own:
    no limit), entries a proxy writes with a port or padded with tabs name
    their client, and an entry that does not parse counts as the proxy's
    peer address - never as "no limit"."""
    env = {"HERALD_MAX_CONNS_PER_ADDRESS": "1", "HERALD_HANDSHAKE_RATE": "0",
           "HERALD_TRUSTED_PROXIES": "127.0.0.0/8"}
    with Herald(env=env) as h:
        spoofed = ", ".join("10.%d.%d.%d" % (i // 65536, i // 256 % 256, i % 256) for i in range(150))
        assert len(spoofed) > 1024
        assert xff_status(h, "a", spoofed + ", 198.51.100.1") == 101
        assert xff_status(h, "b", spoofed + ", 198.51.100.1") == 429
        assert xff_status(h, "c", "198.51.100.1") == 429
        # IPv4:port and [IPv6]:port, tabs: the same client as without them
        assert xff_status(h, "d", "198.51.100.2:1000") == 101
        assert xff_status(h, "e", "198.51.100.2:2000") == 429
        assert xff_status(h, "f", "\t198.51.100.2\t") == 429
        assert xff_status(h, "g", "[2001:db8:7::1]:443") == 101
        assert xff_status(h, "h", "2001:db8:7::1") == 429
        # garbage and an empty last entry: the proxy's address (127.0.0.1),
        # which then holds its one place
        assert xff_status(h, "i", "not-an-address") == 101
        assert xff_status(h, "j", "198.51.100.3, unknown") == 429
        assert xff_status(h, "k", "198.51.100.3,") == 429
        assert xff_status(h, "l", "198.51.100.3:99999") == 429
        # an address of its own still gets in
        assert xff_status(h, "m", "198.51.100.3") == 101


def test_ipv6_counted_per_prefix_and_mapped_ipv4_as_ipv4():
    env = {"HERALD_MAX_CONNS_PER_ADDRESS": "1", "HERALD_HANDSHAKE_RATE": "0",
           "HERALD_TRUSTED_PROXIES": "127.0.0.1"}
    with Herald(env=env) as h:
        # one IPv6 client holds a /64: its addresses count together
        assert xff_status(h, "a", "2001:db8:1:2::1") == 101
        assert xff_status(h, "b", "2001:db8:1:2:ffff:ffff:ffff:fffe") == 429
        assert xff_status(h, "c", "2001:db8:1:3::1") == 101
        # IPv4-mapped IPv6 is the IPv4 address
        assert xff_status(h, "d", "::ffff:198.51.100.20") == 101
        assert xff_status(h, "e", "198.51.100.20") == 429
    # the prefix lengths are configurable
    env.update({"HERALD_IPV6_PREFIX": "128", "HERALD_IPV4_PREFIX": "24"})
    with Herald(env=env) as h:
        assert xff_status(h, "a", "2001:db8:1:2::1") == 101
        assert xff_status(h, "b", "2001:db8:1:2::2") == 101
        assert xff_status(h, "c", "198.51.100.1") == 101
        assert xff_status(h, "d", "198.51.100.200") == 429
        assert xff_status(h, "e", "198.51.101.1") == 101


def test_prefix_lengths_validated_at_start():
    for var, bad in (("HERALD_IPV6_PREFIX", "129"), ("HERALD_IPV6_PREFIX", "8"),
                     ("HERALD_IPV4_PREFIX", "33"), ("HERALD_IPV4_PREFIX", "x")):
        h = Herald(env={var: bad})
        p = h.run(["serve"], timeout=10)
        h.discard()
        assert p.returncode != 0 and var.encode() in p.stderr, (var, bad, p.stderr)
    h = Herald()
    p = h.run(["--help"], timeout=10)
    h.discard()
    assert b"--ipv6-prefix" in p.stdout and b"--ipv4-prefix" in p.stdout, p.stdout[-500:]


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
