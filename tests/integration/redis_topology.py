"""redis_topology.py - throwaway Redis high-availability setups for tests.

Pieces (no tests here; every process listens on a free loopback port, keeps
its files in a temporary directory and is killed when the fixture stops):

  RedisNode     one redis-server (or sentinel) process, with a small
                synchronous RESP2 client (`node.cmd(...)`) that
                authenticates when the node has a password.
  SentinelSet   one master, N replicas, M sentinels monitoring the master
                (`sentinel monitor`, down-after-milliseconds 1000 by
                default). `kill_master()` SIGKILLs the master;
                `wait_failover(old)` waits until every sentinel names a new
                master and that node says ROLE master. `url()` is the
                redis+sentinel:// URL Herald takes.
  RedisCluster  a Redis Cluster of M masters with R replicas each, built with
                `redis-cli --cluster create ... --cluster-replicas R
                --cluster-yes` on ports <= 55535 (each node also binds its
                bus port, port + 10000). Helpers for CLUSTER FAILOVER, a
                SIGKILLed master and migrating a slot by hand (SETSLOT
                IMPORTING / MIGRATING, MIGRATE, SETSLOT NODE), so tests can
                hold a slot half-migrated while clients get ASK.
  FakeRedis     a RESP server answering what a test tells it to (a lying
                sentinel, a node sending garbage).
  TopoProbe     runs tests/redis/redis_topo_probe (the channel layer's HA
                modules in a process of their own) and collects its events.

Debian ships no separate redis-sentinel binary unless the redis-sentinel
package is installed; `redis-server CONF --sentinel` is the same code path,
so the fixture uses redis-sentinel when present and that otherwise.

Everything waits for the event it needs (a role, a known replica, a cluster
state), never a fixed time, with generous upper bounds: CI runs on a busy
2-core machine.
"""

import json
import os
import shutil
import signal
import socketserver
import subprocess
import tempfile
import threading
import time

import ports
from harness import RedisError as RespError, RespConn as Conn, free_port, stop_process, wait_until

REDIS_SERVER = os.environ.get("REDIS_SERVER") or "/usr/bin/redis-server"
REDIS_CLI = os.environ.get("REDIS_CLI") or "/usr/bin/redis-cli"
# The last port whose cluster bus port (port + 10000) still exists.
CLUSTER_PORT_MAX = 55535


def free_cluster_port(taken=()):
    """A free loopback port <= 55535 whose bus port (+10000) is free too."""
    for _ in range(1000):
        p = free_port()
        if p <= CLUSTER_PORT_MAX and p not in taken and p + 10000 not in taken \
                and ports.reserve_exact(p + 10000):
            return p
        ports.release_port(p)
    # the kernel's ephemeral range may lie mostly above 55535: probe below it
    for _ in range(1000):
        p = 20000 + int.from_bytes(os.urandom(2), "big") % (CLUSTER_PORT_MAX - 20000)
        if p not in taken and p + 10000 not in taken and ports.reserve_exact(p):
            if ports.reserve_exact(p + 10000):
                return p
            ports.release_port(p)
    raise AssertionError("no free port pair for a cluster node")


def info_fields(text):
    """INFO's text as a dict."""
    out = {}
    for line in (text or "").splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


class RedisNode:
    """One redis-server process. `sentinel=True` runs it as a sentinel (its
    config file is written by the fixture and rewritten by the sentinel)."""

    def __init__(self, port=None, args=(), password=None, user=None, sentinel=False,
                 conf_lines=(), dir=None, name="redis"):
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.args = list(args)
        self.password = password
        self.user = user
        self.sentinel = sentinel
        self.conf_lines = list(conf_lines)
        self.own_dir = dir is None
        self.dir = dir or tempfile.mkdtemp(prefix="herald-%s-" % name)
        self.name = name
        self.proc = None
        self._conn = None
        self._log = None

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def _command(self):
        conf = os.path.join(self.dir, "%s-%d.conf" % (self.name, self.port))
        if not os.path.exists(conf):  # a restarted sentinel keeps what it rewrote
            with open(conf, "w") as f:
                f.write("port %d\nbind 127.0.0.1\ndir %s\n" % (self.port, self.dir))
                if not self.sentinel:
                    f.write('save ""\nappendonly no\n')
                if self.password is not None:
                    f.write("requirepass %s\n" % self.password)
                for line in self.conf_lines:
                    f.write(line + "\n")
        if self.sentinel:
            sentinel_bin = shutil.which("redis-sentinel")
            if sentinel_bin:
                return [sentinel_bin, conf] + self.args
            return [REDIS_SERVER, conf, "--sentinel"] + self.args
        return [REDIS_SERVER, conf, "--daemonize", "no"] + self.args

    def start(self, timeout=15.0):
        self._log = open(os.path.join(self.dir, "%s-%d.log" % (self.name, self.port)), "ab")
        self.proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)

        def answers():
            if self.proc.poll() is not None:
                raise AssertionError("%s on port %d exited with %s: %s" %
                                     (self.name, self.port, self.proc.returncode, self.log()))
            try:
                return self.cmd("PING") == "PONG"
            except (OSError, RespError):
                self.drop()
                return False

        wait_until(answers, timeout, what="%s on port %d to answer PING" % (self.name, self.port))
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self, limit=3000):
        try:
            with open(os.path.join(self.dir, "%s-%d.log" % (self.name, self.port)), "rb") as f:
                return f.read().decode("utf-8", "replace")[-limit:]
        except OSError:
            return ""

    def drop(self):
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def connect(self, timeout=5.0):
        """A new connection of the test's own (authenticated)."""
        return Conn(self.port, password=self.password, user=self.user, timeout=timeout)

    def cmd(self, *args):
        """One command on the fixture's connection; reconnects after a drop."""
        if self._conn is None:
            self._conn = self.connect()
        try:
            return self._conn.cmd(*args)
        except (OSError, ConnectionError):
            self.drop()
            raise

    def kill(self, sig=signal.SIGKILL):
        """Kills the process (SIGKILL by default: no shutdown, no goodbye)."""
        self.drop()
        if self.running():
            self.proc.send_signal(sig)
            self.proc.wait(10)
        if self._log:
            self._log.close()
            self._log = None

    def stop(self):
        self.drop()
        stop_process(self.proc)
        if self._log:
            self._log.close()
            self._log = None
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def role(self):
        """ROLE's first element ("master", "slave", "sentinel"), or None when
        the node does not answer."""
        try:
            return self.cmd("ROLE")[0]
        except (OSError, RespError):
            return None


class _Topology:
    """Several redis-server processes started together: start() runs the
    subclass' _start and stops everything already started when it fails;
    a context manager."""

    def start(self, timeout=60.0):
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


class SentinelSet(_Topology):
    """`with SentinelSet() as s:` one master, `replicas` replicas and
    `sentinels` sentinels (quorum = majority) monitoring it as `name`.

    password: the data nodes' requirepass (and masterauth, auth-pass);
    sentinel_password: the sentinels' own requirepass (and sentinel-pass,
    with which they talk to each other)."""

    def __init__(self, name="mymaster", replicas=1, sentinels=3, password=None,
                 sentinel_password=None, down_after_ms=1000, failover_timeout_ms=10000):
        self.name = name
        self.password = password
        self.sentinel_password = sentinel_password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.dir = tempfile.mkdtemp(prefix="herald-sentinel-")
        auth = ["masterauth %s" % password] if password is not None else []
        self.nodes = [RedisNode(password=password, conf_lines=auth, dir=self.dir, name="redis")
                      for _ in range(1 + replicas)]
        self.sentinels = []
        for _ in range(sentinels):
            lines = []
            self.sentinels.append(RedisNode(password=sentinel_password, sentinel=True,
                                            conf_lines=lines, dir=self.dir, name="sentinel"))
        self.quorum = sentinels // 2 + 1

    def start(self, timeout=30.0):
        return super().start(timeout)

    def _start(self, timeout):
        master = self.nodes[0]
        master.start()
        for r in self.nodes[1:]:
            r.conf_lines.append("replicaof 127.0.0.1 %d" % master.port)
            r.start()
        for r in self.nodes[1:]:
            wait_until(lambda: info_fields(r.cmd("INFO", "replication")).get(
                "master_link_status") == "up", timeout, what="replica %d in sync" % r.port)
        for s in self.sentinels:
            s.conf_lines += [
                "sentinel monitor %s 127.0.0.1 %d %d" % (self.name, master.port, self.quorum),
                "sentinel down-after-milliseconds %s %d" % (self.name, self.down_after_ms),
                "sentinel failover-timeout %s %d" % (self.name, self.failover_timeout_ms),
                "sentinel parallel-syncs %s 1" % self.name,
            ]
            if self.password is not None:
                s.conf_lines.append("sentinel auth-pass %s %s" % (self.name, self.password))
            if self.sentinel_password is not None:
                s.conf_lines.append("sentinel sentinel-pass %s" % self.sentinel_password)
            s.start()
        self.wait_discovered(timeout)

    def wait_discovered(self, timeout=30.0):
        """Until every sentinel knows every replica and every other sentinel:
        before that a failover cannot be agreed on."""
        want_replicas = len(self.nodes) - 1
        for s in self.sentinels:
            if not s.running():
                continue
            wait_until(lambda: len(s.cmd("SENTINEL", "REPLICAS", self.name)) >= want_replicas,
                       timeout, what="sentinel %d to know the replicas" % s.port)
            wait_until(lambda: len(s.cmd("SENTINEL", "SENTINELS", self.name)) >=
                       len(self.sentinels) - 1, timeout,
                       what="sentinel %d to know the other sentinels" % s.port)

    def stop(self):
        for n in self.sentinels + self.nodes:
            n.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def node_at(self, port):
        for n in self.nodes:
            if n.port == int(port):
                return n
        raise AssertionError("no node on port %s" % port)

    def master_addr(self, sentinel=None):
        """(host, port) the given (or first live) sentinel names, or None."""
        for s in [sentinel] if sentinel else self.sentinels:
            if not s.running():
                continue
            try:
                a = s.cmd("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
            except (OSError, RespError):
                continue
            if a:
                return a[0], int(a[1])
        return None

    def master(self):
        """The node every live sentinel names and that says ROLE master."""
        addr = self.master_addr()
        return self.node_at(addr[1]) if addr else None

    def url(self, with_password=True):
        cred = ":%s@" % self.password if with_password and self.password is not None else ""
        return "redis+sentinel://%s%s/%s" % (
            cred, ",".join(s.addr for s in self.sentinels), self.name)

    def kill_master(self):
        """SIGKILLs the current master; returns it (for wait_failover)."""
        m = self.master()
        m.kill()
        return m

    def wait_failover(self, old, timeout=60.0):
        """Until every live sentinel names the same master other than `old`
        and that node says ROLE master. Returns the new master node."""

        def agreed():
            addrs = {self.master_addr(s) for s in self.sentinels if s.running()}
            if len(addrs) != 1:
                return None
            addr = addrs.pop()
            if addr is None or addr[1] == old.port:
                return None
            node = self.node_at(addr[1])
            return node if node.role() == "master" else None

        return wait_until(agreed, timeout, interval=0.1, what="the sentinels' failover")


class RedisCluster(_Topology):
    """`with RedisCluster() as c:` a cluster of `masters` masters with
    `replicas` replicas each, built by redis-cli --cluster create."""

    def __init__(self, masters=3, replicas=1, password=None, node_timeout_ms=2000):
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="herald-cluster-")
        self.nodes = []
        taken = set()
        for i in range(masters * (1 + replicas)):
            port = free_cluster_port(taken)
            taken |= {port, port + 10000}
            d = os.path.join(self.dir, str(port))
            os.mkdir(d)
            lines = ["cluster-enabled yes", "cluster-config-file nodes.conf",
                     "cluster-node-timeout %d" % node_timeout_ms,
                     # a test kills masters: the others keep serving their slots
                     "cluster-require-full-coverage no",
                     "cluster-allow-pubsubshard-when-down yes"]
            if password is not None:
                lines.append("masterauth %s" % password)
            self.nodes.append(RedisNode(port=port, password=password, conf_lines=lines, dir=d,
                                        name="cluster"))
        self.nmasters = masters
        self.replicas = replicas


    def _start(self, timeout):
        for n in self.nodes:
            n.start()
        cli = [REDIS_CLI]
        if self.password is not None:
            cli += ["-a", self.password, "--no-auth-warning"]
        out = subprocess.run(
            cli + ["--cluster", "create"] + [n.addr for n in self.nodes] +
            ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        if out.returncode != 0:
            raise AssertionError("redis-cli --cluster create failed: %s %s" %
                                 (out.stdout.decode()[-2000:], out.stderr.decode()[-2000:]))
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout=60.0):
        """Until every live node says cluster_state:ok, sees every live node
        as connected and agrees on the masters of every slot."""

        def healthy():
            live = [n for n in self.nodes if n.running()]
            views = set()
            for n in live:
                try:
                    if info_fields(n.cmd("CLUSTER", "INFO")).get("cluster_state") != "ok":
                        return False
                    lines = n.cmd("CLUSTER", "NODES").splitlines()
                except (OSError, RespError):
                    return False
                connected = [l for l in lines if " connected" in l and "fail" not in l.split()[2]]
                if len(connected) < len(live):
                    return False
                # replicas show up a moment after cluster_state:ok
                replicas = [l for l in connected if "slave" in l.split()[2]]
                if len(replicas) < len(live) - self.nmasters:
                    return False
                slots = n.cmd("CLUSTER", "SLOTS")
                # CLUSTER SLOTS lists a replica once it has synced
                masters = {s[2][1] for s in slots}
                synced = {e[1] for s in slots for e in s[3:]}
                if len(masters) + len(synced) < len(live):
                    return False
                views.add(tuple(sorted((s[0], s[1], s[2][1]) for s in slots)))
            return len(views) == 1

        wait_until(healthy, timeout, interval=0.1, what="the cluster to be healthy")
        return self

    def _owners(self, node):
        return [(s[0], s[1], s[2][1]) for s in node.cmd("CLUSTER", "SLOTS")]

    def stop(self):
        for n in self.nodes:
            n.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, with_password=True):
        cred = ":%s@" % self.password if with_password and self.password is not None else ""
        return "redis+cluster://%s%s" % (cred, ",".join(n.addr for n in self.nodes[:3]))

    def any_node(self):
        for n in self.nodes:
            if n.running():
                return n
        raise AssertionError("no cluster node is running")

    def node_at(self, port):
        for n in self.nodes:
            if n.port == int(port):
                return n
        raise AssertionError("no node on port %s" % port)

    def node_id(self, node):
        return node.cmd("CLUSTER", "MYID")

    def keyslot(self, key):
        return self.any_node().cmd("CLUSTER", "KEYSLOT", key)

    def masters(self):
        """The live masters, as the first live node sees them."""
        out = []
        for line in self.any_node().cmd("CLUSTER", "NODES").splitlines():
            f = line.split()
            if "master" in f[2].split(",") and "fail" not in f[2]:
                port = int(f[1].split("@")[0].rsplit(":", 1)[1])
                n = self.node_at(port)
                if n.running():
                    out.append(n)
        return out

    def owner(self, slot):
        """The node serving `slot` (by CLUSTER SLOTS of a live node)."""
        for s in self.any_node().cmd("CLUSTER", "SLOTS"):
            if s[0] <= slot <= s[1]:
                return self.node_at(s[2][1])
        raise AssertionError("slot %d is not served" % slot)

    def replica_of(self, master):
        mid = self.node_id(master)
        for line in self.any_node().cmd("CLUSTER", "NODES").splitlines():
            f = line.split()
            if f[3] == mid and "slave" in f[2]:
                n = self.node_at(int(f[1].split("@")[0].rsplit(":", 1)[1]))
                if n.running():
                    return n
        raise AssertionError("master %d has no live replica" % master.port)

    def failover(self, replica, timeout=30.0):
        """CLUSTER FAILOVER on `replica` (a manual, coordinated failover): it
        becomes master of its master's slots."""
        replica.cmd("CLUSTER", "FAILOVER")
        wait_until(lambda: replica.role() == "master", timeout, interval=0.1,
                   what="replica %d to become master" % replica.port)
        return self.wait_healthy(timeout)

    def kill_master(self, master, timeout=60.0):
        """SIGKILLs `master` and waits until its replica has taken over and
        every live node agrees. Returns the new master."""
        replica = self.replica_of(master)
        master.kill()
        wait_until(lambda: replica.role() == "master", timeout, interval=0.1,
                   what="replica %d to be promoted" % replica.port)
        self._wait_agree(timeout)
        return replica

    def _wait_agree(self, timeout):
        def agree():
            views = set()
            for n in self.nodes:
                if not n.running():
                    continue
                try:
                    if info_fields(n.cmd("CLUSTER", "INFO")).get("cluster_state") != "ok":
                        return False
                    views.add(tuple(sorted(self._owners(n))))
                except (OSError, RespError):
                    return False
            return len(views) == 1

        wait_until(agree, timeout, interval=0.1, what="the live nodes to agree on the slots")

    # -- slot migration by hand (what redis-cli --cluster reshard does) --

    def begin_migration(self, slot, src, dst):
        """Marks `slot` IMPORTING on dst and MIGRATING on src: from now on
        src answers ASK for keys of the slot it no longer holds."""
        dst.cmd("CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(src))
        src.cmd("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(dst))

    def move_keys(self, slot, src, dst, batch=100):
        """MIGRATEs every key of `slot` from src to dst. Returns how many."""
        moved = 0
        while True:
            keys = src.cmd("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                return moved
            args = ["MIGRATE", dst.host, dst.port, "", 0, 5000]
            if self.password is not None:
                args += ["AUTH", self.password]
            src.cmd(*(args + ["KEYS"] + keys))
            moved += len(keys)

    def finish_migration(self, slot, src, dst, timeout=30.0):
        """Assigns `slot` to dst on every master (dst first, as redis-cli
        does), then waits until every live node agrees."""
        dst_id = self.node_id(dst)
        dst.cmd("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        src.cmd("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        for m in self.masters():
            if m not in (src, dst):
                m.cmd("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        wait_until(lambda: self.owner(slot) is dst, timeout, interval=0.1,
                   what="slot %d to belong to %d" % (slot, dst.port))
        self._wait_agree(timeout)

    def migrate_slot(self, slot, src, dst):
        self.begin_migration(slot, src, dst)
        self.move_keys(slot, src, dst)
        self.finish_migration(slot, src, dst)


def resp_encode(value):
    """Python value -> RESP2 bytes: str/bytes bulk, int integer, None nil,
    list array, RespError error, Status("OK") simple string."""
    if isinstance(value, RespError):
        return b"-%s\r\n" % str(value).encode()
    if isinstance(value, Status):
        return b"+%s\r\n" % str(value).encode()
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, bool):
        raise TypeError("no booleans in RESP2")
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, (list, tuple)):
        return b"*%d\r\n" % len(value) + b"".join(resp_encode(v) for v in value)
    data = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


class Status(str):
    """A simple-string reply (+OK) for resp_encode."""


class FakeRedis:
    """A RESP server on a free loopback port whose answers a test chooses:
    `answer(args)` gets the command as a list of bytes and returns a value
    for resp_encode, raw bytes (sent as they are), None to stay silent, or
    FakeRedis.HANGUP to close the connection. Counts the commands by name
    (upper case) in `seen`."""

    HANGUP = object()

    def __init__(self, answer):
        self.answer = answer
        self.seen = {}
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                while True:
                    try:
                        args = self.read_command()
                    except (ConnectionError, ValueError, OSError):
                        return
                    if args is None:
                        return
                    name = args[0].upper().decode("latin-1")
                    fake.seen[name] = fake.seen.get(name, 0) + 1
                    out = fake.answer(args)
                    if out is FakeRedis.HANGUP:
                        return
                    if out is None:
                        continue
                    try:
                        self.wfile.write(out if isinstance(out, (bytes, bytearray))
                                         else resp_encode(out))
                        self.wfile.flush()
                    except OSError:
                        return

            def read_command(self):
                line = self.rfile.readline()
                if not line:
                    return None
                n = int(line[1:])
                args = []
                for _ in range(n):
                    size = int(self.rfile.readline()[1:])
                    args.append(self.rfile.read(size + 2)[:-2])
                return args

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.addr = "127.0.0.1:%d" % self.port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


class TopoProbe:
    """tests/redis/redis_topo_probe.c: the Redis HA modules of the channel
    layer (channels/redis_topo.h) in a process of their own, driven over
    stdin and reporting what happens as JSON lines on stdout.
    `probe.wait(pred)` waits for an event (a dict) pred accepts."""

    def __init__(self, args):
        bin = os.environ.get("HERALD_REDIS_PROBE")
        if not bin:
            herald = os.environ.get("HERALD_BIN") or "/work/main/build/herald"
            bin = os.path.join(os.path.dirname(herald), "tests", "redis_topo_probe")
        self.errlog = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([bin] + [str(a) for a in args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.errlog)
        self.events = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            try:
                ev = json.loads(raw)
            except ValueError:
                ev = {"event": "garbage", "line": raw.decode("utf-8", "replace")}
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()
        with self.cond:
            self.events.append({"event": "exit"})
            self.cond.notify_all()

    def send(self, cmd):
        line = cmd if isinstance(cmd, str) else json.dumps(cmd)
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def mark(self):
        """An index: wait(..., since=mark) only looks at later events."""
        with self.cond:
            return len(self.events)

    def wait(self, pred, timeout=30.0, since=0, what="an event"):
        deadline = time.monotonic() + timeout
        i = since
        with self.cond:
            while True:
                while i < len(self.events):
                    ev = self.events[i]
                    i += 1
                    if pred(ev):
                        return ev
                    if ev.get("event") == "exit":
                        raise AssertionError("the probe exited waiting for %s: %s" %
                                             (what, self.stderr()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out after %.0fs waiting for %s; last events: %s"
                                         % (timeout, what, self.events[-8:]))
                self.cond.wait(left)

    def logs(self, since=0):
        with self.cond:
            return [e for e in self.events[since:] if e.get("event") == "log"]

    def stderr(self):
        self.errlog.seek(0)
        return self.errlog.read().decode("utf-8", "replace")[-3000:]

    def close(self, timeout=20.0):
        """Asks the probe to stop; returns its exit status (0: it stopped
        its modules and every libuv handle was closed)."""
        try:
            self.send("quit")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the probe did not stop: %s" % self.stderr())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            try:
                self.close()
            except AssertionError:
                if exc[0] is None:
                    raise
        return False
