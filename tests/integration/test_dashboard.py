"""test_dashboard.py - deploy/grafana/herald.json and deploy/prometheus/prometheus.yml
against real processes.

A real Prometheus (Debian's) runs deploy/prometheus/prometheus.yml with its
targets pointed at two real Herald nodes in cluster mode (a real
redis-server) that carry traffic: WebSocket subscribers, REST publications
on two namespaces, logins, and - the nodes' backend proxy and events webhook
pointed at a real HTTP backend (backend_fixture.py) - sockets without a token
and RPC calls for the proxy panels. Then every query of every dashboard panel (and
the `node` variable's) is evaluated through Prometheus' HTTP API: each must
parse and return series, and each `{{label}}` of its legend must be a label
of those series. A misspelt metric or label therefore fails, as the test
shows on a broken query. `promtool check config` checks the scrape file as
written; the dashboard's structure (ids, grid, datasource uid, provisioning)
is checked statically.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse

import requests
import yaml

import backend_fixture as bf
from harness import REPO, WS, Herald, Redis, free_port, run_tests, wait_until

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
DASHBOARD = os.path.join(REPO, "deploy", "grafana", "herald.json")
SCRAPE = os.path.join(REPO, "deploy", "prometheus", "prometheus.yml")
PROVISIONING = os.path.join(REPO, "deploy", "grafana", "provisioning")
CONFIG = {"namespaces": {
    "chat": {"subscribe": "authenticated", "publish": "authenticated", "presence": True,
             "history_size": 10, "history_ttl": 300},
    "": {"subscribe": "authenticated", "publish": "authenticated"},
}}
# Grafana's variables, as the dashboard's defaults resolve them
VARIABLES = {"$node": ".*", "$__rate_interval": "20s", "$__interval": "5s", "$__range": "5m"}


def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def queries(dash):
    """[(panel title, expr, legendFormat)] of every panel target and variable."""
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"], t.get("legendFormat", "")))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.match(r"label_values\((\w+),\s*(\w+)\)$", q)
            assert m, "variable %s: unsupported query %r" % (v["name"], q)
            out.append(("variable " + v["name"], "count by (%s) (%s)" % (m.group(2), m.group(1)),
                        "{{%s}}" % m.group(2)))
    return out


def resolve(expr):
    for k, v in VARIABLES.items():
        expr = expr.replace(k, v)
    assert "$" not in expr, "unresolved variable in %r" % expr
    return expr


class Prometheus:
    """Debian's prometheus on a free loopback port, with the project's scrape
    config rewritten: compose service names become the given addresses and
    the interval 1 s (nothing else changes)."""

    def __init__(self, targets):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="herald-prom-")
        with open(SCRAPE) as f:
            text = f.read()
        for name, addr in targets.items():
            assert name in text, "prometheus.yml does not scrape %s" % name
            text = text.replace(name, addr)
        text = text.replace("localhost:9090", "127.0.0.1:%d" % self.port)
        cfg = yaml.safe_load(text)
        cfg["global"]["scrape_interval"] = "1s"
        cfg["global"]["evaluation_interval"] = "1s"
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            yaml.safe_dump(cfg, f)
        self.base = "http://127.0.0.1:%d" % self.port

    def __enter__(self):
        assert os.access(PROMETHEUS, os.X_OK), \
            "%s missing: install Debian's prometheus (./setup.sh deps test)" % PROMETHEUS
        self.log = open(os.path.join(self.dir, "prometheus.log"), "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + self.config, "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self.ready, 30, what="prometheus /-/ready")
        return self

    def ready(self):
        assert self.proc.poll() is None, "prometheus exited: %s" % self.tail()
        try:
            return requests.get(self.base + "/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def tail(self):
        with open(os.path.join(self.dir, "prometheus.log"), errors="replace") as f:
            return f.read()[-3000:]

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def query(self, expr):
        r = requests.get(self.base + "/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert body.get("status") == "success", "%s: %s" % (expr, body.get("error", r.text[:300]))
        return body["data"]["result"]

    def targets_up(self, job, n):
        r = requests.get(self.base + "/api/v1/targets", timeout=5).json()
        up = [t for t in r["data"]["activeTargets"] if t["labels"]["job"] == job and t["health"] == "up"]
        return len(up) >= n


def query_problems(prom, title, expr, legend):
    """What is wrong with one dashboard query against live data ([] = fine)."""
    try:
        result = prom.query(resolve(expr))
    except AssertionError as e:
        return ["%s: %s" % (title, e)]
    if not result:
        return ["%s: %r returns no series (a misspelt metric or label?)" % (title, expr)]
    problems = []
    for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
        if not any(label in s["metric"] for s in result):
            problems.append("%s: legend {{%s}} is no label of %r's series" % (title, label, expr))
    return problems


def proxy_env(backend):
    """The nodes' backend proxy and events webhook, on backend (backend_fixture)."""
    backend.route("/connect", bf.answer(200, {"result": {"user": "cookie-user"}}))
    backend.route("/rpc", bf.answer(200, {"result": {"data": "pong"}}))
    backend.route("/events", bf.answer(204, b""))
    return {"HERALD_PROXY_CONNECT_URL": backend.url("/connect"),
            "HERALD_PROXY_RPC_URL": backend.url("/rpc"),
            "HERALD_EVENTS_WEBHOOK_URL": backend.url("/events")}


def tokenless(h):
    """A socket with a cookie and no token: the connect proxy's business."""
    ws = WS(h.port)
    try:
        if ws.connect("/ws", {"Cookie": "session=x"}) == 101:
            ws.send_json({"id": 1, "op": "connect"})
            ws.recv_json(5)
    except (OSError, AssertionError):
        pass
    ws.abort()


def traffic(nodes, stop_at):
    """Subscribers on both nodes, publications on two namespaces through both
    nodes, logins and failed logins, sockets without a token and RPC calls
    (the backend proxy), until stop_at."""
    subs = []
    for i, h in enumerate(nodes):
        for ch in ("chat:room", "news"):
            ws = h.client("user%d" % i)
            assert "result" in ws.cmd("subscribe", channel=ch)
            subs.append(ws)
    n = 0
    while time.monotonic() < stop_at:
        for i, h in enumerate(nodes):
            for ch in ("chat:room", "news"):
                h.publish(ch, {"n": n})
            h.http("GET", "/api/v1/users/me")  # 401: another route's histogram
            tokenless(h)
            subs[2 * i].cmd("rpc", method="ping", data=n)
        n += 1
        time.sleep(0.1)
    for ws in subs:
        ws.close()


#---- tests ---------------------------------------------------------------------

def test_scrape_config_is_valid():
    assert os.access(PROMTOOL, os.X_OK), "%s missing: install Debian's prometheus" % PROMTOOL
    p = subprocess.run([PROMTOOL, "check", "config", SCRAPE], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, "promtool check config: %s%s" % (p.stdout, p.stderr)


def test_dashboard_structure():
    dash = dashboard()
    with open(os.path.join(PROVISIONING, "datasources", "prometheus.yml")) as f:
        uid = yaml.safe_load(f)["datasources"][0]["uid"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    assert dash.get("uid") and dash.get("title") and isinstance(dash.get("schemaVersion"), int)
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, "%s: off the grid %r" % (p["title"], g)
        if p["type"] == "row":
            continue
        assert p.get("targets"), "%s has no query" % p["title"]
        for t in [p] + p["targets"]:
            assert t["datasource"]["uid"] == uid, \
                "%s: datasource %r, provisioned %r" % (p["title"], t["datasource"], uid)
        assert all(q["expr"].count("(") == q["expr"].count(")") for q in p["targets"]), p["title"]
    used = set(re.findall(r"\bherald_[a-z_]+", json.dumps(dash)))
    # the families docs/operations.md and the issue name are on the dashboard
    for family in ("herald_delivery_latency_seconds_bucket", "herald_http_request_duration_seconds_bucket",
                   "herald_handshake_duration_seconds_bucket", "herald_namespace_publications_total",
                   "herald_namespace_deliveries_total", "herald_loop_lag_seconds",
                   "herald_redis_shards_connected", "herald_redis_reconnects_total", "herald_redis_pending_bytes",
                   "herald_proxy_requests_total", "herald_proxy_refusals_total", "herald_proxy_errors_total",
                   "herald_proxy_timeouts_total", "herald_proxy_rejected_total",
                   "herald_proxy_duration_seconds_bucket", "herald_proxy_inflight", "herald_proxy_queued",
                   "herald_events_sent_total", "herald_events_dropped_total", "herald_events_retries_total"):
        assert family in used, "the dashboard does not use %s" % family


def test_every_query_returns_data_from_real_nodes():
    secret = "dashboard-secret-0123456789abcdef0123"
    with Redis() as r, bf.Backend() as backend:
        env = proxy_env(backend)
        with Herald(redis=r, secret=secret, api_key="k1", config=CONFIG,
                    env=dict(env, HERALD_NODE_ID="alpha")) as a, \
                Herald(redis=r, secret=secret, api_key="k1", config=CONFIG,
                       env=dict(env, HERALD_NODE_ID="beta")) as b:
            check_dashboard(a, b)


def check_dashboard(a, b):
    """Prometheus scrapes the two nodes carrying traffic; every panel query answers."""
    a.wait_ready()
    b.wait_ready()
    targets = {"herald1:8080": "127.0.0.1:%d" % a.port, "herald2:8080": "127.0.0.1:%d" % b.port}
    with Prometheus(targets) as prom:
        wait_until(lambda: prom.targets_up("herald", 2), 30, what="both nodes scraped")
        # rate() over 20 s needs two samples with traffic between them
        traffic([a, b], time.monotonic() + 6)
        problems = []
        for title, expr, legend in queries(dashboard()):
            problems += query_problems(prom, title, expr, legend)
        assert not problems, "dashboard queries:\n  " + "\n  ".join(problems)
        # nodes are told apart by Herald's own label
        nodes = {s["metric"]["node"] for s in prom.query("herald_connections")}
        assert nodes == {"alpha", "beta"}, nodes
        # the check bites
        assert query_problems(prom, "t", "sum(rate(herald_publicationz_total[20s]))", "")
        assert query_problems(prom, "t", "sum by (node) (herald_connections)", "{{namespace}}")
        assert query_problems(prom, "t", "sum(rate(herald_connections_total[20s]", "")


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=120)
