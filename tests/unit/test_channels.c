/* Unit tests for the in-process channel layer and the hash map. */
#include "channels/channels.h"
#include "common/common.h"
#include "testing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A fake subscriber records what it was delivered. */
typedef struct sink {
    int count;
    chan_msg *last;
} sink;

static void deliver(void *owner, chan_msg *m)
{
    sink *s = owner;
    s->count++;
    chan_msg_unref(s->last);
    s->last = chan_msg_ref(m);
}

static int done_calls, done_status;
static void on_done(void *ud, int status, uint64_t offset)
{
    (void)ud;
    (void)offset;
    done_calls++;
    done_status = status;
}

static void test_fanout_shares_one_buffer(void)
{
    chan_layer *l = chan_local_new(deliver);
    sink a = {0}, b = {0}, c = {0};
    chan_sub *sa = chan_subscribe(l, "news", &a);
    chan_sub *sb = chan_subscribe(l, "news", &b);
    chan_sub *sc = chan_subscribe(l, "other", &c);
    CHECK(sa && sb && sc);

    CHECK(chan_publish(l, "news", "1", 1, on_done, NULL) == 0);
    CHECK(done_calls == 1 && done_status == 0);
    CHECK(a.count == 1 && b.count == 1 && c.count == 0);
    CHECK(a.last == b.last); /* the same bytes, not a copy */
    CHECK(atomic_load(&a.last->refs) == 2);

    chan_stats st;
    chan_layer_stats(l, &st);
    CHECK(st.channels == 2 && st.subscriptions == 3 && st.deliveries == 2);

    chan_unsubscribe(l, sa);
    chan_publish(l, "news", "2", 1, NULL, NULL);
    CHECK(a.count == 1 && b.count == 2);
    chan_unsubscribe(l, sb);
    chan_layer_stats(l, &st);
    CHECK(st.channels == 1 && st.subscriptions == 1);

    /* publishing to a channel nobody listens to still completes */
    chan_publish(l, "empty", "3", 1, on_done, NULL);
    CHECK(done_calls == 2 && done_status == 0);

    chan_msg_unref(a.last);
    chan_msg_unref(b.last);
    chan_layer_destroy(l); /* drops sc */
    chan_msg_unref(c.last);
}

/* Many subscribers leaving in arbitrary order keeps the index bookkeeping
 * of swap-remove right: every remaining one still gets messages. */
static void test_swap_remove(void)
{
    enum { N = 100 };
    chan_layer *l = chan_local_new(deliver);
    sink s[N] = {{0}};
    chan_sub *h[N];
    for (int i = 0; i < N; i++)
        h[i] = chan_subscribe(l, "c", &s[i]);
    for (int i = 0; i < N; i += 3)
        chan_unsubscribe(l, h[i]);
    chan_publish(l, "c", "0", 1, NULL, NULL);
    int got = 0;
    for (int i = 0; i < N; i++) {
        got += s[i].count;
        CHECK(s[i].count == (i % 3 ? 1 : 0));
        chan_msg_unref(s[i].last);
    }
    CHECK(got == N - (N + 2) / 3);
    chan_layer_destroy(l);
}

static void test_map(void)
{
    hr_map *m = hr_map_new(free);
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        int *v = malloc(sizeof(int));
        *v = i;
        CHECK(hr_map_put(m, key, strlen(key), v) == 0);
    }
    CHECK(hr_map_count(m) == 5000);
    for (int i = 0; i < 5000; i += 2) {
        snprintf(key, sizeof(key), "k%d", i);
        free(hr_map_del(m, key, strlen(key)));
    }
    CHECK(hr_map_count(m) == 2500);
    int ok = 1;
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        int *v = hr_map_get(m, key, strlen(key));
        ok &= (i % 2) ? (v && *v == i) : (v == NULL);
    }
    CHECK(ok);
    size_t it = 0, n = 0;
    while (hr_map_next(m, &it, NULL, NULL, NULL))
        n++;
    CHECK(n == 2500);
    /* keys with embedded NULs are distinct byte strings */
    hr_map *m2 = hr_map_new(NULL);
    hr_map_put(m2, "a\0b", 3, (void *)1);
    hr_map_put(m2, "a\0c", 3, (void *)2);
    CHECK(hr_map_get(m2, "a\0b", 3) == (void *)1 && hr_map_get(m2, "a", 1) == NULL);
    hr_map_free(m2);
    hr_map_free(m);
}

static void test_secure_eq(void)
{
    CHECK(hr_secure_eq("abc", 3, "abc", 3));
    CHECK(!hr_secure_eq("abc", 3, "abd", 3));
    CHECK(!hr_secure_eq("abc", 3, "abcd", 4));
}

int main(void)
{
    RUN(test_fanout_shares_one_buffer);
    RUN(test_swap_remove);
    RUN(test_map);
    RUN(test_secure_eq);
    return TEST_DONE();
}
