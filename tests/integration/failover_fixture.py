"""Load and recording for the Redis failover tests (test_sentinel_failover,
test_cluster_failover): WebSocket clients whose every push is recorded,
a REST publisher at a steady rate recording what was acknowledged, a
/readyz monitor, and the check of a history subscriber's stream."""

import threading
import time

from harness import wait_until


class Recorder(threading.Thread):
    """Reads every push of one WebSocket client (after its subscriptions)
    with the monotonic time it arrived."""

    def __init__(self, ws):
        super().__init__(daemon=True)
        self.ws = ws
        self.got = []  # (time, push)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.error = None

    def run(self):
        while not self.done.is_set():
            try:
                m = self.ws.recv_json(timeout=0.5)
            except TimeoutError:
                continue
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.error = e
                return
            with self.lock:
                self.got.append((time.monotonic(), m))

    def pushes(self, kind, channel):
        with self.lock:
            return [(t, m) for t, m in self.got if m.get("push") == kind and m.get("channel") == channel]


class Publisher(threading.Thread):
    """Publishes 0, 1, 2, ... at `rate` per second into each channel,
    through both nodes in turn (REST), recording each attempt: (seq, sent,
    acked, status, offset)."""

    def __init__(self, nodes, channels, rate=100):
        super().__init__(daemon=True)
        self.nodes = nodes
        self.channels = channels
        self.period = 1.0 / rate
        self.log = {ch: [] for ch in channels}
        self.lock = threading.Lock()
        self.done = threading.Event()

    def run(self):
        seq = 0
        next_at = time.monotonic()
        while not self.done.is_set():
            for ch in self.channels:
                h = self.nodes[seq % len(self.nodes)]
                sent = time.monotonic()
                status, offset = None, None
                try:
                    r = h.http("POST", "/api/v1/publish", json={"channel": ch, "data": seq},
                               headers=h.api_headers(), timeout=10)
                    status = r.status_code
                    if status == 200:
                        offset = r.json().get("offset")
                except Exception:  # noqa: BLE001 - a failed publish is not acknowledged
                    pass
                with self.lock:
                    self.log[ch].append((seq, sent, time.monotonic(), status, offset))
            seq += 1
            # pacing of the load (not a wait standing in for an event)
            next_at += self.period
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()

    def acked(self, ch):
        with self.lock:
            return [e for e in self.log[ch] if e[3] == 200]


class ReadyMonitor(threading.Thread):
    """Polls /readyz of each node, keeping every change."""

    def __init__(self, nodes):
        super().__init__(daemon=True)
        self.nodes = nodes
        self.changes = {h.base: [] for h in nodes}
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            for h in self.nodes:
                ok = h.ready()
                ch = self.changes[h.base]
                if not ch or ch[-1][1] != ok:
                    ch.append((time.monotonic(), ok))
            time.sleep(0.02)  # polling period, not a wait for an event


def check_history_subscriber(name, rec, pub, ch, t_kill, renewed=True):
    """What subscriber `name` (its Recorder) got on history channel ch from
    the Publisher, with t_kill the time a master was SIGKILLed: no
    duplicates, offsets up between renewals, every publication sent after
    t_kill delivered, the ones acknowledged before delivered or the
    subscriber told recovered: false. renewed: a renewal push is expected.
    Returns (acknowledged before, after, missing before, told)."""
    msgs = [m for _, m in rec.pushes("message", ch)]
    renewals = [m for _, m in rec.pushes("subscribed", ch)]
    assert renewals or not renewed, "%s: no renewal push on %s" % (name, ch)
    seqs = [m["data"] for m in msgs]
    assert len(seqs) == len(set(seqs)), "%s: duplicates %r" % (
        name, sorted({s for s in seqs if seqs.count(s) > 1}))
    # offsets go up between renewals (an epoch change may restart them)
    last = None
    for _, m in sorted(rec.pushes("message", ch) + rec.pushes("subscribed", ch), key=lambda x: x[0]):
        if m["push"] == "subscribed":
            last = m["offset"]
            continue
        if last is not None:
            assert m["offset"] > last, "%s: offset %d after %d" % (name, m["offset"], last)
        last = m["offset"]
    got = set(seqs)
    acked = pub.acked(ch)
    after = [e for e in acked if e[1] > t_kill]
    before = [e for e in acked if e[2] < t_kill]
    assert after and before, (len(before), len(after))
    missing_after = [e[0] for e in after if e[0] not in got]
    assert not missing_after, "%s: lost %d publications acknowledged after the switch: %r" % (
        name, len(missing_after), missing_after[:20])
    missing_before = [e[0] for e in before if e[0] not in got]
    told = any(r["recovered"] is False for r in renewals)
    assert not missing_before or told, "%s: lost %r without recovered: false (%r)" % (
        name, missing_before[:20], renewals)
    return len(before), len(after), len(missing_before), told


def first_delivery_after(rec, pub, ch, t_kill):
    """Seconds from t_kill to the first delivery, to this subscriber, of a
    publication of ch sent after t_kill (what a client waited for, master
    death to service), or None."""
    after = {e[0] for e in pub.acked(ch) if e[1] > t_kill}
    ts = [t for t, m in rec.pushes("message", ch) if m["data"] in after]
    return round(min(ts) - t_kill, 2) if ts else None


def recorders(users, channels):
    """For each (node, name) of users: that user's socket on the node,
    subscribed to every channel, its pushes recorded from now on. Returns
    {name: Recorder}."""
    subs = {}
    for h, name in users:
        w = h.user(name)
        for ch in channels:
            w.subscribe(ch)
        subs[name] = Recorder(w)
    for rec in subs.values():
        rec.start()
    return subs


def drain(pub, recs, mon, channels):
    """After the publisher stopped: wait until every recorder of recs
    ({name: Recorder}) got the last acknowledged publication of each of
    channels (all before it were sent earlier, so none is still on its
    way), then stop the recorders and the monitor. Raises if a recorder
    failed."""
    for ch in channels:
        last = pub.acked(ch)[-1][0]
        for name, rec in recs.items():
            wait_until(lambda: any(m["data"] == last for _, m in rec.pushes("message", ch)), 30,
                       what="%s to get publication %d of %s" % (name, last, ch))
    mon.done.set()
    for rec in recs.values():
        rec.done.set()
        rec.join(5)
        assert rec.error is None, rec.error
