"""Limits a public gateway needs: WebSocket connections per client address
and per user, handshakes per address per second (a token bucket: the rate at
once, then the rate per second), and X-Forwarded-For honoured only from
trusted proxies."""

import base64
import os
import re
import socket
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


def burst_upgrades(h, n, sub="burst", straddle=False):
    """n WebSocket upgrades at once: n sockets connect and send their
    request before any answer is read (each as its own user, so the limit
    per user stays out of the way). straddle=True sends the first half
    15 ms before a whole second of the wall clock and the rest 5 ms after
    it: where fixed one-second windows (Herald before its token bucket) let
    twice the rate through. Returns (statuses, seconds from the first
    request sent to the last answer read): the server saw every request
    inside that interval."""
    def send(i):
        s = socket.create_connection(("127.0.0.1", h.port), timeout=30)
        s.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Key: %s\r\nAuthorization: Bearer %s\r\n\r\n"
                   % (base64.b64encode(os.urandom(16)).decode(), tokens[i])).encode())
        return s

    tokens = [h.jwt(sub="%s%d" % (sub, i)) for i in range(n)]
    if straddle:
        time.sleep((0.985 - time.time() % 1.0) % 1.0)
    t0 = time.monotonic()
    socks = [send(i) for i in range(n // 2 if straddle else n)]
    if straddle:
        time.sleep((1.005 - time.time() % 1.0) % 1.0)
        socks += [send(i) for i in range(n // 2, n)]
    statuses = []
    for s in socks:
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        m = re.match(rb"HTTP/1\.1 (\d{3}) ", buf)
        statuses.append(int(m.group(1)) if m else None)
    elapsed = time.monotonic() - t0
    for s in socks:
        s.close()
    return statuses, elapsed


def check_handshake_bucket(h, rate, burst_size):
    """Bursts of upgrades straddling a second boundary: the first burst gets
    at least `rate` (a full bucket), and all bursts together at most rate
    at once plus rate per second of the time they took; some are refused.
    Then a refused address gets in again once a token came back."""
    admitted, refused, t0 = 0, False, None
    for attempt in range(5):  # a machine too slow to outrun the refill: burst again
        statuses, took = burst_upgrades(h, burst_size, sub="b%d-" % attempt, straddle=True)
        t0 = t0 or time.monotonic() - took
        elapsed = time.monotonic() - t0  # every request and answer lies inside it
        assert set(statuses) <= {101, 429}, statuses
        if attempt == 0:
            assert statuses.count(101) >= rate, \
                "a fresh address got %d of %d upgrades, want at least the burst of %d" \
                % (statuses.count(101), burst_size, rate)
        admitted += statuses.count(101)
        # +1: the bucket's refill is continuous, the count is whole
        assert admitted <= rate + rate * elapsed + 1, \
            "%d upgrades admitted in %.2f s at %d/s (burst %d): %r" \
            % (admitted, elapsed, rate, rate, statuses)
        if 429 in statuses:
            refused = True
            break
    assert refused, "never refused a handshake in %d bursts of %d" % (attempt + 1, burst_size)
    # a token comes back within 1/rate s: the address may upgrade again
    wait_until(lambda: burst_upgrades(h, 1, sub="again")[0] == [101], timeout=10,
               what="a handshake to be admitted again")


def test_handshake_rate_per_address():
    with Herald(env={"HERALD_HANDSHAKE_RATE": "5", "HERALD_MAX_CONNS_PER_ADDRESS": "0"}) as h:
        check_handshake_bucket(h, 5, 20)
        # refused upgrades got the 429 with the address named
        ws, st = upgrade(h, sub="late")
        while st == 101:
            ws.abort()
            ws, st = upgrade(h, sub="late")
        assert st == 429 and "address" in ws.http_body.decode(), (st, ws.http_body)


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
        check_handshake_bucket(h, 50, 150)


def test_bad_trusted_proxies_refused_at_start():
    h = Herald(env={"HERALD_TRUSTED_PROXIES": "10.0.0.0/99"})
    p = h.run(["serve"], timeout=10)
    h.discard()
    assert p.returncode != 0 and b"trusted_proxies" in p.stderr


if __name__ == "__main__":
    run_tests(globals())
