#!/usr/bin/env python3
"""login_storm.py - does a burst of password logins slow down message delivery?

Argon2id costs tens of milliseconds of CPU and ~19 MiB per hash. Herald runs
it on HERALD_AUTH_WORKERS threads, never on the event-loop thread, so while
logins pour in, the loop should keep fanning out messages at the same
latency. This benchmark measures exactly that:

  1. starts Herald (the RelWithDebInfo build) with a fresh SQLite store,
  2. creates --users users over REST (default 50) and logs each in once,
  3. connects --subscribers WebSocket clients (default 200, with those
     users' access tokens) to one channel, in a separate reader process,
  4. a publisher process publishes to the channel --rate times a second
     (default 50) over REST, with its send time in `data`,
  5. baseline window (--baseline seconds, default 10): publishing only,
  6. storm window (--duration seconds, default 15): --threads threads
     (default 16) post right passwords to /api/v1/auth/token in a loop,
  7. prints a markdown table: logins/s and login latency, and delivery
     latency (publish send -> receive at subscriber) p50/p99/max, for both
     windows. --auth-workers 2,1 repeats the whole run once per
     HERALD_AUTH_WORKERS value; --write FILE puts the table into FILE's
     "## Login storm" section.

Clocks: every timestamp is time.monotonic() (CLOCK_MONOTONIC, shared by all
processes on the host). Client processes share the machine with the server,
so on a small machine they also compete with it for CPU; that is reported
with the numbers (nproc) rather than hidden.

Not a test; CTest does not run it.
    python3 bench/login_storm.py [--duration 15] [--threads 16] [--auth-workers 2,1] \
                                 [--write docs/benchmarks.md]
"""

import argparse
import datetime
import json
import math
import multiprocessing as mp
import os
import platform
import random
import re
import secrets
import selectors
import struct
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import requests  # noqa: E402

from harness import WS, Herald  # noqa: E402

CHANNEL = "bench"


#---- statistics ------------------------------------------------------------------

def pct(values, p):
    """Nearest-rank percentile of an unsorted list (None when empty)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]


def ms(v):
    return "-" if v is None else "%.1f" % (v * 1000.0)


#---- subscriber reader process ----------------------------------------------------

def _frames(buf):
    """Yields complete unmasked server frames (opcode, payload) from buf
    (a bytearray, consumed)."""
    while True:
        if len(buf) < 2:
            return
        op, n, pos = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return
            n, pos = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                return
            n, pos = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < pos + n:
            return
        payload = bytes(buf[pos:pos + n])
        del buf[:pos + n]
        yield op, payload


_MSG = re.compile(rb'^\{"push":"message","channel":"[^"]*","data":\{"ts":([-0-9.eE+]+),"seq":[0-9]+,"ph":"(\w+)"\}')


def reader_main(port, tokens, ready, stop, out):
    """Connects one WS per token, subscribes all to CHANNEL, then reads every
    socket with epoll until `stop`; sends {phase: [latencies]} and counts."""
    socks = []
    for tok in tokens:
        ws = WS(port, timeout=10)
        assert ws.connect("/ws", {"Authorization": "Bearer " + tok}) == 101, ws.http_body
        ws.recv_json()  # connected
        reply = ws.cmd("subscribe", channel=CHANNEL)
        assert "result" in reply, reply
        socks.append(ws)
    sel = selectors.DefaultSelector()
    bufs = {}
    for ws in socks:
        ws.sock.setblocking(False)
        bufs[ws.sock.fileno()] = bytearray(ws.buf)
        sel.register(ws.sock, selectors.EVENT_READ)
    lat = {}
    seen = {}
    closed = 0
    ready.set()
    while not stop.is_set():
        # Drain every ready socket first, stamping each read, and parse
        # afterwards: parsing 200 messages must not delay the stamps.
        got = []
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(262144)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            got.append((time.monotonic(), s, data))
        for now, s, data in got:
            if not data:
                sel.unregister(s)
                closed += 1
                continue
            buf = bufs[s.fileno()]
            buf += data
            for op, payload in _frames(buf):
                if op == 8:
                    closed += 1
                    continue
                if op != 1:
                    continue
                m = _MSG.search(payload)
                if m:
                    ts, ph = float(m.group(1)), m.group(2).decode()
                else:
                    msg = json.loads(payload)
                    if msg.get("push") != "message":
                        continue
                    ts, ph = msg["data"]["ts"], msg["data"]["ph"]
                lat.setdefault(ph, []).append(now - ts)
                seen[ph] = seen.get(ph, 0) + 1
    out.send({"lat": lat, "seen": seen, "closed": closed, "sockets": len(socks)})
    for ws in socks:
        ws.abort()


#---- publisher process --------------------------------------------------------------

def publisher_main(base, api_key, rate, schedule, ready, stop, out):
    """Publishes `rate` times a second until stop; phase from the schedule
    [(start_monotonic, name)...] (the last one that started)."""
    s = requests.Session()
    hdrs = {"X-API-Key": api_key}
    sent, errors = {}, 0
    ready.wait()
    t_next = time.monotonic()
    seq = 0
    while not stop.is_set():
        now = time.monotonic()
        if now < t_next:
            time.sleep(t_next - now)
            continue
        t_next += 1.0 / rate
        phase = None
        for start, name in schedule:
            if now >= start:
                phase = name
        if phase is None:
            continue
        seq += 1
        ts = time.monotonic()
        r = s.post(base + "/api/v1/publish", json={"channel": CHANNEL,
                                                    "data": {"ts": ts, "seq": seq, "ph": phase}},
                   headers=hdrs, timeout=10)
        if r.status_code == 200:
            sent[phase] = sent.get(phase, 0) + 1
        else:
            errors += 1
            if errors == 1:
                print("publish failed: HTTP %d %s" % (r.status_code, r.text[:200]), file=sys.stderr)
    out.send({"sent": sent, "errors": errors})


#---- login storm -------------------------------------------------------------------

def storm(base, creds, threads, duration):
    """`threads` threads log in with right passwords for `duration` s.
    Returns (successful latencies, status counts, elapsed)."""
    lats, codes, lock = [], {}, threading.Lock()
    t_end = time.monotonic() + duration

    def worker(seed):
        rnd = random.Random(seed)
        s = requests.Session()
        my_lat, my_codes = [], {}
        while time.monotonic() < t_end:
            user, pw = rnd.choice(creds)
            t0 = time.monotonic()
            try:
                r = s.post(base + "/api/v1/auth/token",
                           data={"grant_type": "password", "username": user, "password": pw}, timeout=30)
                code = r.status_code
            except requests.RequestException:
                code = "error"
            dt = time.monotonic() - t0
            my_codes[code] = my_codes.get(code, 0) + 1
            if code == 200:
                my_lat.append(dt)
        with lock:
            lats.extend(my_lat)
            for k, v in my_codes.items():
                codes[k] = codes.get(k, 0) + v

    t0 = time.monotonic()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return lats, codes, time.monotonic() - t0


#---- reporting -------------------------------------------------------------------

def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "%d CPUs (nproc), %s, %s %s" % (os.cpu_count() or 0, model, platform.system(), platform.release())


def build_type(bin_path):
    cache = os.path.join(os.path.dirname(bin_path), "CMakeCache.txt")
    try:
        with open(cache) as f:
            m = re.search(r"^CMAKE_BUILD_TYPE:STRING=(.*)$", f.read(), re.M)
            return m.group(1) if m else "?"
    except OSError:
        return "?"


def table(runs):
    rows = ["| auth workers | window | logins/s | login p50 ms | login p99 ms | msgs published "
            "| deliveries (expected) | delivery p50 ms | delivery p99 ms | delivery max ms |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for res in runs:
        for ph in ("baseline", "storm"):
            r = res[ph]
            rows.append("| %s | %s | %s | %s | %s | %d | %d (%d) | %s | %s | %s |" % (
                res["workers"], ph, "-" if r["logins_per_s"] is None else "%.1f" % r["logins_per_s"],
                ms(pct(r["login_lat"], 50)), ms(pct(r["login_lat"], 99)),
                r["published"], r["delivered"], r["published"] * res["subscribers"],
                ms(pct(r["lat"], 50)), ms(pct(r["lat"], 99)), ms(max(r["lat"]) if r["lat"] else None)))
    return "\n".join(rows)


def notes(runs):
    out = []
    for res in runs:
        out.append("- auth workers %s: login responses %s; publish errors %d; sockets closed during the "
                   "run %d; /healthz after the run: %s" % (
                       res["workers"], json.dumps({str(k): v for k, v in sorted(res["codes"].items(), key=str)}),
                       res["publish_errors"], res["closed"], "200" if res["healthy"] else "FAILED"))
    return "\n".join(out)


def write_section(path, section):
    """Replaces the "## Login storm" section of path (or appends it)."""
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    if not text.strip():
        text = "# Benchmarks\n\nMeasurements of Herald on real hardware; each section says how to reproduce it.\n"
    pat = re.compile(r"^## Login storm\n.*?(?=^## |\Z)", re.M | re.S)
    if pat.search(text):
        text = pat.sub(lambda _: section.rstrip() + "\n\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section.rstrip() + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


#---- main ------------------------------------------------------------------------

def run_once(args, workers):
    """One full scenario on a fresh server; returns the measurements."""
    env = {"HERALD_LOG_LEVEL": "warn", "HERALD_OUT_QUEUE": str(16 * 1024 * 1024),
           "HERALD_AUTH_WORKERS": str(workers)}
    h = Herald(env=env)
    h.bin = args.bin
    with h:
        # users: created over REST with the API key, a few at a time
        creds = [("bench%03d" % i, "pw-" + secrets.token_hex(12)) for i in range(args.users)]
        t0 = time.monotonic()

        def create(chunk):
            s = requests.Session()
            for u, p in chunk:
                r = s.post(h.base + "/api/v1/users", json={"username": u, "password": p},
                           headers=h.api_headers(), timeout=30)
                assert r.status_code == 201, (u, r.status_code, r.text)

        ts = [threading.Thread(target=create, args=(creds[i::4],)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        tokens = []
        for u, p in creds:
            r = requests.post(h.base + "/api/v1/auth/token",
                              data={"grant_type": "password", "username": u, "password": p}, timeout=30)
            assert r.status_code == 200, (u, r.status_code, r.text)
            tokens.append(r.json()["access_token"])
        log("[workers %d] created and logged in %d users in %.1fs" % (workers, args.users, time.monotonic() - t0))

        ctx = mp.get_context("fork")
        ready, stop, stop_pub = ctx.Event(), ctx.Event(), ctx.Event()
        r_recv, r_send = ctx.Pipe(False)
        p_recv, p_send = ctx.Pipe(False)
        sub_tokens = [tokens[i % len(tokens)] for i in range(args.subscribers)]
        reader = ctx.Process(target=reader_main, args=(h.port, sub_tokens, ready, stop, r_send))
        reader.start()
        if not ready.wait(60):
            raise SystemExit("subscribers did not connect within 60 s")
        log("[workers %d] %d subscribers on %r; baseline %gs" % (workers, args.subscribers, CHANNEL, args.baseline))

        warm = 2.0
        t_base = time.monotonic() + warm
        t_storm = t_base + args.baseline
        schedule = [(t_base, "baseline"), (t_storm, "storm")]
        pub = ctx.Process(target=publisher_main,
                          args=(h.base, h.api_key, args.rate, schedule, ready, stop_pub, p_send))
        pub.start()
        time.sleep(max(0, t_storm - time.monotonic()))
        log("[workers %d] storm: %d threads for %gs" % (workers, args.threads, args.duration))
        lats, codes, elapsed = storm(h.base, creds, args.threads, args.duration)
        stop_pub.set()
        pres = p_recv.recv()
        time.sleep(1.0)  # let the last deliveries arrive
        stop.set()
        rres = r_recv.recv()
        pub.join(10)
        reader.join(10)
        healthy = h.healthy()

    res = {"workers": workers, "subscribers": rres["sockets"], "codes": codes, "closed": rres["closed"],
           "publish_errors": pres["errors"], "healthy": healthy}
    for ph in ("baseline", "storm"):
        res[ph] = {"lat": rres["lat"].get(ph, []), "delivered": rres["seen"].get(ph, 0),
                   "published": pres["sent"].get(ph, 0), "login_lat": [], "logins_per_s": None}
    res["storm"]["login_lat"] = lats
    res["storm"]["logins_per_s"] = len(lats) / elapsed
    return res


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("HERALD_BIN") or os.path.join(REPO, "build", "herald"),
                    help="herald binary (a RelWithDebInfo build; default build/herald)")
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--subscribers", type=int, default=200)
    ap.add_argument("--rate", type=float, default=50.0, help="publications per second")
    ap.add_argument("--threads", type=int, default=16, help="concurrent login threads in the storm")
    ap.add_argument("--duration", type=float, default=15.0, help="storm window, seconds")
    ap.add_argument("--baseline", type=float, default=10.0, help="baseline window, seconds")
    ap.add_argument("--auth-workers", default="2",
                    help="HERALD_AUTH_WORKERS values, comma-separated: one full run each (default 2, "
                         "the server's default)")
    ap.add_argument("--write", metavar="FILE", help="put the results into FILE's '## Login storm' section")
    args = ap.parse_args()

    bt = build_type(args.bin)
    if bt != "RelWithDebInfo":
        log("warning: %s is a %r build, not RelWithDebInfo" % (args.bin, bt))
    runs = [run_once(args, int(w)) for w in args.auth_workers.split(",")]
    tbl, nts = table(runs), notes(runs)
    print(tbl)
    print()
    print(nts)
    if not args.write:
        return
    cmd = "python3 bench/login_storm.py " + " ".join(sys.argv[1:])
    section = "\n".join([
        "## Login storm",
        "",
        "Does a burst of password logins slow message delivery? Argon2id (m=19 MiB, t=2, p=1) costs",
        "tens of milliseconds of CPU per login. Herald runs it, and every user-store call, on",
        "`HERALD_AUTH_WORKERS` worker threads (default 2) and never on the event-loop thread, so",
        "while logins queue up on the workers the loop keeps reading, routing and writing",
        "WebSocket frames: delivery latency should stay flat, and the storm should cost only",
        "login latency. What can still move it is CPU contention: when the workers keep every",
        "core busy, the loop thread (and, here, the benchmark's own client processes, which run",
        "on the same machine) must wait for the scheduler.",
        "",
        "Setup: a fresh SQLite store; %d users created over REST; %d WebSocket subscribers"
        % (args.users, args.subscribers),
        "(with those users' access tokens) on one channel; a publisher POSTs `/api/v1/publish`",
        "%g times a second with its send time in `data`; delivery latency = receive time at a"
        % args.rate,
        "subscriber minus that send time (CLOCK_MONOTONIC, same host), over every (message,",
        "subscriber) pair, so it includes the REST request and the whole fan-out. Baseline: %gs"
        % args.baseline,
        "of publishing only. Storm: %gs with %d threads posting right passwords to"
        % (args.duration, args.threads),
        "`/api/v1/auth/token` in a loop (logins/s counts 200s). One fresh server per row pair.",
        "",
        "- command: `%s` (from the repository root)" % cmd.strip(),
        "- binary: `%s` (%s build)" % (os.path.relpath(args.bin, REPO), bt),
        "- machine: %s" % machine(),
        "- date: %s" % datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "",
        tbl,
        "",
        nts,
        "",
    ])
    write_section(args.write, section)
    log("wrote %s" % args.write)


if __name__ == "__main__":
    main()
