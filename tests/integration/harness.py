"""harness.py - shared helpers for Herald's integration tests (no tests here).

Pieces:
  Herald      starts the real binary on a free loopback port with a throwaway
              store, waits for /healthz, stops it (a context manager, so the
              process never outlives a test) and keeps its log for failures.
  WS          a small synchronous WebSocket client written on a raw socket, so
              tests control every byte (masking, fragmentation, bad frames,
              small receive buffers, not reading at all).
  make_jwt    crafts HS* / alg:none / algorithm-confusion tokens in pure Python.
  Redis       a throwaway redis-server on a free loopback port (no persistence),
              with a tiny RESP client; `Herald(redis=r)` runs in cluster mode
              against it (HERALD_REDIS_URL, users in Redis).
  Nginx       a throwaway nginx (Debian's) in the foreground on a free loopback
              port, proxying to Herald nodes with deploy/nginx/herald.conf
              (the file docker-compose.yml uses), pointed at them.
  openapi_check  every answer to Herald.http is checked against
              docs/openapi.json (status, Content-Type, body schema, headers)
  run_tests   a tiny runner: `ok NAME` / `FAIL NAME` + traceback, then one
              line `N passed, M failed`; exit status 1 if anything failed
              or nothing ran.

Why one file of ~1,500 lines: it is the one fixture library of every Python
test (CONTRIBUTING.md, Tests), and its pieces use each other (Herald runs
against Redis, checks its answers with openapi_check, hands out WS
clients); tests import from one place.
"""

import base64
import collections
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

import requests

import openapi_check
import ports

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
DEFAULT_BIN = "/work/main/build/herald"


def herald_bin():
    return os.environ.get("HERALD_BIN") or DEFAULT_BIN


def project_version():
    """The version CMakeLists.txt declares (project(herald VERSION x.y.z))."""
    with open(os.path.join(REPO, "CMakeLists.txt")) as f:
        m = re.search(r"project\(\s*herald\s+VERSION\s+([0-9][0-9.]*)", f.read())
    return m.group(1) if m else None


def free_port():
    """A loopback port for a server this test starts, reserved for the rest
    of this process (see ports.py): no other process can be handed it, the
    server can still bind it. Herald itself is started on port 0 instead."""
    return ports.reserve_port()


def wait_until(pred, timeout=20.0, interval=0.05, what="condition"):
    """Polls pred() until it returns a truthy value; returns it or raises.
    The default bound is generous on purpose: it only delays a failure, and
    a loaded machine (ctest -j2 beside busy loops, ASan) must not cause one."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last value %r)" % (timeout, what, last))


#---- time: deadlines a test does not control ----------------------------------

class TooSlow(Exception):
    """A test's setup ended too close to a deadline it had to meet (a token's
    expiry, say): the machine was slower than the test assumed. Not a
    failure of Herald; with_lifetimes runs the scenario again with more time."""


def stop_process(proc, timeout=5.0):
    """SIGTERM to proc (a subprocess.Popen, or None) if it still runs, then
    waits up to timeout seconds for it to exit, and SIGKILLs it after that.
    Returns once it has been reaped (its status is proc.returncode)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def before(deadline, what="the setup", margin=1.0):
    """Runs a setup that must be done `margin` s before `deadline` (unix
    time), e.g. connecting and subscribing before a token expires. Ending
    later, or failing once that point has passed (a token that expired
    during the setup is refused), raises TooSlow instead of failing."""
    try:
        yield
    except TooSlow:
        raise
    except Exception as e:
        if time.time() > deadline - margin:
            raise TooSlow("%s failed %.2f s before the deadline: %r"
                          % (what, deadline - time.time(), e)) from e
        raise
    if time.time() > deadline - margin:
        raise TooSlow("%s ended %.2f s before the deadline (wanted %.1f s)"
                      % (what, deadline - time.time(), margin))


def with_lifetimes(scenario, lifetimes=(3, 6, 12, 30)):
    """Runs scenario(lifetime) with token lifetimes (seconds) from short to
    long until one run does not raise TooSlow, and returns its result.

    Tests of expiry need short-lived tokens, and how long their setup takes
    depends on the machine's load. Instead of guessing a lifetime that is
    long enough everywhere (slow) or short (flaky), the scenario marks its
    setup with `before(exp)`; a setup that could not finish in time is
    retried with a longer lifetime. A loaded machine makes the test slower,
    never red; a real failure still fails at once."""
    last = None
    for lifetime in lifetimes:
        try:
            return scenario(lifetime)
        except TooSlow as e:
            last = e
            print("  (too slow for %d s tokens: %s; again with longer ones)" % (lifetime, e),
                  flush=True)
    raise AssertionError("setup too slow even for %d s tokens: %s" % (lifetimes[-1], last))


#---- CPU use -----------------------------------------------------------------

def cpu_seconds(pid):
    """User + system CPU time a process has used, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def assert_not_spinning(pid, what="the server", quiet=0.1, window=1.0, windows=10):
    """A process that spins never rests: passes at the first `window` of
    wall time in which pid used less than `quiet` s of CPU, fails when none
    of `windows` such windows was quiet.

    One fixed window is not enough: leftover work (connections closing,
    a sanitizer's bookkeeping) can fall into it on a loaded machine. A spin
    still fails: even with many busy processes on two cores, a thread that
    never blocks gets more than 0.1 s of CPU per second."""
    used = []
    for _ in range(windows):
        c0 = cpu_seconds(pid)
        time.sleep(window)
        used.append(cpu_seconds(pid) - c0)
        if used[-1] < quiet:
            return
    raise AssertionError("%s used CPU in every %.1f s window while idle (spinning?): %s"
                         % (what, window, ", ".join("%.2f s" % u for u in used)))


#---- raw HTTP/1.1 on one connection ------------------------------------------

_HTTP_RESPONSE = re.compile(rb"HTTP/1\.[01] (\d{3})[^\r\n]*\r\n(.*?)\r\n\r\n", re.S)


def http_exchange(port, data, n, timeout=20.0):
    """Sends `data` in one write on a new loopback connection and reads HTTP
    responses until `n` have arrived or the server closed (read_responses).
    Returns (statuses, bodies, closed, sock); sock is still open when not
    closed (the caller closes it)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    statuses, bodies, closed, rest = read_responses(s, n, timeout)
    if rest and not closed:
        s.close()
        raise AssertionError("bytes after the last whole response: %r" % rest[:200])
    return statuses, bodies, closed, s


def read_responses(s, n, timeout=20.0):
    """Reads HTTP responses (framed by Content-Length) from socket s until
    `n` have arrived or the peer closed. A slow server is waited for, up to
    `timeout` s: no fixed reading time that a loaded machine could miss.
    Returns (statuses, bodies, closed, bytes left over)."""
    buf, statuses, bodies, closed = b"", [], [], False
    deadline = time.monotonic() + timeout
    while len(statuses) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            closed = True
            break
        buf += chunk
        while True:
            m = _HTTP_RESPONSE.match(buf)
            if not m:
                break
            cl = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", m.group(2))
            end = m.end() + (int(cl.group(1)) if cl else 0)
            if len(buf) < end:
                break
            statuses.append(int(m.group(1)))
            bodies.append(buf[m.end():end])
            buf = buf[end:]
    return statuses, bodies, closed, buf


def wait_eof(sock, timeout=20.0):
    """Reads until the peer closes; returns what arrived meanwhile (b"" when
    nothing did). Raises when the connection is still open after timeout."""
    sock.settimeout(timeout)
    extra = b""
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise AssertionError("connection still open %.0f s after the last answer (got %r)"
                                 % (timeout, extra[:200]))
        except ConnectionResetError:
            return extra
        if not chunk:
            return extra
        extra += chunk


def assert_pipeline(port, data, want, closed, timeout=20.0):
    """The answers to `data` (sent in one write) are exactly the statuses
    `want`, in order. closed=True: the server then closes the connection,
    sending nothing more. closed=False: the connection stays usable, which a
    further GET /healthz on it, answered 200, shows (a fixed wait cannot).
    Returns the bodies."""
    statuses, bodies, was_closed, s = http_exchange(port, data, len(want), timeout)
    try:
        assert statuses == want, "answers %r (then %s), want %r" \
            % (statuses, "closed" if was_closed else "nothing", want)
        if closed:
            if not was_closed:
                extra = wait_eof(s, timeout)
                assert not extra, "bytes after the answers: %r" % extra[:200]
        else:
            assert not was_closed, "closed after %r, want the connection kept open" % statuses
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            more, _, _, _ = read_responses(s, 1, timeout)
            assert more == [200], "the kept-alive connection answered %r to GET /healthz" % more
    finally:
        s.close()
    return bodies


#---- JWT ---------------------------------------------------------------------

def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_HMAC = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def make_jwt(payload, secret, alg="HS256", header_extra=None):
    """Builds a compact JWT. HS256/384/512 are signed with `secret`; "none"
    gets an empty signature; any other alg (RS256, ES256...) is signed with
    HMAC-SHA256 over `secret`, i.e. the classic algorithm-confusion forgery."""
    header = {"alg": alg, "typ": "JWT"}
    header.update(header_extra or {})
    head = b64url(json.dumps(header, separators=(",", ":")).encode())
    body = b64url(json.dumps(payload, separators=(",", ":")).encode())
    signing_input = (head + "." + body).encode()
    if alg.lower() == "none":
        return head + "." + body + "."
    key = secret.encode() if isinstance(secret, str) else secret
    digest = _HMAC.get(alg, hashlib.sha256)
    sig = hmac.new(key, signing_input, digest).digest()
    return head + "." + body + "." + b64url(sig)


def jwt_parts(token):
    """(header, payload, signature bytes) of a compact JWT, unverified."""
    head, body, sig = token.split(".")
    return json.loads(b64url_decode(head)), json.loads(b64url_decode(body)), b64url_decode(sig)


def jwt_verify_hs256(token, secret):
    head, body, sig = token.split(".")
    want = hmac.new(secret.encode(), (head + "." + body).encode(), hashlib.sha256).digest()
    return hmac.compare_digest(want, b64url_decode(sig))


#---- Prometheus --------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text):
    """{metric name: summed value over all label sets} from exposition text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise AssertionError("not a Prometheus sample line: %r" % line)
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


#---- the server --------------------------------------------------------------

class Herald:
    """One herald process. Use as `with Herald(env={...}) as h:`.

    env     extra environment (overrides the defaults below; None unsets)
    args    extra command-line arguments (after the binary)
    config  dict (JSON-encoded) or str (written verbatim) for a config file
    config_via  "env" (HERALD_CONFIG) or "flag" (--config PATH)
    listen_via  "env" (HERALD_LISTEN) or "flag" (--listen; HERALD_LISTEN then
                names a different, unused port so the flag must win)
    redis   a Redis instance (or a redis:// URL): sets HERALD_REDIS_URL, so
            users (and, once built, channels) live in Redis
    secret, api_key  HERALD_JWT_SECRET / HERALD_API_KEY (random by default);
            nodes of one cluster share them
    port    the port to listen on; by default 0: Herald binds a port the
            system chooses and start() reads it from the "listening" log
            line (no port is found by bind-and-release, so no other process
            can take it in between). self.port is None until then; after
            start() HERALD_LISTEN (or --listen) names the real port, so CLI
            runs reach this server and a restart keeps the port.
    """

    def __init__(self, env=None, args=None, config=None, config_via="env", listen_via="env",
                 redis=None, secret=None, api_key=None, https=False, port=0):
        self.bin = herald_bin()
        self.dir = tempfile.mkdtemp(prefix="herald-it-")
        self.port = port or None
        self.scheme = "https" if https else "http"
        self.secret = secret or secrets.token_hex(24)
        self.api_key = api_key or secrets.token_hex(16)
        self.args = list(args or [])
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        self.env.update({
            "HERALD_LISTEN": "127.0.0.1:%d" % (port or 0),
            "HERALD_DB": os.path.join(self.dir, "herald.db"),
            "HERALD_JWT_SECRET": self.secret,
            "HERALD_API_KEY": self.api_key,
            "HERALD_LOG_FORMAT": "json",
            "HERALD_NODE_ID": "test",
            # every test runs with several loop threads unless it says otherwise
            "HERALD_THREADS": os.environ.get("HERALD_TEST_THREADS", "2"),
            # every client is 127.0.0.1: the per-address limits are tested
            # on their own (test_conn_limits.py)
            "HERALD_MAX_CONNS_PER_ADDRESS": "0",
            "HERALD_HANDSHAKE_RATE": "0",
        })
        if redis is not None:
            self.env["HERALD_REDIS_URL"] = redis if isinstance(redis, str) else redis.url
        if listen_via == "flag":
            # a reserved port nobody listens on: if Herald used it, the
            # flag did not win (test_lifecycle checks)
            self.env["HERALD_LISTEN"] = "127.0.0.1:%d" % free_port()
            self.args += ["--listen", "127.0.0.1:%d" % (port or 0)]
        self.listen_via = listen_via
        if config is not None:
            self.config_path = os.path.join(self.dir, "config.json")
            with open(self.config_path, "w") as f:
                f.write(config if isinstance(config, str) else json.dumps(config))
            if config_via == "flag":
                self.args += ["--config", self.config_path]
            else:
                self.env["HERALD_CONFIG"] = self.config_path
        for k, v in (env or {}).items():  # None removes a variable
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = str(v)
        if self.port is None and not self._logs_listening():
            # no "listening" line to read the port from: reserve one
            self.port = free_port()
            self._pin_port()
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        self.proc = None
        self.clients = []
        self.session = requests.Session()
        # every answer is held against docs/openapi.json (openapi_check.py)
        self.session.hooks["response"].append(openapi_check.check_response)
        self.session.verify = not https  # a throwaway certificate (test_tls.py checks it)

    @property
    def base(self):
        """http(s)://127.0.0.1:PORT (known once started)."""
        return "%s://127.0.0.1:%d" % (self.scheme, self.port)

    def _logs_listening(self):
        """Does Herald log its info-level "listening" line in this setup?"""
        return self.env.get("HERALD_LOG_LEVEL", "info") in ("debug", "info")

    _LISTENING = re.compile(r"listening on (\S+):(\d+) with")

    def _wait_port(self, deadline):
        """The port from the "listening" line in the log, once there."""
        while True:
            m = self._LISTENING.search(self.log())
            if m:
                return int(m.group(2))
            if self.proc.poll() is not None:
                raise AssertionError("herald exited early with status %s; stderr:\n%s"
                                     % (self.proc.returncode, self.log_tail()))
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("herald logged no \"listening\" line within its start "
                                     "timeout; stderr:\n%s" % self.log_tail())
            time.sleep(0.02)

    def _pin_port(self):
        """Names the chosen port wherever 0 stood, so CLI runs reach this
        server and start() after stop() listens on the same port again."""
        if self.listen_via == "flag":
            i = len(self.args) - 1 - self.args[::-1].index("--listen")
            self.args[i + 1] = "127.0.0.1:%d" % self.port
        elif self.env.get("HERALD_LISTEN") == "127.0.0.1:0":
            self.env["HERALD_LISTEN"] = "127.0.0.1:%d" % self.port

    # -- process control --

    def start(self, timeout=30.0):
        """Starts the server and waits for GET /healthz to answer 200."""
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen([self.bin] + self.args, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err)
        deadline = time.monotonic() + timeout
        if self.port is None:
            self.port = self._wait_port(deadline)
            self._pin_port()
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("herald exited early with status %s; stderr:\n%s"
                                     % (self.proc.returncode, self.log_tail()))
            try:
                if requests.get(self.base + "/healthz", timeout=0.5,
                                verify=self.session.verify).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("herald did not answer /healthz within %.0fs; stderr:\n%s"
                                     % (timeout, self.log_tail()))
            time.sleep(0.05)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def ready(self):
        try:
            return self.http("GET", "/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self, timeout=10.0):
        """Waits for /readyz 200 (cluster mode: every Redis shard connected)."""
        wait_until(self.ready, timeout, what="%s /readyz" % self.base)
        return self

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signals the server and returns its exit status (negative = killed
        by a signal). If it does not exit within `timeout`, kills it and fails."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("herald did not exit within %.0fs of signal %d; stderr:\n%s"
                                     % (timeout, sig, self.log_tail()))
        return self.proc.returncode

    def log(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines=40):
        return "\n".join(self.log().splitlines()[-lines:])

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self._cleanup_files()
            raise

    def __exit__(self, exc_type, exc, tb):
        for c in self.clients:
            c.abort()
        self.session.close()
        try:
            code = self.stop()
        except AssertionError:
            if exc_type is None:
                raise
            code = None
        if exc_type is not None:
            note = "---- herald stderr (tail) ----\n%s\n------------------------------" % self.log_tail()
            if exc is not None and hasattr(exc, "add_note"):
                exc.add_note(note)  # printed with the traceback
            else:
                sys.stdout.write(note + "\n")
        elif code != 0 and not getattr(self, "killed", False):
            tail = self.log_tail()
            self._cleanup_files()
            raise AssertionError("herald exited with status %r at the end of the test "
                                 "(crash or unclean shutdown); stderr:\n%s" % (code, tail))
        self._cleanup_files()
        return False

    def discard(self):
        """Removes the temp dir of a Herald that was only used for CLI runs."""
        self._cleanup_files()

    def _cleanup_files(self):
        for f in (getattr(self, "_err", None), getattr(self, "_out", None)):
            if f:
                f.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- CLI --

    def run(self, args, timeout=10.0, input=None):
        """Runs `herald ARGS` with this server's environment; CompletedProcess."""
        return subprocess.run([self.bin] + list(args), env=self.env, capture_output=True,
                              timeout=timeout, input=input)

    def token(self, sub, ttl=None, roles=()):
        """`herald token --sub SUB [--ttl S] [--role R]...`, stdout stripped."""
        args = ["token", "--sub", sub]
        if ttl is not None:
            args += ["--ttl", str(ttl)]
        for r in roles:
            args += ["--role", r]
        p = self.run(args)
        assert p.returncode == 0, "herald %s failed (%d): %s" % (" ".join(args), p.returncode,
                                                                 p.stderr.decode(errors="replace"))
        return p.stdout.decode().strip()

    def jwt(self, payload=None, **claims):
        """A valid HS256 token signed with this server's secret (pure Python)."""
        body = {"sub": "alice", "exp": int(time.time()) + 3600, "iat": int(time.time())}
        body.update(payload or {})
        body.update(claims)
        return make_jwt(body, self.secret)

    # -- HTTP --

    def http(self, method, path, json=None, data=None, headers=None, timeout=10.0):
        return self.session.request(method, self.base + path, json=json, data=data,
                                    headers=headers, timeout=timeout)

    def api_headers(self):
        return {"X-API-Key": self.api_key}

    def publish(self, channel, data):
        """Publishes through REST with the API key and checks the 200."""
        r = self.http("POST", "/api/v1/publish", json={"channel": channel, "data": data},
                      headers=self.api_headers())
        assert r.status_code == 200, "publish to %r: %d %s" % (channel, r.status_code, r.text)
        return r

    # -- users --

    def register(self, username, password, roles=None, headers=None):
        """POST /api/v1/users; returns the response (no status check)."""
        body = {"username": username, "password": password}
        if roles is not None:
            body["roles"] = roles
        return self.http("POST", "/api/v1/users", json=body, headers=headers)

    def create_user(self, username, password, roles=None):
        """Registers a user with the API key; checks the 201, returns the user."""
        r = self.register(username, password, roles, headers=self.api_headers())
        assert r.status_code == 201, "create user %r: HTTP %d %s" % (username, r.status_code, r.text[:300])
        return r.json()

    def token_request(self, **form):
        """POST /api/v1/auth/token, form-encoded; returns the response."""
        return self.http("POST", "/api/v1/auth/token", data=form)

    def login(self, username, password):
        """Password grant; checks the 200, returns the token response body."""
        r = self.token_request(grant_type="password", username=username, password=password)
        assert r.status_code == 200, "login %r: HTTP %d %s" % (username, r.status_code, r.text[:300])
        return r.json()

    def metrics(self):
        r = self.http("GET", "/metrics")
        assert r.status_code == 200, r.status_code
        return parse_metrics(r.text)

    def healthy(self):
        return self.running() and self.http("GET", "/healthz").status_code == 200

    # -- WebSocket --

    def ws(self, **kw):
        """A connected-but-unauthenticated WS (no token at the handshake)."""
        ws = WS(self.port, **kw)
        self.clients.append(ws)
        return ws

    def client(self, sub="alice", roles=(), token=None, via="header", rcvbuf=None):
        """An authenticated WS client; its `connected` push is in ws.hello."""
        tok = token or self.token(sub, roles=roles)
        return authenticate(self.ws(rcvbuf=rcvbuf), tok, via)

    def user(self, name, **claims):
        """An authenticated WS client for user `name`, with a JWT minted here
        (pure Python, no `herald token` process) carrying claims."""
        return self.client(name, token=self.jwt(sub=name, **claims))

    def subscriber(self, channel, sub="alice", roles=()):
        ws = self.client(sub, roles)
        reply = ws.cmd("subscribe", channel=channel)
        assert "result" in reply, "subscribe %r failed: %r" % (channel, reply)
        return ws


def cluster_nodes(stack, redis, n=2, env=None, config=None):
    """n Herald nodes (in stack, an ExitStack) sharing one JWT secret, one
    API key and one Redis (a Redis or a URL), ready; each with its secret
    and API key set, HERALD_NODE_ID n0, n1..., and env's variables."""
    secret, key = secrets.token_hex(24), secrets.token_hex(16)
    out = []
    for i in range(n):
        e = {"HERALD_JWT_SECRET": secret, "HERALD_API_KEY": key, "HERALD_NODE_ID": "n%d" % i}
        e.update(env or {})
        h = Herald(env=e, redis=redis, config=config)
        h.secret, h.api_key = secret, key
        out.append(stack.enter_context(h))
    for h in out:
        h.wait_ready()
    return out


#---- Redis --------------------------------------------------------------------

REDIS_BIN = "/usr/bin/redis-server"


class RedisError(Exception):
    """An error reply (-ERR ..., -MOVED ...) from Redis; str() is Redis' text."""


class RespConn:
    """A minimal synchronous RESP2 client (one connection): every Redis the
    tests start is spoken to through it (Redis.cmd, redis_topology.py)."""

    def __init__(self, port, host="127.0.0.1", password=None, user=None, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        if password is not None:
            self.cmd("AUTH", *([user] if user else []), password)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("redis closed the connection")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n + 2:]
        return out

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode("utf-8", "surrogateescape")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise AssertionError("bad RESP reply %r" % line)

    def send(self, *args):
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(parts))

    def cmd(self, *args):
        self.send(*args)
        return self.reply()


class Redis:
    """A private redis-server: `with Redis() as r:`, then `Herald(redis=r)`.

    Listens on a free loopback port, keeps nothing on disk (--save "",
    --appendonly no), and is killed at exit. `r.cmd("GET", "k")` is a minimal
    synchronous RESP2 client for inspecting what Herald stored."""

    def __init__(self, bin=None):
        self.bin = bin or os.environ.get("REDIS_SERVER") or REDIS_BIN
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="herald-redis-")
        self.url = "redis://127.0.0.1:%d/0" % self.port
        self.proc = None
        self._conn = None

    def start(self, timeout=10.0):
        self._log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [self.bin, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited with %s: %s" % (self.proc.returncode, self.log()))
            try:
                if self.cmd("PING") == "PONG":
                    return self
            except (OSError, RedisError):
                self._drop()
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("redis-server did not answer PING within %.0fs" % timeout)
            time.sleep(0.05)

    def log(self):
        try:
            with open(os.path.join(self.dir, "redis.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")[-2000:]
        except OSError:
            return ""

    def halt(self):
        """Stops the server but keeps its directory, so start() brings it
        back on the same port (an outage, as clients see it)."""
        self._drop()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def stop(self):
        self._drop()
        stop_process(self.proc)
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- commands --

    def _drop(self):
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def cmd(self, *args):
        """Sends one command, returns the decoded reply (str/int/list/None)."""
        if self._conn is None:
            self._conn = RespConn(self.port)
        return self._conn.cmd(*args)

    def keys(self, pattern="*"):
        """Every key matching pattern (SCAN, so it never blocks the server)."""
        out, cursor = [], "0"
        while True:
            cursor, batch = self.cmd("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            out += batch
            if cursor == "0":
                return out


#---- nginx --------------------------------------------------------------------

NGINX_BIN = "/usr/sbin/nginx"
NGINX_SITE = os.path.join(REPO, "deploy", "nginx", "herald.conf")


def nginx_site(upstreams, listen, source=NGINX_SITE):
    """The text of deploy/nginx/herald.conf pointed elsewhere: its one `listen`
    line becomes `listen LISTEN;`, and the `server` lines of its upstream
    block, in order, the "host:port" addresses of `upstreams` (their
    parameters, max_fails and the like, kept). Everything else is left as
    compose uses it. Fails when the file no longer has exactly one listen line
    and len(upstreams) upstream servers, so a test never silently runs some
    other configuration."""
    with open(source) as f:
        text = f.read()
    text, n = re.subn(r"(?m)^([ \t]*)listen\s+[^;]*;",
                      lambda m: "%slisten %s;" % (m.group(1), listen), text)
    assert n == 1, "%s: expected one `listen` line, found %d" % (source, n)
    blocks = list(re.finditer(r"(?m)^[ \t]*upstream\s+[\w.-]+\s*\{([^}]*)\}", text))
    assert len(blocks) == 1, "%s: expected one upstream block, found %d" % (source, len(blocks))
    block = blocks[0]
    addrs = list(upstreams)
    found = []

    def server_line(m):
        found.append(m.group(2))
        addr = addrs[len(found) - 1] if len(found) <= len(addrs) else "?"
        return "%sserver %s%s;" % (m.group(1), addr, m.group(3))

    body = re.sub(r"(?m)^([ \t]*)server\s+([^\s;]+)([^;]*);", server_line, block.group(1))
    assert len(found) == len(addrs), "%s: upstream lists %r, the test has %d node(s)" \
        % (source, found, len(addrs))
    return text[:block.start(1)] + body + text[block.end(1):]


def nginx_site_addresses(source=NGINX_SITE):
    """(listen, [upstream server addresses]) of deploy/nginx/herald.conf as
    written, e.g. ("8080", ["herald1:8080", "herald2:8080"])."""
    with open(source) as f:
        text = f.read()
    listens = re.findall(r"(?m)^[ \t]*listen\s+([^\s;]+)[^;]*;", text)
    block = re.search(r"(?m)^[ \t]*upstream\s+[\w.-]+\s*\{([^}]*)\}", text)
    servers = re.findall(r"(?m)^[ \t]*server\s+([^\s;]+)[^;]*;", block.group(1)) if block else []
    return (listens[0] if len(listens) == 1 else listens), servers


def nginx_user_directive():
    """`user ...;` for an nginx master started by root, else "". A root master
    runs its workers as `user`; the default (nobody:nobody) names a group
    Debian does not have."""
    if os.geteuid() != 0:
        return ""
    import grp
    import pwd
    nobody = pwd.getpwnam("nobody")
    return "user nobody %s;" % grp.getgrgid(nobody.pw_gid).gr_name


class Nginx:
    """A private nginx in front of Herald nodes: `with Nginx([a, b]) as n:`.

    upstreams   Herald instances or "host:port" strings, in the order of the
                upstream's `server` lines

    Runs Debian's nginx in the foreground (`nginx -p DIR -c DIR/nginx.conf
    -e DIR/error.log -g 'daemon off;'`) on a free loopback port. DIR holds
    everything it writes: pid file, logs, temp dirs (Debian's compiled-in
    ones are under /var/lib/nginx). deploy/nginx/herald.conf is included as
    compose includes it (see nginx_site). Each response carries the node that
    answered in `X-Herald-Upstream` (test-only, added here, not in the shipped
    config), so tests can tell the nodes apart. Stopped with SIGTERM (fast
    shutdown: open WebSocket tunnels are cut)."""

    def __init__(self, upstreams, bin=None, source=NGINX_SITE):
        self.bin = bin or os.environ.get("NGINX") or NGINX_BIN
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="herald-nginx-")
        self.base = "http://127.0.0.1:%d" % self.port
        self.upstreams = ["127.0.0.1:%d" % u.port if isinstance(u, Herald) else u for u in upstreams]
        self.source = source
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.error_log = os.path.join(self.dir, "error.log")
        self.access_log = os.path.join(self.dir, "access.log")
        self.proc = None
        self.clients = []
        self.session = requests.Session()

    def _write_config(self):
        with open(os.path.join(self.dir, "herald.conf"), "w") as f:
            f.write(nginx_site(self.upstreams, "127.0.0.1:%d" % self.port, self.source))
        user = nginx_user_directive()
        if user:
            os.chmod(self.dir, 0o711)  # the workers must reach the temp dirs in DIR
        d = self.dir
        with open(self.conf, "w") as f:
            f.write("""%(user)s
worker_processes 1;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log notice;
events { worker_connections 1024; }
http {
    log_format herald '$remote_addr "$request" $status upstream=$upstream_addr';
    access_log %(d)s/access.log herald;
    client_body_temp_path %(d)s/client_body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
    add_header X-Herald-Upstream $upstream_addr always;
    include %(d)s/herald.conf;
}
""" % {"user": user, "d": d})

    def start(self, timeout=10.0):
        """Starts nginx and waits until its port accepts connections."""
        self._write_config()
        self._out = open(os.path.join(self.dir, "stdout.log"), "wb")
        self.proc = subprocess.Popen(
            [self.bin, "-p", self.dir + "/", "-c", self.conf, "-e", self.error_log,
             "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited with status %s:\n%s"
                                     % (self.proc.returncode, self.log()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("nginx did not listen within %.0fs:\n%s" % (timeout, self.log()))
            time.sleep(0.05)

    def log(self, limit=4000):
        """The tail of nginx's error log and of what it printed."""
        out = []
        for name in ("stdout.log", "error.log"):
            try:
                with open(os.path.join(self.dir, name), "rb") as f:
                    out.append(f.read().decode("utf-8", "replace")[-limit:])
            except OSError:
                pass
        return "\n".join(o for o in out if o)

    def stop(self, timeout=10.0):
        for c in self.clients:
            c.abort()
        self.session.close()
        stop_process(self.proc, timeout)
        if getattr(self, "_out", None):
            self._out.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            note = "---- nginx error log (tail) ----\n%s\n--------------------------------" % self.log()
            if exc is not None and hasattr(exc, "add_note"):
                exc.add_note(note)
            else:
                sys.stdout.write(note + "\n")
        self.stop()
        return False

    # -- clients through nginx --

    def http(self, method, path, json=None, data=None, headers=None, timeout=10.0):
        return self.session.request(method, self.base + path, json=json, data=data,
                                    headers=headers, timeout=timeout)

    def ws(self, **kw):
        """A WS connected to nginx, not yet upgraded."""
        ws = WS(self.port, **kw)
        self.clients.append(ws)
        return ws

    def client(self, token, via="header"):
        """A WS upgraded through nginx with `token`; its `connected` push is in
        ws.hello, the node it landed on in ws.node."""
        return authenticate(self.ws(), token, via)


def client_node(hello):
    """The node id of a client id "<node>.<n>" from a `connected` push."""
    node, dot, n = hello["client"].rpartition(".")
    assert dot and n.isdigit(), "client id %r is not <node>.<n>" % hello["client"]
    return node


#---- WebSocket client --------------------------------------------------------

class ProtocolError(AssertionError):
    """The server broke RFC 6455 framing."""


OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _xor_mask(key, data):
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def build_frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None):
    """One client frame. `length` overrides the declared payload length (for
    lying-header attacks); mask=False produces an illegal unmasked frame."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head.append(mbit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack(">Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    return bytes(head) + key + _xor_mask(key, payload)


class WS:
    """Synchronous WebSocket client on a raw socket.

    recv() returns ('text', str) | ('binary', bytes) | ('close', code, reason);
    code 1006 means the TCP connection ended without a close frame. Pings are
    answered, pongs are collected in self.pongs, fragments are reassembled.
    Messages read while cmd() waits for its reply go to self.pending and are
    returned first by recv_json(). To act as a slow consumer, pass a small
    rcvbuf and simply stop calling recv*().
    """

    def __init__(self, port, host="127.0.0.1", rcvbuf=None, timeout=5.0):
        self.host, self.port = host, port
        self.rcvbuf = rcvbuf
        self.timeout = timeout
        self.sock = None
        self.buf = bytearray()
        self.pending = collections.deque()
        self.pongs = []
        self.close_info = None
        self.close_sent = False
        self.hello = None
        self._frag_op = None
        self._frag = bytearray()
        self._next_id = 1
        self.http_status = None
        self.http_status_line = None
        self.http_headers = {}
        self.http_body = b""

    # -- handshake --

    def connect(self, url_path="/ws", headers=None, version="13", key=None):
        """Opening handshake. Returns 101 when upgraded, else the HTTP status
        of the refusal (headers/body kept in http_headers/http_body).
        version replaces Sec-WebSocket-Version (None leaves it out); key
        replaces the random Sec-WebSocket-Key (False leaves it out). The
        status line is kept in http_status_line."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        s.settimeout(self.timeout)
        s.connect((self.host, self.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = s
        if key is None:
            key = base64.b64encode(os.urandom(16)).decode()
        elif key is False:
            key = None
        lines = ["GET %s HTTP/1.1" % url_path, "Host: %s:%d" % (self.host, self.port),
                 "Upgrade: websocket", "Connection: Upgrade"]
        if key is not None:
            lines.append("Sec-WebSocket-Key: " + key)
        if version is not None:
            lines.append("Sec-WebSocket-Version: " + version)
        lines += ["%s: %s" % kv for kv in (headers or {}).items()]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        deadline = time.monotonic() + self.timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise ConnectionError("server closed the connection during the handshake "
                                      "(got %r)" % bytes(self.buf))
        end = self.buf.index(b"\r\n\r\n")
        head = self.buf[:end].decode("latin-1").split("\r\n")
        del self.buf[:end + 4]
        m = re.match(r"HTTP/1\.[01] (\d{3})", head[0])
        if not m:
            raise ProtocolError("bad status line %r" % head[0])
        self.http_status = int(m.group(1))
        self.http_status_line = head[0]
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip()
            self.http_headers[name] = (self.http_headers[name] + ", " + value
                                       if name in self.http_headers else value)
        if self.http_status != 101:
            self._read_refusal_body(deadline)
            return self.http_status
        want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if self.http_headers.get("sec-websocket-accept") != want:
            raise ProtocolError("Sec-WebSocket-Accept %r, want %r"
                                % (self.http_headers.get("sec-websocket-accept"), want))
        if self.http_headers.get("upgrade", "").lower() != "websocket":
            raise ProtocolError("101 without Upgrade: websocket: %r" % self.http_headers)
        return 101

    def _read_refusal_body(self, deadline):
        n = int(self.http_headers.get("content-length", "0") or 0)
        try:
            while len(self.buf) < n and self._fill(deadline):
                pass
        except (TimeoutError, OSError):
            pass
        self.http_body = bytes(self.buf)
        self.buf.clear()
        self.abort()

    # -- low-level I/O --

    def _fill(self, deadline):
        """Reads more bytes into self.buf. False on EOF/reset; TimeoutError at deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from server in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except socket.timeout:
            raise TimeoutError("no data from server in time")
        except (ConnectionResetError, BrokenPipeError):
            return False
        if not data:
            return False
        self.buf += data
        return True

    def _check_rsv(self, fin, rsv, op):
        """RSV bits belong to extensions: none was negotiated here (a
        subclass that negotiates one says which bits may be set)."""
        if rsv:
            raise ProtocolError("server frame has RSV bits set: %#x" % (rsv | op))

    def _payload(self, fin, rsv, op, payload, wire):
        """A frame's payload as the protocol sees it (a subclass inflates)."""
        return payload

    def _parse_frame(self):
        b = self.buf
        if len(b) < 2:
            return None
        fin, rsv, op = b[0] & 0x80, b[0] & 0x70, b[0] & 0x0F
        masked, n, pos = b[1] & 0x80, b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, pos = struct.unpack(">H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, pos = struct.unpack(">Q", b[2:10])[0], 10
        if masked:
            raise ProtocolError("server sent a masked frame")
        self._check_rsv(fin, rsv, op)
        if len(b) < pos + n:
            return None
        payload = bytes(b[pos:pos + n])
        del b[:pos + n]
        return bool(fin), op, self._payload(fin, rsv, op, payload, pos + n)

    def send_raw(self, data, ignore_errors=False):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            if not ignore_errors:
                raise

    def send_frame(self, opcode, payload=b"", fin=True, mask=True, ignore_errors=False):
        self.send_raw(build_frame(opcode, payload, fin=fin, mask=mask), ignore_errors)

    def send_text(self, text, **kw):
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text, **kw)

    def send_binary(self, data, **kw):
        self.send_frame(OP_BINARY, data, **kw)

    def send_ping(self, payload=b"", **kw):
        self.send_frame(OP_PING, payload, **kw)

    def send_close(self, code=1000, reason=""):
        self.send_frame(OP_CLOSE, struct.pack(">H", code) + reason.encode(), ignore_errors=True)
        self.close_sent = True

    def send_json(self, obj, **kw):
        self.send_text(json.dumps(obj, separators=(",", ":")), **kw)

    # -- receiving --

    def recv(self, timeout=5.0, pongs=False):
        """Next data message or the close; see the class comment. With
        pongs=True a pong is returned too, as ('pong', payload)."""
        if self.close_info:
            return self.close_info
        deadline = time.monotonic() + timeout
        while True:
            frame = self._parse_frame()
            if frame is None:
                if not self._fill(deadline):
                    self.close_info = ("close", 1006, "")
                    self.abort()
                    return self.close_info
                continue
            fin, op, payload = frame
            if op == OP_PING:
                if not fin or len(payload) > 125:
                    raise ProtocolError("bad ping frame")
                self.send_frame(OP_PONG, payload, ignore_errors=True)
            elif op == OP_PONG:
                self.pongs.append(payload)
                if pongs:
                    return ("pong", payload)
            elif op == OP_CLOSE:
                return self._on_close(payload)
            elif op in (OP_TEXT, OP_BINARY):
                if self._frag_op is not None:
                    raise ProtocolError("new data frame inside a fragmented message")
                if fin:
                    return self._deliver(op, payload)
                self._frag_op, self._frag = op, bytearray(payload)
            elif op == OP_CONT:
                if self._frag_op is None:
                    raise ProtocolError("continuation frame without a message")
                self._frag += payload
                if fin:
                    op, data = self._frag_op, bytes(self._frag)
                    self._frag_op, self._frag = None, bytearray()
                    return self._deliver(op, data)
            else:
                raise ProtocolError("unknown opcode %d" % op)

    def _on_close(self, payload):
        if len(payload) == 1:
            raise ProtocolError("close frame with a 1-byte payload")
        code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
        reason = payload[2:].decode("utf-8", "replace")
        if not self.close_sent:
            self.send_frame(OP_CLOSE, payload[:2], ignore_errors=True)
            self.close_sent = True
        self.close_info = ("close", code, reason)
        self.abort()
        return self.close_info

    def _deliver(self, op, payload):
        if op == OP_BINARY:
            return ("binary", payload)
        try:
            return ("text", payload.decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError("server sent invalid UTF-8 in a text message: %r" % payload[:80])

    def _recv_json_wire(self, timeout):
        msg = self.recv(timeout)
        if msg[0] != "text":
            raise AssertionError("expected a JSON text message, got %r" % (msg[:3],))
        try:
            obj = json.loads(msg[1])
        except ValueError:
            raise AssertionError("server sent a text message that is not JSON: %r" % msg[1][:200])
        if not isinstance(obj, dict):
            raise AssertionError("server sent JSON that is not an object: %r" % msg[1][:200])
        return obj

    def recv_json(self, timeout=5.0):
        """Next JSON message (buffered ones first)."""
        if self.pending:
            return self.pending.popleft()
        return self._recv_json_wire(timeout)

    def recv_push(self, kind="message", timeout=5.0):
        """Next message, which must be a push of this kind."""
        msg = self.recv_json(timeout)
        assert msg.get("push") == kind, "expected a %r push, got %r" % (kind, msg)
        return msg

    def subscribe(self, channel, **args):
        """Subscribes (since=..., etc.) and returns the reply's result."""
        return assert_result(self.cmd("subscribe", channel=channel, **args))

    def messages(self, n, timeout=5.0):
        """The next n `message` pushes (other pushes are skipped)."""
        out = []
        while len(out) < n:
            m = self.recv_json(timeout)
            if m.get("push") == "message":
                out.append(m)
        return out

    def cmd(self, op, timeout=5.0, **args):
        """Sends {"id":N,"op":op,...args} and returns the reply with id N;
        pushes read meanwhile are kept for recv_json()."""
        cid = self._next_id
        self._next_id += 1
        msg = {"id": cid, "op": op}
        msg.update(args)
        self.send_json(msg)
        return self.wait_reply(cid, timeout)

    def wait_reply(self, cid, timeout=5.0):
        for m in list(self.pending):
            if m.get("id") == cid and "push" not in m:
                self.pending.remove(m)
                return m
        deadline = time.monotonic() + timeout
        while True:
            m = self._recv_json_wire(max(0.0, deadline - time.monotonic()))
            if m.get("id") == cid and "push" not in m:
                return m
            self.pending.append(m)

    def next_id(self):
        cid = self._next_id
        self._next_id += 1
        return cid

    def expect_close(self, timeout=5.0):
        """Reads (discarding data messages into self.discarded) until the
        close arrives; returns its code."""
        self.discarded = getattr(self, "discarded", 0)
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            if msg[0] == "close":
                return msg[1]
            self.discarded += 1

    def wait_pong(self, payload, timeout=5.0):
        """Reads until a pong carrying `payload` arrives (other messages are
        kept in self.pending)."""
        deadline = time.monotonic() + timeout
        while payload not in self.pongs:
            try:
                msg = self.recv(max(0.0, deadline - time.monotonic()), pongs=True)
            except TimeoutError:
                raise AssertionError("no pong for ping %r within %.1fs" % (payload, timeout))
            if msg[0] == "close":
                raise AssertionError("closed while waiting for a pong: %r" % (msg,))
            if msg[0] != "pong":
                self.pending.append(json.loads(msg[1]) if msg[0] == "text" else msg)
        return True

    def assert_quiet_until_marker(self, send, channel, timeout=20.0):
        """Nothing arrives on this socket before a marker sent afterwards:
        the positive form of assert_quiet, which cannot tell "not delivered"
        from "delivered late".

        send(channel, data) must publish `data` on `channel` through the
        same path as what must not arrive (REST publish, a Django
        group_send...), after it; this socket must be subscribed to
        `channel`. Deliveries to one socket keep their order, so a wrong
        delivery, being older, would come before the marker. Messages
        already buffered count as arrived. Returns the marker's data (other
        subscribers of `channel` get it too)."""
        marker = {"type": "test.marker", "marker": secrets.token_hex(8)}
        send(channel, marker)
        m = self.recv_json(timeout)
        assert m.get("push") == "message" and m.get("channel") == channel \
            and m.get("data") == marker, \
            "expected nothing before the marker on %r, got %r" % (channel, m)
        return marker

    def assert_quiet(self, timeout=0.3):
        """Nothing arrives within `timeout` seconds. Weak on a loaded machine
        (a late wrong delivery passes): prefer assert_quiet_until_marker."""
        assert not self.pending, "unexpected buffered messages: %r" % list(self.pending)
        try:
            msg = self.recv(timeout)
        except TimeoutError:
            return
        raise AssertionError("expected silence, got %r" % (msg[:3],))

    def close(self, code=1000):
        """Closing handshake (best effort), then drops the socket."""
        if self.sock is None or self.close_info:
            self.abort()
            return
        self.send_close(code)
        try:
            while True:
                if self.recv(1.0)[0] == "close":
                    break
        except (TimeoutError, OSError, AssertionError):
            pass
        self.abort()

    def abort(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


def authenticate(ws, token, via="header"):
    """Upgrades an unconnected WS with `token` (Authorization header, or
    ?token= when via="query"), checks the 101 and the `connected` push, and
    returns the WS with the push in ws.hello and its node id in ws.node."""
    if via == "header":
        status = ws.connect("/ws", {"Authorization": "Bearer " + token})
    else:
        status = ws.connect("/ws?token=" + token)
    assert status == 101, "upgrade refused with HTTP %s: %r" % (status, ws.http_body)
    hello = ws.recv_json()
    assert hello.get("push") == "connected", "first frame is not the connected push: %r" % hello
    ws.hello = hello
    ws.node = client_node(hello)
    return ws


#---- assertions shared by several files --------------------------------------

def assert_error(reply, code, cid=None):
    """reply is {"id":cid?,"error":{"code":code,"message":str}}."""
    assert "error" in reply and "result" not in reply, "expected error %r, got %r" % (code, reply)
    err = reply["error"]
    assert isinstance(err, dict) and err.get("code") == code, "expected error %r, got %r" % (code, reply)
    assert isinstance(err.get("message"), str), "error without a message string: %r" % reply
    if cid is not None:
        assert reply.get("id") == cid, "error reply has id %r, want %r" % (reply.get("id"), cid)


def assert_result(reply):
    assert "result" in reply and "error" not in reply, "expected a result, got %r" % reply
    assert isinstance(reply["result"], dict), "result is not an object: %r" % reply
    return reply["result"]


def assert_problem(resp, status):
    """RFC 9457 problem details with the given status."""
    assert resp.status_code == status, "HTTP %d, want %d: %s" % (resp.status_code, status, resp.text[:300])
    ctype = resp.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip() == "application/problem+json", \
        "Content-Type %r on a %d" % (ctype, status)
    body = resp.json()
    for member in ("type", "title", "status", "detail"):
        assert member in body, "problem without %r: %r" % (member, body)
    assert isinstance(body["status"], int) and not isinstance(body["status"], bool) \
        and body["status"] == status, "problem status %r != HTTP %d" % (body["status"], status)
    assert isinstance(body["title"], str) and isinstance(body["detail"], str) \
        and isinstance(body["type"], str), "problem members of wrong type: %r" % body
    return body


#---- runner ------------------------------------------------------------------

class TestTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise TestTimeout("test exceeded its time limit")


def run_tests(namespace, per_test_timeout=120):
    """Runs every test_* function of the module in definition order (or
    only those named on the command line), then prints `N passed, M failed`.
    A run that ran no test fails (a file whose tests were renamed away, or a
    name on the command line that matches nothing, must not pass)."""
    tests = [(n, f) for n, f in namespace.items() if n.startswith("test_") and callable(f)]
    wanted = sys.argv[1:]
    if wanted:
        unknown = [n for n in wanted if n not in dict(tests)]
        if unknown:
            print("FAIL no such test: %s" % ", ".join(unknown), flush=True)
            sys.exit(1)
        tests = [(n, f) for n, f in tests if n in wanted]
    if not tests:
        print("0 passed, 0 failed: no test ran (no test_* function)", flush=True)
        sys.exit(1)
    passed = failed = 0
    # a hung test fails alone, with its traceback, instead of using up the
    # whole file's CTest timeout; sanitizer builds run slower and scale it
    # (HERALD_TEST_TIMEOUT_SCALE, set by tests/CMakeLists.txt)
    limit = max(1, int(per_test_timeout * float(os.environ.get("HERALD_TEST_TIMEOUT_SCALE") or 1)))
    signal.signal(signal.SIGALRM, _on_alarm)
    for name, fn in tests:
        signal.alarm(limit)
        try:
            fn()
        except Exception:
            signal.alarm(0)
            failed += 1
            print("FAIL " + name, flush=True)
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()
        else:
            signal.alarm(0)
            passed += 1
            print("ok " + name, flush=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)
