/* Unit tests for the in-process channel layer and the hash map. */
#include "channels/channels.h"
#include "channels/layer_internal.h"
#include "common/common.h"
#include "testing.h"

#include <pthread.h>
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

/* A fake host with inboxes that the test drains by hand, as a loop would. */
#define MAXQ 4096
typedef struct inboxes {
    pthread_mutex_t mu;
    chan_msg *q[CHAN_MAX_THREADS][MAXQ];
    size_t n[CHAN_MAX_THREADS];
} inboxes;

static void post(void *ud, unsigned thread, chan_msg *m)
{
    inboxes *in = ud;
    pthread_mutex_lock(&in->mu);
    if (in->n[thread] < MAXQ)
        in->q[thread][in->n[thread]++] = m;
    else
        chan_msg_unref(m);
    pthread_mutex_unlock(&in->mu);
}

static void drain(chan_layer *l, inboxes *in, unsigned thread)
{
    pthread_mutex_lock(&in->mu);
    for (size_t i = 0; i < in->n[thread]; i++) {
        chan_deliver(l, thread, in->q[thread][i]);
        chan_msg_unref(in->q[thread][i]);
    }
    in->n[thread] = 0;
    pthread_mutex_unlock(&in->mu);
}

static inboxes *inboxes_new(void)
{
    inboxes *in = calloc(1, sizeof(*in));
    pthread_mutex_init(&in->mu, NULL);
    return in;
}

static chan_host host_for(inboxes *in, unsigned nthreads)
{
    return (chan_host){.nthreads = nthreads, .post = post, .deliver = deliver, .ud = in};
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
    inboxes *in = inboxes_new();
    chan_host h = host_for(in, 1);
    chan_layer *l = chan_local_new(&h);
    sink a = {0}, b = {0}, c = {0};
    chan_sub *sa = chan_subscribe(l, 0, "news", &a);
    chan_sub *sb = chan_subscribe(l, 0, "news", &b);
    chan_sub *sc = chan_subscribe(l, 0, "other", &c);
    CHECK(sa && sb && sc);

    CHECK(chan_publish(l, 0, "news", "1", 1, on_done, NULL) == 0);
    CHECK(done_calls == 1 && done_status == 0);
    CHECK(a.count == 0); /* even the publishing thread's subscribers go through the inbox */
    drain(l, in, 0);
    CHECK(a.count == 1 && b.count == 1 && c.count == 0);
    CHECK(a.last == b.last); /* the same bytes, not a copy */
    CHECK(atomic_load(&a.last->refs) == 2);
    CHECK(a.last->channel && !strcmp(a.last->channel, "news"));

    chan_stats st;
    chan_layer_stats(l, &st);
    CHECK(st.channels == 2 && st.subscriptions == 3 && st.deliveries == 2 && st.publications == 1);

    chan_unsubscribe(l, 0, sa);
    chan_publish(l, 0, "news", "2", 1, NULL, NULL);
    drain(l, in, 0);
    CHECK(a.count == 1 && b.count == 2);
    chan_unsubscribe(l, 0, sb);
    chan_layer_stats(l, &st);
    CHECK(st.channels == 1 && st.subscriptions == 1);

    /* publishing to a channel nobody listens to still completes, posts nothing */
    chan_publish(l, 0, "empty", "3", 1, on_done, NULL);
    CHECK(done_calls == 2 && done_status == 0 && in->n[0] == 0);

    chan_msg_unref(a.last);
    chan_msg_unref(b.last);
    chan_layer_destroy(l); /* drops sc */
    chan_msg_unref(c.last);
    free(in);
}

/* Many subscribers leaving in arbitrary order keeps the index bookkeeping
 * of swap-remove right: every remaining one still gets messages. */
static void test_swap_remove(void)
{
    enum { N = 100 };
    inboxes *in = inboxes_new();
    chan_host hst = host_for(in, 1);
    chan_layer *l = chan_local_new(&hst);
    sink s[N] = {{0}};
    chan_sub *h[N];
    for (int i = 0; i < N; i++)
        h[i] = chan_subscribe(l, 0, "c", &s[i]);
    for (int i = 0; i < N; i += 3)
        chan_unsubscribe(l, 0, h[i]);
    chan_publish(l, 0, "c", "0", 1, NULL, NULL);
    drain(l, in, 0);
    int got = 0;
    for (int i = 0; i < N; i++) {
        got += s[i].count;
        CHECK(s[i].count == (i % 3 ? 1 : 0));
        chan_msg_unref(s[i].last);
    }
    CHECK(got == N - (N + 2) / 3);
    chan_layer_destroy(l);
    free(in);
}

/*---- The registry's node-level transitions ---------------------------------*/

/* A test implementation: counts the transitions the Redis layer will
 * SUBSCRIBE/UNSUBSCRIBE on, and publishes like the local layer. */
typedef struct test_layer {
    chan_layer base;
    int opens, closes;
    char last[64];
} test_layer;

static void t_open(chan_layer *l, const char *ch)
{
    test_layer *t = (test_layer *)l;
    t->opens++;
    snprintf(t->last, sizeof(t->last), "+%s", ch);
}

static void t_close(chan_layer *l, const char *ch)
{
    test_layer *t = (test_layer *)l;
    t->closes++;
    snprintf(t->last, sizeof(t->last), "-%s", ch);
}

static int t_publish(chan_layer *l, unsigned thread, const char *ch, const char *data, size_t len,
                     chan_publish_cb cb, void *ud)
{
    (void)thread;
    chan_msg *m = chan_msg_publication(ch, data, len, 0);
    chan_dispatch(l, m);
    chan_msg_unref(m);
    if (cb)
        cb(ud, 0, 0);
    return 0;
}

static void t_destroy(chan_layer *l)
{
    free(l);
}

static const chan_layer_ops test_ops = {"test", t_publish, t_open, t_close, t_destroy};

static void test_first_last_subscriber_of_node(void)
{
    inboxes *in = inboxes_new();
    chan_host h = host_for(in, 3);
    test_layer *t = calloc(1, sizeof(*t));
    chan_layer_init(&t->base, &test_ops, &h);
    chan_layer *l = &t->base;
    sink a = {0}, b = {0}, c = {0};

    chan_sub *s1 = chan_subscribe(l, 0, "x", &a);
    CHECK(t->opens == 1 && !strcmp(t->last, "+x"));
    chan_sub *s2 = chan_subscribe(l, 0, "x", &b); /* same thread: no transition */
    chan_sub *s3 = chan_subscribe(l, 2, "x", &c); /* another thread: still one per node */
    CHECK(t->opens == 1 && chan_channel_threads(l, "x") == 2);

    chan_publish(l, 1, "x", "7", 1, NULL, NULL); /* from a thread without subscribers */
    CHECK(in->n[0] == 1 && in->n[1] == 0 && in->n[2] == 1);
    drain(l, in, 0);
    drain(l, in, 2);
    CHECK(a.count == 1 && b.count == 1 && c.count == 1 && a.last == c.last);

    chan_unsubscribe(l, 0, s1);
    chan_unsubscribe(l, 0, s2);
    CHECK(t->closes == 0 && chan_channel_threads(l, "x") == 1);
    chan_unsubscribe(l, 2, s3);
    CHECK(t->closes == 1 && !strcmp(t->last, "-x") && chan_channel_threads(l, "x") == 0);

    /* a publication routed before the last subscriber left finds nobody */
    chan_sub *s4 = chan_subscribe(l, 1, "y", &a);
    chan_publish(l, 1, "y", "8", 1, NULL, NULL);
    chan_unsubscribe(l, 1, s4);
    drain(l, in, 1);
    CHECK(a.count == 1 && t->opens == 2 && t->closes == 2);

    chan_msg_unref(a.last);
    chan_msg_unref(b.last);
    chan_msg_unref(c.last);
    chan_layer_destroy(l);
    free(in);
}

/*---- One order per channel across threads ----------------------------------*/

/* Four publisher threads publish concurrently into one channel whose
 * subscribers sit on four "loop" threads; every loop must see the same
 * sequence. */
enum { NTHREADS = 4, PER_PUBLISHER = 500 };

typedef struct order_sink {
    int n;
    int seen[NTHREADS * PER_PUBLISHER];
} order_sink;

static void order_deliver(void *owner, chan_msg *m)
{
    order_sink *s = owner;
    /* payload {"push":"message","channel":"o","data":N} */
    const char *p = strstr(chan_msg_payload(m), "\"data\":");
    if (s->n < NTHREADS * PER_PUBLISHER)
        s->seen[s->n++] = atoi(p + 7);
}

typedef struct pub_arg {
    chan_layer *l;
    unsigned thread;
} pub_arg;

static void *publisher(void *arg)
{
    pub_arg *a = arg;
    char data[16];
    for (int i = 0; i < PER_PUBLISHER; i++) {
        int n = snprintf(data, sizeof(data), "%d", (int)a->thread * PER_PUBLISHER + i);
        chan_publish(a->l, a->thread, "o", data, (size_t)n, NULL, NULL);
    }
    return NULL;
}

static void test_one_order_across_threads(void)
{
    inboxes *in = inboxes_new();
    chan_host h = {.nthreads = NTHREADS, .post = post, .deliver = order_deliver, .ud = in};
    chan_layer *l = chan_local_new(&h);
    static order_sink sinks[NTHREADS];
    pthread_t th[NTHREADS];
    pub_arg args[NTHREADS];
    memset(sinks, 0, sizeof(sinks));
    for (unsigned t = 0; t < NTHREADS; t++)
        chan_subscribe(l, t, "o", &sinks[t]);
    for (unsigned t = 0; t < NTHREADS; t++) {
        args[t] = (pub_arg){l, t};
        pthread_create(&th[t], NULL, publisher, &args[t]);
    }
    for (unsigned t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    for (unsigned t = 0; t < NTHREADS; t++)
        drain(l, in, t);
    int same = 1, complete = 1;
    for (unsigned t = 0; t < NTHREADS; t++) {
        complete &= sinks[t].n == NTHREADS * PER_PUBLISHER;
        same &= !memcmp(sinks[t].seen, sinks[0].seen, sizeof(sinks[0].seen));
    }
    CHECK(complete);
    CHECK(same);
    /* each publisher's own publications keep their order */
    int last[NTHREADS] = {-1, -1, -1, -1}, inorder = 1;
    for (int i = 0; i < sinks[0].n; i++) {
        int v = sinks[0].seen[i], p = v / PER_PUBLISHER;
        inorder &= v > last[p];
        last[p] = v;
    }
    CHECK(inorder);
    chan_layer_destroy(l);
    free(in);
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
    RUN(test_first_last_subscriber_of_node);
    RUN(test_one_order_across_threads);
    RUN(test_map);
    RUN(test_secure_eq);
    return TEST_DONE();
}
