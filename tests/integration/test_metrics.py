"""/metrics: histograms (delivery latency, REST duration by route, handshake
duration), per-namespace counters, loop lag; the exposition text parses."""

import re

from harness import Herald, run_tests

CONFIG = {"namespaces": {"chat": {"subscribe": "authenticated", "publish": "authenticated"},
                         "": {"subscribe": "authenticated", "publish": "authenticated"}}}


def samples(text):
    """[(name, {label: value}, float)] for every sample line."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([-+0-9.eE]+|\+Inf|NaN)$', line)
        assert m, "not a sample line: %r" % line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out.append((m.group(1), labels, float(m.group(4))))
    return out


def value(ss, name, **labels):
    return sum(v for n, l, v in ss if n == name and all(l.get(k) == w for k, w in labels.items()))


def test_histograms_and_namespace_counters():
    with Herald(config=CONFIG) as h:
        subs = [h.subscriber("chat:a", sub="u%d" % i) for i in range(3)]
        for i in range(5):
            h.publish("chat:a", i)
        for s in subs:
            for i in range(5):
                assert s.recv_push()["data"] == i
        text = h.http("GET", "/metrics").text
        ss = samples(text)
        # every histogram is cumulative and ends with +Inf == _count
        for name in ("herald_delivery_latency_seconds", "herald_handshake_duration_seconds"):
            buckets = [(l["le"], v) for n, l, v in ss if n == name + "_bucket"]
            vals = [v for _, v in buckets]
            assert vals == sorted(vals) and buckets[-1][0] == "+Inf", buckets
            assert buckets[-1][1] == value(ss, name + "_count")
        assert value(ss, "herald_delivery_latency_seconds_count") == 15
        assert value(ss, "herald_handshake_duration_seconds_count") == 3
        assert value(ss, "herald_namespace_publications_total", namespace="chat") == 5
        assert value(ss, "herald_namespace_deliveries_total", namespace="chat") == 15
        assert value(ss, "herald_namespace_publications_total", namespace="") == 0
        route = "POST /api/v1/publish"
        assert value(ss, "herald_http_request_duration_seconds_count", route=route) == 5
        assert value(ss, "herald_http_request_duration_seconds_bucket", route=route, le="+Inf") == 5
        h.http("GET", "/nope")
        ss = samples(h.http("GET", "/metrics").text)
        assert value(ss, "herald_http_request_duration_seconds_count", route="none") >= 1
        lags = [v for n, l, v in ss if n == "herald_loop_lag_seconds"]
        assert len(lags) == 2 and all(0 <= v < 5 for v in lags), lags


def test_proxy_families_without_proxies():
    """SPEC §8's metrics are exposed (zero) even when no proxy is configured,
    one series per proxy kind, so dashboards need no special case."""
    kinds = {"connect", "refresh", "subscribe", "publish", "rpc"}
    with Herald() as h:
        ss = samples(h.http("GET", "/metrics").text)
        for name in ("herald_proxy_requests_total", "herald_proxy_results_total",
                     "herald_proxy_refusals_total", "herald_proxy_errors_total",
                     "herald_proxy_timeouts_total", "herald_proxy_rejected_total",
                     "herald_proxy_duration_seconds_count"):
            got = {l["kind"]: v for n, l, v in ss if n == name}
            assert set(got) == kinds and not any(got.values()), (name, got)
        for kind in kinds:
            buckets = [l["le"] for n, l, v in ss
                       if n == "herald_proxy_duration_seconds_bucket" and l["kind"] == kind]
            assert buckets and buckets[-1] == "+Inf", (kind, buckets)
        for name in ("herald_proxy_inflight", "herald_proxy_queued", "herald_events_sent_total",
                     "herald_events_dropped_total", "herald_events_retries_total"):
            assert [v for n, l, v in ss if n == name] == [0.0], name


if __name__ == "__main__":
    run_tests(globals())
