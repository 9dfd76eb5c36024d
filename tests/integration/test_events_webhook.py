"""Lifecycle events to a webhook (gateway/events.c, SPEC §8), driven by
herald-backend-tool against a real HTTP backend (backend_fixture.py): batches
of at most HERALD_EVENTS_BATCH in order, a partial batch sent by the flush
timer, at-least-once with retries, refused batches and full queues dropped
and counted, what is left at shutdown counted, emitters on several threads."""

import json
import os
import subprocess

import backend_fixture as bf
from harness import run_tests
from test_backend_client import tool_path


def events(n, *args, env=None, timeout=120):
    e = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    e.update(env or {})
    p = subprocess.run([tool_path(), "events", str(n)] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout, env=e)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr[-2000:])
    out = json.loads(p.stdout)
    assert out["clean"], out
    out["log"] = p.stderr
    return out


def received(b, path="/events"):
    """The webhook's requests as lists of events."""
    batches = []
    for r in b.got(path):
        body = json.loads(r["body"])
        assert list(body) == ["events"], body
        batches.append(body["events"])
    return batches


def clients(batches):
    return [e["client"] for batch in batches for e in batch]


def test_batches_in_order_with_the_key():
    with bf.Backend() as b:
        url = b.route("/events", bf.answer(200, b""))
        out = events(250, env={"HERALD_EVENTS_WEBHOOK_URL": url, "HERALD_EVENTS_BATCH": "100",
                               "HERALD_PROXY_KEY": "k3y"})
        assert out["sent"] == 250 and out["dropped"] == 0 and out["retries"] == 0, out
        batches = received(b)
        assert all(1 <= len(x) <= 100 for x in batches) and len(batches) >= 3, \
            [len(x) for x in batches]
        assert clients(batches) == ["t.%d" % i for i in range(250)]
        assert batches[0][0] == {"type": "herald.connect", "client": "t.0", "user": "u",
                                 "transport": "websocket", "node": "t"}
        for r in b.got("/events"):
            h = {k.lower(): v for k, v in r["headers"]}
            assert h["x-herald-proxy-key"] == "k3y" and h["content-type"] == "application/json"


def test_partial_batch_leaves_with_the_flush_timer():
    """Five events never fill a batch of 100: the flush timer sends them."""
    with bf.Backend() as b:
        url = b.route("/events", bf.answer(204, b""))
        out = events(5, "--flush-ms", 200, env={"HERALD_EVENTS_WEBHOOK_URL": url})
        assert out["sent"] == 5, out
        assert [len(x) for x in received(b)] == [5]


def test_retried_until_delivered():
    """The webhook fails three times (503, a timeout-like 408, a reset
    connection): the same batch comes again with backoff until it is taken;
    nothing is lost, nothing is reordered."""
    with bf.Backend() as b:
        url = b.route("/events", bf.script([bf.answer(503, b"busy"), bf.answer(408, b""),
                                            bf.answer(500, b""), bf.answer(200, b"")]))
        out = events(30, "--backoff-ms", 20, env={"HERALD_EVENTS_WEBHOOK_URL": url,
                                                  "HERALD_EVENTS_BATCH": "10"})
        assert out["sent"] == 30 and out["retries"] == 3 and out["dropped"] == 0, out
        batches = received(b)
        # the first batch was sent four times: at least once, in order
        assert batches[0] == batches[1] == batches[2] == batches[3], batches[:4]
        assert clients(batches[3:]) == ["t.%d" % i for i in range(30)]
        assert "events_webhook" in out["log"]


def test_refused_batch_is_dropped_and_counted():
    with bf.Backend() as b:
        url = b.route("/events", bf.script([bf.answer(400, b"bad"), bf.answer(200, b"")]))
        out = events(20, env={"HERALD_EVENTS_WEBHOOK_URL": url, "HERALD_EVENTS_BATCH": "10"})
        assert out["dropped"] == 10 and out["sent"] == 10 and out["retries"] == 0, out
        assert "refused a batch of 10" in out["log"], out["log"]
        assert clients(received(b)[1:]) == ["t.%d" % i for i in range(10, 20)]


def test_full_queue_drops_and_counts():
    """All 100 events arrive before delivery starts; the queue holds 10."""
    with bf.Backend() as b:
        url = b.route("/events", bf.answer(200, b""))
        out = events(100, env={"HERALD_EVENTS_WEBHOOK_URL": url, "HERALD_EVENTS_QUEUE": "10",
                               "HERALD_EVENTS_BATCH": "5"})
        assert out["sent"] == 10 and out["dropped_by_emitters"] == 90, out
        assert "90 lifecycle event(s) dropped" in out["log"] or "dropped" in out["log"]
        assert clients(received(b)) == ["t.%d" % i for i in range(10)]


def test_shutdown_counts_what_is_left():
    """A webhook that keeps failing; the hub stops after two failed tries:
    every event still held is counted as dropped and logged."""
    with bf.Backend() as b:
        url = b.route("/events", bf.answer(503, b""))
        out = events(50, "--backoff-ms", 20, "--stop-after-retries", 2,
                     env={"HERALD_EVENTS_WEBHOOK_URL": url, "HERALD_EVENTS_BATCH": "20"})
        assert out["sent"] == 0 and out["dropped"] == 50 and out["retries"] >= 2, out
        assert "not delivered at shutdown" in out["log"], out["log"]


def test_emitters_on_many_threads():
    with bf.Backend() as b:
        url = b.route("/events", bf.answer(200, b""))
        out = events(20000, "--threads", 4, "--concurrent", 1, env={"HERALD_EVENTS_WEBHOOK_URL": url,
                                                 "HERALD_EVENTS_QUEUE": "20000",
                                                 "HERALD_EVENTS_BATCH": "500"})
        assert out["sent"] == 20000 and out["dropped"] == 0, out
        got = clients(received(b))
        assert sorted(got) == sorted("t.%d" % i for i in range(20000))
        assert all(len(x) <= 500 for x in received(b))
        for t in range(4):  # each thread's events stay in its order
            mine = [int(c[2:]) for c in got if t * 5000 <= int(c[2:]) < (t + 1) * 5000]
            assert mine == sorted(mine)


def test_webhook_down_is_retried_not_lost():
    """The webhook's address refuses connections: each try is a retry."""
    url = "http://127.0.0.1:%d/events" % bf.closed_port()
    out = events(5, "--backoff-ms", 20, "--stop-after-retries", 3,
                 env={"HERALD_EVENTS_WEBHOOK_URL": url})
    assert out["sent"] == 0 and out["retries"] >= 3 and out["dropped"] == 5, out


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=180)
