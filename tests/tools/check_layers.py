#!/usr/bin/python3
"""check_layers.py - the include graph of Herald's C modules has no circle and
no arrow from a lower layer up to a higher one.

A module is a .c file and its .h (gateway/conn.c and gateway/conn.h are the
module gateway/conn); a private header X_internal.h belongs to module X. An arrow A -> B is an #include "..." in A of a header
of B; headers in <...> and generated ones ("generated/...") are not Herald's
modules. The layers, lowest first (a module may include its own layer's
modules and any lower layer's, never a higher one's):

  common          allocation, containers, hashing, logging, framing
  auth, channels  the user model and the channel layer (never each other)
  gateway/base    pure modules and leaf services: configuration, protocol,
                  router, metrics, limits, credentials, the backend client...
  gateway/loop    a loop thread (knows no client)
  gateway/node    the process and its workers (knows no client either)
  gateway/conn    a client connection, whatever the transport
  gateway/api     the transport-neutral operations
  gateway/transport  HTTP and REST, WebSocket connections and commands
  gateway/server  the lws callback: the only module that knows both
  cli             the herald command

Every module must be declared below: a new file fails the check until its
layer is chosen, so the picture stays whole.

Run: python3 tests/tools/check_layers.py      (exit 1 and the offending
arrows or circles on failure; --verbose prints the graph by layer,
--root DIR checks another checkout)
     python3 tests/tools/check_layers.py --selftest
"""
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# (layer name, rank, modules): a module is "dir/name" or "dir/*" for a
# whole directory. Lower rank = lower layer.
LAYERS = [
    ("common", 0, ["common/*"]),
    ("auth", 1, ["auth/*"]),
    ("channels", 1, ["channels/*"]),
    ("gateway/base", 2, [
        "gateway/config", "gateway/config_ns", "gateway/config_check", "gateway/proto",
        "gateway/proxy", "gateway/router", "gateway/metrics", "gateway/static",
        "gateway/sockstat", "gateway/limits", "gateway/wsi", "gateway/creds",
        "gateway/backend", "gateway/proxy_call", "gateway/events", "gateway/ws_deflate",
    ]),
    ("gateway/loop", 3, ["gateway/loop"]),
    ("gateway/node", 4, ["gateway/node"]),
    ("gateway/conn", 5, ["gateway/conn"]),
    ("gateway/api", 6, ["gateway/api"]),
    ("gateway/transport", 7, [
        "gateway/http", "gateway/rest", "gateway/rest_users", "gateway/rest_channels",
        "gateway/rest_ops", "gateway/ws_conn", "gateway/ws_cmd", "gateway/ws_upgrade",
        "gateway/stream", "gateway/stream_open",
    ]),
    ("gateway/server", 8, ["gateway/server"]),
    ("cli", 9, ["cli/*"]),
]
# Same-rank layers that must not see each other at all.
APART = [("auth", "channels")]
DIRS = ["common", "auth", "channels", "gateway", "cli"]

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of(module):
    for name, rank, members in LAYERS:
        for m in members:
            if m == module or (m.endswith("/*") and module.startswith(m[:-1])):
                return name, rank
    return None, None


def module_name(path):
    """gateway/conn.h -> gateway/conn; gateway/config_internal.h -> gateway/config"""
    name = path.rsplit(".", 1)[0]
    return name[:-len("_internal")] if name.endswith("_internal") else name


def modules(root):
    """{module: [source files]} for every .c/.h under DIRS."""
    out = {}
    for d in DIRS:
        path = os.path.join(root, d)
        if not os.path.isdir(path):
            continue
        for f in sorted(os.listdir(path)):
            if f.endswith((".c", ".h")):
                out.setdefault(module_name(d + "/" + f), []).append(os.path.join(d, f))
    return out


def arrows(root, mods):
    """[(from module, to module, file, included path)]"""
    known = set(mods)
    out = []
    for mod, files in mods.items():
        for rel in files:
            with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
                text = f.read()
            for inc in INCLUDE.findall(text):
                if inc.startswith("generated/"):
                    continue
                # from the repository root, or (channels/ still does) next to the file
                for cand in (inc, os.path.normpath(os.path.join(os.path.dirname(rel), inc))):
                    target = module_name(cand)
                    if target in known:
                        if target != mod:
                            out.append((mod, target, rel, inc))
                        break
    return out


def circles(mods, edges):
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {m: sorted({b for a, b, _, _ in edges if a == m}) for m in mods}
    index, low, on, stack, found = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def check(root, verbose=False, out=sys.stdout):
    """Returns the list of problems (empty: the graph is layered)."""
    mods = modules(root)
    problems = []
    for m in sorted(mods):
        if layer_of(m)[0] is None:
            problems.append("%s: no layer declared for this module (tests/tools/check_layers.py, "
                            "LAYERS)" % m)
    edges = arrows(root, mods)
    for a, b, rel, inc in edges:
        la, ra = layer_of(a)
        lb, rb = layer_of(b)
        if ra is None or rb is None:
            continue
        if rb > ra:
            problems.append('%s includes "%s": an arrow up from %s to %s' % (rel, inc, la, lb))
        elif (la, lb) in APART or (lb, la) in APART:
            problems.append('%s includes "%s": %s and %s must not see each other'
                            % (rel, inc, la, lb))
    for comp in circles(mods, edges):
        problems.append("a circle: %s" % " -> ".join(comp + comp[:1]))
    if verbose:
        for name, rank, _ in LAYERS:
            members = [m for m in sorted(mods) if layer_of(m)[0] == name]
            out.write("%d %-18s %s\n" % (rank, name, " ".join(members)))
        out.write("%d modules, %d arrows\n" % (len(mods), len(edges)))
    return problems


def selftest():
    """The check fails on a circle, on an arrow up, and on an undeclared
    module, and passes a layered tree."""
    cases = {
        "layered": ({"common/a.h": "", "gateway/node.c": '#include "gateway/loop.h"\n',
                     "gateway/loop.h": '#include "common/a.h"\n'}, 0),
        "arrow up": ({"gateway/loop.c": '#include "gateway/node.h"\n', "gateway/node.h": ""},
                     1),
        "circle": ({"gateway/http.c": '#include "gateway/rest.h"\n',
                    "gateway/rest.c": '#include "gateway/http.h"\n',
                    "gateway/http.h": "", "gateway/rest.h": ""}, 1),
        "undeclared": ({"gateway/mystery.c": ""}, 1),
        "apart": ({"auth/x.c": '#include "channels/channels.h"\n',
                   "channels/channels.h": ""}, 1),
    }
    bad = 0
    for name, (files, want) in cases.items():
        with tempfile.TemporaryDirectory() as d:
            for rel, text in files.items():
                os.makedirs(os.path.join(d, os.path.dirname(rel)), exist_ok=True)
                with open(os.path.join(d, rel), "w") as f:
                    f.write(text)
            got = check(d)
            ok = bool(got) == bool(want)
            print("%s %s: %s" % ("ok  " if ok else "FAIL", name, "; ".join(got) or "clean"))
            bad += not ok
    return bad


def main(argv):
    if "--selftest" in argv:
        return 1 if selftest() else 0
    root = argv[argv.index("--root") + 1] if "--root" in argv else ROOT
    problems = check(root, verbose="--verbose" in argv or "-v" in argv)
    for p in problems:
        print(p)
    if problems:
        print("check_layers: %d problem(s)" % len(problems))
        return 1
    print("check_layers: the include graph is layered (no circle, no arrow up)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
