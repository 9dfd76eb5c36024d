#!/usr/bin/env python3
"""scale.py - Herald at scale (issue 20): one command per scenario.

    python3 bench/scale.py SCENARIO [options]     (stdlib only; uses bench/run.py's helpers)

Scenarios (defaults in brackets; bench/README.md explains every number):
  cluster       [100,000] WebSocket connections over [6] nodes in cluster mode with [2] Redis
                shards: [10,000] chat rooms of [10] subscribers plus [1,000] personal channels,
                [1] publication/s per channel through REST and FCALL herald_publish (half each),
                [10 %] of the rooms with history, for [20] s; then nginx + nchan's Redis store
                on the same node and shard count (REST only: nchan has no FCALL). Reports
                deliveries/s, latency p50/p99/p99.9, CPU per delivery per node, Redis CPU per
                publication per shard, RSS per connection, loss and duplicates.
  storm         one node holding [19,000] clients on history channels ([1,900] rooms of 10,
                1 publication/s each through FCALL) is restarted (SIGTERM, then started again on
                its port); clients reconnect like herald.js (full-jitter backoff, 500 ms doubling
                to 20 s) and resubscribe with `since`. Reports the time until every client
                recovered, publications lost, peak CPU, Redis commands per reconnect.
  connect-rate  handshakes/s with a fresh HS256 JWT per connection, and server CPU per handshake,
                Herald (--threads 1 and 2) next to herald-refserver, [3] interleaved repeats
  memory        server RSS per connection with 0 and 1 subscription at [10,000] and [19,000]
                connections (own channel, or rooms of 10), next to herald-refserver
  profile       `perf record` of Herald through a connect storm: where handshake time goes
                (lws header parsing, JWT, allocation, the limits tables), and heaptrack of
                10,000 connections with one subscription each: where their memory goes
  structs       the per-connection structures and their sizes (gdb `ptype /o`)
  all           every scenario above

Everything runs in a private network namespace (unshare --net, loopback only; --no-netns to
skip), so that 200,000 sockets meet neither the host's conntrack table nor anyone's ports.
--json FILE keeps every number; --write docs/benchmarks.md replaces the scenario's block in
the "Scale (issue 20)" section (between the bench/scale.py markers). Each block records the
load average before and after: this machine is shared, compare rows within one block only.

(Why one file of ~1,500 lines: each scenario is a function over run.py's
runner and tables with its own --write block; a user runs one command,
stdlib only, as with run.py.)
"""

import argparse
import datetime
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
import run as R  # noqa: E402  (process helpers, RedisServer, Server, Loadgen)

SECTION_BEGIN = "<!-- BEGIN bench/scale.py -->"
SECTION_END = "<!-- END bench/scale.py -->"
HIST_NS = {"subscribe": "authenticated", "publish": "authenticated",
           "history_size": 100, "history_ttl": 300}
NS_CONFIG = {"namespaces": {"": {"subscribe": "authenticated", "publish": "authenticated"},
                            "h": HIST_NS}}
CONNS_PER_LOADGEN = 17000  # + REST and Redis connections: under the 20,000 descriptors

VERBOSE = False


def log(msg):
    print("scale.py: " + msg, file=sys.stderr, flush=True)


def vlog(msg):
    if VERBOSE:
        log(msg)


def now_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


#---- the network namespace -----------------------------------------------------------

def ensure_netns(a):
    """Re-executes this script inside a new network namespace with its own
    loopback (as root, with unshare and ip), unless asked not to."""
    if a.no_netns or os.environ.get("HERALD_SCALE_NETNS") == "1":
        return
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        log("not root or no unshare/ip: running in the host's network namespace")
        return
    env = dict(os.environ, HERALD_SCALE_NETNS="1")
    argv = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"',
            sys.executable, os.path.abspath(__file__)] + sys.argv[1:]
    sys.stdout.flush()
    os.execvpe("unshare", argv, env)


#---- servers ---------------------------------------------------------------------------

class HeraldNode:
    """One Herald process with this benchmark's namespaces ("" and "h", the
    history namespace), on a given or free loopback port."""

    def __init__(self, b, workdir, name, threads=1, redis_urls=None, extra_env=None):
        self.b, self.name, self.threads = b, name, threads
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.redis_urls = redis_urls
        self.extra_env = dict(extra_env or {})
        self.port, self.proc, self.log = None, None, None
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump(NS_CONFIG, f)

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env.update({
            "HERALD_LISTEN": "127.0.0.1:%d" % self.port,
            "HERALD_JWT_SECRET": self.b.secret,
            "HERALD_API_KEY": self.b.api_key,
            "HERALD_DB": os.path.join(self.dir, "h.db"),
            "HERALD_LOG_LEVEL": self.b.a.log_level,
            "HERALD_LOG_FORMAT": "json",
            "HERALD_RATE": "100000",
            "HERALD_RATE_BURST": "100000",
            "HERALD_MAX_CONNS_PER_ADDRESS": "0",
            "HERALD_HANDSHAKE_RATE": "0",
            "HERALD_MAX_CONNS_PER_USER": "0",
            "HERALD_THREADS": str(self.threads),
            "HERALD_NODE_ID": self.name,
            "HERALD_CONFIG": os.path.join(self.dir, "config.json"),
        })
        if self.redis_urls:
            env["HERALD_REDIS_URL"] = ",".join(self.redis_urls)
        env.update(self.extra_env)
        return env

    def start(self, port=None, timeout=30.0):
        self.port = port or R.free_port()
        self.log = open(os.path.join(self.dir, "herald.log"), "ab")
        self.proc = R.spawn([self.b.a.herald], env=self.env(), stdout=self.log,
                            stderr=subprocess.STDOUT, cwd=self.dir)
        path = "/readyz" if self.redis_urls else "/healthz"
        R.wait_http("http://127.0.0.1:%d%s" % (self.port, path), timeout, self.proc, self.name)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def stop(self, grace=30.0):
        st = R.stop_proc(self.proc, grace)
        if self.log:
            self.log.close()
            self.log = None
        return st

    def log_tail(self, n=800):
        try:
            with open(os.path.join(self.dir, "herald.log"), "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""


def nchan_conf(d, port, redis_ports):
    """nginx + nchan, one worker, channels spread over the Redis shards by the
    last digit of their name (shard = digit % shards, as the loadgen counts):
    rooms with history ("h:...") in `distributed` mode (kept in Redis, nchan's
    default), everything else `nostore` (Redis relays only)."""
    n = len(redis_ports)
    ups, locs = [], []
    for s, rp in enumerate(redis_ports):
        for mode, tag in (("distributed", "store"), ("nostore", "relay")):
            ups.append("    upstream s%d_%s { nchan_redis_server redis://127.0.0.1:%d; "
                       "nchan_redis_storage_mode %s; }" % (s, tag, rp, mode))
    for kind, directive in (("sub", "nchan_subscriber websocket;"), ("pub", "nchan_publisher http;")):
        for hist in (True, False):
            for s in range(n):
                digits = "".join(str(x) for x in range(10) if x % n == s)
                locs.append("        location ~ ^/%s/(%s[%s])$ { %s nchan_channel_id $1; "
                            "nchan_redis_pass s%d_%s; }" %
                            (kind, "h:[^/]*" if hist else ".*", digits, directive, s,
                             "store" if hist else "relay"))
    return """load_module %(module)s;
%(user)s
worker_processes 1;
worker_rlimit_nofile 20000;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
events { worker_connections 19900; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path %(d)s/client_body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
%(ups)s
    server {
        listen 127.0.0.1:%(port)d backlog=4096;
%(locs)s
        location = /healthz { return 200 "ok\\n"; }
    }
}
""" % {"module": R.NCHAN_MODULE, "user": R.nginx_user_directive(), "d": d, "port": port,
       "ups": "\n".join(ups), "locs": "\n".join(locs)}


class NchanScaleNode:
    """Debian's nginx with libnginx-mod-nchan, one worker, on a free port."""

    def __init__(self, b, workdir, name, redis_ports):
        self.b, self.name, self.redis_ports = b, name, redis_ports
        self.dir = os.path.join(workdir, name)
        self.port, self.proc, self.workers, self.log = None, None, [], None

    def start(self, timeout=20.0):
        self.port = R.free_port()
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o711)
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nchan_conf(self.dir, self.port, self.redis_ports))
        self.log = open(os.path.join(self.dir, "stdout.log"), "wb")
        self.proc = R.spawn([self.b.a.nginx, "-p", self.dir + "/", "-c", conf, "-e",
                             os.path.join(self.dir, "error.log"), "-g", "daemon off;"],
                            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        R.wait_http("http://127.0.0.1:%d/healthz" % self.port, timeout, self.proc, "nginx")
        deadline = time.monotonic() + timeout
        while not self.workers and time.monotonic() < deadline:
            self.workers = R.child_pids(self.proc.pid)
            time.sleep(0.02)
        if not self.workers:
            raise RuntimeError("nginx started no worker")
        return self

    @property
    def pid(self):  # the worker: it holds the connections and does the work
        return self.workers[0]

    def stop(self, grace=30.0):
        st = R.stop_proc(self.proc, grace)
        if self.log:
            self.log.close()
        return st

    def log_tail(self, n=800):
        try:
            with open(os.path.join(self.dir, "error.log"), "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""


def redis_cmd(port, *args, timeout=10.0):
    """One command over RESP; returns the reply (bulk strings as str)."""
    out = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(x), x) for x in (str(a).encode() for a in args))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(out)
        buf = b""
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                raise RuntimeError("redis closed the connection")
            buf += chunk
            if buf[:1] in (b"+", b"-", b":") and buf.endswith(b"\r\n"):
                return buf[1:-2].decode()
            if buf[:1] == b"$":
                n = int(buf[1:buf.index(b"\r\n")])
                head = buf.index(b"\r\n") + 2
                if n < 0:
                    return None
                if len(buf) >= head + n + 2:
                    return buf[head:head + n].decode(errors="replace")


def commandstats(port):
    """INFO commandstats -> {command: calls}."""
    out = {}
    for line in (redis_cmd(port, "INFO", "commandstats") or "").splitlines():
        m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


class CpuSampler(threading.Thread):
    """Samples utime+stime of some pids every `period` s: peak CPU (% of one
    core) over any `window` s, and the total. pids_fn() is called at each
    sample, so a restarted process is followed."""

    def __init__(self, pids_fn, period=0.1, window=0.5):
        super().__init__(daemon=True)
        self.pids_fn, self.period, self.window = pids_fn, period, window
        self.samples = []  # (t, {pid: cpu_s})
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            t = time.monotonic()
            self.samples.append((t, {p: R.proc_cpu_s(p) for p in self.pids_fn()}))
            self.stop_ev.wait(self.period)

    def stop(self):
        self.stop_ev.set()
        self.join()

    def peak(self, t_from=None, t_to=None):
        """Highest CPU % (one core = 100) of the summed pids over any window."""
        best = 0.0
        s = [x for x in self.samples if (t_from is None or x[0] >= t_from) and
             (t_to is None or x[0] <= t_to)]
        for i in range(len(s)):
            for j in range(i + 1, len(s)):
                if s[j][0] - s[i][0] >= self.window:
                    dt = s[j][0] - s[i][0]
                    used = sum(max(0.0, (s[j][1].get(p) or 0) - (s[i][1].get(p) or 0))
                               for p in s[j][1] if s[i][1].get(p) is not None)
                    best = max(best, used / dt * 100)
                    break
        return best


#---- the loadgen in scenario mode ------------------------------------------------------

def run_scenario(b, scen, timeout, tag):
    path = os.path.join(b.tmp, "scenario-%s.json" % tag)
    with open(path, "w") as f:
        json.dump(scen, f, indent=1)
    argv = [b.loadgen, "--scenario", path] + (["-v"] if VERBOSE else [])
    vlog(" ".join(argv))
    p = R.spawn(argv, stdout=subprocess.PIPE, stderr=None if VERBOSE else subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise RuntimeError("herald-loadgen --scenario did not finish within %ds" % timeout)
    lines = [x for x in out.decode(errors="replace").splitlines() if x.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError("herald-loadgen failed (rc %s): %s" %
                           (p.returncode, (err or b"").decode(errors="replace")[-800:]))
    return json.loads(lines[-1])


def wait_event(path, word, timeout, proc=None):
    """Waits for a line starting with `word` in the loadgen's events file;
    returns its numbers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(word + " "):
                        return [int(x) for x in line.split()[1:]]
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("herald-loadgen exited before '%s'" % word)
        time.sleep(0.05)
    raise RuntimeError("no '%s' from the loadgen within %ds" % (word, timeout))


def procs_for(conns):
    return max(1, -(-conns // CONNS_PER_LOADGEN))


#---- scenario: cluster -------------------------------------------------------------------

def cluster_row(kind, r, nodes_n, shards_n):
    d, p, c = r["delivery"], r["publish"], r["conns"]
    node_cpu = [n["cpu_s"] for n in r["nodes"]]
    node_del = [n["deliveries"] for n in r["nodes"]]
    rss_pc = [(n["rss_connected_kb"] - n["rss_before_kb"]) * 1024.0 / n["conns"]
              if n["conns"] and n["rss_connected_kb"] > 0 and n["rss_before_kb"] > 0 else None
              for n in r["nodes"]]
    cpu_total = sum(x for x in node_cpu if x is not None) if None not in node_cpu else None
    red_cpu = [s["cpu_s"] for s in r["redis"]]
    pubs = [s["publications"] for s in r["redis"]]
    row = {
        "server": kind, "nodes": nodes_n, "shards": shards_n,
        "conns": c["total"], "ready": c["ready"], "failed": c["failed"],
        "subscriptions": c["subscriptions"],
        "connect_s": r["connect"]["elapsed_s"], "connect_per_s": r["connect"]["rate"],
        "scheduled": p["scheduled"], "sent": p["sent"], "acked": p["acked"],
        "refused": p["refused"], "uncertain": p["uncertain"], "late": p["late"],
        "publications_per_s": p["rate"], "rest": p["rest"], "fcall": p["fcall"],
        "lag_p99_ms": p["lag_p99_ms"], "ack_p50_ms": p["ack_p50_ms"], "ack_p99_ms": p["ack_p99_ms"],
        "deliveries_per_s": d["rate"], "received": d["received"], "expected": d["expected"],
        "lost": d["lost"], "lost_history": d["lost_history"], "lost_plain": d["lost_plain"],
        "lost_personal": d["lost_personal"], "dups": d["dups"] + d["stale"],
        "reordered": d["reordered"], "extra": d["extra"],
        "p50_ms": d["p50_ms"], "p99_ms": d["p99_ms"], "p999_ms": d["p999_ms"],
        "max_ms": d["max_ms"],
        "cpu_us_per_delivery": cpu_total * 1e6 / d["in_window"]
        if cpu_total is not None and d["in_window"] else None,
        "node_cpu_us_per_delivery": [x * 1e6 / y if x is not None and y else None
                                     for x, y in zip(node_cpu, node_del)],
        "node_cpu_s": node_cpu, "node_deliveries": node_del,
        "node_conns": [n["conns"] for n in r["nodes"]],
        "node_rss_per_conn": rss_pc,
        "rss_per_conn": statistics.median([x for x in rss_pc if x is not None])
        if any(x is not None for x in rss_pc) else None,
        "node_rss_mib": [n["rss_connected_kb"] / 1024.0 for n in r["nodes"]],
        "redis_cpu_s": red_cpu, "redis_publications": pubs,
        "redis_us_per_publication": [x * 1e6 / y if x is not None and y else None
                                     for x, y in zip(red_cpu, pubs)],
        "redis_rss_mib": [s["rss_end_kb"] / 1024.0 for s in r["redis"]],
        "closes": r["closes"], "errors": r["errors"], "http_statuses": r["http_statuses"],
        "timed_out": r["timed_out"],
    }
    return row


def sc_cluster(b):
    a = b.a
    nodes_n, shards_n = a.nodes, a.shards
    conns = a.conns or 100000
    rooms = a.rooms if a.rooms is not None else conns // a.room_size
    personal = a.personal if a.personal is not None else conns // 100
    rows = []
    for variant in [k for k in a.servers.split(",") if k]:
        if variant not in ("herald", "herald-rest", "nchan"):
            sys.exit("scale.py: --servers takes herald, herald-rest, nchan")
        # herald-rest: Herald with every publication through REST, as nchan's
        kind = "nchan" if variant == "nchan" else "herald"
        fcall = a.fcall if variant == "herald" else 0.0
        work = tempfile.mkdtemp(prefix="scale-%s-" % variant, dir=b.tmp)
        perf = None
        shards, nodes = [], []
        t_start = time.monotonic()
        la0 = R.loadavg()
        try:
            for i in range(shards_n):  # a directory each: RedisServer's log is redis.log
                d = os.path.join(work, "redis%d" % (i + 1))
                os.makedirs(d)
                shards.append(R.RedisServer(a.redis_server, d).start())
            urls = ["redis://127.0.0.1:%d/0" % s.port for s in shards]
            for i in range(nodes_n):
                if kind == "herald":
                    n = HeraldNode(b, work, "node%d" % (i + 1), threads=a.herald_threads,
                                   redis_urls=urls)
                else:
                    n = NchanScaleNode(b, work, "node%d" % (i + 1), [s.port for s in shards])
                nodes.append(n)
                n.start()
            log("cluster %s: %d nodes, %d shards up; %d connections" %
                (variant, nodes_n, shards_n, conns))
            events = os.path.join(work, "events")
            if a.perf:
                perf = PerfDuringWindow(events, nodes[0].pid,
                                        os.path.join(a.perf, "perf.cluster-%s.data" % variant))
                perf.start()
            scen = {
                "name": "cluster-%s" % variant, "proto": kind, "secret": b.secret,
                "events_file": events,
                "api_key": b.api_key,
                "nodes": [{"port": n.port, "pid": n.pid} for n in nodes],
                "redis": [{"port": s.port, "pid": s.proc.pid} for s in shards],
                "procs": a.procs or procs_for(conns + (personal if kind == "nchan" else 0)),
                "src_count": 200, "conns": conns, "rooms": rooms, "room_size": a.room_size,
                "personal": personal, "history_fraction": a.history,
                "fcall_fraction": fcall,
                "room_rate": a.rate, "personal_rate": a.rate, "duration": a.duration,
                "size": a.size, "rest_conns": a.rest_conns, "concurrency": a.concurrency,
                "settle_ms": a.settle_ms if kind == "herald" else max(a.settle_ms, 2000),
                "connect_timeout": 240, "timeout": a.timeout,
            }
            r = run_scenario(b, scen, a.timeout + 60, variant)
            row = cluster_row(variant, r, nodes_n, shards_n)
            row["raw"] = r
            if perf:
                perf.join(a.duration + 60)
                row["perf"] = perf.report()
        except (RuntimeError, OSError, KeyError, ValueError, TypeError) as e:
            row = {"server": variant, "error": str(e)[:400],
                   "logs": " | ".join(n.log_tail(300) for n in nodes)}
            log("cluster %s: %s" % (variant, e))
        finally:
            alive = all(n.proc.poll() is None for n in nodes)
            if not alive:
                row.setdefault("notes", []).append(
                    "a node exited during the run: " + " | ".join(
                        n.log_tail(300) for n in nodes if n.proc.poll() is not None))
            t_stop = time.monotonic()
            for n in nodes:
                st = n.stop(30.0)
                if st[0] not in (0, None):
                    row.setdefault("notes", []).append("%s exit status %s after %.1fs" %
                                                       (n.name, st[0], st[1]))
            row["stop_s"] = round(time.monotonic() - t_stop, 1)
            for s in shards:
                s.stop()
            shutil.rmtree(work, ignore_errors=True)
        row["elapsed_s"] = round(time.monotonic() - t_start, 1)
        row["loadavg"] = (la0, R.loadavg())
        rows.append(row)
        print_cluster_row(row)
    b.results["cluster"] = {"params": {"conns": conns, "nodes": nodes_n, "shards": shards_n,
                                       "rooms": rooms, "room_size": a.room_size,
                                       "personal": personal, "rate": a.rate,
                                       "history": a.history, "fcall": a.fcall,
                                       "duration": a.duration, "size": a.size,
                                       "herald_threads": a.herald_threads},
                            "rows": rows}


class PerfDuringWindow(threading.Thread):
    """perf record of one process over the loadgen's publishing window
    (from its "go" event, for the window's length)."""

    def __init__(self, events, pid, out):
        super().__init__(daemon=True)
        self.events, self.pid, self.out, self.error = events, pid, out, None

    def run(self):
        try:
            t0, tend = wait_event(self.events, "go", 600)
            margin = (tend - t0) // 10  # the middle 80 %: no start-up, no exit
            sleep_until_ns(t0 + margin)
            subprocess.run(["perf", "record", "-q", "-F", "999", "-g", "-p", str(self.pid),
                            "-o", self.out, "--", "sleep", "%.1f" % ((tend - t0 - 2 * margin) / 1e9)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            self.error = str(e)

    def report(self):
        if self.error or not os.path.exists(self.out):
            return {"error": self.error or "no perf data"}
        return {"file": self.out, "dso": perf_dso_lines(self.out)[:10],
                "top_self": [(p, s) for p, _, _, s in perf_report_lines(self.out, False)[:25]],
                "groups": perf_groups(self.out, CLUSTER_GROUPS)}


def fmt(v, f="%.0f"):
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        return " / ".join(fmt(x, f) for x in v)
    if isinstance(v, float) or isinstance(v, int):
        return f % v
    return str(v)


def print_cluster_row(row):
    if "error" in row:
        log("  -> %s: error: %s" % (row["server"], row["error"]))
        return
    log("  -> %s: %d/%d ready, %s deliveries/s, p50/p99/p99.9 %s/%s/%s ms, %s us CPU/delivery, "
        "lost %s, dups %s" % (row["server"], row["ready"], row["conns"],
                              fmt(row["deliveries_per_s"]), fmt(row["p50_ms"], "%.1f"),
                              fmt(row["p99_ms"], "%.1f"), fmt(row["p999_ms"], "%.1f"),
                              fmt(row["cpu_us_per_delivery"], "%.2f"), row["lost"], row["dups"]))


def md_cluster(res):
    p, rows = res["params"], res["rows"]
    out = ["%d connections, %d nodes (HERALD_THREADS=%d; nginx: 1 worker), %d Redis shards; "
           "%d rooms x %d + %d personal channels, %g publication/s per channel for %g s, "
           "%d %% of the rooms with history, Herald: %d %% of the channels published with "
           "FCALL, the rest with REST (nchan: all REST); payload %d bytes." %
           (p["conns"], p["nodes"], p["herald_threads"], p["shards"], p["rooms"], p["room_size"],
            p["personal"], p["rate"], p["duration"], round(p["history"] * 100),
            round(p["fcall"] * 100), p["size"]), "",
           "| server | ready | connect s | deliveries/s | publications/s | p50 ms | p99 ms | "
           "p99.9 ms | max ms | CPU µs/delivery (nodes) | Redis µs/publication (per shard) | "
           "RSS B/conn (median node) | lost | dups | reordered |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            out.append("| %s | error: %s |" % (r["server"], r["error"].replace("|", "/")[:200]))
            continue
        out.append("| %s | %d/%d | %.1f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |"
                   % (r["server"], r["ready"], r["conns"], r["connect_s"],
                      fmt(r["deliveries_per_s"]), fmt(r["publications_per_s"]),
                      fmt(r["p50_ms"], "%.1f"), fmt(r["p99_ms"], "%.1f"),
                      fmt(r["p999_ms"], "%.1f"), fmt(r["max_ms"], "%.0f"),
                      fmt(r["cpu_us_per_delivery"], "%.2f"),
                      fmt(r["redis_us_per_publication"], "%.1f"),
                      fmt(r["rss_per_conn"]), r["lost"], r["dups"], r["reordered"]))
    out.append("")
    for r in rows:
        if "error" in r:
            continue
        out.append("- %s per node: CPU µs/delivery %s; connections %s; RSS B/conn %s; "
                   "RSS MiB %s. Redis per shard: publications %s, CPU s %s, RSS MiB %s. "
                   "Publications: %d scheduled, %d sent (%d REST, %d FCALL), %d acknowledged, "
                   "%d refused, %d uncertain, %d sent over 1 s late (lag p99 %.0f ms); "
                   "acknowledgement p50/p99 %.1f/%.1f ms. Lost: %d history, %d plain, "
                   "%d personal. Closes %s, errors %s. Load average %s -> %s; %.0f s "
                   "for the row." %
                   (r["server"], fmt(r["node_cpu_us_per_delivery"], "%.2f"),
                    fmt(r["node_conns"]), fmt(r["node_rss_per_conn"]),
                    fmt(r["node_rss_mib"], "%.0f"), fmt(r["redis_publications"]),
                    fmt(r["redis_cpu_s"], "%.2f"), fmt(r["redis_rss_mib"], "%.0f"),
                    r["scheduled"], r["sent"], r["rest"], r["fcall"], r["acked"], r["refused"],
                    r["uncertain"], r["late"], r["lag_p99_ms"], r["ack_p50_ms"], r["ack_p99_ms"],
                    r["lost_history"], r["lost_plain"], r["lost_personal"],
                    json.dumps(r["closes"]), json.dumps(r["errors"]), r["loadavg"][0],
                    r["loadavg"][1], r["elapsed_s"]))
        for n in r.get("notes", []):
            out.append("  - note: %s" % n)
        pf = r.get("perf")
        if pf and "error" not in pf:
            out.append("  - node 1 under `perf record -F 999 -g` over the middle 80 %% of the "
                       "window, self time by library: %s; by kind of work (self %% / "
                       "inclusive %%): %s; top symbols: %s." %
                       (", ".join("%s %.1f %%" % (d, p) for p, d in pf["dso"][:7]),
                        "; ".join("%s %.1f / %.1f" % (g, s, i) for g, i, s in pf["groups"]),
                        ", ".join("%s %.1f" % (s, p) for p, s in pf["top_self"][:12])))
    return "\n".join(out)


#---- scenario: reconnect storm -----------------------------------------------------------

def sc_storm(b):
    a = b.a
    clients = a.clients
    rooms = clients // a.room_size
    work = tempfile.mkdtemp(prefix="scale-storm-", dir=b.tmp)
    events = os.path.join(work, "events")
    res = {"params": {"clients": clients, "rooms": rooms, "room_size": a.room_size,
                      "rate": a.rate, "duration": a.storm_duration, "kill_at": a.kill_at,
                      "herald_threads": a.storm_threads, "backoff": "500 ms doubling to 20 s"}}
    la0 = R.loadavg()
    redis = R.RedisServer(a.redis_server, work).start()
    node = HeraldNode(b, work, "node1", threads=a.storm_threads,
                      redis_urls=["redis://127.0.0.1:%d/0" % redis.port])
    node.start()
    old_pid = node.pid
    sampler = CpuSampler(lambda: [node.pid, redis.proc.pid])
    sampler.start()
    scen = {
        "name": "storm", "proto": "herald", "secret": b.secret, "api_key": b.api_key,
        "nodes": [{"port": node.port, "pid": node.pid}],
        "redis": [{"port": redis.port, "pid": redis.proc.pid}],
        "procs": procs_for(clients), "src_count": 100, "conns": clients, "rooms": rooms,
        "room_size": a.room_size, "personal": 0, "history_fraction": 1.0, "fcall_fraction": 1.0,
        "room_rate": a.rate, "duration": a.storm_duration, "reconnect": True,
        "concurrency": a.concurrency, "events_file": events, "timeout": a.timeout,
        "drain_timeout": 40,
    }
    path = os.path.join(b.tmp, "scenario-storm.json")
    with open(path, "w") as f:
        json.dump(scen, f, indent=1)
    lg = R.spawn([b.loadgen, "--scenario", path] + (["-v"] if VERBOSE else []),
                 stdout=subprocess.PIPE, stderr=None if VERBOSE else subprocess.DEVNULL)
    out_box = {}
    reader = threading.Thread(target=lambda: out_box.update(out=lg.communicate()[0]), daemon=True)
    reader.start()
    try:
        t0, tend = wait_event(events, "go", 300, lg)
        # the baseline: Redis commands while publishing, before the restart
        time.sleep(2.0)
        cs_a, ta = commandstats(redis.port), time.monotonic()
        sleep_until_ns(t0 + int(a.kill_at * 1e9))
        cs_b, tb = commandstats(redis.port), time.monotonic()
        log("storm: SIGTERM to the node (%d clients)" % clients)
        t_kill_ns = now_ns()
        t_kill = time.monotonic()
        st, stop_s = node.stop(30.0)
        t_exit = time.monotonic()
        node.start(port=node.port, timeout=30)
        t_ready = time.monotonic()
        t_ready_ns = now_ns()
        log("storm: old node exited after %.2fs (status %s), new one ready %.2fs later" %
            (t_exit - t_kill, st, t_ready - t_exit))
        wait_event(events, "published", tend / 1e9 - time.clock_gettime(time.CLOCK_MONOTONIC)
                   + 60, lg)
        cs_c, tc = commandstats(redis.port), time.monotonic()
        reader.join(a.timeout + 60)
        if lg.poll() is None:
            lg.kill()
            raise RuntimeError("the loadgen did not finish")
        lines = [x for x in (out_box.get("out") or b"").decode(errors="replace").splitlines()
                 if x.startswith("{")]
        if not lines:
            raise RuntimeError("no report from the loadgen (rc %s)" % lg.returncode)
        r = json.loads(lines[-1])
        sampler.stop()
        rc = r["reconnect"]
        # Redis commands during [kill, end] beyond the steady rate of [a, b]
        base_rate = {k: (cs_b.get(k, 0) - cs_a.get(k, 0)) / (tb - ta) for k in cs_b}
        storm_cmds = {}
        for k in set(cs_c) | set(cs_b):
            delta = cs_c.get(k, 0) - cs_b.get(k, 0)
            expect = base_rate.get(k, 0) * (tc - tb)
            storm_cmds[k] = {"delta": delta, "baseline": round(expect),
                             "excess": round(delta - expect)}
        reconnects = max(rc["recovered"], 1)
        total_excess = sum(v["excess"] for v in storm_cmds.values())
        res.update({
            "ready": r["conns"]["ready"], "failed": r["conns"]["failed"],
            "connect_per_s": r["connect"]["rate"],
            "old_exit_s": t_exit - t_kill, "old_status": st, "restart_s": t_ready - t_exit,
            "disconnects": rc["disconnects"], "recovered": rc["recovered"],
            "not_recovered": rc["not_recovered"], "resub_errors": rc["resub_errors"],
            "epoch_changes": rc["epoch_changes"], "down_at_end": rc["down_at_end"],
            "attempts": rc["attempts"] - r["conns"]["total"],
            "all_recovered_from_kill_s": (rc["last_recovered_ns"] - t_kill_ns) / 1e9
            if rc["last_recovered_ns"] else None,
            "all_recovered_from_ready_s": (rc["last_recovered_ns"] - t_ready_ns) / 1e9
            if rc["last_recovered_ns"] else None,
            "recovery_p50_ms": rc["recovery_p50_ms"], "recovery_p99_ms": rc["recovery_p99_ms"],
            "recovery_max_ms": rc["recovery_max_ms"],
            "resync_p50_ms": rc["resync_p50_ms"], "resync_p99_ms": rc["resync_p99_ms"],
            "resync_max_ms": rc["resync_max_ms"],
            "published": r["publish"]["acked"], "pub_refused": r["publish"]["refused"],
            "lost": r["delivery"]["lost"], "lost_history": r["delivery"]["lost_history"],
            "recovered_deliveries": r["delivery"]["recovered"],
            "dups": r["delivery"]["dups"] + r["delivery"]["stale"],
            "reordered": r["delivery"]["reordered"], "extra": r["delivery"]["extra"],
            "p50_ms": r["delivery"]["p50_ms"], "p99_ms": r["delivery"]["p99_ms"],
            "closes": r["closes"], "errors": r["errors"], "http_statuses": r["http_statuses"],
            "socket_errors": r.get("socket_errors", {}), "redis_commands": storm_cmds, "redis_excess_per_reconnect": total_excess / reconnects,
            "raw": r,
        })
        # peak CPU of the new process (node only) and of Redis, after the restart
        node_pid, redis_pid = node.pid, redis.proc.pid
        res["peak_cpu_node_pct"] = peak_of(sampler, [node_pid], t_ready, tc)
        res["peak_cpu_redis_pct"] = peak_of(sampler, [redis_pid], t_kill, tc)
        res["peak_cpu_node_before_pct"] = peak_of(sampler, [old_pid], ta, tb)
    except (RuntimeError, OSError, KeyError, ValueError, TypeError) as e:
        res["error"] = str(e)[:400]
        log("storm: %s" % e)
        if lg.poll() is None:
            lg.kill()
    finally:
        if sampler.is_alive():
            sampler.stop()
        node.stop(30.0)
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    res["loadavg"] = (la0, R.loadavg())
    b.results["storm"] = res
    if "error" not in res:
        log("  -> all %d recovered %.1f s after SIGTERM (%.1f s after the new node was ready); "
            "lost %d; %.1f Redis commands per reconnect; peak CPU %.0f %%" %
            (res["recovered"], res["all_recovered_from_kill_s"] or -1,
             res["all_recovered_from_ready_s"] or -1, res["lost"],
             res["redis_excess_per_reconnect"], res["peak_cpu_node_pct"]))


def sleep_until_ns(t):
    d = (t - now_ns()) / 1e9
    if d > 0:
        time.sleep(d)


def peak_of(sampler, pids, t_from, t_to):
    sub = CpuSampler(lambda: pids, sampler.period, sampler.window)
    sub.samples = [(t, {p: v for p, v in s.items() if p in pids}) for t, s in sampler.samples]
    return sub.peak(t_from, t_to)


def md_storm(res):
    p = res["params"]
    head = ("One Herald node (HERALD_THREADS=%d) and one Redis; %d clients in %d rooms of %d, all "
            "with history (history_size 100), each room published once a second through "
            "`FCALL herald_publish` (so publishing goes on while the node is down); "
            "SIGTERM %g s into %g s of publishing, then the same binary started again on the "
            "same port. Clients reconnect like herald.js (full-jitter backoff from 500 ms "
            "doubling to 20 s) and resubscribe with `since`." %
            (p["herald_threads"], p["clients"], p["rooms"], p["room_size"], p["kill_at"],
             p["duration"]))
    if "error" in res:
        return head + "\n\nerror: " + res["error"]
    cmds = sorted(((k, v) for k, v in res["redis_commands"].items() if abs(v["excess"]) >= 10),
                  key=lambda kv: -abs(kv[1]["excess"]))
    rows = [head, "",
            "| clients | old node's exit | restart | all recovered after SIGTERM | after ready | "
            "recovery p50 / p99 / max ms | reconnect attempts | lost (history) | recovered: false | "
            "dups | peak CPU node | peak CPU Redis | Redis commands per reconnect |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            "| %d | %.2f s | %.2f s | %s s | %s s | %.0f / %.0f / %.0f | %d | %d | %d | %d | %.0f %% | "
            "%.0f %% | %.1f |" %
            (res["recovered"], res["old_exit_s"], res["restart_s"],
             fmt(res["all_recovered_from_kill_s"], "%.1f"),
             fmt(res["all_recovered_from_ready_s"], "%.1f"), res["recovery_p50_ms"],
             res["recovery_p99_ms"], res["recovery_max_ms"], res["attempts"], res["lost_history"],
             res["not_recovered"], res["dups"], res["peak_cpu_node_pct"],
             res["peak_cpu_redis_pct"], res["redis_excess_per_reconnect"]), "",
            "- Recovery is measured per client from its disconnection to the subscribe replies of "
            "its reconnection; of that, from the start of the attempt that succeeded (TCP "
            "connect, upgrade, resubscribe with `since`) to the replies: p50 / p99 / max "
            "%.0f / %.0f / %.0f ms; the rest is the backoff and the time no node listened." %
            (res["resync_p50_ms"], res["resync_p99_ms"], res["resync_max_ms"]),
            "- Redis commands in [SIGTERM, end of publishing] beyond the steady rate measured "
            "before the SIGTERM (per command: total / expected from the rate / excess): " +
            ", ".join("%s %d / %d / %d" % (k, v["delta"], v["baseline"], v["excess"])
                      for k, v in cmds[:12]) + ".",
            "- %d publications acknowledged, %d refused; %d deliveries came in subscribe replies "
            "(recovery), live latency p50/p99 %.1f/%.1f ms; epoch changes seen %d; "
            "resubscribe errors %d; clients still down at the end %d; closes %s; errors %s "
            "(socket errors by errno: %s). Load average %s -> %s." %
            (res["published"], res["pub_refused"], res["recovered_deliveries"], res["p50_ms"],
             res["p99_ms"], res["epoch_changes"], res["resub_errors"], res["down_at_end"],
             json.dumps(res["closes"]), json.dumps(res["errors"]),
             json.dumps(res.get("socket_errors", {})), res["loadavg"][0], res["loadavg"][1])]
    return "\n".join(rows)


#---- scenario: connect rate ----------------------------------------------------------------

def connect_once(b, kind, threads, conns, concurrency):
    if kind == "refserver":
        srv = R.Server("refserver", b.refserver, b.secret, b.api_key)
    else:
        srv = R.Server("herald", b.a.herald, b.secret, b.api_key, threads=threads,
                       log_level=b.a.log_level)
    srv.start()
    try:
        time.sleep(0.3)
        cpu0 = R.proc_cpu_s(srv.pid)
        lg = R.Loadgen(b.loadgen_old, srv)
        procs = [lg.start_background(["--idle", conns, "--concurrency", concurrency,
                                      "--connect-timeout", 60, "--hold", 120,
                                      "--src", 16, "--timeout", 200], "cr")]
        if not R.wait_ready(procs, 150):
            R.finish_background(procs, 10)
            raise RuntimeError("connections not ready in time")
        cpu1 = R.proc_cpu_s(srv.pid)
        rss = srv.rss_kb()
        rep = R.finish_background(procs)[0]
        if not rep:
            raise RuntimeError("no loadgen report")
        c = rep["connect"]
        return {"connect_per_s": c["rate"], "p50_ms": c["p50_ms"], "p99_ms": c["p99_ms"],
                "ready": rep["conns"]["ready"], "failed": rep["conns"]["failed"],
                "cpu_us_per_connect": (cpu1 - cpu0) * 1e6 / max(rep["conns"]["ready"], 1),
                "rss_kb": rss}
    finally:
        srv.stop(grace=30.0)


def sc_connect_rate(b):
    """For each size, interleaved repeats (H1 H2 R H1 H2 R ...) on fresh servers."""
    a = b.a
    configs = [("herald", "herald threads=%d" % t, t) for t in a.thread_counts] + \
        [("refserver", "refserver", None)]
    la0 = R.loadavg()
    rows = []
    for n in a.connect_conns:
        runs = {label: [] for _, label, _ in configs}
        for i in range(a.repeat):
            for kind, label, threads in configs:
                log("connect-rate: %d connections, %s run %d/%d" % (n, label, i + 1, a.repeat))
                try:
                    runs[label].append(connect_once(b, kind, threads, n, a.concurrency))
                except (RuntimeError, OSError, KeyError) as e:
                    runs[label].append({"error": str(e)[:200]})
        rows += connect_rows(runs, configs, n)
    b.results["connect-rate"] = {"params": {"conns": a.connect_conns,
                                            "concurrency": a.concurrency, "repeat": a.repeat},
                                 "rows": rows, "loadavg": (la0, R.loadavg())}


def connect_rows(runs, configs, n):
    rows = []
    for _, label, _ in configs:
        ok = [r for r in runs[label] if "error" not in r]
        row = {"server": label, "conns": n, "runs": runs[label]}
        for k in ("connect_per_s", "p50_ms", "p99_ms", "cpu_us_per_connect", "rss_kb"):
            row[k] = statistics.median([r[k] for r in ok]) if ok else None
        row["failed"] = max([r["failed"] for r in ok], default=None)
        row["errors"] = len(runs[label]) - len(ok)
        rows.append(row)
        log("  -> %s: %s connections/s, %s us CPU per connection" %
            (label, fmt(row["connect_per_s"]), fmt(row["cpu_us_per_connect"], "%.1f")))
    return rows


def md_connect_rate(res):
    p = res["params"]
    out = ["%s connections per run on a fresh server, %d handshakes in flight, each with a "
           "fresh HS256 JWT in `?token=` (Herald verifies it; the reference server does not), "
           "through the `{\"push\":\"connected\"}` frame; medians of %d interleaved runs. CPU "
           "per connection: the server's utime+stime from before the first connection to the last "
           "handshake, over the connections." %
           (" and ".join(str(x) for x in p["conns"]), p["concurrency"], p["repeat"]), "",
           "| connections | server | connections/s | handshake p50 ms | p99 ms | server CPU "
           "µs/connection | RSS MiB after | failed | runs with errors |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        out.append("| %d | %s | %s | %s | %s | %s | %s | %s | %d |" %
                   (r["conns"], r["server"], fmt(r["connect_per_s"]), fmt(r["p50_ms"], "%.1f"),
                    fmt(r["p99_ms"], "%.1f"), fmt(r["cpu_us_per_connect"], "%.1f"),
                    fmt(r["rss_kb"] / 1024.0 if r["rss_kb"] else None, "%.1f"),
                    fmt(r["failed"]), r["errors"]))
    out += ["", "- per run (connections/s): " + "; ".join(
        "%d %s: %s" % (r["conns"], r["server"],
                       ", ".join(fmt(x.get("connect_per_s")) for x in r["runs"]))
        for r in res["rows"]) + ".", "- load average %s -> %s" % tuple(res["loadavg"])]
    return "\n".join(out)


#---- scenario: memory per connection ------------------------------------------------------

def memory_once(b, kind, n, subs, room):
    """RSS per connection: n connections (over loadgens of <= 9,500 each),
    idle (subs 0) or subscribed to one channel each (room 1: own channel;
    room 10: rooms of 10)."""
    if kind == "refserver":
        srv = R.Server("refserver", b.refserver, b.secret, b.api_key)
    else:
        srv = R.Server("herald", b.a.herald, b.secret, b.api_key, threads=1,
                       log_level=b.a.log_level)
    srv.start()
    procs = []
    try:
        time.sleep(0.5)
        rss0 = srv.rss_kb()
        lg = R.Loadgen(b.loadgen_old, srv)
        per = R.IDLE_PER_PROCESS
        for i in range(-(-n // per)):
            k = min(per, n - i * per)
            if subs:
                args = ["--subs", k, "--channels", max(1, k // room), "--prefix", "m%d." % i]
            else:
                args = ["--idle", k]
            procs.append(lg.start_background(args + ["--hold", 300, "--concurrency", 300,
                                                     "--connect-timeout", 120,
                                                     "--src-first", 2 + 8 * (i + 1),
                                                     "--timeout", 400], "m%d" % i))
        if not R.wait_ready(procs, 240):
            raise RuntimeError("connections were not ready in time")
        time.sleep(1.0)
        rss1 = srv.rss_kb()
        reps = R.finish_background(procs)
        procs = []
        ready = sum(r["conns"]["ready"] for r in reps if r)
        return {"ready": ready, "rss_before_kb": rss0, "rss_after_kb": rss1,
                "bytes_per_conn": (rss1 - rss0) * 1024.0 / max(ready, 1)}
    finally:
        if procs:
            R.finish_background(procs, 10)
        srv.stop(grace=30.0)


def sc_memory(b):
    a = b.a
    la0 = R.loadavg()
    rows = []
    variants = [("idle", 0, 1), ("1 subscription, own channel", 1, 1),
                ("1 subscription, rooms of 10", 1, 10)]
    for n in a.memory_counts:
        for label, subs, room in variants:
            for kind in ("herald", "refserver"):
                if kind == "refserver" and room != 1:
                    continue
                log("memory: %s, %d connections, %s" % (kind, n, label))
                try:
                    m = memory_once(b, kind, n, subs, room)
                except (RuntimeError, OSError, KeyError) as e:
                    m = {"error": str(e)[:200]}
                m.update({"server": kind, "conns": n, "variant": label})
                rows.append(m)
                if "error" not in m:
                    log("  -> %.0f bytes per connection" % m["bytes_per_conn"])
    b.results["memory"] = {"rows": rows, "loadavg": (la0, R.loadavg())}


def md_memory(res):
    out = ["Server RSS (`VmRSS`) 1 s after the last handshake minus RSS before the first, over "
           "the connections (kernel socket buffers are not in it). Herald with "
           "HERALD_THREADS=1, embedded mode.", "",
           "| connections | variant | server | ready | RSS before MiB | RSS after MiB | "
           "bytes/connection |", "|---:|---|---|---:|---:|---:|---:|"]
    for r in res["rows"]:
        if "error" in r:
            out.append("| %d | %s | %s | error: %s |" % (r["conns"], r["variant"], r["server"],
                                                        r["error"]))
            continue
        out.append("| %d | %s | %s | %d | %.1f | %.1f | **%.0f** |" %
                   (r["conns"], r["variant"], r["server"], r["ready"], r["rss_before_kb"] / 1024.0,
                    r["rss_after_kb"] / 1024.0, r["bytes_per_conn"]))
    out.append("\n- load average %s -> %s" % tuple(res["loadavg"]))
    return "\n".join(out)


#---- scenario: profiles --------------------------------------------------------------------

# Where connect time goes: inclusive (children) share of the samples under
# these symbols; a sample may count in several rows (a JWT check calls malloc).
PROFILE_GROUPS = [
    ("lws: HTTP header parsing (lws_parse, lws_hdr_*)",
     r"^(lws_parse|lws_parse_urldecode|lws_hdr_|_lws_header_table|lws_header_table|lws_pos_in_bounds|lws_http_|lws_read_h1|lws_handshake_server|lws_process_ws_upgrade)"),
    ("lws: header table attach/detach", r"^(lws_header_table_attach|_lws_header_table_reset|lws_header_table_detach|__lws_header_table_detach|_lws_create_ah|_lws_destroy_ah)"),
    ("JWT verification (auth_jwt_*, libjwt)", r"^(auth_jwt|ajwt_|jwt_)"),
    ("HMAC-SHA256 (OpenSSL)", r"^(HMAC|EVP_|SHA256|sha256_|ossl_|CRYPTO_)"),
    ("jansson (JSON)", r"^(json_|jsonp_|hashtable_|lex_|parse_value|parse_object|parse_json|do_dump|dump_string)"),
    ("allocation (malloc, free, calloc, realloc)", r"^(malloc|free|calloc|realloc|_int_malloc|_int_free|__libc_(malloc|free|calloc|realloc)|malloc_consolidate|cfree|hr_xmalloc|hr_xcalloc|hr_xrealloc|tcache)"),
    ("memset / memcpy", r"^(__memset|__memcpy|__memmove|memset|memcpy)"),
    ("limits tables (hr_limit_*, hr_slot_*, hr_client_*)", r"^(hr_limit_|hr_slot_|hr_client_key|hr_client_address|ipaddr_|hr_netmask)"),
    # 0x25570-0x25587 in Debian's libwebsockets.so.17 (4.1.6) is its static
    # sul_compare, the comparator of that insert (objdump -d; no symbol)
    ("lws: timer list insert (lws_dll2_add_sorted + sul_compare, from lws_set_timer_usecs)",
     r"^(lws_dll2_add_sorted|0x00000000000255[78][0-9a-f])$"),
    ("kernel: accept", r"^(__x64_sys_accept4|__sys_accept4|do_accept|inet_accept|inet_csk_accept)"),
    ("kernel: epoll", r"^(__x64_sys_epoll|do_epoll|ep_poll|ep_insert|ep_remove|ep_modify)"),
    ("kernel: send/recv", r"^(__x64_sys_sendto|__x64_sys_recvfrom|__x64_sys_write|__x64_sys_read|tcp_sendmsg|tcp_recvmsg|__sys_sendto|__sys_recvfrom)"),
    ("kernel: close", r"^(__x64_sys_close|__fput|tcp_close|sock_close)"),
]


def perf_report_lines(data, children):
    argv = ["perf", "report", "-i", data, "--stdio", "-g", "none", "--sort", "sym",
            "--percent-limit", "0"] + (["--children"] if children else ["--no-children"])
    out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=300)
    rows = []
    for line in out.stdout.decode(errors="replace").splitlines():
        m = re.match(r"^\s+([\d.]+)%\s+(?:([\d.]+)%\s+)?\[([.kH])\]\s+(\S+)", line)
        if m:
            rows.append((float(m.group(1)), float(m.group(2) or m.group(1)), m.group(3),
                         m.group(4)))
    return rows


def perf_groups(data, groups):
    """(name, inclusive %, self %) per group of symbols. Inclusive: the
    largest children % of a matching symbol (an entry point's subtree), not
    a sum, since subtrees nest."""
    self_rows = perf_report_lines(data, False)
    child_rows = perf_report_lines(data, True)
    out = []
    for name, pat in groups:
        rx = re.compile(pat)
        incl = max([c for c, _, _, s in child_rows if rx.search(s)], default=0.0)
        selfsum = sum(p for p, _, _, s in self_rows if rx.search(s))
        out.append((name, incl, selfsum))
    return out


# Where a cluster node's time goes while publishing (same rules as PROFILE_GROUPS).
CLUSTER_GROUPS = [
    ("REST request handling (lws HTTP + route)", r"^(lws_read_h1|lws_parse|lws_http_action|hr_http_|rest_|route_)"),
    ("Redis input (hiredis read + parse)", r"^(redisAsyncHandleRead|redisReaderGetReply|redisProcessCallbacks|redisBufferRead)"),
    ("Redis output (FCALL, hiredis write)", r"^(redisAsyncHandleWrite|redisAsyncCommand|redisvAsyncCommand|__redisAsyncCommand|redisFormat)"),
    ("fan-out to local subscribers (chan_dispatch, chan_deliver, hr_ws_deliver)", r"^(chan_dispatch|chan_deliver|sub_deliver|hr_ws_deliver)$"),
    ("socket writes (hr_ws_flush_pending, send)", r"^(hr_ws_flush_pending|conn_flush|__send|__libc_send|__x64_sys_sendto)"),
    ("socket reads (recv)", r"^(__x64_sys_recvfrom|__x64_sys_read|__libc_recv|__recv|read)$"),
    ("epoll / libuv", r"^(uv__io_poll|epoll_wait|__x64_sys_epoll_wait|uv_run)"),
    ("jansson (JSON)", r"^(json_|jsonp_|hashtable_|lex_|parse_value|parse_object)"),
    ("allocation", r"^(malloc|free|calloc|realloc|_int_malloc|_int_free|__libc_(malloc|free|calloc|realloc)|cfree)"),
]


def perf_dso_lines(data):
    out = subprocess.run(["perf", "report", "-i", data, "--stdio", "-g", "none", "--no-children",
                          "--sort", "dso"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         timeout=300)
    rows = []
    for line in out.stdout.decode(errors="replace").splitlines():
        m = re.match(r"^\s+([\d.]+)%\s+(\S+)", line)
        if m:
            rows.append((float(m.group(1)), m.group(2)))
    return rows


def heaptrack_sites(path, n):
    """The largest allocation sites at the heap's peak (heaptrack_print
    --print-peaks, backtraces not merged): (bytes per connection, allocations
    per connection, call chain) for n connections."""
    out = subprocess.run(["heaptrack_print", "-f", path, "--print-peaks", "1",
                          "--print-allocators", "0", "--print-temporary", "0",
                          "--print-leaks", "0", "-m", "0", "-n", "40"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=600)
    text = out.stdout.decode(errors="replace")
    units = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}
    rows = []
    for e in re.split(r"\n(?=\S+ peak memory consumed over)", text)[1:]:
        m = re.match(r"([\d.]+)([KMG]?)B? peak memory consumed over (\d+) calls from\n", e)
        if not m:
            continue
        frames = [f for f in re.findall(r"^(?:  )?(\S+)$", e[m.end():], re.M)
                  if not f.startswith("0x")]
        rows.append((float(m.group(1)) * units[m.group(2)] / n, int(m.group(3)) / n,
                     " <- ".join(frames[:5])))
    m = re.search(r"peak heap memory consumption: (\S+)", text)
    return rows, (m.group(1) if m else None)


class PerfControl:
    """perf record attached to a pid, started disabled and switched on and
    off through its control FIFO (perf >= 5.10), so only chosen intervals
    are sampled."""

    def __init__(self, pid, out, freq=4000):
        d = tempfile.mkdtemp(prefix="perfctl-")
        self.ctl, self.ack = os.path.join(d, "ctl"), os.path.join(d, "ack")
        os.mkfifo(self.ctl)
        os.mkfifo(self.ack)
        self.proc = subprocess.Popen(
            ["perf", "record", "-q", "-F", str(freq), "-g", "-D", "-1", "-p", str(pid), "-o", out,
             "--control=fifo:%s,%s" % (self.ctl, self.ack)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wctl = open(self.ctl, "w")
        self.rack = open(self.ack, "r")

    def _cmd(self, what):
        self.wctl.write(what + "\n")
        self.wctl.flush()
        self.rack.readline()

    def enable(self):
        self._cmd("enable")

    def disable(self):
        self._cmd("disable")

    def stop(self):
        self.wctl.close()
        self.rack.close()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(120)


def profile_connects(b, conns, rounds, tag):
    """Herald (HERALD_THREADS=1, embedded) under perf while `rounds` times
    `conns` connections are opened (sampling on) and then closed (off)."""
    a = b.a
    srv = R.Server("herald", a.herald, b.secret, b.api_key, threads=1, log_level=a.log_level)
    srv.start()
    data = os.path.join(b.tmp, "perf.connect-%s.data" % tag)
    rates = []
    try:
        perf = PerfControl(srv.pid, data)
        time.sleep(1.0)
        for i in range(rounds):
            lg = R.Loadgen(b.loadgen_old, srv)
            perf.enable()
            procs = [lg.start_background(["--idle", conns, "--concurrency", a.concurrency,
                                          "--connect-timeout", 120, "--hold", 60, "--src", 16,
                                          "--timeout", 200], "p%s%d" % (tag, i))]
            ok = R.wait_ready(procs, 200)
            perf.disable()
            rep = R.finish_background(procs)[0]
            if not ok or not rep:
                raise RuntimeError("profile: connections not ready")
            rates.append(rep["connect"]["rate"])
            time.sleep(1.0)  # the server closes them, unsampled
        perf.stop()
    finally:
        srv.stop(grace=30.0)
    dso = perf_dso_lines(data)
    groups = perf_groups(data, PROFILE_GROUPS)
    # libwebsockets' static functions (header parser, handshake) have no
    # symbols in Debian's build: what is left of its share besides the timer
    lws = sum(p for p, d in dso if d.startswith("libwebsockets"))
    timer = sum(s for name, _, s in groups if "timer list" in name)
    groups.append(("lws: everything else (header parsing, handshake, its state machine; "
                   "static functions without symbols)", 0.0, max(0.0, lws - timer)))
    groups.append(("kernel: all of it (TCP, epoll, scheduler)", 0.0,
                   sum(p for p, d in dso if d.startswith("[kernel"))))
    return {"conns": conns, "rounds": rounds, "connect_per_s": statistics.median(rates),
            "perf_data": data, "dso": dso[:12],
            "top_self": [(p, s) for p, _, _, s in perf_report_lines(data, False)[:30]],
            "groups": groups}


def sc_profile(b):
    a = b.a
    res = {"loadavg0": R.loadavg(), "connect": []}
    if shutil.which("perf"):
        for n, rounds in ((2000, 8), (a.profile_conns, 1)):
            log("profile: %d x %d connections under perf" % (rounds, n))
            try:
                res["connect"].append(profile_connects(b, n, rounds, str(n)))
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                res["connect"].append({"conns": n, "error": str(e)[:300]})
    if shutil.which("heaptrack"):
        log("profile: heaptrack of %d subscribed connections" % a.heap_conns)
        try:
            res["heaptrack"] = heaptrack_run(b, a.heap_conns)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            res["heaptrack"] = {"error": str(e)[:300]}
    res["loadavg1"] = R.loadavg()
    b.results["profile"] = res


def descendant_with_exe(pid, exe):
    """A descendant of pid running the binary exe (through wrapper scripts)."""
    want = os.path.realpath(exe)
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            if os.path.realpath("/proc/%d/exe" % p) == want:
                return p
        except OSError:
            pass
        todo += R.child_pids(p)
    return None


def heaptrack_run(b, n):
    """Herald under heaptrack holding n connections with one subscription
    each (own channel): the peak consumers are the per-connection ones.
    heaptrack runs Herald as its child, so SIGTERM goes to Herald itself
    (heaptrack's script would not pass it on); heaptrack then writes its
    file and exits."""
    a = b.a
    wrap = os.path.join(b.tmp, "heaptrack-herald.sh")
    out = os.path.join(b.tmp, "heaptrack.herald")
    with open(wrap, "w") as f:
        f.write("#!/bin/sh\nexec heaptrack -o %s %s \"$@\"\n" % (out, a.herald))
    os.chmod(wrap, 0o755)
    srv = R.Server("herald", wrap, b.secret, b.api_key, threads=1, log_level=a.log_level)
    srv.start(timeout=60)
    procs, hpid = [], None
    try:
        hpid = descendant_with_exe(srv.pid, a.herald)
        if not hpid:
            raise RuntimeError("heaptrack: Herald's process not found")
        lg = R.Loadgen(b.loadgen_old, srv)
        procs = [lg.start_background(["--subs", n, "--channels", n, "--hold", 300,
                                      "--concurrency", 200, "--connect-timeout", 200,
                                      "--timeout", 400], "heap")]
        if not R.wait_ready(procs, 300):
            raise RuntimeError("heaptrack: connections not ready")
        time.sleep(1.0)
        rss = R.proc_status_kb(hpid, "VmRSS")
    finally:
        if hpid:  # peak = now: stop Herald before the connections go
            os.kill(hpid, signal.SIGTERM)
        if procs:
            R.finish_background(procs, 30)
        try:
            srv.proc.wait(120)
        except subprocess.TimeoutExpired:
            pass
        srv.stop(grace=30.0)
    files = [os.path.join(b.tmp, f) for f in os.listdir(b.tmp) if f.startswith("heaptrack.herald")]
    if not files:
        return {"error": "heaptrack wrote no file"}
    rows, peak = heaptrack_sites(sorted(files)[-1], n)
    return {"conns": n, "file": sorted(files)[-1], "rss_kb": rss, "sites": rows, "peak": peak}


def md_profile(res):
    out = []
    for p in res.get("connect", []):
        if "error" in p:
            out += ["perf, %d connections: error: %s" % (p["conns"], p["error"]), ""]
            continue
        out += ["**Connect path, %d connections held at most** (%d round%s, median %.0f "
                "connections/s): `perf record -F 4000 -g -p <herald>` (HERALD_THREADS=1, "
                "embedded), sampling only while the connections open (TCP connect, upgrade "
                "with a fresh HS256 JWT, `{\"push\":\"connected\"}`), not while they close; "
                "share of the samples by kind of work (self time of the matching symbols; "
                "inclusive only where the call chains are whole, i.e. in the kernel):" %
                (p["conns"], p["rounds"], "s" if p["rounds"] > 1 else "", p["connect_per_s"]),
                "", "| where | self % | inclusive % |", "|---|---:|---:|"]
        for name, incl, selfp in p["groups"]:
            kernel = name.startswith("kernel") and incl  # user-space chains are broken
            out.append("| %s | %.1f | %s |" % (name, selfp, "%.1f" % incl if kernel else "-"))
        out += ["", "By library (self): " + ", ".join("%s %.1f %%" % (d, x)
                                                        for x, d in p["dso"][:8]) + ".", "",
                "Top symbols (self %): " + ", ".join("`%s` %.1f" % (s, x)
                                                      for x, s in p["top_self"][:16]) + ".", ""]
    if "heaptrack" in res:
        h = res["heaptrack"]
        if "error" in h:
            out += ["heaptrack: " + h["error"]]
        else:
            sites = [s for s in h["sites"] if s[0] >= 4]
            out += ["**Memory of %d connections with one subscription each** (own channel; "
                    "HERALD_THREADS=1, embedded): Herald under `heaptrack`, SIGTERM while they "
                    "are held, `heaptrack_print --print-peaks -m 0 -n 40` (allocation sites at "
                    "the heap's peak, %s, backtraces not merged; requested bytes, without "
                    "malloc's own 8-16 bytes per chunk):" % (h["conns"], h["peak"]), "",
                    "| bytes/connection | allocations/connection | allocated by (innermost first) |",
                    "|---:|---:|---|"]
            out += ["| %.0f | %.2f | `%s` |" % tuple(s) for s in sites]
            out += ["| **%.0f** | | total of the rows above (RSS with heaptrack: %.0f "
                    "bytes/connection, including the process's start) |" %
                    (sum(s[0] for s in sites), h["rss_kb"] * 1024.0 / h["conns"])]
    out.append("\n- load average %s -> %s" % (res["loadavg0"], res["loadavg1"]))
    return "\n".join(out)


#---- scenario: structure sizes ---------------------------------------------------------------

# (type, how many exist): what gdb's `ptype /o` is asked about
STRUCTS = [("hr_ws_conn", "one per WebSocket connection: an hr_conn (gateway/conn.h) and the "
            "WebSocket's own fields (gateway/ws_conn.h)"),
           ("auth_identity", "inside hr_conn (its verified token)"),
           ("struct chan_sub", "one per subscription (channels/layer_internal.h)"),
           ("struct hr_map", "a map's header; a connection's `subs` map adds a 16-slot table "
            "of 32-byte slots (common/common.c)"),
           ("struct shard_channel", "one per channel per loop (channels/core.c)"),
           ("user_conns", "one per user per loop (the user index, gateway/conn.c)"),
           ("struct hr_slot", "one per client address and per user in the limits tables "
            "(gateway/limits.c; not the map slot of the same name)"),
           ("hr_pss", "lws' per-session data, one per connection"),
           ("hr_wsi_state", "during an upgrade or a keep-alive HTTP connection only"),
           ("struct hr_http_req", "during a REST request only"),
           ("chan_msg", "one per publication, shared by every subscriber's queue"),
           ("hr_buf", "while a fragmented message is reassembled")]


def sc_structs(b):
    a = b.a
    res = {"binary": a.herald, "structs": []}
    if not shutil.which("gdb"):
        res["error"] = "gdb not found"
        b.results["structs"] = res
        return
    for s, what in STRUCTS:
        out = subprocess.run(["gdb", "-batch", "-nx", "-ex", "ptype /o " + s, a.herald],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        text = out.stdout.decode(errors="replace")
        m = re.search(r"total size \(bytes\):\s*(\d+)", text)
        res["structs"].append({"name": s, "what": what,
                               "size": int(m.group(1)) if m else None, "layout": text.strip()})
    b.results["structs"] = res


def md_structs(res):
    if "error" in res:
        return "error: " + res["error"]
    out = ["`gdb -batch -ex 'ptype /o STRUCT' %s` (sizes from the binary's debug information; "
           "libwebsockets' own structures, `struct lws` and its WebSocket state, have none in "
           "Debian's package: their allocations are in the heaptrack table of the profile "
           "block). The JSON (`--json`) keeps each layout with its holes." % res["binary"], "",
           "| structure | bytes | how many |", "|---|---:|---|"]
    for s in res["structs"]:
        out.append("| `%s` | %s | %s |" % (s["name"], fmt(s["size"]), s.get("what", "")))
    return "\n".join(out)


#---- results and docs/benchmarks.md ------------------------------------------------------------

MD = {"cluster": md_cluster, "storm": md_storm, "connect-rate": md_connect_rate,
      "memory": md_memory, "profile": md_profile, "structs": md_structs}
ORDER = ["cluster", "storm", "connect-rate", "memory", "profile", "structs"]


def block(name, res, argv, herald, when=None, rendered=None):
    when = when or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(["<!-- scale:%s -->" % name, "#### %s" % name, "",
                      "- command: `python3 bench/scale.py %s`" % " ".join(argv),
                      "- herald: `%s`; machine: %s; %s" % (herald, R.machine(), when)] +
                     (["- tables rendered from that run's JSON: `python3 bench/scale.py %s`" %
                       rendered] if rendered else []) + ["",
                      MD[name](res), "<!-- /scale:%s -->" % name])


def render(a, argv):
    """The blocks of a --json file again (after a change of their layout),
    printed and, with --write, written; nothing is run."""
    with open(a.render) as f:
        doc = json.load(f)
    names = [n for n in ORDER if n in doc["results"]]
    for n in names:
        print(block(n, doc["results"][n], doc["argv"], doc["herald"], doc.get("when"),
                    " ".join(argv)) + "\n")
    if a.write:
        write_section(a.write, names, doc["results"], doc["argv"], doc["herald"],
                      doc.get("when"), " ".join(argv))
        log("updated %s" % a.write)


def write_section(path, names, results, argv, herald, when=None, rendered=None):
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if SECTION_BEGIN not in text:
        text = text.rstrip() + "\n\n" + SECTION_BEGIN + "\n" + SECTION_END + "\n"
    head, rest = text.split(SECTION_BEGIN, 1)
    body, tail = rest.split(SECTION_END, 1)
    blocks = {m.group(1): m.group(0) for m in
              re.finditer(r"<!-- scale:([\w-]+) -->\n.*?<!-- /scale:\1 -->", body, re.S)}
    for n in names:
        if n in results:
            blocks[n] = block(n, results[n], argv, herald, when, rendered)
    ordered = [blocks[n] for n in ORDER if n in blocks]
    with open(path, "w") as f:
        f.write(head + SECTION_BEGIN + "\n" + "\n\n".join(ordered) + "\n" + SECTION_END + tail)


class Bench:
    def __init__(self, a):
        self.a = a
        self.secret = secrets.token_hex(24)
        self.api_key = "bench-" + secrets.token_hex(8)
        self.tmp = tempfile.mkdtemp(prefix="herald-scale-")
        self.results = {}
        self.loadgen, self.refserver = find_tools(a.bin_dir)
        self.loadgen_old = self.loadgen


def find_tools(bin_dir):
    for d in [bin_dir, os.path.join(REPO, "build", "bench")]:
        if d and all(os.access(os.path.join(d, n), os.X_OK)
                     for n in ("herald-loadgen", "herald-refserver")):
            return os.path.join(d, "herald-loadgen"), os.path.join(d, "herald-refserver")
    sys.exit("scale.py: no herald-loadgen/herald-refserver in --bin-dir or build/bench "
             "(cmake --build build)")


def int_list(s):
    return [int(x) for x in s.split(",") if x]


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("scenario", nargs="?", choices=ORDER + ["all"])
    ap.add_argument("--render", metavar="JSON",
                    help="run nothing: print (and --write) the blocks of a --json file again")
    ap.add_argument("--herald", default=os.path.join(REPO, "build", "herald"),
                    help="Herald binary (%(default)s)")
    ap.add_argument("--bin-dir", help="directory of herald-loadgen and herald-refserver "
                    "(default build/bench)")
    ap.add_argument("--redis-server", default=R.DEFAULT_REDIS)
    ap.add_argument("--nginx", default=R.DEFAULT_NGINX)
    ap.add_argument("--servers", default="herald,nchan",
                    help="cluster: herald (REST + FCALL), herald-rest (Herald, REST only), "
                    "nchan (REST only); default herald,nchan")
    ap.add_argument("--log-level", default="warn")
    ap.add_argument("--no-netns", action="store_true",
                    help="run in the host's network namespace")
    # cluster
    ap.add_argument("--conns", type=int, help="cluster: connections (100000)")
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--rooms", type=int, help="cluster: rooms (conns / room size)")
    ap.add_argument("--room-size", type=int, default=10)
    ap.add_argument("--personal", type=int, help="cluster: personal channels (conns / 100)")
    ap.add_argument("--rate", type=float, default=1.0, help="publications/s per channel")
    ap.add_argument("--history", type=float, default=0.1, help="share of rooms with history")
    ap.add_argument("--fcall", type=float, default=0.5, help="share of channels published by FCALL")
    ap.add_argument("--duration", type=float, default=20.0, help="cluster: publishing time, s")
    ap.add_argument("--size", type=int, default=100, help="payload bytes")
    ap.add_argument("--rest-conns", type=int, default=8,
                    help="REST keep-alive connections per node per loadgen process")
    ap.add_argument("--procs", type=int, help="loadgen processes (default: 17,000 conns each)")
    ap.add_argument("--concurrency", type=int, default=200,
                    help="handshakes in flight per loadgen process")
    ap.add_argument("--settle-ms", type=int, default=500)
    ap.add_argument("--herald-threads", type=int, default=1, help="cluster nodes' HERALD_THREADS")
    ap.add_argument("--perf", metavar="DIR",
                    help="cluster: perf record node 1 over the publishing window into DIR")
    ap.add_argument("--timeout", type=int, default=420, help="per loadgen run, s")
    # storm
    ap.add_argument("--clients", type=int, default=19000, help="storm: clients on the node")
    ap.add_argument("--storm-duration", type=float, default=40.0, help="storm: publishing time")
    ap.add_argument("--kill-at", type=float, default=8.0, help="storm: SIGTERM after this many s")
    ap.add_argument("--storm-threads", type=int, default=2, help="storm: HERALD_THREADS")
    # connect-rate, memory, profile
    ap.add_argument("--connect-conns", type=int_list, default=[2000, 10000, 19000],
                    help="connect-rate: connections per run, one row each (2000,10000,19000)")
    ap.add_argument("--thread-counts", type=int_list, default=[1],
                    help="connect-rate: Herald's HERALD_THREADS values (1)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--memory-counts", type=int_list, default=[10000, 19000])
    ap.add_argument("--profile-conns", type=int, default=15000)
    ap.add_argument("--heap-conns", type=int, default=15000,
                    help="profile: connections under heaptrack (their heap must pass the "
                    "~20 MB Argon2 buffer of the start-up, or that is the peak)")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--write", metavar="FILE", help="update FILE's bench/scale.py section")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap.parse_args(argv)


def main(argv):
    global VERBOSE
    a = parse_args(argv)
    VERBOSE = a.verbose
    R.VERBOSE = a.verbose
    if a.render:
        return render(a, argv)
    if not a.scenario:
        sys.exit("scale.py: name a scenario (or --render JSON)")
    if not os.access(a.herald, os.X_OK):
        sys.exit("scale.py: Herald binary %s not found (--herald PATH)" % a.herald)
    names = ORDER if a.scenario == "all" else [a.scenario]
    if any(n in ("cluster", "storm") for n in names) and not os.access(a.redis_server, os.X_OK):
        sys.exit("scale.py: %s not found: apt-get install redis-server" % a.redis_server)
    if "cluster" in names and "nchan" in a.servers and not (
            os.access(a.nginx, os.X_OK) and os.path.exists(R.NCHAN_MODULE)):
        sys.exit("scale.py: nchan needs %s and %s: apt-get install nginx libnginx-mod-nchan "
                 "(or --servers herald)" % (a.nginx, R.NCHAN_MODULE))
    ensure_netns(a)
    b = Bench(a)
    fns = {"cluster": sc_cluster, "storm": sc_storm, "connect-rate": sc_connect_rate,
           "memory": sc_memory, "profile": sc_profile, "structs": sc_structs}
    t0 = time.monotonic()
    try:
        for n in names:
            la = R.loadavg()
            fns[n](b)
            if isinstance(b.results.get(n), dict):
                b.results[n].setdefault("loadavg", (la, R.loadavg()))
    finally:
        log("done in %.0f s" % (time.monotonic() - t0))
    for n in names:
        if n in b.results:
            print(block(n, b.results[n], argv, a.herald) + "\n")
    doc = {"herald": a.herald, "machine": R.machine(), "argv": argv, "results": b.results,
           "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
    if a.write:
        write_section(a.write, names, b.results, argv, a.herald)
        log("updated %s" % a.write)
    if "profile" not in names:
        shutil.rmtree(b.tmp, ignore_errors=True)
    else:
        log("profile data kept in %s" % b.tmp)


if __name__ == "__main__":
    main(sys.argv[1:])
