"""A connect storm through the connect proxy (SPEC §8): 5,000 WebSocket
clients with a session cookie and no JWT (herald-loadgen --auth cookie)
connect at once to a herald whose connect proxy is herald-proxy-backend
(bench/proxy_backend.c: the user from the cookie). Every one is
authenticated by the backend, and the backend sees at most
HERALD_PROXY_MAX_INFLIGHT TCP connections: pooled, bounded concurrency,
not 5,000 connections."""

import json
import os
import subprocess
import urllib.request

from harness import Herald, free_port, herald_bin, run_tests, wait_until

CONNS = 5000
INFLIGHT = 32


def bench_bin(name):
    return os.path.join(os.path.dirname(os.path.abspath(herald_bin())), "bench", name)


def stats(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/stats" % port, timeout=5) as r:
        return json.loads(r.read())


def healthy(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_storm_of_5000_uses_a_bounded_pool():
    port = free_port()
    backend = subprocess.Popen([bench_bin("herald-proxy-backend"), "--listen",
                                "127.0.0.1:%d" % port, "--key", "k"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: healthy(port), 20, what="herald-proxy-backend")
        env = {"HERALD_PROXY_CONNECT_URL": "http://127.0.0.1:%d/connect" % port,
               "HERALD_PROXY_KEY": "k", "HERALD_PROXY_MAX_INFLIGHT": str(INFLIGHT),
               "HERALD_PROXY_TIMEOUT": "60"}
        st0 = stats(port)  # the health checks and this call: not Herald's
        with Herald(env=env) as h:
            p = subprocess.run(
                [bench_bin("herald-loadgen"), "--host", "127.0.0.1", "--port", str(h.port),
                 "--secret", h.secret, "--tag", "storm", "--auth", "cookie", "--idle", str(CONNS),
                 "--concurrency", "1000", "--connect-timeout", "150", "--timeout", "240"],
                capture_output=True, text=True, timeout=280)
            assert p.returncode == 0, (p.returncode, p.stderr[-3000:])
            r = json.loads(p.stdout.strip().splitlines()[-1])
            assert r["conns"]["ready"] == CONNS and r["conns"]["failed"] == 0, r["conns"]
            st = stats(port)  # counts itself: one request, one connection
            calls, conns = (st[k] - st0[k] - 1 for k in ("requests", "connections"))
            assert calls == CONNS, (st0, st)
            # the pool: never more connections than calls allowed in flight
            assert 1 <= conns <= INFLIGHT, (st0, st)
            assert h.metrics().get("herald_proxy_results_total") == CONNS
    finally:
        backend.terminate()
        backend.wait(10)


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=290)
