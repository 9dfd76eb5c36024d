"""test_redis_kill_inflight.py - publications in flight when Redis dies are answered.

Found by the chaos soak (bench/soak.py --chaos): when redis-server is
SIGKILLed while commands it has not read are on the connection, the kernel
resets it; libuv reports that as a poll error, which hiredis 0.14's libuv
adapter ignored, so hiredis never learnt the connection was gone. Every
FCALL in flight then stayed unanswered for good: the REST publish (or the
WebSocket publish) got no answer at all, and its HTTP connection stayed open
in CLOSE_WAIT after the client gave up. channels/redis_uv.c hands the error
to hiredis, which then calls every pending callback: each publication is
answered, 200 with an offset or 503.

The test keeps 16 publications in flight (16 threads, each publishing in a
loop) into a history channel, SIGKILLs Redis, restarts it on its port, and
does that three times: every request must be answered within 10 s, and the
node must be ready again and publish afterwards.
"""

import threading

import requests

from harness import Herald, Redis, run_tests, wait_until

CONFIG = {"namespaces": {"hist": {"subscribe": "authenticated", "publish": "authenticated",
                                  "history_size": 1000, "history_ttl": 600}}}
PUBLISHERS = 16
ANSWER_S = 10


def test_publications_in_flight_when_redis_is_killed_are_answered():
    with Redis() as r, Herald(config=CONFIG, redis=r) as h:
        h.wait_ready()
        url = h.base + "/api/v1/publish"
        unanswered, statuses, lock = [], {}, threading.Lock()
        stop = threading.Event()

        def publisher(k):
            s = requests.Session()
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    resp = s.post(url, json={"channel": "hist:a", "data": {"k": k, "n": n}},
                                  headers=h.api_headers(), timeout=ANSWER_S)
                    with lock:
                        statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
                except requests.Timeout:
                    with lock:
                        unanswered.append((k, n))
                    s.close()
                    s = requests.Session()
                except requests.ConnectionError:
                    s.close()  # the node closed a keep-alive connection: not this test's subject
                    s = requests.Session()
            s.close()

        for rnd in range(3):
            stop.clear()
            threads = [threading.Thread(target=publisher, args=(k,)) for k in range(PUBLISHERS)]
            for t in threads:
                t.start()
            # publications flowing, then Redis goes while some are in flight
            wait_until(lambda: statuses.get(200, 0) >= 50 * (rnd + 1), 20, what="publications before the kill")
            r.halt()
            wait_until(lambda: statuses.get(503, 0) > 0, 20, what="503 while Redis is down")
            r.start()
            wait_until(h.ready, 30, what="ready again after the restart")
            before = statuses.get(200, 0)
            wait_until(lambda: statuses.get(200, 0) >= before + 50, 30, what="publications after the restart")
            stop.set()
            for t in threads:
                t.join(ANSWER_S + 5)
            assert not any(t.is_alive() for t in threads), "a publisher thread is stuck"
            assert not unanswered, "round %d: %d publications got no answer within %d s: %r" % (
                rnd, len(unanswered), ANSWER_S, unanswered[:5])
        assert set(statuses) <= {200, 503}, statuses
        h.publish("hist:a", {"after": True})


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=280)
