"""test_nginx_topology.py - the docker-compose topology, without Docker.

One redis-server, two Herald nodes in cluster mode on it (shared JWT secret
and API key, distinct node ids), and Debian's nginx in front of them with
deploy/nginx/herald.conf - the file docker-compose.yml mounts - pointed at
the two nodes (harness.Nginx). Every client goes through nginx: health
endpoints, WebSocket upgrades authenticated with a JWT, REST publishes.
nginx tags each response with the node that answered (X-Herald-Upstream,
added by the test's own nginx.conf), and a WebSocket client's node is the
prefix of its client id ("<node>.<n>").

test_cross_node_delivery needs the Redis channel layer (a publication
received by one node reaching subscribers on every node); until it lands,
that test fails and the others pass.
"""

import contextlib
import os
import secrets
import subprocess

from harness import REPO, Herald, Nginx, Redis, assert_problem, assert_result, run_tests

NODES = ("alpha", "beta")
HEALTHCHECK = os.path.join(REPO, "deploy", "herald-healthcheck")


@contextlib.contextmanager
def topology():
    """(nginx, {node id: Herald}): two cluster nodes on one Redis behind nginx."""
    secret, api_key = secrets.token_hex(24), secrets.token_hex(16)
    with Redis() as r, \
            Herald(redis=r, secret=secret, api_key=api_key, env={"HERALD_NODE_ID": NODES[0]}) as a, \
            Herald(redis=r, secret=secret, api_key=api_key, env={"HERALD_NODE_ID": NODES[1]}) as b, \
            Nginx([a, b]) as n:
        # /healthz answers before Redis is connected; a client subscribed
        # then would get a `subscribed` push (resubscription) later
        a.wait_ready()
        b.wait_ready()
        yield n, {NODES[0]: a, NODES[1]: b}


def node_of(resp, nodes):
    """The node id that answered a response proxied by nginx."""
    addr = resp.headers.get("X-Herald-Upstream", "")
    # after a retry nginx lists every upstream it tried: the last one answered
    last = addr.split(",")[-1].strip()
    for name, h in nodes.items():
        if last == "127.0.0.1:%d" % h.port:
            return name
    raise AssertionError("response not tagged with a known node: X-Herald-Upstream %r" % addr)


def clients_on_every_node(n, token, limit=12):
    """{node id: WS}: connects through nginx until one client sits on each
    node (the others opened on the way stay open, which is what steers
    least_conn to the emptier node)."""
    placed = {}
    for _ in range(limit):
        ws = n.client(token)
        placed.setdefault(ws.node, ws)
        if len(placed) == len(NODES):
            return placed
    raise AssertionError("%d connections through nginx all landed on %r" % (limit, sorted(placed)))


def publish(target, channel, data, headers):
    r = target.http("POST", "/api/v1/publish", json={"channel": channel, "data": data},
                    headers=headers)
    assert r.status_code == 200, "publish to %r: HTTP %d %s" % (channel, r.status_code, r.text[:300])
    return r


def test_health_through_nginx():
    with topology() as (n, nodes):
        seen = set()
        for _ in range(6):
            for path in ("/healthz", "/readyz"):
                r = n.http("GET", path)
                assert r.status_code == 200, "%s through nginx: HTTP %d %s" % (path, r.status_code, r.text)
                seen.add(node_of(r, nodes))
        assert seen == set(NODES), "health requests reached only %r" % sorted(seen)
        r = n.http("GET", "/metrics")
        assert r.status_code == 200 and "herald_" in r.text, (r.status_code, r.text[:200])


def test_healthcheck_script():
    """deploy/herald-healthcheck, the image's HEALTHCHECK and compose's:
    0 for a 200, 1 for anything else, against a node and against nginx."""
    with topology() as (n, nodes):
        a = nodes[NODES[0]]

        def check(*args, listen=None):
            env = {k: v for k, v in os.environ.items() if k != "HERALD_LISTEN"}
            if listen:
                env["HERALD_LISTEN"] = listen
            return subprocess.run(["/bin/bash", HEALTHCHECK] + list(args), env=env,
                                  capture_output=True, timeout=15).returncode

        assert check(listen="0.0.0.0:%d" % a.port) == 0   # /healthz, port from HERALD_LISTEN
        assert check("/readyz", listen="127.0.0.1:%d" % a.port) == 0
        assert check("/readyz", str(n.port)) == 0          # what compose runs in the nginx container
        assert check("/no-such-path", str(a.port)) == 1
        closed = n.port
        n.stop()
        assert check("/healthz", str(closed)) == 1


def test_websocket_upgrade_through_nginx():
    with topology() as (n, nodes):
        a = nodes[NODES[0]]
        for via in ("header", "query"):
            ws = n.client(a.jwt(sub="carol"), via=via)
            assert ws.hello["user"] == "carol", ws.hello
            assert ws.node in NODES, ws.hello
            assert_result(ws.cmd("ping"))
            assert_result(ws.cmd("subscribe", channel="lobby"))
            ws.close()
        # an invalid token is refused before the upgrade, and nginx passes
        # Herald's 401 (problem+json) through
        ws = n.ws()
        status = ws.connect("/ws", {"Authorization": "Bearer " + a.jwt(sub="carol")[:-4] + "AAAA"})
        assert status == 401, "forged token through nginx: HTTP %s" % status
        ctype = ws.http_headers.get("content-type", "")
        assert ctype.startswith("application/problem+json"), ws.http_headers


def test_rest_publish_through_nginx():
    """A REST publish through nginx reaches the subscribers (connected through
    nginx) of the node that received it - that much needs no Redis layer."""
    with topology() as (n, nodes):
        a = nodes[NODES[0]]
        subs = clients_on_every_node(n, a.jwt(sub="dave"))
        for ws in subs.values():
            assert_result(ws.cmd("subscribe", channel="news"))
        for i in range(4):
            r = publish(n, "news", {"i": i}, a.api_headers())
            ws = subs[node_of(r, nodes)]
            msg = ws.recv_push("message", timeout=10)
            assert msg["channel"] == "news" and msg["data"] == {"i": i}, msg
            # anything the other node's subscriber got (cross-node delivery)
            # is drained so it does not confuse the next round
            for other in subs.values():
                if other is not ws:
                    try:
                        while True:
                            other.recv_json(timeout=0.2)
                    except TimeoutError:
                        pass
        # a publish without the API key is refused through nginx too
        r = n.http("POST", "/api/v1/publish", json={"channel": "news", "data": 1})
        assert_problem(r, 401)


def test_clients_spread_over_nodes():
    """nginx (least_conn) places concurrent WebSocket clients on both nodes;
    client ids carry each node's id."""
    with topology() as (n, nodes):
        tok = nodes[NODES[0]].jwt(sub="erin")
        placed = clients_on_every_node(n, tok)
        assert set(placed) == set(NODES), placed
        ids = [ws.hello["client"] for ws in n.clients]
        assert len(set(ids)) == len(ids), "duplicate client ids: %r" % ids


def test_node_down_is_skipped():
    """With one node stopped, nginx sends health checks and upgrades to the
    other one (proxy_next_upstream error)."""
    with topology() as (n, nodes):
        a, b = nodes[NODES[0]], nodes[NODES[1]]
        assert b.stop() == 0
        for _ in range(6):
            r = n.http("GET", "/healthz")
            assert r.status_code == 200, "healthz with a node down: HTTP %d %s" % (r.status_code, r.text)
            assert node_of(r, nodes) == NODES[0], r.headers.get("X-Herald-Upstream")
        for _ in range(3):
            ws = n.client(a.jwt(sub="frank"))
            assert ws.node == NODES[0], ws.hello


def test_cross_node_delivery():
    """A REST publish sent straight to one node reaches a subscriber that
    nginx placed on the other node, both ways. Needs the Redis channel layer:
    fails until it lands (publications then reach only the receiving node)."""
    with topology() as (n, nodes):
        tok = nodes[NODES[0]].jwt(sub="grace")
        subs = clients_on_every_node(n, tok)
        for ws in subs.values():
            assert_result(ws.cmd("subscribe", channel="cross"))
        for src, dst in ((NODES[0], NODES[1]), (NODES[1], NODES[0])):
            h = nodes[src]
            data = {"from": src, "to": dst}
            publish(h, "cross", data, h.api_headers())
            for name in (dst, src):
                try:
                    msg = subs[name].recv_push("message", timeout=5)
                except TimeoutError:
                    raise AssertionError("a publication sent to node %s did not reach the subscriber "
                                         "on node %s within 5 s" % (src, name))
                assert msg["channel"] == "cross" and msg["data"] == data, (name, msg)


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=90)
