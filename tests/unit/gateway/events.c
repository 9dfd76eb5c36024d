/* tests/unit/gateway/events.c - the lifecycle events of SPEC §8 as gateway/events.c builds
 * them (the Channels layer's message shape), and the webhook's body. Their
 * delivery is tested through a real webhook (test_events_webhook.py). */
#include "gateway/events.h"
#include "testing.h"

#include <stdlib.h>
#include <string.h>

/* Does o equal the JSON text want? Prints both when not. */
static int is(json_t *o, const char *want)
{
    json_t *w = json_loads(want, 0, NULL);
    int ok = o && w && json_equal(o, w);
    if (!ok) {
        char *got = o ? json_dumps(o, JSON_SORT_KEYS) : NULL;
        fprintf(stderr, "  got %s\n  want %s\n", got ? got : "NULL", want);
        free(got);
    }
    json_decref(w);
    json_decref(o);
    return ok;
}

static void test_events(void)
{
    CHECK(is(hr_event_connect("n1.7", "42", "websocket", "n1"),
             "{\"type\":\"herald.connect\",\"client\":\"n1.7\",\"user\":\"42\","
             "\"transport\":\"websocket\",\"node\":\"n1\"}"));
    CHECK(is(hr_event_connect("n1.8", NULL, "sse", "n1"),
             "{\"type\":\"herald.connect\",\"client\":\"n1.8\",\"user\":null,"
             "\"transport\":\"sse\",\"node\":\"n1\"}"));
    CHECK(is(hr_event_disconnect("n1.7", "42", 1001, 123456789012ULL, "n1"),
             "{\"type\":\"herald.disconnect\",\"client\":\"n1.7\",\"user\":\"42\","
             "\"code\":1001,\"duration_ms\":123456789012,\"node\":\"n1\"}"));
    CHECK(is(hr_event_subscription(1, "n1.7", "42", "chat:a"),
             "{\"type\":\"herald.subscribe\",\"client\":\"n1.7\",\"user\":\"42\","
             "\"channel\":\"chat:a\"}"));
    CHECK(is(hr_event_subscription(0, "n1.7", NULL, "chat:a"),
             "{\"type\":\"herald.unsubscribe\",\"client\":\"n1.7\",\"user\":null,"
             "\"channel\":\"chat:a\"}"));
    CHECK(is(hr_event_channel(1, "news"), "{\"type\":\"herald.channel.occupied\","
                                          "\"channel\":\"news\"}"));
    CHECK(is(hr_event_channel(0, "news"), "{\"type\":\"herald.channel.vacated\","
                                          "\"channel\":\"news\"}"));
    /* a name that is not UTF-8 makes no event (and leaks nothing) */
    CHECK(hr_event_connect("n1.9", "bad \xff", "websocket", "n1") == NULL);
    CHECK(hr_event_subscription(1, "n1.9", "u", "\xc3") == NULL);
}

static void test_webhook_body(void)
{
    json_t *ev[2] = {hr_event_channel(1, "a"), hr_event_channel(0, "b")};
    size_t len = 0;
    char *body = hr_events_webhook_body(ev, 2, &len);
    CHECK(body && strlen(body) == len);
    CHECK_STR(body, "{\"events\":[{\"type\":\"herald.channel.occupied\",\"channel\":\"a\"},"
                    "{\"type\":\"herald.channel.vacated\",\"channel\":\"b\"}]}");
    free(body);
    CHECK(ev[0]->refcount == 1 && ev[1]->refcount == 1); /* borrowed */
    body = hr_events_webhook_body(NULL, 0, &len);
    CHECK_STR(body, "{\"events\":[]}");
    free(body);
    json_decref(ev[0]);
    json_decref(ev[1]);
}

int main(void)
{
    RUN(test_events);
    RUN(test_webhook_body);
    return TEST_DONE();
}
