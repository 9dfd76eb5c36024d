"""The developer commands: herald publish, herald tail, herald check-config,
against a real running node."""

import os
import re
import subprocess

from harness import REPO, Herald, herald_bin, run_tests, wait_until


def test_publish_reaches_subscribers():
    with Herald() as h:
        ws = h.subscriber("news")
        p = h.run(["publish", "news", '{"title":"hi"}'])
        assert p.returncode == 0, p.stderr
        assert ws.recv_push()["data"] == {"title": "hi"}
        # bad JSON: refused before anything is sent
        p = h.run(["publish", "news", "{nope"])
        assert p.returncode == 2 and b"not JSON" in p.stderr
        ws.assert_quiet_until_marker(h.publish, "news")
        # the server's refusal is shown (problem+json) with a non-zero status
        p = h.run(["publish", "bad name", "1"])
        assert p.returncode == 1 and b"invalid channel" in p.stderr
        # nobody listening there
        p = h.run(["publish", "news", "1", "--url", "http://127.0.0.1:1"])
        assert p.returncode == 1 and b"cannot connect" in p.stderr


def test_tail_prints_each_message():
    with Herald() as h:
        tail = subprocess.Popen([h.bin, "tail", "news"], env=h.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            wait_until(lambda: h.metrics().get("herald_subscriptions", 0) >= 1,
                       what="tail to subscribe")
            for i in range(3):
                h.publish("news", {"i": i})
            lines = [tail.stdout.readline().decode() for _ in range(3)]
            assert [l.strip() for l in lines] == [
                '{"push":"message","channel":"news","data":{"i":%d}}' % i for i in range(3)]
        finally:
            tail.terminate()
            tail.wait(5)
        # a node going away ends tail with 1001: exit status 0
        wait_until(lambda: h.metrics().get("herald_subscriptions", 0) == 0,
                   what="the first tail's subscription to go")
        tail = subprocess.Popen([h.bin, "tail", "news"], env=h.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        wait_until(lambda: h.metrics().get("herald_subscriptions", 0) >= 1 or tail.poll() is not None,
                   what="the second tail to subscribe")
        assert tail.poll() is None, "tail exited early: %r" % tail.stderr.read()
        h.stop()
        assert tail.wait(10) == 0 and b"1001" in tail.stderr.read()


def test_tail_says_when_it_is_subscribed():
    """On stderr, once the subscribe reply arrived: what a script waits for
    before it publishes (docs/operations.md does)."""
    with Herald() as h:
        tail = subprocess.Popen([h.bin, "tail", "news"], env=h.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            assert tail.stderr.readline() == b"herald tail: subscribed to news\n"
            assert h.metrics()["herald_subscriptions"] == 1
            h.publish("news", 1)
            assert tail.stdout.readline() == b'{"push":"message","channel":"news","data":1}\n'
        finally:
            tail.terminate()
            tail.wait(5)


def test_help_agrees_with_the_docs():
    """`herald --help` and docs/configuration.md list the same options, each
    with the same environment variable and the same metavariable shape
    (booleans as [BOOL]); the Redis URL form and the commands README names
    are the ones --help shows."""
    out = subprocess.run([herald_bin(), "--help"], capture_output=True, text=True).stdout
    helped = dict(re.findall(r"^  (--[a-z-]+(?: \S+)?) .*\n +(HERALD_[A-Z_]+),", out, re.M))
    helped = {flag.split()[0]: (flag, env) for flag, env in helped.items()}
    with open(os.path.join(REPO, "docs", "configuration.md")) as f:
        rows = re.findall(r"^\| `(--[a-z-]+(?: [^`]+)?)` \| `(HERALD_[A-Z_]+)` \|", f.read(), re.M)
    documented = {flag.split()[0]: (flag, env) for flag, env in rows}
    assert sorted(helped) == sorted(documented), \
        "only in --help: %s; only in the docs: %s" % (sorted(set(helped) - set(documented)),
                                                       sorted(set(documented) - set(helped)))
    for name, (flag, env) in documented.items():
        assert env == helped[name][1], (name, env, helped[name])
        assert ("[BOOL]" in flag) == ("[BOOL]" in helped[name][0]), (flag, helped[name][0])
    assert "redis://[[user]:password@]host:port[/db]" in out
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    for cmd in ("herald [serve] [options]", "herald token --sub ID", "herald user add NAME",
                "herald publish CHANNEL JSON", "herald tail CHANNEL", "herald check-config FILE"):
        assert cmd in out and cmd in readme, cmd
    # and a boolean flag takes a value the way --help says flags do
    h = Herald()
    empty = os.path.join(h.dir, "empty.json")
    with open(empty, "w") as f:
        f.write("{}")
    p = subprocess.run([herald_bin(), "check-config", empty, "--anonymous", "yes"],
                       capture_output=True, text=True)
    h.discard()
    assert p.returncode == 0 and p.stdout.startswith("ok: "), (p.stdout, p.stderr)


def test_check_config():
    h = Herald()
    good = os.path.join(h.dir, "good.json")
    bad = os.path.join(h.dir, "bad.json")
    with open(good, "w") as f:
        f.write('{"namespaces":{"chat":{"presence":true,"history_size":10,"history_ttl":60}}}')
    with open(bad, "w") as f:
        f.write('{"namespaces":{"chat":{"presense":true}}}')
    p = h.run(["check-config", good])
    assert p.returncode == 0 and b"ok: 2 namespace(s)" in p.stdout, p
    p = h.run(["check-config", bad])
    assert p.returncode == 2 and b"presense" in p.stderr
    p = h.run(["check-config", good, "--trusted-proxies", "10.0.0.0/40"])
    assert p.returncode == 2 and b"trusted_proxies" in p.stderr
    h.discard()


if __name__ == "__main__":
    run_tests(globals())
