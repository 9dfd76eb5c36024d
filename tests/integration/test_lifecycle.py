"""Process lifecycle: command line, configuration file, token issuing, JSON
logs, token expiry, origin checks, and graceful shutdown on SIGTERM/SIGINT."""

import json
import os
import shutil
import signal
import socket
import tempfile
import time

from harness import (Herald, WS, assert_error, assert_result, before, free_port, jwt_parts,
                     jwt_verify_hs256, project_version, run_tests, with_lifetimes)

CHAT = {"namespaces": {"chat": {"subscribe": "authenticated", "publish": "subscribers"}}}


def cli(args, timeout=8, **kw):
    """Runs `herald ARGS` with a fresh test environment; CompletedProcess."""
    h = Herald(**kw)
    try:
        return h.run(args, timeout=timeout)
    finally:
        h.discard()


#---- command line ------------------------------------------------------------

def test_version_flag():
    p = cli(["--version"])
    out = p.stdout.decode()
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert project_version() and project_version() in out, "--version printed %r, want %s" % (out, project_version())


def test_help_lists_options():
    p = cli(["--help"])
    out = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 0, (p.returncode, out)
    for word in ("--listen", "--config"):
        assert word in out, "--help does not mention %s:\n%s" % (word, out)


def test_unknown_flag_fails_with_message():
    p = cli(["--no-such-flag"], timeout=5)
    assert p.returncode != 0, "unknown flag accepted"
    err = p.stderr.decode()
    assert err.strip(), "no message on stderr"
    assert "no-such-flag" in err, "message does not name the flag: %r" % err


def test_token_command_issues_hs256_jwt():
    h = Herald()
    t0 = int(time.time())
    try:
        tok = h.token("alice", ttl=600, roles=["publisher", "ops"])
    finally:
        h.discard()
    head, payload, _ = jwt_parts(tok)
    assert head.get("alg") == "HS256", head
    assert payload.get("sub") == "alice", payload
    assert payload.get("roles") == ["publisher", "ops"], payload
    assert t0 + 595 <= payload.get("exp", 0) <= int(time.time()) + 605, payload
    assert jwt_verify_hs256(tok, h.secret), "signature does not verify with HERALD_JWT_SECRET"
    assert not jwt_verify_hs256(tok, h.secret + "x")


def test_token_command_default_ttl_and_no_roles():
    h = Herald()
    try:
        _, payload, _ = jwt_parts(h.token("bob"))
    finally:
        h.discard()
    assert payload.get("sub") == "bob" and payload.get("exp", 0) > time.time() + 60, payload
    assert payload.get("roles") in (None, []), payload


def test_token_command_requires_sub():
    p = cli(["token"], timeout=5)
    assert p.returncode != 0 and p.stderr.strip(), (p.returncode, p.stdout, p.stderr)


def test_explicit_serve_subcommand():
    with Herald(args=["serve"]) as h:
        assert h.http("GET", "/healthz").status_code == 200


def test_listen_flag_overrides_environment():
    # HERALD_LISTEN names a port reserved by this process (harness: the
    # flag says 127.0.0.1:0), so nobody else listens there
    with Herald(listen_via="flag") as h:
        env_port = int(h.env["HERALD_LISTEN"].rsplit(":", 1)[1])
        assert env_port != h.port
        assert h.http("GET", "/healthz").status_code == 200
        try:
            socket.create_connection(("127.0.0.1", env_port), timeout=10).close()
            raise AssertionError("also listening on the HERALD_LISTEN port")
        except ConnectionRefusedError:
            pass


#---- configuration file -------------------------------------------------------

def assert_config_refused(config, key):
    p = cli([], config=config)
    err = p.stderr.decode()
    assert p.returncode != 0, "config %r accepted" % (config,)
    assert key in err, "error does not name %r: %r" % (key, err[-500:])


def test_config_unknown_top_level_key_refused():
    assert_config_refused({"namespaces": {}, "frobnicate": 1}, "frobnicate")


def test_config_unknown_namespace_key_refused():
    assert_config_refused({"namespaces": {"chat": {"publsh": "subscribers"}}}, "publsh")


def test_config_bad_value_refused():
    assert_config_refused({"namespaces": {"chat": {"publish": "everyone"}}}, "publish")


def test_config_invalid_json_refused():
    p = cli([], config="{\"namespaces\": ")
    assert p.returncode != 0 and p.stderr.strip(), (p.returncode, p.stderr)


def test_config_file_via_flag_applies_namespaces():
    with Herald(config=CHAT, config_via="flag") as h:
        alice, bob = h.client("alice"), h.client("bob")
        assert_result(alice.cmd("subscribe", channel="chat:lobby"))
        assert_result(alice.cmd("publish", channel="chat:lobby", data="hi"))
        assert alice.recv_push()["data"] == "hi"
        assert_error(bob.cmd("publish", channel="chat:lobby", data="no"), "forbidden")
        assert_error(alice.cmd("publish", channel="news", data="no"), "forbidden")


#---- runtime behaviour ---------------------------------------------------------

def test_logs_are_json_lines():
    with Herald() as h:
        h.client().cmd("ping")
        h.http("GET", "/nope")
        h.stop()
        lines = [l for l in h.log().splitlines() if l.strip()]
        assert lines, "no log output at all"
        for line in lines:
            try:
                assert isinstance(json.loads(line), dict)
            except (ValueError, AssertionError):
                raise AssertionError("log line is not a JSON object: %r" % line)


def test_generated_secret_is_kept_in_store():
    d = tempfile.mkdtemp(prefix="herald-it-db-")
    try:
        env = {"HERALD_JWT_SECRET": None, "HERALD_DB": os.path.join(d, "h.db")}
        with Herald(env=env) as h:
            tok = h.token("alice")
            h.client(token=tok)
            assert "warn" in h.log().lower(), "no warning about the generated secret"
        with Herald(env=env) as h2:
            ws = h2.client(token=tok)  # same store, same secret: still valid
            assert ws.hello["user"] == "alice"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_token_expiry_closes_4001():
    with Herald() as h:
        def scenario(lifetime):
            tok = h.token("alice", ttl=lifetime + 1)  # through the CLI, as a user would
            exp = jwt_parts(tok)[1]["exp"]
            with before(exp, "connecting and a ping"):
                ws = h.client(token=tok)
                assert_result(ws.cmd("ping"))
            kind, code, reason = ws.recv(timeout=max(0, exp - time.time()) + 15)
            assert (kind, code) == ("close", 4001), (kind, code, reason)
            assert "expired" in reason, "close reason %r" % reason
            assert time.time() >= exp - 0.25, "closed %.2f s before exp" % (exp - time.time())

        with_lifetimes(scenario)


def test_allowed_origins():
    with Herald(env={"HERALD_ALLOWED_ORIGINS": "https://good.example,https://also.example"}) as h:
        tok = h.token("alice")
        for origin, ok in [("https://good.example", True), ("https://also.example", True),
                           ("https://evil.example", False), ("https://good.example.evil", False)]:
            ws = h.ws()
            status = ws.connect("/ws", {"Authorization": "Bearer " + tok, "Origin": origin})
            if ok:
                assert status == 101, "origin %s refused: %s" % (origin, status)
                ws.close()
            else:
                assert status == 403, "origin %s: HTTP %s, want 403" % (origin, status)


#---- shutdown ------------------------------------------------------------------

def check_graceful_shutdown(sig):
    """On sig: every client gets 1001, a new WebSocket is refused while
    Herald is still shutting down, and it exits 0 as soon as its last
    connection is gone (not at the end of its grace period).

    A subscriber that reads nothing keeps Herald in its grace period (60 s
    here) until the test drops it: 8 MB wait for it, more than the kernel's
    socket buffers take (tcp_wmem allows 4 MB), so Herald cannot flush its
    queue and close it. The late connection is thus tried while Herald
    provably still runs (before, a Herald that had already exited passed
    that check). The port is reserved by this process, so after the exit
    nobody else can be listening on it."""
    with Herald(port=free_port(), env={"HERALD_SHUTDOWN_GRACE_MS": "60000",
                                       "HERALD_OUT_QUEUE": str(64 << 20)}) as h:
        clients = [h.subscriber("news", "alice"), h.client("bob"), h.subscriber("news", "carol")]
        stuck = h.client("stuck", rcvbuf=4096)
        assert_result(stuck.cmd("subscribe", channel="big"))
        for i in range(16):
            h.publish("big", "q" * (512 << 10))
        h.proc.send_signal(sig)
        for ws in clients:
            kind, code, _ = ws.recv(timeout=20)
            assert (kind, code) == ("close", 1001), "on signal %d a client got %r" % (sig, (kind, code))
        assert h.running(), "herald exited with a client still holding it in its grace period"
        late = WS(h.port, timeout=10)
        try:
            status = late.connect("/ws", {"Authorization": "Bearer " + h.jwt(sub="late")})
        except (ConnectionError, OSError) as e:
            status = e  # refused: no longer listening
        late.abort()
        assert h.running(), "herald exited before the late connection was tried"
        assert status != 101, "a new WebSocket was accepted during shutdown"
        t0 = time.monotonic()
        stuck.abort()  # the last connection goes
        assert h.proc.wait(30) == 0, "exit status %r on signal %d" % (h.proc.returncode, sig)
        assert time.monotonic() - t0 < 20, \
            "took %.1f s to exit after the last connection went" % (time.monotonic() - t0)
        try:
            socket.create_connection(("127.0.0.1", h.port), timeout=10).close()
            raise AssertionError("port still accepting after exit")
        except ConnectionRefusedError:
            pass


def test_sigterm_closes_clients_1001_and_exits_0():
    check_graceful_shutdown(signal.SIGTERM)


def test_sigint_closes_clients_1001_and_exits_0():
    check_graceful_shutdown(signal.SIGINT)


def test_sigterm_with_unread_clients_still_exits_promptly():
    """A client that never reads cannot hold Herald past its grace period
    (1 s here): the exit comes within a bound that is generous for a loaded
    machine but far below anything that waits for the client (TCP timeouts
    take minutes)."""
    with Herald(env={"HERALD_SHUTDOWN_GRACE_MS": "1000"}) as h:
        stuck = h.client("stuck", rcvbuf=4096)
        assert_result(stuck.cmd("subscribe", channel="big"))
        for i in range(50):
            h.publish("big", "q" * 8000)
        t0 = time.monotonic()
        assert h.stop(timeout=30) == 0, "exit status %r" % h.proc.returncode
        assert time.monotonic() - t0 < 15, "shutdown with a stuck client took %.1fs" % (time.monotonic() - t0)


if __name__ == "__main__":
    run_tests(globals())
