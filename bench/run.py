#!/usr/bin/env python3
"""run.py - Herald benchmark scenarios, each next to herald-refserver.
(Why one file of ~1,500 lines: every scenario is a short function over the
same runner, tables and --write; a user runs one command, stdlib only.)

    python3 bench/run.py SCENARIO [options]      (stdlib only)

Scenarios (defaults in brackets; see bench/README.md for what each number means):
  fanout         publications x subscribers on one channel [1000 x 1000, then 100 x 10000]
  channels       many channels with one subscriber each [5000 channels, 50000 publications]
  latency        paced publications to subscribers [5/s to 1000, for 10 s]: p50/p99/p99.9
  idle-crowd     fan-out to 100 subscribers with 0, 5000, 15000 idle connections held open
  idle-memory    server RSS per idle authenticated connection [19000]
  connect-storm  handshakes/s (HS256 JWT in ?token=) [5000, 100 in flight]
  rest           REST publishes/s on 1 and 4 keep-alive connections, window 1 and 16
  threads        fanout 1000 x 1000 with HERALD_THREADS=1 and 2
  compression    a ~1 KB chat event to 1000 subscribers and to 1, Herald with and without
                 permessage-deflate (HERALD_WS_COMPRESSION, clients offering it):
                 bytes on the wire and CPU per delivery
  compression-memory  server RSS per idle connection with permessage-deflate negotiated [19000]
  streams        a ~1 KB chat event to 1000 subscribers and to 1 over WebSocket, Server-Sent
                 Events (GET /sse) and HTTP streaming (GET /stream), in one run [1000 x 1000]
  proxy-connect  connects/s and server CPU per connect through the connect proxy (no JWT: a
                 cookie, answered by bench/herald-proxy-backend) next to the JWT path [5000,
                 100 in flight]; not part of "all"
  all            every scenario above, with its defaults
Cluster mode (issue 7), with a fresh redis-server per run (see bench/README.md):
  cluster-fanout   2 nodes, subscribers split evenly, REST publishers via node 1 / both,
                   Herald next to nginx+nchan (Redis store: distributed and nostore);
                   --cluster-servers herald-rcluster: Herald on a 3-master Redis Cluster
  cluster-latency  5 publications/s to 1000 subscribers on 2 nodes for 10 s
  cluster-nodes    the fan-out with subscribers on 1, 2, 3 Herald nodes (via node 1)
  cluster          the three above

Every run starts fresh servers on free loopback ports (Herald with a throwaway
SQLite store, and herald-refserver), drives them with bench/herald-loadgen,
prints one table per scenario, then one JSON line with every number.
--repeat N runs each row N times and reports medians. --write FILE replaces
the scenario's block inside the marked section of FILE (docs/benchmarks.md),
keeping everything else in the file.

Paths (--herald, --bin-dir, --json, --write, ...) are relative to the directory
run.py is started from; the binaries default to this checkout's build/ (run
`cmake -S . -B build && cmake --build build` first). A row that fails (a server
that does not start or dies, a loadgen error) is reported as such and makes
run.py exit 1 after the tables.

--herald-prefix "perf record -q -g -o fan.data --" starts every Herald under
that command (a profiler, say); the CPU, RSS and pid columns still measure the
Herald process itself, not the wrapper.

Server CPU per delivery: the loadgen is given the server's pid and reads
utime+stime from /proc/PID/stat at the start and the end of the measured
interval (first publication .. last delivery), so connection setup is not
counted; divided by the deliveries received. RSS comes from /proc/PID/status.
Client and server share the machine: on 2 cores the loadgen takes one.
"""

import argparse
import atexit
import datetime
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, ".."))
DEFAULT_HERALD = os.path.join(REPO, "build", "herald")
STANDALONE_BUILD = "/tmp/herald-bench-build"
IDLE_PER_PROCESS = 9500  # each loadgen stays well under the 20,000-descriptor limit
SECTION_BEGIN = "<!-- BEGIN bench/run.py -->"
SECTION_END = "<!-- END bench/run.py -->"
NS_CONFIG = {"namespaces": {"": {"subscribe": "authenticated", "publish": "authenticated"}}}

VERBOSE = False


def log(msg):
    print("run.py: " + msg, file=sys.stderr, flush=True)


def vlog(msg):
    if VERBOSE:
        log(msg)


#---- processes -----------------------------------------------------------------

_children = []  # every process started here, killed at exit if still running


def spawn(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    _children.append(p)
    return p


def kill_children():
    for p in _children:
        if p.poll() is None:
            p.kill()
            p.wait()


atexit.register(kill_children)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid):
    """utime + stime of every thread of pid, in seconds (None when gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def proc_status_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Server:
    """One server process on a free loopback port: Herald or the refserver.

    kind: "herald" or "refserver". stop() sends SIGTERM, then SIGKILL after a
    grace period: a server stuck in a busy loop ignores SIGTERM."""

    def __init__(self, kind, binary, secret, api_key, threads=1, log_level="warn", extra_env=None,
                 prefix=None):
        self.kind, self.binary, self.secret, self.api_key = kind, binary, secret, api_key
        self.threads, self.log_level = threads, log_level
        self.extra_env = dict(extra_env or {})  # e.g. HERALD_REDIS_URL for cluster nodes
        self.prefix = list(prefix or [])  # a wrapper command (--herald-prefix)
        self.dir = tempfile.mkdtemp(prefix="herald-bench-")
        self.port = None
        self.proc = None
        self.server_pid = None  # the server's own pid (below the wrapper, if any)
        self.killed = False

    def label(self):
        return self.kind if self.kind == "refserver" else "herald"

    def _env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        if self.kind == "refserver":
            return env
        cfg = os.path.join(self.dir, "config.json")
        with open(cfg, "w") as f:
            json.dump(NS_CONFIG, f)
        env.update({
            "HERALD_LISTEN": "127.0.0.1:%d" % self.port,
            "HERALD_JWT_SECRET": self.secret,
            "HERALD_API_KEY": self.api_key,
            "HERALD_DB": os.path.join(self.dir, "h.db"),
            "HERALD_LOG_LEVEL": self.log_level,
            "HERALD_LOG_FORMAT": "json",
            "HERALD_RATE": "100000",
            "HERALD_RATE_BURST": "100000",
            # many clients from one loopback address: no per-address or per-user limits
            "HERALD_MAX_CONNS_PER_ADDRESS": "0",
            "HERALD_HANDSHAKE_RATE": "0",
            "HERALD_MAX_CONNS_PER_USER": "0",
            "HERALD_THREADS": str(self.threads),
            "HERALD_CONFIG": cfg,
        })
        env.update(self.extra_env)
        return env

    def start(self, timeout=15.0):
        self.port = free_port()
        argv = self.prefix + [self.binary]
        if self.kind == "refserver":
            argv += ["--listen", "127.0.0.1:%d" % self.port, "--api-key", self.api_key]
        self.err = open(os.path.join(self.dir, "server.log"), "wb")
        # a wrapper's own relative paths (perf -o FILE) mean the caller's directory
        self.proc = spawn(argv, env=self._env(), stdout=self.err, stderr=subprocess.STDOUT,
                          cwd=os.getcwd() if self.prefix else self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited at start (%s): %s" %
                                   (self.kind, self.proc.returncode, self.log_tail()))
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % self.port,
                                            timeout=1) as r:
                    if r.status == 200:
                        self.server_pid = self._find_server_pid()
                        vlog("%s pid %d on port %d" % (self.kind, self.server_pid, self.port))
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s did not answer /healthz within %.0fs" % (self.kind, timeout))

    def _find_server_pid(self):
        """The process running self.binary: the one started, or (under a
        --herald-prefix wrapper) its descendant, so that CPU and RSS are the
        server's and not the wrapper's."""
        if not self.prefix:
            return self.proc.pid
        want = os.path.realpath(self.binary)
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop(0)
            try:
                if os.path.realpath("/proc/%d/exe" % pid) == want:
                    return pid
            except OSError:
                pass
            todo += child_pids(pid)
        raise RuntimeError("no %s process below the --herald-prefix command" % self.binary)

    @property
    def pid(self):
        return self.server_pid or self.proc.pid

    def pids(self):
        return [self.pid]

    def loadgen_target(self):
        """Where the loadgen connects and whose CPU it samples."""
        return ["--port", self.port, "--server-pid", self.pid]

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def rss_kb(self):
        return proc_status_kb(self.pid, "VmRSS")

    def hwm_kb(self):
        return proc_status_kb(self.pid, "VmHWM")

    def log_tail(self, n=600):
        return file_tail(os.path.join(self.dir, "server.log"), n)

    def stop(self, grace=30.0):
        """Returns the exit status, or "killed" when SIGTERM was not enough;
        self.stop_s is how long the exit took."""
        status = None
        t0 = time.monotonic()
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                status = self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.killed = True
                status = "killed"
        elif self.proc is not None:
            status = self.proc.returncode
        self.stop_s = time.monotonic() - t0
        self.err.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return status


#---- cluster mode: redis-server, Herald nodes, nginx + nchan nodes ----------------

DEFAULT_REDIS = "/usr/sbin/redis-server" if os.path.exists("/usr/sbin/redis-server") else \
    "/usr/bin/redis-server"
DEFAULT_NGINX = "/usr/sbin/nginx"
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"


def file_tail(path, n):
    """The last n bytes of the file at path as text ("" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")
    except OSError:
        return ""


def communicate(p, timeout, what):
    """p.communicate() within timeout seconds: (stdout, stderr); past it, p
    is killed and RuntimeError says that `what` did not finish."""
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise RuntimeError("%s did not finish within %ss" % (what, timeout))


def wait_http(url, timeout, proc, what, want=200):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited at start (%s)" % (what, proc.returncode))
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == want:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("%s: %s did not answer %d within %.0fs" % (what, url, want, timeout))


def stop_proc(proc, grace):
    """SIGTERM, then SIGKILL after grace seconds; returns (status, seconds)."""
    t0 = time.monotonic()
    if proc is None:
        return None, 0.0
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=grace), time.monotonic() - t0
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return "killed", time.monotonic() - t0
    return proc.returncode, 0.0


def child_pids(pid):
    """The children of pid (nginx's workers), from /proc."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                            out.append(int(d))
                except (OSError, IndexError, ValueError):
                    pass
        return out


class RedisServer:
    """A throwaway redis-server on a free loopback port, no persistence."""

    def __init__(self, binary, dir):
        self.binary, self.dir = binary, dir
        self.port, self.proc = None, None

    def start(self, timeout=10.0):
        self.port = free_port()
        self.log = open(os.path.join(self.dir, "redis.log"), "wb")
        self.proc = spawn([self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no", "--dir", self.dir,
                           "--daemonize", "no", "--loglevel", "warning"],
                          stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited at start (%s)" % self.proc.returncode)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within %.0fs" % timeout)

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def stop(self, grace=10.0):
        r = stop_proc(self.proc, grace)
        self.log.close()
        return r


class RedisClusterServer:
    """A throwaway Redis Cluster of `masters` masters without replicas, built
    by tests/integration/redis_topology.py's RedisCluster (redis-cli
    --cluster create on free loopback ports): Herald's redis+cluster://
    mode. RedisServer's interface; `procs` are every node's processes
    (their CPU is Redis'), `proc` the first one's."""

    def __init__(self, masters=3):
        sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
        from redis_topology import RedisCluster
        self.cl = RedisCluster(masters=masters, replicas=0)

    def start(self):
        self.cl.start()
        return self

    @property
    def url(self):
        return self.cl.url()

    @property
    def procs(self):
        return [n.proc for n in self.cl.nodes]

    @property
    def proc(self):
        return self.procs[0]

    def stop(self, grace=10.0):
        self.cl.stop()
        return 0


NGINX_HEAD = """load_module %(module)s;
%(user)s
worker_processes 1;
worker_rlimit_nofile 20000;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
events { worker_connections %(worker_connections)d; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path %(d)s/client_body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
"""

NCHAN_CONF = """    upstream bench_redis {
        nchan_redis_server redis://127.0.0.1:%(redis_port)d;
        nchan_redis_storage_mode %(mode)s;
    }
    server {
        listen 127.0.0.1:%(port)d;
        location ~ ^/sub/(.+)$ {
            nchan_subscriber websocket;
            nchan_channel_id $1;
            nchan_redis_pass bench_redis;
        }
        location ~ ^/pub/(.+)$ {
            nchan_publisher http;
            nchan_channel_id $1;
            nchan_redis_pass bench_redis;
        }
        location = /healthz { return 200 "ok\\n"; }
    }
"""


def nginx_conf(d, worker_connections, body):
    """An nginx.conf for one nchan node whose files are in d: NGINX_HEAD (one
    worker, its temp dirs in d, no access log), then body (the http block's
    upstreams and server), then the http block's end."""
    return NGINX_HEAD % {"module": NCHAN_MODULE, "user": nginx_user_directive(), "d": d,
                         "worker_connections": worker_connections} + body + "}\n"


def start_nginx(binary, d, conf, port, timeout):
    """Starts nginx with conf (files in d) and waits until it answers
    /healthz on port and its workers exist. Returns (proc, its stdout log
    file, the worker pids); the caller stops proc (stop_proc) and closes
    the log."""
    log = open(os.path.join(d, "stdout.log"), "wb")
    proc = spawn([binary, "-p", d + "/", "-c", conf, "-e", os.path.join(d, "error.log"),
                  "-g", "daemon off;"],
                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_http("http://127.0.0.1:%d/healthz" % port, timeout, proc, "nginx")
    workers = []
    deadline = time.monotonic() + timeout
    while not workers and time.monotonic() < deadline:
        workers = child_pids(proc.pid)
        time.sleep(0.02)
    if not workers:
        raise RuntimeError("nginx started no worker")
    return proc, log, workers


def nginx_user_directive():
    """A root nginx master runs its workers as `user`; nobody's own group
    (Debian has no group "nobody")."""
    if os.geteuid() != 0:
        return ""
    import grp
    import pwd
    nobody = pwd.getpwnam("nobody")
    return "user nobody %s;" % grp.getgrgid(nobody.pw_gid).gr_name


class NchanNode:
    """Debian's nginx with libnginx-mod-nchan: one master, one worker, on a
    free loopback port, channels in Redis (`nchan_redis_pass`)."""

    def __init__(self, binary, dir, redis_port, mode):
        self.binary, self.dir, self.redis_port, self.mode = binary, dir, redis_port, mode
        self.port, self.proc, self.workers = None, None, []

    def start(self, timeout=15.0):
        self.port = free_port()
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o711)  # the workers (nobody) reach their temp dirs
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_conf(self.dir, 16000,
                               NCHAN_CONF % {"port": self.port, "redis_port": self.redis_port,
                                             "mode": self.mode}))
        self.proc, self.log, self.workers = start_nginx(self.binary, self.dir, conf, self.port,
                                                        timeout)
        return self

    def pids(self):
        return [self.proc.pid] + self.workers

    def log_tail(self, n=400):
        return file_tail(os.path.join(self.dir, "error.log"), n)

    def stop(self, grace=30.0):
        r = stop_proc(self.proc, grace)
        self.log.close()
        return r


class Cluster:
    """N gateway nodes sharing one fresh redis-server: Herald in cluster mode
    (HERALD_REDIS_URL, one secret and API key; kind "herald-rcluster": on a
    3-master Redis Cluster instead, redis+cluster://) or nginx + nchan with
    `nchan_redis_pass` (kind "nchan": storage mode distributed, nchan's
    default; "nchan-nostore": Redis only relays, like Herald's channels
    without history). Same interface as Server for Bench.one_run."""

    def __init__(self, bench, kind, nodes, threads=None):
        a = bench.a
        self.kind, self.nnodes = kind, nodes
        self.secret, self.api_key = bench.secret, bench.api_key
        self.dir = tempfile.mkdtemp(prefix="herald-bench-cluster-")
        self.redis = RedisClusterServer() if kind == "herald-rcluster" else \
            RedisServer(a.redis_server, self.dir)
        self.threads, self.bench = threads or a.herald_threads, bench
        self.nodes, self.killed, self.stop_s = [], False, 0.0

    def label(self):
        return self.kind

    def start(self):
        a = self.bench.a
        self.redis.start()
        for i in range(self.nnodes):
            if self.kind in ("herald", "herald-base", "herald-rcluster"):
                binary = a.herald_base if self.kind == "herald-base" else a.herald
                n = Server("herald", binary, self.secret, self.api_key, threads=self.threads,
                           log_level=a.log_level, prefix=a.herald_prefix,
                           extra_env={"HERALD_REDIS_URL": self.redis.url,
                                      "HERALD_NODE_ID": "bench%d" % (i + 1)})
                self.nodes.append(n)
                n.start()
                wait_http("http://127.0.0.1:%d/readyz" % n.port, 15, n.proc, "herald node")
            else:
                mode = "nostore" if self.kind == "nchan-nostore" else "distributed"
                n = NchanNode(a.nginx, os.path.join(self.dir, "node%d" % (i + 1)),
                              self.redis.port, mode)
                self.nodes.append(n)
                n.start()
        return self

    @property
    def port(self):
        return self.nodes[0].port

    @property
    def pid(self):
        return self.nodes[0].pids()[0]

    def ports(self):
        return [n.port for n in self.nodes]

    def node_pids(self):
        return [p for n in self.nodes for p in n.pids()]

    def pids(self):
        return self.node_pids() + [p.pid for p in self.redis_procs()]

    def redis_procs(self):
        return getattr(self.redis, "procs", None) or [self.redis.proc]

    def loadgen_target(self):
        t = ["--ports", ",".join(map(str, self.ports())),
             "--server-pid", ",".join(map(str, self.pids()))]
        return t + (["--proto", "nchan"] if self.kind.startswith("nchan") else [])

    def alive(self):
        return bool(self.nodes) and all(n.proc.poll() is None for n in self.nodes) and \
            all(p.poll() is None for p in self.redis_procs())

    def rss_kb(self):
        vals = [proc_status_kb(p, "VmRSS") for p in self.pids()]
        return sum(vals) if None not in vals else None

    def log_tail(self, n=300):
        return " | ".join(x.log_tail(n) for x in self.nodes if x.proc.poll() is not None)

    def stop(self, grace=30.0):
        status, t0 = 0, time.monotonic()
        for n in self.nodes:
            st = n.stop(grace)[0] if isinstance(n, NchanNode) else n.stop(grace)
            if st == "killed":
                self.killed = True
            if st not in (0, None) and status == 0:
                status = st
        self.redis.stop()
        self.stop_s = time.monotonic() - t0
        shutil.rmtree(self.dir, ignore_errors=True)
        return "killed" if self.killed else status


class Loadgen:
    """Runs herald-loadgen against a server and returns its JSON report."""

    def __init__(self, binary, server):
        self.binary, self.server = binary, server

    def argv(self, args, tag):
        s = self.server
        vlog("herald-loadgen --tag %s %s" % (tag, " ".join(str(a) for a in args)))
        return [self.binary, "--host", "127.0.0.1", "--secret", s.secret, "--api-key", s.api_key,
                "--tag", tag] + [str(a) for a in s.loadgen_target() + list(args)]

    def run(self, args, timeout, tag="lg"):
        argv = self.argv(args, tag)
        p = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = communicate(p, timeout, "herald-loadgen")
        return parse_report(out, err, p.returncode)

    def start_background(self, args, tag):
        """Starts a holding loadgen (idle connections); returns (proc, ready_file)."""
        ready = os.path.join(self.server.dir, "ready-" + tag)
        argv = self.argv(list(args) + ["--ready-file", ready], tag)
        errf = open(os.path.join(self.server.dir, "loadgen-%s.err" % tag), "wb")
        p = spawn(argv, stdout=subprocess.PIPE, stderr=errf)
        return p, ready


def parse_report(out, err, rc):
    lines = [l for l in out.decode(errors="replace").splitlines() if l.startswith("{")]
    if rc != 0 or not lines:
        raise RuntimeError("herald-loadgen failed (rc %s): %s" %
                           (rc, err.decode(errors="replace")[-600:]))
    return json.loads(lines[-1])


def wait_ready(procs, timeout):
    """Waits until every background loadgen wrote its ready file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(os.path.exists(r) for _, r in procs):
            return True
        if any(p.poll() is not None for p, _ in procs):
            return False
        time.sleep(0.1)
    return False


def finish_background(procs, timeout=120):
    """Ends the hold (SIGUSR1) and collects each loadgen's report."""
    reports = []
    for p, _ in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGUSR1)
    for p, _ in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        try:
            reports.append(parse_report(out, b"", 0))
        except RuntimeError:
            reports.append(None)
    return reports


#---- metrics ---------------------------------------------------------------------

def summarize(r):
    """Flattens one loadgen report into the numbers the tables show."""
    d, p, c = r["delivery"], r["publish"], r["connect"]
    cpu = r.get("server_cpu_s")
    closes = r.get("closes", {})
    m = {
        "deliveries_per_s": d["rate"],
        "publications_per_s": p["rate"],
        "cpu_us_per_delivery": cpu * 1e6 / d["received"] if cpu is not None and d["received"] else None,
        "cpu_us_per_publication": cpu * 1e6 / p["acked"] if cpu is not None and p["acked"] else None,
        "server_cpu_s": cpu,
        "p50_ms": d["p50_ms"], "p90_ms": d["p90_ms"], "p99_ms": d["p99_ms"],
        "p999_ms": d["p999_ms"], "max_ms": d["max_ms"],
        "ack_p50_ms": p["ack_p50_ms"], "ack_p99_ms": p["ack_p99_ms"],
        "sent": p["sent"], "acked": p["acked"], "pub_errors": p["errors"],
        "reconnects": p["reconnects"], "resent": p["resent"],
        "expected": d["expected"], "received": d["received"], "lost": d["lost"],
        "gaps": d["gaps"], "dups": d["dups"] + d["stale"], "reordered": d["reordered"],
        "closes_4008": closes.get("4008", 0),
        "closes_other": sum(v for k, v in closes.items() if k != "4008"),
        "errors": sum(r["errors"].values()),
        "conns_ready": r["conns"]["ready"], "conns_failed": r["conns"]["failed"],
        "connect_per_s": c["rate"], "handshake_p50_ms": c["p50_ms"], "handshake_p99_ms": c["p99_ms"],
        "measure_s": r["measure_s"], "stalled": r["stalled"], "timed_out": r["timed_out"],
    }
    if r["stalled"]:  # rates over a stalled interval mean nothing
        for k in ("deliveries_per_s", "publications_per_s", "cpu_us_per_delivery",
                  "cpu_us_per_publication", "ack_p50_ms", "ack_p99_ms"):
            m[k] = None
    return m


# Failure counts: a median would hide a loss that happened in one repeat of three.
WORST_OF = {"lost", "gaps", "dups", "reordered", "closes_4008", "closes_other", "errors",
            "pub_errors", "window_timeouts", "conns_failed", "idle_failed", "idle_closed"}


def median_row(runs):
    """Medians of numbers, the worst (max) of failure counts, any() of flags,
    first of the rest, over repeats."""
    out = {}
    for k in runs[0]:
        vals = [r.get(k) for r in runs]
        nums = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if all(isinstance(v, bool) for v in vals):
            out[k] = any(vals)
        elif nums and len(nums) == len(vals):
            out[k] = max(nums) if k in WORST_OF else statistics.median(nums)
        else:
            out[k] = vals[0]
    return out


#---- scenario plumbing ---------------------------------------------------------------

class Bench:
    """What every scenario needs: binaries, options, and the run loop."""

    def __init__(self, args, loadgen_bin, refserver_bin):
        self.a = args
        self.loadgen_bin, self.refserver_bin = loadgen_bin, refserver_bin
        self.secret = secrets.token_hex(24)  # 48 hex characters
        self.api_key = "bench-" + secrets.token_hex(8)
        self.results = []  # rows: {"scenario","variant","server",...metrics}

    def servers(self):
        kinds = [k for k in self.a.servers.split(",") if k]
        return [k if k in ("refserver", "herald-base") else "herald" for k in kinds]

    def label(self, kind):
        return kind

    def new_server(self, kind, threads=None):
        if kind == "refserver":
            return Server("refserver", self.refserver_bin, self.secret, self.api_key)
        binary = self.a.herald_base if kind == "herald-base" else self.a.herald
        return Server("herald", binary, self.secret, self.api_key,
                      threads=threads or self.a.herald_threads, log_level=self.a.log_level,
                      prefix=self.a.herald_prefix)

    def run_rows(self, scenario, variant, params, fn, configs=None, factory=None):
        """Runs fn(server, params) -> metrics on a fresh server for each
        config (kind, label, HERALD_THREADS), --repeat times, and records the
        medians. Repeats are interleaved (A B A B, not A A B B): this machine's
        speed drifts over minutes, and interleaving spreads it over all rows.
        factory(kind, threads) builds the server (default: new_server)."""
        configs = configs or [(k, self.label(k), None) for k in self.servers()]
        runs = {label: [] for _, label, _ in configs}
        notes = {label: [] for _, label, _ in configs}
        for i in range(self.a.repeat):
            for kind, label, threads in configs:
                log("%s %s: %s run %d/%d" % (scenario, variant, label, i + 1, self.a.repeat))
                m, note = self.one_run(kind, params, fn, threads, factory)
                runs[label].append(m)
                notes[label] += [note] if note else []
        for _, label, _ in configs:
            row = median_row(runs[label])
            failed = [m["failed"] for m in runs[label] if m.get("failed")]
            if failed:
                row["failed"] = failed[0]
            row.update({"scenario": scenario, "variant": variant, "server": label,
                        "repeat": self.a.repeat, "notes": sorted(set(notes[label])),
                        "params": params, "runs": runs[label]})
            self.results.append(row)
            print_progress(row)

    def one_run(self, kind, params, fn, threads, factory=None):
        """One row's run; m["failed"] says why when the run does not count
        (run.py then exits 1)."""
        srv = factory(kind, threads) if factory else self.new_server(kind, threads)
        note, started = None, False
        try:
            srv.start()
            started = True
            m = fn(srv, params)
            note = m.pop("note", None)
        except (RuntimeError, OSError, KeyError, ValueError) as e:
            what = "error" if started else "server did not start"
            m, note = {"error": str(e)[:300]}, "%s: %s" % (what, str(e)[:400])
            m["failed"] = note
        alive = srv.alive()
        tail = "" if alive else srv.log_tail(300)  # stop() removes the log
        # A stalled server may be spinning and deaf to SIGTERM: do not wait long.
        status = srv.stop(grace=5.0 if m.get("stalled") else 30.0)
        if started and not alive:
            note = m["failed"] = "server exited during the run (%s): %s" % (status, tail)
        elif status == "killed":
            note = m["failed"] = "server ignored SIGTERM for %.0fs (killed)" % srv.stop_s
        elif srv.stop_s > 5:
            note = "server took %.1fs to exit after SIGTERM" % srv.stop_s
        m["server_stop"], m["server_stop_s"] = status, round(srv.stop_s, 2)
        return m, note

    def loadgen(self, srv):
        return Loadgen(self.loadgen_bin, srv)


def print_progress(row):
    cols = COLUMNS[row["scenario"]]
    shown = ", ".join("%s %s" % (h, fmt_num(row.get(k), f)) for h, k, f in cols[:4])
    log("  -> %s %s: %s%s" % (row["server"], row["variant"], shown,
                              (" [" + "; ".join(row["notes"]) + "]") if row["notes"] else ""))


#---- scenarios ------------------------------------------------------------------------

def auto_window(a, subs):
    """--window, or one that keeps ~16,000 deliveries in flight: enough to
    keep the server busy, little enough that latency stays well under the
    loadgen's window timeout and queues far below Herald's 1 MiB bound."""
    return a.window or max(2, min(64, 16000 // max(subs, 1)))


def fanout_run(b, srv, p):
    rss0 = srv.rss_kb()
    r = b.loadgen(srv).run(["--subs", p["subs"], "--ws-pubs", p["publishers"], "--count", p["pubs"],
                            "--window", p["window"], "--size", p["size"], "--concurrency", 500,
                            "--timeout", p["timeout"]], timeout=p["timeout"] + 30)
    m = summarize(r)
    m["rss_before_kb"], m["rss_after_kb"] = rss0, r["server_rss_kb"]
    return m


def sc_fanout(b):
    a = b.a
    sizes = [(a.subs, a.pubs)] if (a.subs or a.pubs) else [(1000, 1000), (10000, 100)]
    for subs, pubs in sizes:
        subs, pubs = subs or 1000, pubs or 1000
        p = {"subs": subs, "pubs": pubs, "publishers": a.publishers or 1,
             "window": auto_window(a, subs),
             "size": a.size, "timeout": a.timeout}
        b.run_rows("fanout", "%d pubs x %d subs" % (pubs, subs), p, lambda s, p: fanout_run(b, s, p))


def sc_channels(b):
    a = b.a
    n, count = a.channels or 5000, a.pubs or 50000
    p = {"channels": n, "pubs": count, "publishers": a.publishers or 4, "window": a.window or 16,
         "size": a.size, "timeout": a.timeout}

    def run(srv, p):
        r = b.loadgen(srv).run(["--subs", p["channels"], "--channels", p["channels"],
                                "--ws-pubs", p["publishers"], "--count", p["pubs"],
                                "--window", p["window"], "--size", p["size"], "--concurrency", 500,
                                "--timeout", p["timeout"]], timeout=p["timeout"] + 30)
        return summarize(r)
    b.run_rows("channels", "%d channels x 1 sub, %d pubs" % (n, count), p, run)


def sc_latency(b):
    a = b.a
    p = {"subs": a.subs or 1000, "rate": a.rate or 5.0, "duration": a.duration or 10.0,
         "size": a.size}

    def run(srv, p):
        r = b.loadgen(srv).run(["--subs", p["subs"], "--ws-pubs", 1, "--rate", p["rate"],
                                "--duration", p["duration"], "--size", p["size"],
                                "--concurrency", 500, "--timeout", p["duration"] + 120],
                               timeout=p["duration"] + 150)
        return summarize(r)
    b.run_rows("latency", "%g/s to %d subs, %gs" % (p["rate"], p["subs"], p["duration"]), p, run)


def hold_idle(b, srv, n, tag, timeout=300, extra=()):
    """Opens n idle connections in background loadgens; returns their handles
    once every one is ready (or raises). extra: more loadgen arguments."""
    procs = []
    for i in range((n + IDLE_PER_PROCESS - 1) // IDLE_PER_PROCESS):
        k = min(IDLE_PER_PROCESS, n - i * IDLE_PER_PROCESS)
        procs.append(b.loadgen(srv).start_background(
            ["--idle", k, "--hold", 900, "--concurrency", 500, "--connect-timeout", 120,
             "--src-first", 2 + 8 * (i + 1), "--timeout", 1200] + list(extra),
            "%s%d" % (tag, i)))
    if not wait_ready(procs, timeout):
        finish_background(procs, timeout=10)
        raise RuntimeError("idle connections were not ready within %ds" % timeout)
    return procs


def idle_totals(reports):
    ok = [r for r in reports if r]
    return {"idle_ready": sum(r["conns"]["ready"] for r in ok),
            "idle_failed": sum(r["conns"]["failed"] for r in ok),
            "idle_closed": sum(sum(r["closed_by_role"].values()) for r in ok),
            "idle_connect_per_s": sum(r["connect"]["rate"] for r in ok),
            "idle_deflate_conns": sum(r.get("wire", {}).get("deflate_conns", 0) for r in ok)}


def sc_idle_crowd(b):
    a = b.a
    idles = [int(x) for x in (a.idle or "0,5000,15000").split(",")]
    for n in idles:
        # One publication in flight: every fan-out is one wakeup's work, so a
        # per-wakeup cost that grows with idle connections (poll(2)) shows.
        # A deep window amortises it and hides it (measured: 0.11 vs 0.85).
        p = {"idle": n, "subs": a.subs or 100, "pubs": a.pubs or 2000, "window": a.window or 1,
             "size": a.size, "duration": a.duration or 20.0}

        def run(srv, p):
            procs = hold_idle(b, srv, p["idle"], "idle") if p["idle"] else []
            try:
                r = b.loadgen(srv).run(["--subs", p["subs"], "--ws-pubs", 1, "--count", p["pubs"],
                                        "--duration", p["duration"], "--window", p["window"],
                                        "--size", p["size"], "--src-first", 2,
                                        "--timeout", p["duration"] + 120],
                                       timeout=p["duration"] + 150)
            finally:
                reports = finish_background(procs) if procs else []
            m = summarize(r)
            m.update(idle_totals(reports))
            m["rss_after_kb"] = r["server_rss_kb"]
            return m
        b.run_rows("idle-crowd", "%d idle" % n, p, run)
    add_ratios(b.results, "idle-crowd")


def idle_memory_run(b, srv, p, extra=()):
    time.sleep(0.5)
    rss0 = srv.rss_kb()
    procs = hold_idle(b, srv, p["idle"], "mem", extra=extra)
    time.sleep(1.0)  # let the server settle after the last handshake
    rss1, hwm = srv.rss_kb(), srv.hwm_kb()
    m = idle_totals(finish_background(procs))
    n = max(m["idle_ready"], 1)
    m.update({"rss_before_kb": rss0, "rss_after_kb": rss1, "hwm_kb": hwm,
              "rss_per_conn_bytes": (rss1 - rss0) * 1024.0 / n,
              "connect_per_s": m["idle_connect_per_s"]})
    return m


def sc_idle_memory(b):
    a = b.a
    n = int(a.idle or 19000)
    p = {"idle": n}

    b.run_rows("idle-memory", "%d idle" % n, p, lambda srv, p: idle_memory_run(b, srv, p))


#---- permessage-deflate (issue 19) -----------------------------------------------------

DEFLATE_ENV = {"HERALD_WS_COMPRESSION": "true"}


def deflate_configs(b, plain_clients=True):
    """Herald without compression; with HERALD_WS_COMPRESSION on but clients
    that do not offer it (what turning it on costs them); with it on and
    every client offering permessage-deflate; and the refserver (no
    compression), in one run."""
    configs = []
    if "herald" in b.servers():
        configs.append(("herald", "herald", None))
        if plain_clients:
            configs.append(("herald-on", "herald on, plain clients", None))
        configs.append(("herald-deflate", "herald deflate", None))
    if "refserver" in b.servers():
        configs.append(("refserver", "refserver", None))
    return configs


def deflate_factory(b):
    def make(kind, threads):
        if kind not in ("herald-deflate", "herald-on"):
            return b.new_server(kind, threads)
        srv = Server("herald", b.a.herald, b.secret, b.api_key,
                     threads=threads or b.a.herald_threads, log_level=b.a.log_level,
                     extra_env=DEFLATE_ENV)
        srv.clients_offer = kind == "herald-deflate"
        return srv
    return make


def compresses(srv):
    """Whether the loadgen's clients offer permessage-deflate to srv."""
    return getattr(srv, "clients_offer", False)


def herald_counter(srv, name):
    """A counter from Herald's /metrics (None for the refserver)."""
    if srv.kind != "herald":
        return None
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % srv.port, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(r"^%s(?:\{[^}]*\})? (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


def compression_run(b, srv, p):
    extra = ["--deflate", 1] if compresses(srv) else []
    r = b.loadgen(srv).run(["--subs", p["subs"], "--ws-pubs", p["publishers"], "--count", p["pubs"],
                            "--window", p["window"], "--payload", "chat", "--concurrency", 500,
                            "--timeout", p["timeout"]] + extra, timeout=p["timeout"] + 30)
    m = summarize(r)
    w = r["wire"]
    m["wire_per_delivery"] = w["per_delivery"]
    m["deflated_pct"] = 100.0 * w["deflated"] / r["delivery"]["received"] \
        if r["delivery"]["received"] else None
    deflates = herald_counter(srv, "herald_ws_deflates_total")
    m["deflates_per_publication"] = deflates / m["acked"] if deflates is not None and m["acked"] \
        else None
    m["rss_after_kb"] = r["server_rss_kb"]
    return m


def add_cpu_ratios(results, scenario):
    """cpu_vs_plain: a Herald row's CPU per delivery over that of Herald with
    compression off in the same variant."""
    rows = [r for r in results if r["scenario"] == scenario]
    base = {r["variant"]: r.get("cpu_us_per_delivery") for r in rows if r["server"] == "herald"}
    for r in rows:
        ref, c = base.get(r["variant"]), r.get("cpu_us_per_delivery")
        r["cpu_vs_plain"] = c / ref if ref and c is not None and r["server"] != "refserver" \
            else None


def sc_compression(b):
    """The same ~1 KB chat events to 1000 subscribers of one channel (one
    compression serves them all), and to a single subscriber (each message
    is compressed for one delivery: the worst case)."""
    a = b.a
    for subs, pubs in [(a.subs, a.pubs)] if (a.subs or a.pubs) else [(1000, 1000), (1, 20000)]:
        subs, pubs = subs or 1000, pubs or 1000
        p = {"subs": subs, "pubs": pubs, "publishers": a.publishers or 1,
             "window": auto_window(a, subs), "timeout": a.timeout}
        b.run_rows("compression", "%d pubs x %d subs, chat ~1 KB" % (pubs, subs), p,
                   lambda s, p: compression_run(b, s, p), deflate_configs(b), deflate_factory(b))
    add_cpu_ratios(b.results, "compression")


#---- listen-only transports (issue 19) -------------------------------------------------

def stream_configs(b):
    """The same Herald with WebSocket subscribers, SSE subscribers and
    NDJSON subscribers (publishers are WebSocket in all three), in one run."""
    if "herald" not in b.servers():
        return []
    return [("herald", "herald ws", None), ("herald-sse", "herald sse", None),
            ("herald-stream", "herald stream", None)]


def stream_factory(b):
    def make(kind, threads):
        srv = b.new_server("herald", threads)
        srv.sub_transport = {"herald": "ws", "herald-sse": "sse", "herald-stream": "stream"}[kind]
        return srv
    return make


def streams_run(b, srv, p):
    r = b.loadgen(srv).run(["--subs", p["subs"], "--ws-pubs", p["publishers"], "--count", p["pubs"],
                            "--window", p["window"], "--payload", "chat", "--concurrency", 500,
                            "--timeout", p["timeout"], "--sub-transport", srv.sub_transport],
                           timeout=p["timeout"] + 30)
    m = summarize(r)
    m["wire_per_delivery"] = r["wire"]["per_delivery"]
    m["rss_after_kb"] = r["server_rss_kb"]
    return m


def add_cpu_vs_ws(results, scenario):
    """cpu_vs_ws: CPU per delivery over that of WebSocket subscribers in the
    same variant."""
    rows = [r for r in results if r["scenario"] == scenario]
    base = {r["variant"]: r.get("cpu_us_per_delivery") for r in rows if r["server"] == "herald ws"}
    for r in rows:
        ref, c = base.get(r["variant"]), r.get("cpu_us_per_delivery")
        r["cpu_vs_ws"] = c / ref if ref and c is not None else None


def sc_streams(b):
    """~1 KB chat events to 1000 subscribers of one channel and to a single
    subscriber, delivered over WebSocket, SSE and NDJSON."""
    a = b.a
    for subs, pubs in [(a.subs, a.pubs)] if (a.subs or a.pubs) else [(1000, 1000), (1, 20000)]:
        subs, pubs = subs or 1000, pubs or 1000
        p = {"subs": subs, "pubs": pubs, "publishers": a.publishers or 1,
             "window": auto_window(a, subs), "timeout": a.timeout}
        b.run_rows("streams", "%d pubs x %d subs, chat ~1 KB" % (pubs, subs), p,
                   lambda s, p: streams_run(b, s, p), stream_configs(b), stream_factory(b))
    add_cpu_vs_ws(b.results, "streams")


def sc_compression_memory(b):
    n = int(b.a.idle or 19000)
    configs = [c for c in deflate_configs(b, plain_clients=False) if c[0] != "refserver"]

    def run(srv, p):
        m = idle_memory_run(b, srv, p, ["--deflate", 1] if compresses(srv) else [])
        if compresses(srv) and m["idle_deflate_conns"] != m["idle_ready"]:
            m["note"] = "%d of %d connections negotiated permessage-deflate" % (
                m["idle_deflate_conns"], m["idle_ready"])
        return m
    b.run_rows("compression-memory", "%d idle" % n, {"idle": n}, run, configs, deflate_factory(b))


def sc_connect_storm(b):
    a = b.a
    p = {"conns": a.conns_n or 5000, "concurrency": a.concurrency or 100}

    def run(srv, p):
        r = b.loadgen(srv).run(["--idle", p["conns"], "--concurrency", p["concurrency"],
                                "--connect-timeout", 60, "--timeout", 180], timeout=210)
        m = summarize(r)
        m["rss_after_kb"] = srv.rss_kb()
        return m
    b.run_rows("connect-storm", "%d conns, %d in flight" % (p["conns"], p["concurrency"]), p, run)


#---- the backend proxy (issue 17) ----------------------------------------------------

class ProxiedHerald(Server):
    """Herald whose connect proxy is a herald-proxy-backend of its own
    (started before Herald, stopped after it): the loadgen connects with
    --auth cookie, the backend answers each connect with the cookie's user."""

    def __init__(self, b, threads):
        self.backend_bin = b.proxy_backend_bin
        self.backend_port = free_port()
        self.backend = None
        key = secrets.token_hex(16)
        self.backend_key = key
        url = "http://127.0.0.1:%d/connect" % self.backend_port
        super().__init__("herald", b.a.herald, b.secret, b.api_key,
                         threads=threads or b.a.herald_threads, log_level=b.a.log_level,
                         extra_env={"HERALD_PROXY_CONNECT_URL": url, "HERALD_PROXY_KEY": key},
                         prefix=b.a.herald_prefix)

    def start(self, timeout=15.0):
        self.backend_out = open(os.path.join(self.dir, "backend.log"), "wb")
        self.backend = spawn([self.backend_bin, "--listen", "127.0.0.1:%d" % self.backend_port,
                              "--key", self.backend_key],
                             stdout=self.backend_out, stderr=subprocess.STDOUT)
        wait_http("http://127.0.0.1:%d/healthz" % self.backend_port, timeout, self.backend,
                  "herald-proxy-backend")
        return super().start(timeout)

    def backend_stats(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/stats" % self.backend_port,
                                    timeout=5) as r:
            return json.loads(r.read())

    def backend_cpu_s(self):
        return proc_cpu_s(self.backend.pid) if self.backend else None

    def stop(self, grace=30.0):
        backend, self.backend = self.backend, None
        status = super().stop(grace)  # removes self.dir: the backend's log goes too
        stop_proc(backend, 5.0)
        self.backend_out.close()
        return status


def proxy_factory(b):
    def make(kind, threads):
        return ProxiedHerald(b, threads) if kind == "herald-proxy" else b.new_server(kind, threads)
    return make


def proxy_connect_run(b, srv, p):
    """p["conns"] connections held open (connect phase only: CPU is read when
    the last one is ready, before any close)."""
    proxied = isinstance(srv, ProxiedHerald)
    cpu0 = proc_cpu_s(srv.pid)
    bcpu0 = srv.backend_cpu_s() if proxied else None
    procs = [b.loadgen(srv).start_background(
        ["--idle", p["conns"], "--concurrency", p["concurrency"], "--connect-timeout", 120,
         "--hold", 600, "--timeout", 900] + (["--auth", "cookie"] if proxied else []), "pc")]
    if not wait_ready(procs, 240):
        finish_background(procs, timeout=10)
        raise RuntimeError("the connections were not ready within 240 s")
    cpu1 = proc_cpu_s(srv.pid)
    bcpu1 = srv.backend_cpu_s() if proxied else None
    rss = srv.rss_kb()
    [r] = finish_background(procs)
    if r is None:
        raise RuntimeError("herald-loadgen gave no report")
    m = summarize(r)
    ready = m["conns_ready"]
    if not ready:
        raise RuntimeError("no connection became ready (closes %s, errors %s)"
                           % (r.get("closes"), r.get("errors")))
    m["server_cpu_s"] = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    m["cpu_us_per_connect"] = m["server_cpu_s"] * 1e6 / ready if ready and m["server_cpu_s"] \
        is not None else None
    m["rss_after_kb"] = rss
    if proxied:
        st = srv.backend_stats()
        m["backend_requests"], m["backend_connections"] = st["requests"], st["connections"]
        m["backend_cpu_us_per_connect"] = (bcpu1 - bcpu0) * 1e6 / ready \
            if ready and bcpu0 is not None and bcpu1 is not None else None
        if m["backend_requests"] < ready:
            m["note"] = "%d connections ready, the backend saw %d connect calls" % (
                ready, m["backend_requests"])
    return m


def sc_proxy_connect(b):
    a = b.a
    p = {"conns": a.conns_n or 5000, "concurrency": a.concurrency or 100}
    configs = [("herald", "herald jwt", None), ("herald-proxy", "herald proxy", None)]
    b.run_rows("proxy-connect", "%d conns, %d in flight" % (p["conns"], p["concurrency"]), p,
               lambda s, p: proxy_connect_run(b, s, p), configs, proxy_factory(b))
    jwt = {r["variant"]: r.get("connect_per_s") for r in b.results
           if r["scenario"] == "proxy-connect" and r["server"] == "herald jwt"}
    for r in b.results:
        if r["scenario"] == "proxy-connect":
            ref = jwt.get(r["variant"])
            r["vs_jwt"] = r["connect_per_s"] / ref if ref and r.get("connect_per_s") else None


def sc_rest(b):
    a = b.a
    conns = [int(x) for x in (a.rest_conns or "1,4").split(",")]
    windows = [int(x) for x in (a.rest_windows or "1,16").split(",")]
    for c in conns:
        for w in windows:
            p = {"conns": c, "window": w, "pubs": a.pubs or 20000, "duration": a.duration or 15.0,
                 "size": a.size}

            def run(srv, p):
                r = b.loadgen(srv).run(["--subs", 1, "--rest-pubs", p["conns"], "--window", p["window"],
                                        "--count", p["pubs"], "--duration", p["duration"],
                                        "--size", p["size"], "--stall-ms", 5000,
                                        "--timeout", p["duration"] + 60], timeout=p["duration"] + 90)
                return summarize(r)
            b.run_rows("rest", "%d conn%s, window %d" % (c, "s" if c > 1 else "", w), p, run)


def sc_threads(b):
    a = b.a
    p = {"subs": a.subs or 1000, "pubs": a.pubs or 1000, "publishers": a.publishers or 1,
         "window": auto_window(a, a.subs or 1000), "size": a.size, "timeout": a.timeout}
    variant = "%d pubs x %d subs" % (p["pubs"], p["subs"])
    configs = []
    for t in [int(x) for x in (a.thread_counts or "1,2").split(",")]:
        # herald-base (--herald-base) gets the same thread counts, so an old
        # build is compared with the new one at each count in the same run
        configs += [(k, "%s threads=%d" % (k, t), t) for k in ("herald", "herald-base")
                    if k in b.servers()]
    if "refserver" in b.servers():
        configs.append(("refserver", "refserver", None))
    b.run_rows("threads", variant, p, lambda s, p: fanout_run(b, s, p), configs)


#---- cluster scenarios (issue 7) -----------------------------------------------------

def cluster_kinds(b):
    return [k for k in (b.a.cluster_servers or "herald,nchan,nchan-nostore").split(",") if k]


def cluster_run(b, cl, p):
    """One loadgen run against a Cluster: subscribers split evenly over the
    nodes (subscriber i on node i mod N), REST publishers on the nodes in
    p["pub_nodes"] (publisher j on the j mod len-th of them). Herald gets
    POST /api/v1/publish, nchan POST /pub/<channel> with the bare payload,
    both on keep-alive connections."""
    ports = cl.ports()
    pub_ports = [ports[i] for i in p["pub_nodes"]]
    args = ["--subs", p["subs"], "--rest-pubs", p["publishers"], "--window", p["window"],
            "--pub-ports", ",".join(map(str, pub_ports)), "--size", p["size"],
            "--concurrency", 500, "--settle-ms", p["settle_ms"], "--timeout", p["timeout"]]
    if p.get("rate"):
        args += ["--rate", p["rate"], "--duration", p["duration"]]
    else:
        args += ["--count", p["pubs"]]
    r = b.loadgen(cl).run(args, timeout=p["timeout"] + 30)
    m = summarize(r)
    by_pid = r.get("server_cpu_by_pid") or {}
    recv = r["delivery"]["received"]
    rcpus = [by_pid.get(str(p.pid)) for p in cl.redis_procs()]
    rcpu = None if None in rcpus else sum(rcpus)
    m["redis_cpu_s"] = rcpu
    m["redis_cpu_us_per_delivery"] = rcpu * 1e6 / recv if rcpu is not None and recv else None
    m["rss_after_kb"] = r["server_rss_kb"]
    m["cpu_by_pid"] = by_pid
    m["window_timeouts"] = r["publish"]["window_timeouts"]
    # one channel: node i should have received (its subscribers) x (accepted publications)
    n = len(ports)
    by_port = r["delivery"].get("received_by_port", {})
    m["lost_by_node"] = [len(range(i, p["subs"], n)) * r["publish"]["acked"] -
                         by_port.get(str(port), 0) for i, port in enumerate(ports)]
    if m["lost"]:
        m["note"] = "lost %d in one run: by node %s, %d publications given up after 5 s" % (
            m["lost"], "/".join(map(str, m["lost_by_node"])), m["window_timeouts"])
    return m


def cluster_params(a, nodes, pub_nodes, **kw):
    p = {"nodes": nodes, "pub_nodes": pub_nodes, "subs": a.subs or 1000, "pubs": a.pubs or 1000,
         "publishers": a.publishers or 16, "window": a.window or 1, "size": a.size,
         "settle_ms": a.settle_ms, "timeout": a.timeout}
    p.update(kw)
    return p


def cluster_factory(b, nodes):
    return lambda kind, threads: Cluster(b, kind, nodes, threads)


def sc_cluster_fanout(b):
    """Cross-node fan-out: 2 nodes on one Redis, subscribers split evenly,
    publishing through node 1, then through both."""
    a = b.a
    kinds = cluster_kinds(b)
    configs = [(k, k, None) for k in kinds]
    vias = {"one": ([0], "node 1"), "both": ([0, 1], "both"), "second": ([1], "node 2")}
    for via in (a.via or "one,both").split(","):
        if via not in vias:
            sys.exit("run.py: --via takes one, both, second")
        pub_nodes, name = vias[via]
        p = cluster_params(a, 2, pub_nodes)
        variant = "%d pubs x %d subs, 2 nodes, via %s" % (p["pubs"], p["subs"], name)
        b.run_rows("cluster-fanout", variant, p, lambda s, p: cluster_run(b, s, p), configs,
                   cluster_factory(b, 2))


def sc_cluster_latency(b):
    """Paced cross-node latency: one REST publisher on node 1, 5/s for 10 s,
    subscribers split over 2 nodes."""
    a = b.a
    configs = [(k, k, None) for k in cluster_kinds(b)]
    p = cluster_params(a, 2, [0], publishers=1, rate=a.rate or 5.0, duration=a.duration or 10.0)
    p["timeout"] = p["duration"] + 120
    variant = "%g/s to %d subs on 2 nodes, %gs" % (p["rate"], p["subs"], p["duration"])
    b.run_rows("cluster-latency", variant, p, lambda s, p: cluster_run(b, s, p), configs,
               cluster_factory(b, 2))


def sc_cluster_nodes(b):
    """What another node adds: the same fan-out with the subscribers split
    over N nodes, publishing through node 1 in every row (where publications
    enter changes how many a node finds per socket per loop iteration, see
    cluster-fanout via node 1 / both, so it is held fixed here)."""
    a = b.a
    kinds = [k for k in cluster_kinds(b)] if a.cluster_servers else ["herald"]
    configs = [(k, k, None) for k in kinds]
    for n in [int(x) for x in (a.node_counts or "1,2,3").split(",")]:
        p = cluster_params(a, n, [0])
        variant = "%d pubs x %d subs, %d node%s" % (p["pubs"], p["subs"], n, "s" if n > 1 else "")
        b.run_rows("cluster-nodes", variant, p, lambda s, p: cluster_run(b, s, p), configs,
                   cluster_factory(b, n))
    add_ratios(b.results, "cluster-nodes")


RATIO_SCENARIOS = ("idle-crowd", "cluster-nodes")


def add_ratios(results, scenario):
    """ratio_vs_first: deliveries/s over the same server's first row of the
    scenario (idle-crowd: no idle connections; cluster-nodes: fewest nodes)."""
    base = {}
    for r in [r for r in results if r["scenario"] == scenario]:
        base.setdefault(r["server"], r.get("deliveries_per_s"))
        ref, d = base[r["server"]], r.get("deliveries_per_s")
        r["ratio_vs_first"] = d / ref if ref and d is not None else None


SCENARIOS = {
    "fanout": sc_fanout, "channels": sc_channels, "latency": sc_latency,
    "idle-crowd": sc_idle_crowd, "idle-memory": sc_idle_memory,
    "connect-storm": sc_connect_storm, "rest": sc_rest, "threads": sc_threads,
    "compression": sc_compression, "compression-memory": sc_compression_memory,
    "streams": sc_streams,
}
# Not part of "all": the backend proxy needs herald-proxy-backend (and the
# proxy's wiring in Herald's connection paths).
OTHER_SCENARIOS = {"proxy-connect": sc_proxy_connect}
# Not part of "all" (which stays the single-node suite): "cluster" runs these.
CLUSTER_SCENARIOS = {
    "cluster-fanout": sc_cluster_fanout, "cluster-latency": sc_cluster_latency,
    "cluster-nodes": sc_cluster_nodes,
}
ALL_SCENARIOS = dict(SCENARIOS, **OTHER_SCENARIOS, **CLUSTER_SCENARIOS)

#---- tables -----------------------------------------------------------------------------

# Per scenario: (header, key, format). "%" formats apply to numbers only.
COLUMNS = {
    "fanout": [("deliveries/s", "deliveries_per_s", "%.0f"),
               ("CPU µs/delivery", "cpu_us_per_delivery", "%.2f"),
               ("p50 ms", "p50_ms", "%.1f"), ("p99 ms", "p99_ms", "%.1f"),
               ("p99.9 ms", "p999_ms", "%.1f"), ("lost", "lost", "%d"), ("dups", "dups", "%d"),
               ("4008", "closes_4008", "%d"), ("RSS MiB", "rss_after_kb", "mib")],
    "channels": [("publications/s", "publications_per_s", "%.0f"),
                 ("deliveries/s", "deliveries_per_s", "%.0f"),
                 ("CPU µs/delivery", "cpu_us_per_delivery", "%.2f"),
                 ("p50 ms", "p50_ms", "%.1f"), ("p99 ms", "p99_ms", "%.1f"),
                 ("lost", "lost", "%d"), ("reordered", "reordered", "%d"), ("dups", "dups", "%d")],
    "latency": [("deliveries", "received", "%d"), ("p50 ms", "p50_ms", "%.2f"),
                ("p99 ms", "p99_ms", "%.2f"), ("p99.9 ms", "p999_ms", "%.2f"),
                ("max ms", "max_ms", "%.2f"), ("CPU µs/delivery", "cpu_us_per_delivery", "%.2f"),
                ("lost", "lost", "%d")],
    "idle-crowd": [("idle ready", "idle_ready", "%d"), ("deliveries/s", "deliveries_per_s", "%.0f"),
                   ("ratio", "ratio_vs_first", "%.3f"),
                   ("CPU µs/delivery", "cpu_us_per_delivery", "%.2f"),
                   ("p99 ms", "p99_ms", "%.1f"), ("lost", "lost", "%d"),
                   ("idle closed", "idle_closed", "%d"), ("RSS MiB", "rss_after_kb", "mib")],
    "idle-memory": [("ready", "idle_ready", "%d"), ("failed", "idle_failed", "%d"),
                    ("RSS before MiB", "rss_before_kb", "mib"),
                    ("RSS after MiB", "rss_after_kb", "mib"),
                    ("bytes/conn", "rss_per_conn_bytes", "%.0f"),
                    ("connects/s", "connect_per_s", "%.0f")],
    "connect-storm": [("ready", "conns_ready", "%d"), ("failed", "conns_failed", "%d"),
                      ("connections/s", "connect_per_s", "%.0f"),
                      ("handshake p50 ms", "handshake_p50_ms", "%.1f"),
                      ("handshake p99 ms", "handshake_p99_ms", "%.1f"),
                      ("RSS MiB", "rss_after_kb", "mib")],
    "proxy-connect": [("ready", "conns_ready", "%d"), ("failed", "conns_failed", "%d"),
                      ("connections/s", "connect_per_s", "%.0f"),
                      ("vs jwt", "vs_jwt", "%.2f"),
                      ("handshake p50 ms", "handshake_p50_ms", "%.1f"),
                      ("handshake p99 ms", "handshake_p99_ms", "%.1f"),
                      ("CPU µs/connect", "cpu_us_per_connect", "%.1f"),
                      ("backend CPU µs/connect", "backend_cpu_us_per_connect", "%.1f"),
                      ("backend calls", "backend_requests", "%d"),
                      ("backend conns", "backend_connections", "%d"),
                      ("RSS MiB", "rss_after_kb", "mib")],
    "rest": [("publishes/s", "publications_per_s", "%.0f"),
             ("CPU µs/publish", "cpu_us_per_publication", "%.2f"),
             ("ack p50 ms", "ack_p50_ms", "%.2f"), ("ack p99 ms", "ack_p99_ms", "%.2f"),
             ("acked", "acked", "%d"), ("reconnects", "reconnects", "%d"), ("lost", "lost", "%d"),
             ("dups", "dups", "%d"), ("stalled", "stalled", "flag")],
    "cluster-fanout": [("deliveries/s", "deliveries_per_s", "%.0f"),
                       ("CPU µs/delivery", "cpu_us_per_delivery", "%.2f"),
                       ("of which Redis", "redis_cpu_us_per_delivery", "%.2f"),
                       ("p50 ms", "p50_ms", "%.1f"), ("p99 ms", "p99_ms", "%.1f"),
                       ("publications/s", "publications_per_s", "%.0f"),
                       ("lost", "lost", "%d"), ("dups", "dups", "%d"),
                       ("reordered", "reordered", "%d"), ("4008", "closes_4008", "%d")],
    "cluster-latency": [("deliveries", "received", "%d"), ("p50 ms", "p50_ms", "%.2f"),
                        ("p99 ms", "p99_ms", "%.2f"), ("p99.9 ms", "p999_ms", "%.2f"),
                        ("max ms", "max_ms", "%.2f"),
                        ("CPU µs/delivery", "cpu_us_per_delivery", "%.2f"),
                        ("of which Redis", "redis_cpu_us_per_delivery", "%.2f"),
                        ("lost", "lost", "%d")],
    "cluster-nodes": [("deliveries/s", "deliveries_per_s", "%.0f"),
                      ("ratio", "ratio_vs_first", "%.2f"),
                      ("CPU µs/delivery", "cpu_us_per_delivery", "%.2f"),
                      ("of which Redis", "redis_cpu_us_per_delivery", "%.2f"),
                      ("p50 ms", "p50_ms", "%.1f"), ("p99 ms", "p99_ms", "%.1f"),
                      ("lost", "lost", "%d"), ("RSS MiB", "rss_after_kb", "mib")],
    "compression": [("deliveries/s", "deliveries_per_s", "%.0f"),
                    ("CPU µs/delivery", "cpu_us_per_delivery", "%.2f"),
                    ("CPU vs plain", "cpu_vs_plain", "%.2f"),
                    ("wire B/delivery", "wire_per_delivery", "%.0f"),
                    ("compressed %", "deflated_pct", "%.0f"),
                    ("deflates/publication", "deflates_per_publication", "%.2f"),
                    ("p99 ms", "p99_ms", "%.1f"), ("lost", "lost", "%d"),
                    ("RSS MiB", "rss_after_kb", "mib")],
    "streams": [("deliveries/s", "deliveries_per_s", "%.0f"),
                ("CPU µs/delivery", "cpu_us_per_delivery", "%.2f"),
                ("CPU vs ws", "cpu_vs_ws", "%.2f"),
                ("wire B/delivery", "wire_per_delivery", "%.0f"),
                ("p50 ms", "p50_ms", "%.1f"), ("p99 ms", "p99_ms", "%.1f"),
                ("lost", "lost", "%d"), ("dups", "dups", "%d"), ("4008", "closes_4008", "%d"),
                ("RSS MiB", "rss_after_kb", "mib")],
    "compression-memory": [("ready", "idle_ready", "%d"),
                           ("negotiated", "idle_deflate_conns", "%d"),
                           ("RSS before MiB", "rss_before_kb", "mib"),
                           ("RSS after MiB", "rss_after_kb", "mib"),
                           ("bytes/conn", "rss_per_conn_bytes", "%.0f")],
    "threads": [("deliveries/s", "deliveries_per_s", "%.0f"),
                ("CPU µs/delivery", "cpu_us_per_delivery", "%.2f"),
                ("server CPU s", "server_cpu_s", "%.2f"),
                ("p99 ms", "p99_ms", "%.1f"), ("lost", "lost", "%d")],
}


def fmt_num(v, f="%.6g"):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if f == "mib":
        return "%.1f" % (v / 1024.0)
    if f == "flag":
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return f % v
    return str(v)


def table_rows(scenario):
    return [r for r in RESULTS if r["scenario"] == scenario]


def cells(row, cols):
    if "error" in row:
        return ["error"] + [""] * (len(cols) - 1)
    return [fmt_num(row.get(k), f) for _, k, f in cols]


def text_table(scenario):
    cols = COLUMNS[scenario]
    head = ["variant", "server"] + [h for h, _, _ in cols]
    body = [[r["variant"], r["server"]] + cells(r, cols) for r in table_rows(scenario)]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda xs: "  ".join(x.ljust(w) if i < 2 else x.rjust(w)
                                for i, (x, w) in enumerate(zip(xs, widths)))
    notes = ["  note (%s, %s): %s" % (r["server"], r["variant"], n)
             for r in table_rows(scenario) for n in r["notes"]]
    return "\n".join(["== %s ==" % scenario, line(head)] + [line(b) for b in body] + notes)


def md_table(scenario):
    cols = COLUMNS[scenario]
    head = ["variant", "server"] + [h for h, _, _ in cols]
    out = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * len(cols)]
    for r in table_rows(scenario):
        out.append("| " + " | ".join([r["variant"], r["server"]] + cells(r, cols)) + " |")
    notes = ["- %s, %s: %s" % (r["server"], r["variant"], n.replace("\n", " "))
             for r in table_rows(scenario) for n in r["notes"]]
    return "\n".join(out + ([""] + notes if notes else []))


#---- docs/benchmarks.md --------------------------------------------------------------------

def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            model = m.group(1) if m else ""
    except OSError:
        pass
    return "%d CPUs (nproc), %s, Linux %s" % (os.cpu_count(), model, platform.release())


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


LOADAVG = {}  # scenario -> (before, after): the machine is shared


def scenario_block(scenario, argv, herald, when=None, rendered=None):
    when = when or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    la = LOADAVG.get(scenario)
    return "\n".join([
        "<!-- bench:%s -->" % scenario,
        "### %s" % scenario, "",
        "- command: `python3 bench/run.py %s`" % " ".join(argv),
        "- herald: `%s`; machine: %s; %s" % (herald, machine(), when)] +
        (["- load average (1, 5, 15 min) before / after: %s / %s" % tuple(la)] if la else []) +
        (["- tables rendered from that run's JSON: `python3 bench/run.py %s`" % rendered]
         if rendered else []) + [""] + [
        md_table(scenario),
        "<!-- /bench:%s -->" % scenario])


def write_section(path, scenarios, argv, herald, when=None, rendered=None):
    """Replaces each scenario's block inside the marked section of path,
    keeping the other blocks and everything outside the markers."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if SECTION_BEGIN not in text:
        text = text.rstrip() + "\n\n## Herald vs. reference server (bench/run.py)\n\n" + \
            "Generated by `bench/run.py --write`; see `bench/README.md` for the meaning of " + \
            "each column.\n\n" + SECTION_BEGIN + "\n" + SECTION_END + "\n"
    head, rest = text.split(SECTION_BEGIN, 1)
    body, tail = rest.split(SECTION_END, 1)
    blocks = {m.group(1): m.group(0) for m in
              re.finditer(r"<!-- bench:([\w-]+) -->\n.*?<!-- /bench:\1 -->", body, re.S)}
    for s in scenarios:
        blocks[s] = scenario_block(s, argv, herald, when, rendered)
    ordered = [blocks[s] for s in ALL_SCENARIOS if s in blocks]
    with open(path, "w") as f:
        f.write(head + SECTION_BEGIN + "\n" + "\n\n".join(ordered) + "\n" + SECTION_END + tail)


#---- binaries --------------------------------------------------------------------------------

def find_tools(bin_dir):
    """herald-loadgen, herald-refserver and herald-proxy-backend: --bin-dir,
    the top-level build, or a standalone build of bench/ made here on first use."""
    names = ("herald-loadgen", "herald-refserver", "herald-proxy-backend")
    for d in [bin_dir, os.path.join(REPO, "build", "bench"), STANDALONE_BUILD]:
        if d and all(os.access(os.path.join(d, n), os.X_OK) for n in names):
            return [os.path.join(d, n) for n in names]
    if bin_dir:
        sys.exit("run.py: no herald-loadgen/herald-refserver/herald-proxy-backend in %s" % bin_dir)
    log("building bench tools in %s" % STANDALONE_BUILD)
    subprocess.run(["cmake", "-S", HERE, "-B", STANDALONE_BUILD, "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", STANDALONE_BUILD, "-j2"], check=True,
                   stdout=subprocess.DEVNULL)
    return [os.path.join(STANDALONE_BUILD, n) for n in names]


#---- main ---------------------------------------------------------------------------------------

RESULTS = []


def doc_parser(doc):
    """An ArgumentParser whose description is doc's first paragraph and
    whose epilog is the rest, as written (a script's __doc__)."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=doc.split("\n\n", 1)[1])


def parse_args(argv):
    ap = doc_parser(__doc__)
    ap.add_argument("scenario", nargs="?", choices=list(ALL_SCENARIOS) + ["all", "cluster"])
    ap.add_argument("--render", metavar="JSON",
                    help="run nothing: print (and --write) the tables of a --json file again, "
                    "medians recomputed from its runs")
    ap.add_argument("--herald", default=DEFAULT_HERALD,
                    help="Herald binary (this checkout's build/herald)")
    ap.add_argument("--herald-base", metavar="PATH",
                    help="another Herald build, compared in the same run as the server "
                         "herald-base (--servers herald,herald-base,... or --cluster-servers "
                         "herald,herald-base,...), its rows interleaved with Herald's")
    ap.add_argument("--herald-prefix", metavar="CMD", type=shlex.split,
                    help='start Herald under CMD, e.g. "perf record -q -g -o fan.data --"')
    ap.add_argument("--bin-dir", help="directory of herald-loadgen and herald-refserver")
    ap.add_argument("--servers", default="herald,refserver", help="which servers (%(default)s)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row; medians are reported")
    ap.add_argument("--herald-threads", type=int, default=1, help="HERALD_THREADS (%(default)s)")
    ap.add_argument("--log-level", default="warn", help="HERALD_LOG_LEVEL (%(default)s)")
    ap.add_argument("--subs", type=int, help="subscribers")
    ap.add_argument("--pubs", type=int, help="publications (total)")
    ap.add_argument("--publishers", type=int, help="publisher connections")
    ap.add_argument("--channels", type=int, help="channels scenario: channels")
    ap.add_argument("--window", type=int,
                    help="publications in flight per publisher (default: ~16,000 deliveries)")
    ap.add_argument("--size", type=int, default=100, help="payload data bytes")
    ap.add_argument("--rate", type=float, help="latency: publications/s")
    ap.add_argument("--duration", type=float, help="publishing time (latency), or its cap")
    ap.add_argument("--idle", help="idle-crowd: idle counts, comma-separated; idle-memory: count")
    ap.add_argument("--conns", dest="conns_n", type=int,
                    help="connect-storm, proxy-connect: connections")
    ap.add_argument("--concurrency", type=int,
                    help="connect-storm, proxy-connect: handshakes in flight")
    ap.add_argument("--rest-conns", help="rest: connection counts (1,4)")
    ap.add_argument("--rest-windows", help="rest: pipelining windows (1,16)")
    ap.add_argument("--thread-counts", help="threads: HERALD_THREADS values (1,2)")
    ap.add_argument("--timeout", type=int, default=240, help="per loadgen run, seconds")
    ap.add_argument("--cluster-servers",
                    help="cluster scenarios: herald,nchan,nchan-nostore (cluster-nodes: herald); "
                         "also herald-rcluster (Herald on a 3-master Redis Cluster)")
    ap.add_argument("--via", help="cluster-fanout: publish through node 1, both, or node 2 "
                    "(one,both,second; default one,both)")
    ap.add_argument("--node-counts", help="cluster-nodes: node counts (1,2,3)")
    ap.add_argument("--settle-ms", type=int, default=500,
                    help="cluster: pause after the last subscription before publishing (%(default)s)")
    ap.add_argument("--redis-server", default=DEFAULT_REDIS, help="redis-server (%(default)s)")
    ap.add_argument("--nginx", default=DEFAULT_NGINX,
                    help="nginx with libnginx-mod-nchan, for nchan (%(default)s)")
    ap.add_argument("--json", metavar="FILE", help="also write every result to FILE")
    ap.add_argument("--write", metavar="FILE", help="update FILE's bench/run.py section")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    # every path means what it means where run.py was started (servers run
    # in their own temporary directories)
    for k in ("herald", "herald_base", "bin_dir", "redis_server", "nginx", "json", "write",
              "render"):
        v = getattr(a, k)
        if v and (k in ("json", "write", "render") or os.sep in v or os.path.exists(v)):
            setattr(a, k, os.path.abspath(v))
        elif v:
            setattr(a, k, shutil.which(v) or os.path.abspath(v))
    return a


def render(a, argv):
    """Tables (and --write) from a saved --json file, with the current rules
    (medians, worst failure counts, ratios) applied to its raw runs."""
    with open(a.render) as f:
        doc = json.load(f)
    for row in doc["results"]:
        if row.get("runs"):
            row.update(median_row(row["runs"]))
    names = []
    for row in doc["results"]:
        if row["scenario"] not in names:
            names.append(row["scenario"])
    for s in RATIO_SCENARIOS:
        add_ratios(doc["results"], s)
    add_cpu_ratios(doc["results"], "compression")
    add_cpu_vs_ws(doc["results"], "streams")
    RESULTS[:] = doc["results"]
    LOADAVG.update(doc.get("loadavg", {}))
    for name in names:
        print(text_table(name) + "\n")
    if a.write:
        write_section(a.write, names, doc["argv"], doc["herald"], doc.get("when"),
                      " ".join(argv))
        log("updated %s" % a.write)


def main(argv):
    global VERBOSE
    a = parse_args(argv)
    VERBOSE = a.verbose
    if a.render:
        return render(a, argv)
    if not a.scenario:
        sys.exit("run.py: name a scenario (or --render JSON)")
    if a.repeat < 1 or a.repeat > 20:
        sys.exit("run.py: --repeat must be 1..20")
    names = list(SCENARIOS) if a.scenario == "all" else \
        list(CLUSTER_SCENARIOS) if a.scenario == "cluster" else [a.scenario]
    cluster = any(n in CLUSTER_SCENARIOS for n in names)
    kinds = (a.cluster_servers or "herald,nchan,nchan-nostore").split(",") if cluster else []
    if ("herald" in a.servers or "herald" in kinds) and not os.access(a.herald, os.X_OK):
        sys.exit("run.py: Herald binary %s not found: build it (cmake -S . -B build && "
                 "cmake --build build) or give --herald PATH" % a.herald)
    if "herald-base" in a.servers.split(",") + kinds and \
            not (a.herald_base and os.access(a.herald_base, os.X_OK)):
        sys.exit("run.py: the server herald-base needs --herald-base PATH (a binary)")
    if cluster and not os.access(a.redis_server, os.X_OK):
        sys.exit("run.py: %s not found: apt-get install redis-server" % a.redis_server)
    if any(k.startswith("nchan") for k in kinds) and a.scenario != "cluster-nodes" and \
            not (os.access(a.nginx, os.X_OK) and os.path.exists(NCHAN_MODULE)):
        sys.exit("run.py: nchan needs %s and %s: apt-get install nginx libnginx-mod-nchan "
                 "(or --cluster-servers herald)" % (a.nginx, NCHAN_MODULE))
    loadgen_bin, refserver_bin, proxy_backend_bin = find_tools(a.bin_dir)
    bench = Bench(a, loadgen_bin, refserver_bin)
    bench.proxy_backend_bin = proxy_backend_bin
    bench.results = RESULTS
    for name in names:
        before = loadavg()
        ALL_SCENARIOS[name](bench)
        LOADAVG[name] = (before, loadavg())
    print()
    for name in names:
        print(text_table(name) + "\n")
    doc = {"herald": a.herald, "herald_base": a.herald_base, "machine": machine(), "argv": argv,
           "results": RESULTS,
           "loadavg": LOADAVG,
           "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    print(json.dumps(doc, separators=(",", ":")))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
    failed = [r for r in RESULTS if r.get("failed")]
    if failed:
        for r in failed:
            log("FAILED %s %s (%s): %s" % (r["scenario"], r["variant"], r["server"], r["failed"]))
        sys.exit("run.py: %d row(s) failed%s" % (len(failed), ": %s not updated" % a.write
                                                    if a.write else ""))
    if a.write:
        write_section(a.write, names, argv, a.herald)
        log("updated %s" % a.write)


if __name__ == "__main__":
    main(sys.argv[1:])
