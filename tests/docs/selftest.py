#!/usr/bin/python3
"""selftest.py - the documentation checks can fail: blocks.py and links.py
run on the pages of tests/docs/fixtures/, one that passes and one per way to
fail (a block's exit status, its output, an illustrative marker without a
reason, broken links)."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from harness import run_tests  # noqa: E402


def run(script, *args):
    p = subprocess.run(["/usr/bin/python3", os.path.join(HERE, script)] + list(args),
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


def test_a_page_that_works_passes():
    rc, out = run("blocks.py", "tests/docs/fixtures/good.md")
    assert rc == 0, out
    assert "2 block(s) run, 1 illustrative, 0 failed" in out, out
    rc, out = run("links.py", "tests/docs/fixtures/good.md")
    assert rc == 0, out


def test_a_failing_block_fails_the_page():
    rc, out = run("blocks.py", "tests/docs/fixtures/bad_exit.md")
    assert rc == 1 and "FAILED tests/docs/fixtures/bad_exit.md:3: exit status 1" in out, out


def test_output_that_differs_from_the_page_fails():
    rc, out = run("blocks.py", "tests/docs/fixtures/bad_output.md")
    assert rc == 1 and "shown but not printed: ['2']; printed but not shown: ['1']" in out, out


def test_illustrative_needs_a_reason():
    rc, out = run("blocks.py", "tests/docs/fixtures/bad_marker.md")
    assert rc == 1 and "must say why" in out, out


def test_broken_links_fail():
    rc, out = run("links.py", "tests/docs/fixtures/bad_link.md")
    assert rc == 1, out
    for why in ("no such file: tests/docs/fixtures/no-such-file.md",
                "no heading #nope in tests/docs/fixtures/good.md", "points outside the repository"):
        assert why in out, (why, out)


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=150)
