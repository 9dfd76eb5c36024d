"""bench/run.py as a newcomer runs it: from another directory, with
relative paths, and loudly failing. Each run is one tiny row (10
subscribers, 20 publications); the numbers are not checked, only that the
row ran, that paths mean what they mean where the command was typed, and
the exit status."""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

from harness import REPO, herald_bin, run_tests

RUN_PY = os.path.join(REPO, "bench", "run.py")
TINY = ["fanout", "--subs", "10", "--pubs", "20", "--servers", "herald", "--timeout", "60"]


def workdir():
    """A directory inside the build directory, so the relative paths to the
    binaries are short ("../herald") and point nowhere when resolved against
    any other directory (run.py runs its servers in temporary ones)."""
    d = tempfile.mkdtemp(prefix="bench-cwd-", dir=os.path.dirname(os.path.abspath(herald_bin())))
    atexit.register(shutil.rmtree, d, True)
    return d


def run(args, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    p = subprocess.run([sys.executable, os.path.relpath(RUN_PY, cwd)] + args, cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def tools(cwd):
    """--herald and --bin-dir relative to cwd: the binaries under test."""
    herald = os.path.abspath(herald_bin())
    return ["--herald", os.path.relpath(herald, cwd),
            "--bin-dir", os.path.relpath(os.path.join(os.path.dirname(herald), "bench"), cwd)]


def herald_row(path):
    with open(path) as f:
        rows = [r for r in json.load(f)["results"] if r["server"] == "herald"]
    assert len(rows) == 1, rows
    return rows[0]


def test_relative_paths_from_another_directory():
    """Relative --herald, --bin-dir and --json from a directory that is not
    the checkout (run.py starts its servers in their own directories)."""
    cwd = workdir()
    rc, out, err = run(TINY + tools(cwd) + ["--json", "out.json"], cwd)
    assert rc == 0, "rc %d\n%s\n%s" % (rc, out[-2000:], err[-3000:])
    row = herald_row(os.path.join(cwd, "out.json"))
    assert "error" not in row and not row.get("failed"), row
    assert row["received"] == row["expected"] == 200, row


def test_default_binaries_are_this_checkouts_build():
    """Without --herald and --bin-dir: REPO/build/herald and REPO/build/bench
    (the build ./setup.sh makes), never another machine's path."""
    if not os.access(os.path.join(REPO, "build", "herald"), os.X_OK):
        print("  (no %s/build/herald: only the message is checked)" % REPO)
        rc, out, err = run(TINY, workdir())
        assert rc != 0 and os.path.join(REPO, "build", "herald") in err, (rc, err)
        return
    cwd = workdir()
    rc, out, err = run(TINY + ["--json", "out.json"], cwd)
    assert rc == 0, "rc %d\n%s" % (rc, err[-3000:])
    with open(os.path.join(cwd, "out.json")) as f:
        assert json.load(f)["herald"] == os.path.join(REPO, "build", "herald")


def test_herald_base_runs_in_the_same_run():
    """--herald-base PATH (relative, like --herald) and --servers
    herald,herald-base: a second Herald's rows beside the first's, in one
    run."""
    cwd = workdir()
    base = os.path.relpath(os.path.abspath(herald_bin()), cwd)
    rc, out, err = run(TINY + tools(cwd) + ["--herald-base", base, "--servers", "herald,herald-base",
                                            "--json", "out.json"], cwd)
    assert rc == 0, "rc %d\n%s\n%s" % (rc, out[-2000:], err[-3000:])
    with open(os.path.join(cwd, "out.json")) as f:
        rows = {r["server"]: r for r in json.load(f)["results"]}
    assert sorted(rows) == ["herald", "herald-base"], sorted(rows)
    for row in rows.values():
        assert not row.get("failed") and row["received"] == row["expected"] == 200, row


def test_a_server_that_does_not_start_fails_the_run():
    """A Herald that exits at start: the row says why and run.py exits 1
    (it used to print a note and exit 0)."""
    cwd = workdir()
    fake = os.path.join(cwd, "dies")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\necho 'herald: cannot start (on purpose)' >&2\nexit 3\n")
    os.chmod(fake, 0o755)
    args = TINY + tools(cwd)
    args[args.index("--herald") + 1] = "dies"  # relative, in cwd
    rc, out, err = run(args, cwd)
    assert rc == 1, "rc %d\n%s\n%s" % (rc, out[-2000:], err[-3000:])
    assert "server did not start" in err and "cannot start (on purpose)" in err, err[-3000:]
    assert "1 row(s) failed" in err, err[-3000:]


def test_missing_binary_is_named():
    cwd = workdir()
    rc, _, err = run(TINY + ["--herald", "build/nope"], cwd)
    assert rc != 0 and os.path.join(cwd, "build", "nope") in err, (rc, err)


def test_prefix_measures_the_server_not_the_wrapper():
    """--herald-prefix (a profiler, say): the RSS and CPU columns are
    Herald's. `timeout` forks Herald as its child and waits, as perf record
    does; its own RSS is a fraction of Herald's."""
    cwd = workdir()
    rc, _, err = run(TINY + tools(cwd) + ["--json", "plain.json"], cwd)
    assert rc == 0, err[-3000:]
    rc, _, err = run(TINY + tools(cwd) + ["--json", "wrapped.json", "--herald-prefix",
                                           "timeout 300"], cwd)
    assert rc == 0, err[-3000:]
    plain, wrapped = herald_row(os.path.join(cwd, "plain.json")), \
        herald_row(os.path.join(cwd, "wrapped.json"))
    assert wrapped["received"] == 200, wrapped
    assert wrapped["rss_after_kb"] > plain["rss_after_kb"] / 2, (plain["rss_after_kb"],
                                                                 wrapped["rss_after_kb"])


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=150)
