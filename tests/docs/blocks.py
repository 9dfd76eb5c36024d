#!/usr/bin/python3
"""blocks.py - runs every copy-paste block of one Markdown file, as written,
in a fresh clone of this repository.

    /usr/bin/python3 tests/docs/blocks.py FILE.md [--list]

Every ```sh / ```bash / ```python block of FILE runs, in the order of the
file, in one fresh clone (git clone of this checkout, plus its uncommitted
changes) - the way a reader who follows the page top to bottom would run
them. Shell blocks run with `bash -e -o pipefail`, Python blocks with
Debian's /usr/bin/python3, each in its own process group, which is killed
(with everything the block left running in the background) when it ends.
A block fails on a non-zero exit status, on a time-out, or when its output
differs from the output shown after it.

HTML comments on the lines before a block's fence (blank lines and other
comments may sit between) say how it runs:

  <!-- illustrative: WHY -->   not run (a fragment, a placeholder, minutes of
                               work or another machine); WHY is required
  <!-- run: SETUP; ... -->     what must exist before it runs:
      build                    the clone's build/ is the build under test
                               (the directory of $HERALD_BIN), as after
                               `./setup.sh run`
      herald ARGS...           build, and `./build/herald ARGS` running in
                               the clone as Try it left it: embedded mode,
                               HERALD_JWT_SECRET=dev-secret-dev-secret-dev-secret-32,
                               HERALD_API_KEY=dev-key (also in the block's
                               environment); the block starts once /readyz
                               answers 200
      redis                    a redis-server on the block's port 6379
      python PATH              run this Python block with PATH (in the clone,
                               e.g. .venv/bin/python that a block before made)
      serves PORT              the block is a server that does not end: it
                               passes once http://127.0.0.1:PORT/readyz
                               answers 200, and is then stopped
      timeout SECONDS          instead of 120
  <!-- save: PATH -->          (before any block, e.g. ```json) writes the
                               block's text to PATH in the clone
  <!-- output -->              (before the block after a run block) what the
                               run block prints on stdout: the same lines, in
                               any order (background clients race), where
                               "..." inside a line matches anything

The one change made to a block's text (and its run: marker): every port after
127.0.0.1: or localhost: (and after --port) is replaced by a free port, the same number by
the same port in one block, and HERALD_LISTEN is set to the port that 8080
became - so blocks that say 8080 never collide with anything else on a busy
machine. Blocks get the environment of the test without its HERALD_* and
PYTHON* variables, and the PATH of a fresh Debian 12 root shell. Exit status
1 when any block failed.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
from harness import Redis, free_port  # noqa: E402


def herald_bin():
    """The binary under test (CTest sets HERALD_BIN), else this checkout's."""
    return os.environ.get("HERALD_BIN") or os.path.join(REPO, "build", "herald")

RUN_LANGS = {"sh": "sh", "bash": "sh", "shell": "sh", "python": "python", "py": "python"}
SECRET = "dev-secret-dev-secret-dev-secret-32"
API_KEY = "dev-key"
DEFAULT_TIMEOUT = 120
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
COMMENT = re.compile(r"^\s*<!--\s*(.*?)\s*-->\s*$")
PORT = re.compile(r"((?:127\.0\.0\.1|localhost):|--port[ =])(\d{2,5})\b")


class Block:
    def __init__(self, lang, text, line, markers):
        self.lang, self.text, self.line, self.markers = lang, text, line, markers
        self.output = None  # the text of an <!-- output --> block after it

    def marker(self, name):
        for m in self.markers:
            if m == name or m.startswith(name + ":"):
                return m[len(name) + 1:].strip() if m != name else ""
        return None

    def where(self, path):
        return "%s:%d" % (path, self.line)


def parse(text):
    """The fenced blocks of a Markdown text, with the markers before each."""
    lines = text.split("\n")
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        start = i
        body = []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence[0] * len(fence)) and
                                      lines[i].strip().strip(fence[0]) == ""):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1
        markers, j = [], start - 1
        while j >= 0 and (not lines[j].strip() or COMMENT.match(lines[j])):
            c = COMMENT.match(lines[j])
            if c:
                markers.insert(0, c.group(1))
            j -= 1
        blocks.append(Block(lang, "\n".join(body) + "\n", start + 1, markers))
    return blocks


def plan(blocks):
    """Attaches output blocks to the run block before them; checks markers."""
    errors, last_run = [], None
    for b in blocks:
        for m in b.markers:
            if not re.match(r"(illustrative|run|save|output)\b", m):
                continue
            if m.startswith("illustrative") and not b.marker("illustrative"):
                errors.append((b, "an illustrative block must say why: <!-- illustrative: WHY -->"))
        if b.marker("output") is not None:
            if last_run is None:
                errors.append((b, "<!-- output --> without a run block before it"))
            else:
                last_run.output = b.text
            continue
        if b.lang in RUN_LANGS and b.marker("illustrative") is None:
            last_run = b
    return errors


#---- the clone -------------------------------------------------------------------------------

def git(*args, cwd=REPO):
    return subprocess.run(["git"] + list(args), cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def fresh_clone(dest):
    """A clone of this checkout with its uncommitted changes (tracked and
    untracked-not-ignored files), as it would be once committed."""
    git("clone", "--quiet", REPO, dest, cwd=None)
    entries = iter(git("status", "--porcelain", "-z", "--untracked-files=all").split("\0"))
    for entry in entries:
        if not entry:
            continue
        path = entry[3:]
        if entry[0] in "RC":  # a rename: the old path follows, gone from the tree
            old = next(entries)
            if not os.path.lexists(os.path.join(REPO, old)) and \
                    os.path.lexists(os.path.join(dest, old)):
                os.unlink(os.path.join(dest, old))
        src, dst = os.path.join(REPO, path), os.path.join(dest, path)
        if os.path.lexists(src) and not os.path.isdir(src):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)
        elif not os.path.lexists(src) and os.path.lexists(dst):
            os.unlink(dst)
    return dest


#---- setups ----------------------------------------------------------------------------------

def wait_http(url, proc, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited (%s) before %s answered" % (what, proc.returncode, url))
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("%s: %s did not answer 200 within %ds" % (what, url, timeout))


def stop_group(proc, grace=10.0):
    """SIGTERM to the process group of proc (the block and whatever it left
    in the background), SIGKILL for what is left after grace seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
    proc.poll()


class Setup:
    """What a block's <!-- run: --> marker asks for, started before it."""

    def __init__(self, clone, spec, ports, env, logdir):
        self.clone, self.ports, self.env, self.logdir = clone, ports, env, logdir
        self.procs, self.redis, self.timeout, self.serves = [], None, DEFAULT_TIMEOUT, None
        self.python = "/usr/bin/python3"
        self.items = [s.split() for s in spec.split(";") if s.strip()]
        for item in self.items:
            if item[0] == "timeout":
                self.timeout = int(item[1])
            elif item[0] == "serves":
                self.serves = int(item[1])
            elif item[0] == "python":
                self.python = os.path.join(clone, item[1])
            elif item[0] not in ("build", "herald", "redis"):
                raise ValueError("unknown setup %r" % item[0])

    def port(self, n):
        if n not in self.ports:
            self.ports[n] = free_port()
        return self.ports[n]

    def start(self):
        for item in self.items:
            if item[0] in ("build", "herald"):
                link_build(self.clone)
            if item[0] == "redis":
                self.redis = Redis()
                self.redis.port = self.port(6379)
                self.redis.url = "redis://127.0.0.1:%d/0" % self.redis.port
                self.redis.start()
            if item[0] == "herald":
                self.env.update(HERALD_JWT_SECRET=SECRET, HERALD_API_KEY=API_KEY)
                log = open(os.path.join(self.logdir, "herald.log"), "ab")
                p = subprocess.Popen([os.path.join(self.clone, "build", "herald")] + item[1:],
                                     cwd=self.clone, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                self.procs.append(p)
                wait_http("http://127.0.0.1:%d/readyz" % self.port(8080), p, 30, "herald")

    def stop(self):
        for p in self.procs:
            stop_group(p)
        if self.redis:
            self.redis.stop()


def link_build(clone):
    """The clone's build/ is the build under test (unless the clone built
    its own, as Try it does)."""
    build = os.path.join(clone, "build")
    if not os.path.lexists(build):
        os.symlink(os.path.dirname(os.path.abspath(herald_bin())), build)


#---- running a block -------------------------------------------------------------------------

def map_ports(text, ports):
    def sub(m):
        n = int(m.group(2))
        if n not in ports:
            ports[n] = free_port()
        return m.group(1) + str(ports[n])
    return PORT.sub(sub, text)


def output_matches(expected, actual):
    """Same non-empty lines in any order; "..." in an expected line matches
    anything. Returns None or what differs."""
    want = [l.rstrip() for l in expected.split("\n") if l.strip()]
    got = [l.rstrip() for l in actual.split("\n") if l.strip()]
    pats = [re.compile("^" + ".*".join(re.escape(p) for p in w.split("...")) + "$") for w in want]
    left = list(got)
    missing = []
    for w, p in zip(want, pats):
        for k, g in enumerate(left):
            if p.match(g):
                del left[k]
                break
        else:
            missing.append(w)
    if missing or left:
        return "shown but not printed: %r; printed but not shown: %r" % (missing, left)
    return None


# A fresh Debian 12 root shell's PATH: a machine's own additions (pyenv's
# python3, say) are not what a reader of the docs has.
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def base_env(ports):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HERALD_", "PYTHON", "VIRTUAL_ENV", "PYENV"))}
    env["PATH"] = DEBIAN_PATH
    env["HERALD_LISTEN"] = "127.0.0.1:%d" % ports.setdefault(8080, free_port())
    return env


def run_block(b, clone, work, n):
    ports = {}
    text = map_ports(b.text, ports)
    env = base_env(ports)
    setup = Setup(clone, map_ports(b.marker("run") or "", ports), ports, env, work)
    script = os.path.join(work, "block%d.%s" % (n, "py" if RUN_LANGS[b.lang] == "python" else "sh"))
    with open(script, "w") as f:
        f.write(text)
    argv = [setup.python, script] if RUN_LANGS[b.lang] == "python" else \
        ["bash", "-e", "-o", "pipefail", script]
    out_path, err_path = script + ".out", script + ".err"
    try:
        setup.start()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            p = subprocess.Popen(argv, cwd=clone, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=err, start_new_session=True)
            try:
                if setup.serves:
                    url = "http://127.0.0.1:%d/readyz" % setup.port(setup.serves)
                    wait_http(url, p, setup.timeout, "the block")
                    rc = 0
                else:
                    rc = p.wait(timeout=setup.timeout)
            except subprocess.TimeoutExpired:
                rc = "timed out after %ds" % setup.timeout
            finally:
                stop_group(p)
    except (RuntimeError, OSError, AssertionError, ValueError) as e:
        rc = "setup/run failed: %s" % e
    finally:
        setup.stop()
    stdout = open(out_path, errors="replace").read() if os.path.exists(out_path) else ""
    stderr = open(err_path, errors="replace").read() if os.path.exists(err_path) else ""
    problem = None
    if rc != 0:
        problem = "exit status %s" % rc
    elif b.output is not None:
        problem = output_matches(b.output, stdout)
    return problem, text, stdout, stderr


def main(argv):
    if not argv or argv[0].startswith("-"):
        sys.exit(__doc__)
    rel = argv[0]
    path = os.path.join(REPO, rel)
    blocks = parse(open(path).read())
    errors = plan(blocks)
    runnable = [b for b in blocks if b.lang in RUN_LANGS and b.marker("output") is None]
    if "--list" in argv:
        for b in blocks:
            kind = "output" if b.marker("output") is not None else \
                "illustrative" if b.marker("illustrative") is not None else \
                "save" if b.marker("save") else "run" if b in runnable else "-"
            print("%-28s %-7s %s %s" % (b.where(rel), b.lang or "-", kind,
                                        b.marker("run") or b.marker("illustrative") or ""))
        return 0
    failed = [(b.where(rel), why) for b, why in errors]
    if not any((b in runnable and b.marker("illustrative") is None) or b.marker("save")
               for b in blocks):
        for b in runnable:
            print("-- %s: illustrative (%s)" % (b.where(rel), b.marker("illustrative")))
        print("%s: nothing to run (%d illustrative block(s))" % (rel, len(runnable)))
        for where, why in failed:
            print("FAILED %s: %s" % (where, why))
        return 1 if failed else 0
    top = tempfile.mkdtemp(prefix="herald-docs-")
    clone = fresh_clone(os.path.join(top, "herald"))
    work = os.path.join(top, "work")
    os.makedirs(work)
    ran = skipped = 0
    for n, b in enumerate(blocks):
        save = b.marker("save")
        if save:
            dst = os.path.join(clone, save)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(dst, "w") as f:
                f.write(b.text)
            continue
        if b not in runnable:
            continue
        if b.marker("illustrative") is not None:
            skipped += 1
            print("-- %s: illustrative (%s)" % (b.where(rel), b.marker("illustrative")), flush=True)
            continue
        t0 = time.monotonic()
        problem, text, out, err = run_block(b, clone, work, n)
        ran += 1
        print("%s %s (%.1fs)" % ("FAIL" if problem else "ok  ", b.where(rel),
                                 time.monotonic() - t0), flush=True)
        if problem:
            failed.append((b.where(rel), problem))
            print("   %s\n--- block as run:\n%s--- stdout:\n%s--- stderr:\n%s---" %
                  (problem, text, out[-3000:], err[-3000:]), flush=True)
    print("%s: %d block(s) run, %d illustrative, %d failed" % (rel, ran, skipped, len(failed)))
    for where, why in failed:
        print("FAILED %s: %s" % (where, why))
    if not failed:
        shutil.rmtree(top, ignore_errors=True)
    else:
        print("(clone and logs kept in %s)" % top)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
