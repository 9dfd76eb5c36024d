/* Unit tests for chan_tab (channels/tab.c): the channel table keyed by a
 * name and the hash the caller computed once. */
#include "channels/layer_internal.h"
#include "common/common.h"
#include "testing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int freed;

static void count_free(void *v)
{
    freed++;
    free(v);
}

static uint64_t h_of(const char *s)
{
    return chan_hash(s, strlen(s));
}

/* Puts, gets, replaces and deletes; keys are copies. */
static void test_basic(void)
{
    chan_tab t;
    chan_tab_init(&t);
    char key[16] = "news";
    int a = 1, b = 2;
    chan_tab_put(&t, key, 4, h_of("news"), &a);
    strcpy(key, "xxxx"); /* the table kept its own copy */
    CHECK(chan_tab_get(&t, "news", 4, h_of("news")) == &a);
    CHECK(chan_tab_get(&t, "new", 3, h_of("new")) == NULL);
    chan_tab_put(&t, "news", 4, h_of("news"), &b);
    CHECK(chan_tab_get(&t, "news", 4, h_of("news")) == &b);
    CHECK(chan_tab_count(&t) == 1);
    CHECK(chan_tab_del(&t, "news", 4, h_of("news")) == &b);
    CHECK(chan_tab_del(&t, "news", 4, h_of("news")) == NULL);
    CHECK(chan_tab_count(&t) == 0);
    chan_tab_clear(&t, NULL);
}

/* Names whose hashes are equal (the caller's hash decides the slot) are
 * still told apart by their bytes, and a deletion in the middle of a
 * probe chain does not hide what follows it. */
static void test_same_hash(void)
{
    chan_tab t;
    chan_tab_init(&t);
    char name[32];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof(name), "c%d", i);
        chan_tab_put(&t, name, strlen(name), 42, (void *)(intptr_t)(i + 1));
    }
    CHECK(chan_tab_count(&t) == 100);
    for (int i = 0; i < 100; i += 2) {
        snprintf(name, sizeof(name), "c%d", i);
        CHECK(chan_tab_del(&t, name, strlen(name), 42) == (void *)(intptr_t)(i + 1));
    }
    int ok = 1;
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof(name), "c%d", i);
        void *v = chan_tab_get(&t, name, strlen(name), 42);
        ok &= v == (i % 2 ? (void *)(intptr_t)(i + 1) : NULL);
    }
    CHECK(ok);
    chan_tab_clear(&t, NULL);
}

/* Growth, tombstone reuse and iteration: after many inserts and deletes
 * the table holds exactly what is left, each once, with its hash. */
static void test_churn_and_iteration(void)
{
    chan_tab t;
    chan_tab_init(&t);
    char name[32];
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 5000; i++) {
            snprintf(name, sizeof(name), "ch:%d", i);
            if (chan_tab_get(&t, name, strlen(name), h_of(name)))
                continue;
            int *v = hr_malloc(sizeof(*v));
            *v = i;
            chan_tab_put(&t, name, strlen(name), h_of(name), v);
        }
        for (int i = 0; i < 5000; i++) {
            if (i % 5 == round)
                continue;
            snprintf(name, sizeof(name), "ch:%d", i);
            free(chan_tab_del(&t, name, strlen(name), h_of(name)));
        }
    }
    /* left: i % 5 == 4 from the last round; earlier rounds' were deleted
     * in the rounds after them */
    CHECK(chan_tab_count(&t) == 1000);
    CHECK(t.cap <= 8192); /* tombstones were reused or reclaimed, not grown over */
    size_t n = 0, bad = 0;
    const char *key;
    uint64_t h;
    void *val;
    for (size_t it = 0; chan_tab_next(&t, &it, &key, &h, &val);) {
        n++;
        int i = *(int *)val;
        snprintf(name, sizeof(name), "ch:%d", i);
        bad += strcmp(key, name) != 0 || h != h_of(name) || i % 5 != 4;
    }
    CHECK(n == 1000 && bad == 0);
    freed = 0;
    chan_tab_clear(&t, count_free);
    CHECK(freed == 1000);
    CHECK(t.slots == NULL && t.count == 0);
}

/* The registry takes a stripe from the hash's high bits, the tables a
 * slot from its low bits: many names of one stripe are still found. */
static void test_one_stripe(void)
{
    chan_tab t;
    chan_tab_init(&t);
    char name[32];
    int found = 0, n = 0;
    for (int i = 0; n < 300 && i < 100000; i++) {
        snprintf(name, sizeof(name), "s%d", i);
        uint64_t h = h_of(name);
        if (h >> (64 - CHAN_STRIPE_BITS) != 7)
            continue;
        chan_tab_put(&t, name, strlen(name), h, (void *)(intptr_t)(i + 1));
        n++;
    }
    for (int i = 0; i < 100000; i++) {
        snprintf(name, sizeof(name), "s%d", i);
        uint64_t h = h_of(name);
        if (h >> (64 - CHAN_STRIPE_BITS) == 7)
            found += chan_tab_get(&t, name, strlen(name), h) == (void *)(intptr_t)(i + 1);
    }
    CHECK(n == 300 && found == 300);
    chan_tab_clear(&t, NULL);
}

int main(void)
{
    RUN(test_basic);
    RUN(test_same_hash);
    RUN(test_churn_and_iteration);
    RUN(test_one_stripe);
    return TEST_DONE();
}
