#!/usr/bin/python3
"""links.py - every relative link and anchor in the repository's Markdown
files resolves.

    /usr/bin/python3 tests/docs/links.py [FILE.md...]

Checks the files git knows (tracked, and untracked ones that are not
ignored), or the ones named. For each link [text](target), <target> and
[ref]: target outside code: a relative target must name a file or directory
inside the repository, and a #fragment must be a heading of the target
Markdown file (GitHub's anchors: lower case, punctuation dropped, spaces as
hyphens, -1, -2 for repeats). Links to other sites (http:, https:, mailto:)
are not fetched: the tests run without the network. Exit status 1 on any
broken link.
"""

import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))

INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
AUTO = re.compile(r"<((?:https?|mailto):[^>\s]+|\.{0,2}/[^>\s]+)>")
REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
FENCE = re.compile(r"^\s*(```+|~~~+)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ID = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def md_files():
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                          "--", "*.md"], cwd=REPO, check=True, capture_output=True, text=True)
    # tests/docs/fixtures: pages with broken links on purpose (selftest.py)
    return sorted(p for p in out.stdout.split("\0")
                  if p and os.path.exists(os.path.join(REPO, p)) and
                  not p.startswith("tests/docs/fixtures/"))


def prose_lines(text):
    """(line number, line) outside fenced code, with code spans blanked."""
    fence = None
    for n, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if m:
            mark = m.group(1)[0] * 3
            if fence is None:
                fence = mark
            elif mark == fence:
                fence = None
            continue
        if fence is None:
            yield n, CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


_anchor_cache = {}


def anchors(path):
    if path not in _anchor_cache:
        seen, out = {}, set()
        with open(path, encoding="utf-8") as f:
            text = f.read()
        fence = None
        for line in text.split("\n"):
            m = FENCE.match(line)
            if m:
                mark = m.group(1)[0] * 3
                fence = mark if fence is None else (None if mark == fence else fence)
                continue
            if fence is not None:
                continue
            for a in HTML_ID.findall(line):
                out.add(a)
            h = HEADING.match(line)
            if h:
                s = slug(h.group(2))
                k = seen.get(s, 0)
                seen[s] = k + 1
                out.add(s if k == 0 else "%s-%d" % (s, k))
        _anchor_cache[path] = out
    return _anchor_cache[path]


def check_target(src, target):
    """None, or why the link from src (repository-relative) is broken."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
        return None  # another site (not fetched) or a scheme
    path, _, frag = target.partition("#")
    base = os.path.dirname(os.path.join(REPO, src))
    full = os.path.normpath(os.path.join(base, path)) if path else os.path.join(REPO, src)
    if path.startswith("/"):
        return "absolute path (use a path relative to %s)" % src
    if os.path.relpath(full, REPO).startswith(".."):
        return "points outside the repository"
    if not os.path.exists(full):
        return "no such file: %s" % os.path.relpath(full, REPO)
    if frag and full.endswith(".md"):
        if frag not in anchors(full):
            return "no heading #%s in %s" % (frag, os.path.relpath(full, REPO))
    return None


def check_file(rel):
    errors = []
    with open(os.path.join(REPO, rel), encoding="utf-8") as f:
        text = f.read()
    for n, line in prose_lines(text):
        targets = [m.group(1) for m in INLINE.finditer(line)]
        targets += [m.group(1) for m in AUTO.finditer(line)]
        m = REFDEF.match(line)
        if m:
            targets.append(m.group(1))
        for t in targets:
            why = check_target(rel, t)
            if why:
                errors.append("%s:%d: %s: %s" % (rel, n, t, why))
    return errors


def main(argv):
    files = argv or md_files()
    errors = []
    for rel in files:
        errors += check_file(rel)
    for e in errors:
        print(e)
    print("%d file(s), %d broken link(s)" % (len(files), len(errors)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
