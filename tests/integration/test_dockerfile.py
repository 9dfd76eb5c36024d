"""test_dockerfile.py - the Dockerfile, checked without a Docker engine.

The runtime stage installs RUNTIME_PKGS from setup.sh. Missing one shows
only when the image runs (lws dlopen()s its libuv event-loop plugin, which
ldd does not list), so this test starts the real herald and maps every shared
object it has loaded (/proc/PID/maps) to its Debian package: each must come
with RUNTIME_PKGS or with debian:12-slim itself. The rest is the Dockerfile's
shape: the build stage installs setup.sh's build list, the runtime one runs
as a non-root user with HERALD_LISTEN on 0.0.0.0:8080, a HEALTHCHECK and
EXPOSE 8080, and nothing it copies is left out of the build context by
.dockerignore.
"""

import fnmatch
import os
import re
import subprocess

from harness import REPO, Herald, run_tests

DOCKERFILE = os.path.join(REPO, "Dockerfile")
DOCKERIGNORE = os.path.join(REPO, ".dockerignore")
SETUP = os.path.join(REPO, "setup.sh")


def setup_list(name):
    """A package array of setup.sh, e.g. setup_list("RUNTIME_PKGS")."""
    with open(SETUP) as f:
        m = re.search(r"(?ms)^%s=\(([^)]*)\)" % name, f.read())
    assert m, "setup.sh has no %s=(...)" % name
    return re.sub(r"#[^\n]*", "", m.group(1)).split()


_INSTALLED = None


def installed():
    """{package: (depends, essential, priority)} of every installed package
    (one dpkg-query; multiarch qualifiers dropped)."""
    global _INSTALLED
    if _INSTALLED is None:
        p = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${db:Status-Abbrev}\t${Depends}, "
                            "${Pre-Depends}\t${Essential}\t${Priority}\n"],
                           capture_output=True, text=True, check=True)
        _INSTALLED = {}
        for line in p.stdout.splitlines():
            name, status, deps, essential, priority = line.split("\t")
            if status.startswith("ii"):
                _INSTALLED[name] = (deps, essential, priority)
    return _INSTALLED


def closure(pkgs):
    """pkgs and everything they depend on (Depends, Pre-Depends), as
    installed here; of alternatives, the installed ones."""
    db = installed()
    seen, todo = set(), list(pkgs)
    while todo:
        pkg = todo.pop()
        if pkg in seen or pkg not in db:
            continue
        seen.add(pkg)
        for dep in db[pkg][0].split(","):
            for alt in dep.split("|"):
                name = alt.strip().split(" ")[0].split(":")[0]
                if name in db:
                    todo.append(name)
    return seen


def slim_base():
    """What debian:12-slim contains (debootstrap's minbase: Essential and
    Priority required packages, plus apt), with their dependencies."""
    base = {"apt"} | {name for name, (_, essential, priority) in installed().items()
                      if essential == "yes" or priority == "required"}
    return closure(base)


def owner(path):
    """The Debian package that installed `path` (merged /usr: either form)."""
    real = os.path.realpath(path)
    candidates = {path, real}
    for p in list(candidates):
        if p.startswith("/usr/lib/"):
            candidates.add(p[len("/usr"):])
        elif p.startswith("/lib/"):
            candidates.add("/usr" + p)
    for c in candidates:
        q = subprocess.run(["dpkg", "-S", c], capture_output=True, text=True)
        if q.returncode == 0:
            return q.stdout.split(":")[0].strip()
    return None


def stages():
    """[(FROM line, [instructions])] of the Dockerfile, continuations joined."""
    with open(DOCKERFILE) as f:
        text = re.sub(r"\\\n", " ", f.read())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append((line, []))
        else:
            assert out, "instruction before FROM: %r" % line
            out[-1][1].append(line)
    return out


def ignored(path, patterns):
    """Whether .dockerignore leaves `path` (relative) out of the context."""
    verdict = False
    parts = path.split("/")
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat[1:] if neg else pat
        pat = pat.rstrip("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatch(prefix, pat) or (pat.startswith("**/") and
                                                fnmatch.fnmatch(parts[i - 1], pat[3:])):
                verdict = not neg
                break
    return verdict


def dockerignore():
    with open(DOCKERIGNORE) as f:
        return [l.strip() for l in f if l.strip() and not l.startswith("#")]


#---- tests ---------------------------------------------------------------------

def test_runtime_packages_cover_loaded_libraries():
    runtime = setup_list("RUNTIME_PKGS")
    for pkg in runtime:
        assert pkg in installed(), "RUNTIME_PKGS names %s, which is not installed here" % pkg
    provided = closure(runtime) | slim_base()
    with Herald() as h:
        # one WebSocket client and one REST call, so whatever loads lazily has
        h.client("alice").close()
        h.http("GET", "/metrics")
        with open("/proc/%d/maps" % h.proc.pid) as f:
            libs = {line.split(None, 5)[5].strip() for line in f
                    if len(line.split(None, 5)) == 6 and re.search(r"\.so(\.|$)", line.split()[-1])}
    assert any("evlib_uv" in l for l in libs), "lws' libuv plugin is not loaded: %r" % sorted(libs)
    missing = []
    for lib in sorted(libs):
        pkg = owner(lib)
        assert pkg, "%s is loaded by herald but belongs to no Debian package" % lib
        # the image is built without sanitizers: the ASan run's runtimes are not its concern
        if re.match(r"lib(a|ub|l|t)san\d", pkg):
            continue
        if pkg not in provided:
            missing.append("%s (%s)" % (lib, pkg))
    assert not missing, "herald loads libraries the runtime image would not have; add their " \
        "packages to RUNTIME_PKGS in setup.sh: %s" % ", ".join(missing)


def test_dockerfile_shape():
    st = stages()
    assert len(st) >= 2, "not a multi-stage build: %r" % [s[0] for s in st]
    build_from, build = st[0]
    run_from, run = st[-1]
    assert re.match(r"FROM debian:12(\s|$)", build_from, re.I), build_from
    assert re.match(r"FROM debian:12-slim(\s|$)", run_from, re.I), run_from
    assert any("setup.sh deps build" in i for i in build), "the build stage does not install BUILD_PKGS"
    assert any(re.search(r"cmake .*-DHERALD_TESTS=OFF", i) for i in build), \
        "the build configures the tests, which .dockerignore leaves out"
    assert any(re.search(r"-DCMAKE_BUILD_TYPE=(Release|RelWithDebInfo)\b", i) for i in build), build
    assert any("setup.sh deps runtime" in i for i in run), "the runtime stage does not install RUNTIME_PKGS"
    assert not any(re.search(r"setup.sh deps (build|test)|-dev\b", i) for i in run), \
        "build packages in the runtime stage"
    users = [i.split(None, 1)[1] for i in run if i.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "runs as root: USER %r" % users
    assert any(re.match(r"EXPOSE\s+8080\b", i, re.I) for i in run), "no EXPOSE 8080"
    assert any(re.match(r"ENV\b.*\bHERALD_LISTEN=0\.0\.0\.0:8080\b", i, re.I) for i in run), \
        "HERALD_LISTEN is not 0.0.0.0:8080 (the default, 127.0.0.1, is unreachable from outside)"
    checks = [i for i in run if i.upper().startswith("HEALTHCHECK ")]
    assert checks and "herald-healthcheck" in checks[-1], "no HEALTHCHECK: %r" % checks


def test_build_context_has_what_is_copied():
    patterns = dockerignore()
    for stage_from, instructions in stages():
        for i in instructions:
            m = re.match(r"(COPY|ADD)\s+(.*)", i, re.I)
            if not m or "--from=" in m.group(2):
                continue
            srcs = [a for a in m.group(2).split() if not a.startswith("--")][:-1]
            for src in srcs:
                if src == ".":
                    continue
                assert os.path.exists(os.path.join(REPO, src)), "%s copies missing %s" % (stage_from, src)
                assert not ignored(src, patterns), ".dockerignore leaves out %s, which is copied" % src
    # what the build reads: every module, CMakeLists.txt, setup.sh
    with open(os.path.join(REPO, "CMakeLists.txt")) as f:
        embedded = re.findall(r"^hr_embed\((\S+)", f.read(), re.M)
    assert "docs/openapi.json" in embedded, "CMakeLists.txt embeds %r" % embedded
    for need in ["CMakeLists.txt", "setup.sh", "common/common.c", "auth", "channels",
                 "gateway/node.c", "cli/main.c", "bench/CMakeLists.txt",
                 "cmake/embed.cmake"] + embedded:
        assert not ignored(need, patterns), ".dockerignore leaves out %s, which the build needs" % need
    for gone in ("build/herald", "build-asan/x", ".git/HEAD", "tests/integration/harness.py"):
        assert ignored(gone, patterns), ".dockerignore keeps %s in the build context" % gone
    hc = os.path.join(REPO, "deploy", "herald-healthcheck")
    assert os.access(hc, os.X_OK), "deploy/herald-healthcheck is not executable (HEALTHCHECK runs it)"


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=120)
