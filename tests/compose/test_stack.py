"""test_stack.py - docker-compose.yml run for real (CTest: compose/stack, label compose).

What it does, in order:
  engine    uses the Docker engine that DOCKER_HOST or the default socket
            names; when none answers it starts its own dockerd (Debian's
            docker.io) with a socket, exec root and data root of its own
            (DOCKERD_DATA_ROOT: images stay cached there between runs) and
            stops it at the end. When no dockerd is installed or it cannot
            start (no cgroups, no overlay or vfs storage, not root), the test
            is SKIPPED (exit status 77, CTest's SKIP_RETURN_CODE) with the
            reason and dockerd's log: never a silent pass.
  images    debian:12 and debian:12-slim (the Dockerfile's bases): used as
            they are when the engine has them; else one is made with
            `debootstrap --variant=minbase bookworm` from the machine's own
            Debian mirror and `docker import`ed under both names (labelled
            org.herald.stand-in; about 30 s, once per data root). No image
            is pulled from a registry. The stack's other images are stand-ins
            built from Debian's packages (tests/compose/images/) under names
            of their own, set by tests/compose/docker-compose.test.yml.
  stack     `docker-compose build` (Herald's image with the repo's
            Dockerfile), then `docker-compose up -d redis herald1 herald2
            nginx prometheus` with the override (open-file limits the engine
            allows, nginx on a free loopback port, a namespace config), and
            waits for every container's health check (nginx's goes through
            itself to a node). Grafana has no Debian package: not started.
  tests     README's "Try it" through nginx (a token from `docker-compose
            exec herald1 herald token`, a WebSocket subscriber on each node,
            the README's REST publication reaching both), history and
            presence across the nodes, Prometheus scraping both nodes, and
            `docker-compose restart herald1` while publications flow into a
            history channel: every acknowledged publication reaches a
            subscriber on each node exactly once and in order (the one on
            herald1 reconnects through nginx and resubscribes with `since`).
  cleanup   `docker-compose down -v` (containers, network, volumes); the
            images stay. A run killed half-way is cleaned up by the next one.

Debian's compose is docker-compose 1.29 (`docker-compose`, not `docker
compose`): the commands are the README's with that spelling. Runs are
serialised by a lock file, so two build trees cannot share a stack. Every
wait is for an event with an upper bound; the whole test is bounded by
DEADLINE_S.
"""

import asyncio
import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import requests
import websockets

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import REPO, client_node, free_port  # noqa: E402

SKIP = 77
DEADLINE_S = 780                # the whole run (CTest's TIMEOUT is 900)
PROJECT = "heraldcomposetest"
OVERRIDE = os.path.join(REPO, "tests", "compose", "docker-compose.test.yml")
SERVICES = ["redis", "herald1", "herald2", "nginx", "prometheus"]
NODES = ("herald1", "herald2")
RUN_DIR = os.environ.get("HERALD_COMPOSE_RUN_DIR", "/run/herald-compose-test")
DATA_ROOT = os.environ.get("DOCKERD_DATA_ROOT", "/var/lib/herald-compose-test")
LOCK = "/tmp/herald-compose-test.lock"
SECRET = "compose-test-secret-0123456789abcdef0123"
API_KEY = "compose-test-key"
T0 = time.monotonic()


def log(msg):
    print("[%5.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


def left(cap):
    """Seconds a step may take: at most `cap`, never past the deadline."""
    return max(1.0, min(cap, DEADLINE_S - (time.monotonic() - T0)))


def skip(reason):
    print("SKIP: compose stack not run: %s" % reason, flush=True)
    sys.exit(SKIP)


def binary(*candidates):
    for c in candidates:
        p = c if os.path.isabs(c) else shutil.which(c)
        if p and os.access(p, os.X_OK):
            return p
    return None


# Debian's client first: /usr/local/bin may hold another, newer one
DOCKER = binary("/usr/bin/docker", "docker")
COMPOSE = binary("/usr/bin/docker-compose", "docker-compose")
DOCKERD = binary(os.environ.get("HERALD_DOCKERD", "/usr/sbin/dockerd"), "dockerd")
DEBOOTSTRAP = binary("/usr/sbin/debootstrap", "debootstrap")


#---- the engine ---------------------------------------------------------------

class Engine:
    """The Docker engine the test talks to; `own` is the dockerd it started."""

    def __init__(self):
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "COMPOSE_"))}
        self.own = None
        self.log_path = os.path.join(RUN_DIR, "dockerd.log")

    def answers(self, timeout=20):
        if DOCKER is None:
            return False
        try:
            p = subprocess.run([DOCKER, "version", "--format", "{{.Server.Version}}"], env=self.env,
                               capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return p.returncode == 0 and p.stdout.strip() != ""

    def start(self):
        """Finds or starts an engine; skips the test when none can run."""
        if DOCKER is None or COMPOSE is None:
            skip("no docker client or docker-compose (./setup.sh deps test installs docker.io and "
                 "docker-compose)")
        if self.answers():
            log("using the running Docker engine (%s)" % (self.env.get("DOCKER_HOST") or "default socket"))
            return
        if self.env.get("DOCKER_HOST"):
            skip("DOCKER_HOST=%s does not answer" % self.env["DOCKER_HOST"])
        if DOCKERD is None:
            skip("no Docker engine runs and dockerd is not installed (./setup.sh deps test installs "
                 "docker.io)")
        if os.geteuid() != 0:
            skip("no Docker engine runs, and starting dockerd needs root")
        os.makedirs(RUN_DIR, exist_ok=True)
        sock = os.path.join(RUN_DIR, "docker.sock")
        self.env["DOCKER_HOST"] = "unix://" + sock
        pidfile = os.path.join(RUN_DIR, "dockerd.pid")
        if self.answers():  # ours, left by a run that was killed: reuse it, stop it at the end
            self.own = self.pid_from(pidfile)
            log("reusing the dockerd a previous run left (pid %s)" % self.own)
            return
        cmd = [DOCKERD, "--host", self.env["DOCKER_HOST"], "--pidfile", pidfile,
               "--exec-root", os.path.join(RUN_DIR, "exec"), "--data-root", DATA_ROOT]
        log("starting " + " ".join(cmd))
        with open(self.log_path, "wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.own = proc.pid
        deadline = time.monotonic() + 60
        while not self.answers(5):
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    self.stop()
                skip("dockerd could not start (%s); its log:\n%s"
                     % ("exited with %s" % proc.returncode if proc.returncode is not None
                        else "no answer within 60 s", self.log_tail()))
            time.sleep(0.5)
        self.proc = proc
        log("dockerd answers")

    @staticmethod
    def pid_from(path):
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def log_tail(self, n=25):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no log)"
        # dockerd's grpc chatter says nothing about why it failed
        lines = [l for l in lines if "module=grpc" not in l]
        return "\n".join(lines[-n:])

    def stop(self):
        if not self.own:
            return
        pid, self.own = self.own, None
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            proc = getattr(self, "proc", None)
            if proc is not None:
                if proc.poll() is not None:
                    break
            else:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
            time.sleep(0.2)
        else:
            log("dockerd did not stop within 30 s: killed")
            os.kill(pid, signal.SIGKILL)
        log("dockerd stopped")

    def docker(self, *args, timeout=60, check=True, input=None):
        p = subprocess.run([DOCKER] + list(args), env=self.env, capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise AssertionError("docker %s failed (%d): %s" % (" ".join(args[:3]), p.returncode,
                                                               (p.stderr or p.stdout)[-2000:]))
        return p


#---- images -------------------------------------------------------------------

def debian_mirror():
    """The machine's own Debian mirror (deb822 or one-line sources)."""
    for path in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"):
        try:
            with open(path) as f:
                for line in f:
                    line = line.strip()
                    if line.startswith("URIs:"):
                        for uri in line.split()[1:]:
                            if "security" not in uri:
                                return uri
                    if line.startswith("deb ") and "security" not in line:
                        parts = [p for p in line.split()[1:] if not p.startswith("[")]
                        if parts:
                            return parts[0]
        except OSError:
            pass
    return "http://deb.debian.org/debian"


def ensure_base_images(engine):
    have = engine.docker("image", "inspect", "debian:12", "debian:12-slim", check=False)
    if have.returncode == 0:
        labels = [((img.get("Config") or {}).get("Labels") or {}) for img in json.loads(have.stdout)]
        log("debian:12 and debian:12-slim present%s" % (
            " (the debootstrap stand-in of an earlier run)" if any("org.herald.stand-in" in l for l in labels)
            else ""))
        return
    if DEBOOTSTRAP is None:
        raise AssertionError("the engine has no debian:12 image and debootstrap is missing "
                             "(./setup.sh deps test installs it)")
    mirror = debian_mirror()
    tmp = tempfile.mkdtemp(prefix="herald-debootstrap-")
    try:
        root = os.path.join(tmp, "root")
        log("debootstrap --variant=minbase bookworm from %s" % mirror)
        p = subprocess.run([DEBOOTSTRAP, "--variant=minbase", "bookworm", root, mirror],
                           capture_output=True, text=True, timeout=left(400))
        assert p.returncode == 0, "debootstrap failed (%d): %s" % (p.returncode, (p.stdout + p.stderr)[-2000:])
        for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
            subprocess.run(["find", os.path.join(root, d), "-type", "f", "-delete"], check=False)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run([DOCKER, "import", "--change", 'CMD ["bash"]',
                              "--change", "LABEL org.herald.stand-in=debootstrap-minbase-bookworm",
                              "-", "debian:12"], stdin=tar.stdout, env=engine.env, capture_output=True,
                             text=True, timeout=left(180))
        tar.stdout.close()
        tar.wait()
        assert imp.returncode == 0, "docker import failed: %s" % imp.stderr
        engine.docker("tag", "debian:12", "debian:12-slim")
        log("debian:12 and debian:12-slim imported from debootstrap")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#---- the stack ----------------------------------------------------------------

class Stack:
    def __init__(self, engine):
        self.engine = engine
        self.port = free_port()
        self.prom_port = free_port()
        self.env = dict(engine.env, HERALD_JWT_SECRET=SECRET, HERALD_API_KEY=API_KEY,
                        # host address included: the stack's own file publishes on every interface
                        HERALD_PORT="127.0.0.1:%d" % self.port, PROMETHEUS_PORT=str(self.prom_port))
        self.base = "http://127.0.0.1:%d" % self.port
        self.ws_base = "ws://127.0.0.1:%d" % self.port

    def compose(self, *args, timeout=120, check=True):
        cmd = [COMPOSE, "--no-ansi", "-p", PROJECT, "--project-directory", REPO,
               "-f", os.path.join(REPO, "docker-compose.yml"), "-f", OVERRIDE] + list(args)
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise AssertionError("docker-compose %s failed (%d):\n%s" % (" ".join(args), p.returncode,
                                                                        (p.stdout + p.stderr)[-3000:]))
        return p

    def container(self, service):
        p = self.compose("ps", "-q", service)
        cid = p.stdout.strip()
        assert cid, "no container for %s" % service
        return cid

    def health(self, service):
        p = self.engine.docker("inspect", "--format", "{{.State.Status}} {{if .State.Health}}"
                               "{{.State.Health.Status}}{{else}}none{{end}}", self.container(service))
        return p.stdout.strip()

    def wait_healthy(self, services, timeout):
        deadline = time.monotonic() + timeout
        while True:
            states = {s: self.health(s) for s in services}
            if all(v in ("running healthy", "running none") for v in states.values()):
                return
            if time.monotonic() > deadline:
                raise AssertionError("not healthy within %.0f s: %r\n%s" % (timeout, states, self.logs()))
            time.sleep(1)

    def logs(self, tail=40):
        p = self.compose("logs", "--no-color", "--tail", str(tail), timeout=60, check=False)
        return p.stdout[-12000:]

    def down(self):
        p = self.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout=180, check=False)
        if p.returncode != 0:
            log("docker-compose down failed: %s" % (p.stdout + p.stderr)[-1000:])

    def publish(self, channel, data, timeout=10):
        # README's curl, as requests
        return requests.post(self.base + "/api/v1/publish", json={"channel": channel, "data": data},
                             headers={"X-API-Key": API_KEY}, timeout=timeout)


STACK = None
TOKEN = None


def token(sub="alice"):
    """README's `docker compose exec herald1 herald token --sub alice`."""
    p = STACK.compose("exec", "-T", "herald1", "herald", "token", "--sub", sub, timeout=60)
    tok = p.stdout.strip()
    assert tok.count(".") == 2, "not a JWT: %r" % tok
    return tok


async def connect(tok):
    ws = await websockets.connect(STACK.ws_base + "/ws?token=" + tok, open_timeout=10, close_timeout=2,
                                  max_size=1 << 22)
    hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert hello.get("push") == "connected", hello
    return ws, hello


async def one_per_node(tok):
    """A WebSocket through nginx on each node ({node: (ws, hello)}): nginx's
    least_conn spreads them; extra connections are closed."""
    got, extra = {}, []
    for _ in range(16):
        ws, hello = await connect(tok)
        node = client_node(hello)
        if node in got:
            extra.append(ws)
        else:
            got[node] = (ws, hello)
        if len(got) == len(NODES):
            break
    for ws in extra:
        await ws.close()
    assert set(got) == set(NODES), "nginx sent 16 connections to %s only" % sorted(got)
    return got


class Conn:
    """A WebSocket with a reader: replies by id, pushes into a queue."""

    def __init__(self, ws, hello):
        self.ws, self.hello = ws, hello
        self.node = client_node(hello)
        self.next_id = 1
        self.replies = {}
        self.pushes = asyncio.Queue()
        self.task = asyncio.ensure_future(self.reader())

    async def reader(self):
        try:
            async for text in self.ws:
                m = json.loads(text)
                if "push" in m:
                    self.pushes.put_nowait(m)
                elif m.get("id") in self.replies:
                    self.replies.pop(m["id"]).set_result(m)
        except websockets.ConnectionClosed:
            pass
        finally:
            for fut in self.replies.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("closed"))
            self.pushes.put_nowait(None)

    async def cmd(self, op, **args):
        cid = self.next_id
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.replies[cid] = fut
        await self.ws.send(json.dumps(dict(args, id=cid, op=op)))
        return await asyncio.wait_for(fut, 15)

    async def result(self, op, **args):
        reply = await self.cmd(op, **args)
        assert "result" in reply, "%s %r on %s: %r" % (op, args, self.node, reply)
        return reply["result"]

    async def push(self, kind="message", timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            m = await asyncio.wait_for(self.pushes.get(), max(0.1, deadline - time.monotonic()))
            assert m is not None, "connection on %s closed while waiting for a %s push" % (self.node, kind)
            if m.get("push") == kind:
                return m

    async def close(self):
        await self.ws.close()
        await self.task


async def conns_per_node(tok):
    return {n: Conn(ws, hello) for n, (ws, hello) in (await one_per_node(tok)).items()}


#---- tests --------------------------------------------------------------------

def test_try_it_through_nginx():
    """README's Try it, through nginx: a subscriber on each node gets the
    REST publication, whichever node nginx gave the POST to."""
    async def run():
        conns = await conns_per_node(TOKEN)
        for c in conns.values():
            await c.result("subscribe", channel="news")
        r = await asyncio.to_thread(STACK.publish, "news", {"text": "hello"})
        assert r.status_code == 200, (r.status_code, r.text)
        for node, c in conns.items():
            m = await c.push()
            assert m == {"push": "message", "channel": "news", "data": {"text": "hello"}}, (node, m)
        for c in conns.values():
            await c.close()
    asyncio.run(run())
    for path in ("/healthz", "/readyz"):
        r = requests.get(STACK.base + path, timeout=10)
        assert r.status_code == 200, (path, r.status_code, r.text)


def test_history_and_presence_across_nodes():
    async def run():
        conns = await conns_per_node(TOKEN)
        c1, c2 = conns["herald1"], conns["herald2"]
        for c in (c1, c2):
            await c.result("subscribe", channel="room:lobby")
        want = {c1.hello["client"], c2.hello["client"]}
        for c in (c1, c2):
            pres = await c.result("presence", channel="room:lobby")
            assert {x["client"] for x in pres["clients"]} == want, (c.node, pres)
        r = requests.get(STACK.base + "/api/v1/channels/room:lobby/presence", headers={"X-API-Key": API_KEY},
                         timeout=10)
        assert r.status_code == 200 and {x["client"] for x in r.json()["clients"]} == want, r.text
        # a publication through one node's WebSocket, history read on the other
        res = await c1.result("publish", channel="hist:across", data={"n": 1})
        for n in (2, 3):
            r = await asyncio.to_thread(STACK.publish, "hist:across", {"n": n})
            assert r.status_code == 200, r.text
        hist = await c2.result("history", channel="hist:across")
        assert [p["data"]["n"] for p in hist["publications"]] == [1, 2, 3], hist
        assert hist["publications"][0]["offset"] == res["offset"], (hist, res)
        r = requests.get(STACK.base + "/api/v1/channels/hist:across/history", headers={"X-API-Key": API_KEY},
                         timeout=10)
        assert r.status_code == 200 and [p["data"]["n"] for p in r.json()["publications"]] == [1, 2, 3], r.text
        await c2.close()
        deadline = time.monotonic() + 15
        while True:  # the leave crosses nodes through Redis
            pres = await c1.result("presence", channel="room:lobby")
            if {x["client"] for x in pres["clients"]} == {c1.hello["client"]}:
                break
            assert time.monotonic() < deadline, "herald2's client still present: %r" % pres
            await asyncio.sleep(0.2)
        await c1.close()
    asyncio.run(run())


def test_prometheus_scrapes_both_nodes():
    deadline = time.monotonic() + 60  # scrape_interval is 10 s
    while True:
        try:
            r = requests.get("http://127.0.0.1:%d/api/v1/query" % STACK.prom_port,
                             params={"query": "up{job=\"herald\"}"}, timeout=10)
            res = r.json()["data"]["result"] if r.status_code == 200 else []
        except (requests.RequestException, ValueError, KeyError):
            res = []
        up = {x["metric"].get("instance"): x["value"][1] for x in res}
        if up == {"herald1:8080": "1", "herald2:8080": "1"}:
            return
        assert time.monotonic() < deadline, "Prometheus' up{job=herald}: %r" % up
        time.sleep(1)


class Follower:
    """A history-channel subscriber that reconnects as herald.js does
    (backoff with full jitter) and resubscribes with `since`; it records
    every offset it is given, in arrival order."""

    def __init__(self, channel, conn):
        self.channel, self.conn = channel, conn
        self.offsets = []
        self.epoch = None
        self.reconnects = 0
        self.recovered = []
        self.nodes = [conn.node]
        self.done = asyncio.Event()

    async def start(self):
        res = await self.conn.result("subscribe", channel=self.channel)
        self.epoch, self.last = res["epoch"], res["offset"]
        self.task = asyncio.ensure_future(self.run())

    async def run(self):
        rnd = random.Random(7)
        while not self.done.is_set():
            m = await self.conn.pushes.get()
            if m is not None:
                if m.get("push") == "message" and m.get("channel") == self.channel:
                    self.offsets.append(m["offset"])
                    self.last = m["offset"]
                continue
            delay = 0.2
            while not self.done.is_set():  # reconnect until it works, bounded by the test
                await asyncio.sleep(rnd.uniform(0, delay))
                delay = min(delay * 2, 5.0)
                try:
                    ws, hello = await connect(TOKEN)
                except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake, AssertionError):
                    continue
                self.conn = Conn(ws, hello)
                self.reconnects += 1
                self.nodes.append(self.conn.node)
                res = await self.conn.result("subscribe", channel=self.channel,
                                             since={"epoch": self.epoch, "offset": self.last})
                self.recovered.append(res.get("recovered"))
                for p in res.get("publications") or []:
                    self.offsets.append(p["offset"])
                    self.last = p["offset"]
                break


def test_restart_herald1_loses_nothing():
    """`docker-compose restart herald1` while REST publications flow into a
    history channel through nginx: the subscriber on herald2 keeps its
    stream, the one on herald1 reconnects (through nginx) and recovers; both
    end with every acknowledged publication, once, in order."""
    async def run():
        conns = await conns_per_node(TOKEN)
        followers = {n: Follower("hist:restart", c) for n, c in conns.items()}
        for f in followers.values():
            await f.start()
        acked, failed = [], 0
        restart = asyncio.ensure_future(asyncio.to_thread(STACK.compose, "restart", "herald1", timeout=120))
        seq = 0
        while not restart.done() or seq < 40:
            seq += 1
            try:
                r = await asyncio.to_thread(STACK.publish, "hist:restart", {"seq": seq}, 5)
                if r.status_code == 200:
                    acked.append(r.json()["offset"])
                else:
                    failed += 1
            except requests.RequestException:
                failed += 1
            await asyncio.sleep(0.05)
        await restart
        await asyncio.to_thread(STACK.wait_healthy, ["herald1"], 60)
        for _ in range(20):  # and on after herald1 is back
            r = await asyncio.to_thread(STACK.publish, "hist:restart", {"seq": "after"}, 10)
            assert r.status_code == 200, r.text
            acked.append(r.json()["offset"])
        deadline = time.monotonic() + 60
        while not all(set(acked) <= set(f.offsets) for f in followers.values()):
            assert time.monotonic() < deadline, "not delivered within 60 s: %r" % {
                n: sorted(set(acked) - set(f.offsets))[:20] for n, f in followers.items()}
            await asyncio.sleep(0.2)
        for f in followers.values():
            f.done.set()
            f.conn.pushes.put_nowait(None)
        log("restart: %d publications acknowledged, %d refused or failed while herald1 was down; "
            "followers: %s" % (len(acked), failed, {n: {"reconnects": f.reconnects, "recovered": f.recovered,
                                                         "nodes": f.nodes, "received": len(f.offsets)}
                                                     for n, f in followers.items()}))
        for n, f in followers.items():
            assert f.offsets == sorted(set(f.offsets)), "%s: out of order or duplicated: %r" % (n, f.offsets)
            assert f.offsets == list(range(f.offsets[0], f.offsets[-1] + 1)), "%s: gaps: %r" % (n, f.offsets)
            assert all(r is True for r in f.recovered), "%s: recovered %r" % (n, f.recovered)
        assert followers["herald1"].reconnects >= 1, "herald1's subscriber was never disconnected"
        assert followers["herald2"].reconnects == 0, "herald2's subscriber was disconnected"
        for f in followers.values():
            await f.conn.close()
        # herald1 serves again through nginx
        back = await conns_per_node(TOKEN)
        for c in back.values():
            await c.close()
    asyncio.run(run())


#---- main ---------------------------------------------------------------------

def main():
    global STACK, TOKEN
    lock = open(LOCK, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # one stack per machine
    engine = Engine()
    engine.start()
    passed = failed = 0
    try:
        ensure_base_images(engine)
        STACK = Stack(engine)
        STACK.down()  # what a killed run left
        log("docker-compose build")
        STACK.compose("build", timeout=left(480))
        log("docker-compose up -d %s" % " ".join(SERVICES))
        STACK.compose("up", "-d", *SERVICES, timeout=left(240))
        STACK.wait_healthy(SERVICES, left(120))
        log("stack healthy; nginx on %s" % STACK.base)
        TOKEN = token()
        tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)]
        for name, fn in tests:
            try:
                fn()
            except Exception:
                failed += 1
                print("FAIL " + name, flush=True)
                traceback.print_exc(file=sys.stdout)
                print("---- docker-compose logs (tail) ----\n" + STACK.logs(), flush=True)
            else:
                passed += 1
                print("ok " + name, flush=True)
    except Exception:
        failed += 1
        print("FAIL setup", flush=True)
        traceback.print_exc(file=sys.stdout)
        if STACK is not None:
            print("---- docker-compose logs (tail) ----\n" + STACK.logs(), flush=True)
    finally:
        if STACK is not None:
            STACK.down()
        engine.stop()
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


def on_alarm(signum, frame):
    raise TimeoutError("the test ran past DEADLINE_S + 60 s")


if __name__ == "__main__":
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(DEADLINE_S + 60)
    sys.exit(main())
