/* Unit tests for the channel layer (channels/channels.h): the registry and
 * its shards (core.c), the in-process layer (local.c), messages (msg.c). */
#include "channels/channels.h"
#include "channels/layer_internal.h"
#include "common/common.h"
#include "testing.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A fake subscriber records what it was delivered. */
typedef struct sink {
    int count;
    int subscribed_at;
    chan_msg *last;
} sink;

static void deliver(void *owner, chan_msg *m)
{
    sink *s = owner;
    s->count++;
    chan_msg_unref(s->last);
    s->last = chan_msg_ref(m);
}

/* A fake host with inboxes that the test drains by hand, as a loop would.
 * Each inbox grows as needed, as the gateway's does: dropping messages
 * once a bound is reached would turn a publisher running ahead of the
 * drain into lost deliveries that the test blames on the layer. */
typedef struct inboxes {
    pthread_mutex_t mu;
    chan_msg **q[CHAN_MAX_THREADS]; /* locked */
    size_t n[CHAN_MAX_THREADS], cap[CHAN_MAX_THREADS];
} inboxes;

static void post(void *ud, unsigned thread, chan_msg *m)
{
    inboxes *in = ud;
    pthread_mutex_lock(&in->mu);
    if (in->n[thread] == in->cap[thread]) {
        size_t cap = in->cap[thread] ? 2 * in->cap[thread] : 64;
        chan_msg **grown = realloc(in->q[thread], cap * sizeof(*grown));
        if (!grown) {
            fprintf(stderr, "test_channels: out of memory queueing a delivery\n");
            abort();
        }
        in->q[thread] = grown;
        in->cap[thread] = cap;
    }
    in->q[thread][in->n[thread]++] = m;
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

/* Frees the inboxes; messages never drained are released. */
static void inboxes_free(inboxes *in)
{
    for (unsigned t = 0; t < CHAN_MAX_THREADS; t++) {
        for (size_t i = 0; i < in->n[t]; i++)
            chan_msg_unref(in->q[t][i]);
        free(in->q[t]);
    }
    pthread_mutex_destroy(&in->mu);
    free(in);
}

/* The last subscribe outcome any subscriber heard, and how many. */
static int subscribed_calls;
static chan_sub_result last_result;
static char last_pubs[256];
static void subscribed(void *owner, void *req, const char *channel, const chan_sub_result *r)
{
    sink *s = owner;
    (void)req;
    (void)channel;
    subscribed_calls++;
    last_result = *r;
    last_result.pubs = NULL;
    last_pubs[0] = '\0';
    for (size_t i = 0; i < r->npubs; i++)
        snprintf(last_pubs + strlen(last_pubs), sizeof(last_pubs) - strlen(last_pubs), "%s%llu:%s",
                 i ? "," : "", (unsigned long long)r->pubs[i].offset, r->pubs[i].data);
    if (s)
        s->subscribed_at = s->count; /* deliveries seen before the answer */
}

static void subscribed_ignored(void *owner, void *req, const char *channel,
                               const chan_sub_result *r)
{
    (void)owner;
    (void)req;
    (void)channel;
    (void)r;
}

static void call(void *ud, unsigned thread, chan_task *t)
{
    (void)ud;
    (void)thread;
    t->run(t);
}

static int controls;
static void control(void *ud, const chan_control *c)
{
    (void)ud;
    (void)c;
    controls++;
}

static chan_host host_for(inboxes *in, unsigned nthreads)
{
    return (chan_host){.nthreads = nthreads,
                       .post = post,
                       .call = call,
                       .control = control,
                       .sub = {deliver, subscribed},
                       .ud = in};
}

static const chan_opts plain = {0, 0, 0, 0};

static chan_sub *sub(chan_layer *l, unsigned thread, const char *channel, void *owner)
{
    return chan_subscribe(l, thread, channel, &plain, NULL, NULL, owner, NULL);
}

static int done_calls, done_status;
static uint64_t done_offset;
static void on_done(void *ud, int status, uint64_t offset, int local_only)
{
    (void)ud;
    (void)local_only;
    done_calls++;
    done_status = status;
    done_offset = offset;
}

static void pub(chan_layer *l, unsigned thread, const char *channel, const char *data,
                chan_publish_cb cb)
{
    chan_publish(l, thread, channel, &plain, data, strlen(data), NULL, cb, NULL);
}

static void test_fanout_shares_one_buffer(void)
{
    inboxes *in = inboxes_new();
    chan_host h = host_for(in, 1);
    chan_layer *l = chan_local_new(&h);
    sink a = {0}, b = {0}, c = {0};
    done_calls = 0;
    chan_sub *sa = sub(l, 0, "news", &a);
    chan_sub *sb = sub(l, 0, "news", &b);
    chan_sub *sc = sub(l, 0, "other", &c);
    CHECK(sa && sb && sc);

    pub(l, 0, "news", "1", on_done);
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
    pub(l, 0, "news", "2", NULL);
    drain(l, in, 0);
    CHECK(a.count == 1 && b.count == 2);
    chan_unsubscribe(l, 0, sb);
    chan_layer_stats(l, &st);
    CHECK(st.channels == 1 && st.subscriptions == 1);

    /* publishing to a channel nobody listens to still completes, posts nothing */
    pub(l, 0, "empty", "3", on_done);
    CHECK(done_calls == 2 && done_status == 0 && in->n[0] == 0);

    chan_msg_unref(a.last);
    chan_msg_unref(b.last);
    chan_layer_destroy(l); /* drops sc */
    chan_msg_unref(c.last);
    inboxes_free(in);
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
        h[i] = sub(l, 0, "c", &s[i]);
    for (int i = 0; i < N; i += 3)
        chan_unsubscribe(l, 0, h[i]);
    pub(l, 0, "c", "0", NULL);
    drain(l, in, 0);
    int got = 0;
    for (int i = 0; i < N; i++) {
        got += s[i].count;
        CHECK(s[i].count == (i % 3 ? 1 : 0));
        chan_msg_unref(s[i].last);
    }
    CHECK(got == N - (N + 2) / 3);
    chan_layer_destroy(l);
    inboxes_free(in);
}

/*---- The registry's node-level transitions ---------------------------------*/

/* A test implementation: counts the transitions the Redis layer will
 * SUBSCRIBE/UNSUBSCRIBE on, and publishes like the local layer. */
typedef struct test_layer {
    chan_layer base;
    int opens, closes;
    char last[64];
} test_layer;

static void t_open(chan_layer *l, const char *ch, uint64_t h)
{
    test_layer *t = (test_layer *)l;
    CHECK(h == chan_hash(ch, strlen(ch))); /* the registry passes the name's hash along */
    t->opens++;
    snprintf(t->last, sizeof(t->last), "+%s", ch);
}

static void t_close(chan_layer *l, const char *ch, uint64_t h)
{
    test_layer *t = (test_layer *)l;
    CHECK(h == chan_hash(ch, strlen(ch)));
    t->closes++;
    snprintf(t->last, sizeof(t->last), "-%s", ch);
}

static void t_publish(chan_layer *l, unsigned thread, const char *ch, const chan_opts *o,
                      const char *data, size_t len, const char *from, chan_publish_cb cb, void *ud)
{
    (void)thread;
    (void)o;
    chan_msg *m = chan_msg_publication(ch, data, len, 0, from);
    chan_dispatch(l, m);
    chan_msg_unref(m);
    if (cb)
        cb(ud, 0, 0, 0);
}

/* Subscriptions complete only when the test says so (as Redis' would). */
static chan_sub *t_pending;
static int t_complete_at_once = 1;
static void t_subscribe(chan_layer *l, unsigned thread, chan_sub *s)
{
    chan_sub_result r = {0};
    (void)thread;
    if (t_complete_at_once) {
        chan_sub_complete(l, s, &r);
    } else {
        chan_sub_hold(s);
        t_pending = s;
    }
}

static void t_destroy(chan_layer *l)
{
    free(l);
}

static const chan_layer_ops test_ops = {.name = "test",
                                        .publish = t_publish,
                                        .channel_open = t_open,
                                        .channel_close = t_close,
                                        .subscribe = t_subscribe,
                                        .destroy = t_destroy};

/* A test layer over nthreads loop threads whose posts go to in. */
static test_layer *test_layer_new(inboxes *in, unsigned nthreads)
{
    chan_host h = host_for(in, nthreads);
    test_layer *t = calloc(1, sizeof(*t));
    chan_layer_init(&t->base, &test_ops, &h);
    return t;
}

static void test_first_last_subscriber_of_node(void)
{
    inboxes *in = inboxes_new();
    test_layer *t = test_layer_new(in, 3);
    chan_layer *l = &t->base;
    sink a = {0}, b = {0}, c = {0};

    chan_sub *s1 = sub(l, 0, "x", &a);
    CHECK(t->opens == 1 && !strcmp(t->last, "+x"));
    chan_sub *s2 = sub(l, 0, "x", &b); /* same thread: no transition */
    chan_sub *s3 = sub(l, 2, "x", &c); /* another thread: still one per node */
    CHECK(t->opens == 1 && chan_channel_threads(l, "x") == 2);

    pub(l, 1, "x", "7", NULL); /* from a thread without subscribers */
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
    chan_sub *s4 = sub(l, 1, "y", &a);
    pub(l, 1, "y", "8", NULL);
    chan_unsubscribe(l, 1, s4);
    drain(l, in, 1);
    CHECK(a.count == 1 && t->opens == 2 && t->closes == 2);

    chan_msg_unref(a.last);
    chan_msg_unref(b.last);
    chan_msg_unref(c.last);
    chan_layer_destroy(l);
    inboxes_free(in);
}

/*---- One order per channel across threads ----------------------------------*/

/* Four publisher threads publish concurrently into one channel whose
 * subscribers sit on four "loop" threads; every loop must see the same
 * sequence. */
enum { NTHREADS = 4, PER_PUBLISHER = 500 };

typedef struct order_sink {
    int n; /* every delivery, also any beyond what seen holds */
    int seen[NTHREADS * PER_PUBLISHER];
} order_sink;

static void order_deliver(void *owner, chan_msg *m)
{
    order_sink *s = owner;
    /* payload {"push":"message","channel":"o","data":N} */
    const char *p = strstr(chan_msg_payload(m), "\"data\":");
    if (s->n < NTHREADS * PER_PUBLISHER)
        s->seen[s->n] = atoi(p + 7);
    s->n++; /* a duplicate past the end still fails the count */
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
        chan_publish(a->l, a->thread, "o", &plain, data, (size_t)n, NULL, NULL, NULL);
    }
    return NULL;
}

static void test_one_order_across_threads(void)
{
    inboxes *in = inboxes_new();
    chan_host h = host_for(in, NTHREADS);
    h.sub.deliver = order_deliver;
    h.sub.subscribed = subscribed_ignored; /* owners are order_sinks, not sinks */
    chan_layer *l = chan_local_new(&h);
    static order_sink sinks[NTHREADS];
    pthread_t th[NTHREADS];
    pub_arg args[NTHREADS];
    memset(sinks, 0, sizeof(sinks));
    for (unsigned t = 0; t < NTHREADS; t++)
        chan_subscribe(l, t, "o", &plain, NULL, NULL, &sinks[t], NULL);
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
    inboxes_free(in);
}

/*---- Pending subscriptions -------------------------------------------------*/

static void dispatch_offset(chan_layer *l, const char *ch, uint64_t off)
{
    char text[96];
    int n = snprintf(text, sizeof(text),
                     "{\"push\":\"message\",\"channel\":\"%s\",\"data\":%llu,\"offset\":%llu}", ch,
                     (unsigned long long)off, (unsigned long long)off);
    chan_msg *m = chan_msg_for_channel(text, (size_t)n, ch, off);
    chan_dispatch(l, m);
    chan_msg_unref(m);
}

/* What reaches a subscription before it completes is held back; after the
 * answer only what is newer than the answer's position is delivered, so a
 * history read and the live stream neither overlap nor leave a gap. */
static void test_pending_holds_back_and_dedupes(void)
{
    inboxes *in = inboxes_new();
    test_layer *t = test_layer_new(in, 1);
    chan_layer *l = &t->base;
    sink a = {0};
    t_complete_at_once = 0;
    chan_sub *s = sub(l, 0, "h", &a);
    CHECK(s && t_pending == s);
    for (uint64_t off = 1; off <= 5; off++)
        dispatch_offset(l, "h", off);
    drain(l, in, 0);
    CHECK(a.count == 0); /* held back */
    subscribed_calls = 0;
    chan_sub_result r = {.history = 1, .pos = {3, "e"}};
    chan_sub_complete(l, t_pending, &r);
    chan_sub_release(t_pending);
    CHECK(subscribed_calls == 1 && a.subscribed_at == 0); /* the answer first */
    CHECK(a.count == 2 && a.last->offset == 5);           /* then 4 and 5 only */
    dispatch_offset(l, "h", 5);                           /* a duplicate */
    dispatch_offset(l, "h", 6);
    drain(l, in, 0);
    CHECK(a.count == 3 && a.last->offset == 6);

    /* unsubscribing while pending answers -ECANCELED, and a late
     * completion is ignored */
    sink b = {0};
    chan_sub *s2 = sub(l, 0, "h2", &b);
    chan_sub *held = t_pending;
    subscribed_calls = 0;
    chan_unsubscribe(l, 0, s2);
    CHECK(subscribed_calls == 1 && last_result.status == -ECANCELED);
    chan_sub_result late = {0};
    chan_sub_complete(l, held, &late);
    CHECK(subscribed_calls == 1);
    chan_sub_release(held); /* frees it: no leak under ASan */

    /* a failed completion removes the membership */
    sink c = {0};
    sub(l, 0, "h3", &c);
    chan_sub_result fail = {.status = -EAGAIN};
    chan_sub_complete(l, t_pending, &fail);
    chan_sub_release(t_pending);
    CHECK(last_result.status == -EAGAIN && chan_channel_threads(l, "h3") == 0);
    t_complete_at_once = 1;
    chan_unsubscribe(l, 0, s);
    chan_msg_unref(a.last);
    chan_layer_destroy(l);
    inboxes_free(in);
}

/* After an outage whose stream came back with a new epoch (not recovered),
 * the new stream's offsets start below what the subscriber saw: they must
 * not be taken for duplicates. */
static void test_renewal_resets_the_baseline(void)
{
    inboxes *in = inboxes_new();
    test_layer *t = test_layer_new(in, 1);
    chan_layer *l = &t->base;
    sink a = {0};
    chan_sub *s = sub(l, 0, "e", &a);
    for (uint64_t off = 5; off <= 10; off++)
        dispatch_offset(l, "e", off);
    drain(l, in, 0);
    CHECK(a.count == 6);
    chan_sub_result r = {.history = 1, .pos = {2, "new"}, .resubscribed = 1};
    chan_notify_resubscribed(l, 0, "e", chan_hash("e", 1), &r);
    dispatch_offset(l, "e", 3);
    drain(l, in, 0);
    CHECK(a.count == 7 && a.last->offset == 3);
    chan_unsubscribe(l, 0, s);
    chan_msg_unref(a.last);
    chan_layer_destroy(l);
    inboxes_free(in);
}

/*---- The in-process layer's history, presence, join/leave -------------------*/

static void test_local_history_and_recovery(void)
{
    inboxes *in = inboxes_new();
    chan_host h = host_for(in, 1);
    chan_layer *l = chan_local_new(&h);
    chan_opts o = {0, 0, 3, 300};
    sink a = {0};
    for (int i = 1; i <= 5; i++) {
        char d[8];
        snprintf(d, sizeof(d), "%d", i * 10);
        chan_publish(l, 0, "hist", &o, d, strlen(d), NULL, on_done, NULL);
        CHECK(done_status == 0 && done_offset == (uint64_t)i);
    }
    /* a subscriber without since learns the top and the epoch */
    chan_sub *s = chan_subscribe(l, 0, "hist", &o, NULL, NULL, &a, NULL);
    CHECK(s && last_result.history && last_result.pos.offset == 5 && last_result.pos.epoch[0]);
    chan_pos top = last_result.pos;
    chan_unsubscribe(l, 0, s);

    /* since 2 of this epoch: 3, 4, 5 are kept (size 3): recovered */
    chan_pos since = top;
    since.offset = 2;
    s = chan_subscribe(l, 0, "hist", &o, NULL, &since, &a, NULL);
    CHECK(last_result.recovered && !strcmp(last_pubs, "3:30,4:40,5:50"));
    chan_unsubscribe(l, 0, s);
    /* since 1: offset 2 was trimmed */
    since.offset = 1;
    s = chan_subscribe(l, 0, "hist", &o, NULL, &since, &a, NULL);
    CHECK(!last_result.recovered && !strcmp(last_pubs, "3:30,4:40,5:50"));
    chan_unsubscribe(l, 0, s);
    /* another epoch: not recovered */
    since.offset = 4;
    snprintf(since.epoch, sizeof(since.epoch), "other");
    s = chan_subscribe(l, 0, "hist", &o, NULL, &since, &a, NULL);
    CHECK(!last_result.recovered);
    chan_unsubscribe(l, 0, s);
    drain(l, in, 0);
    chan_layer_destroy(l);
    inboxes_free(in);
}

/* A subscriber from before a history channel's first publication is told
 * the epoch the stream is born with, however many other channels are born
 * first (the epoch of an unborn channel was counted per slot of names: a
 * birth in its slot moved it on, and the early subscriber's next recovery
 * said "not recovered" for nothing). 20000 births hit every one of the
 * 4096 slots with a probability above 99 %. */
static void test_local_early_subscriber_keeps_its_epoch(void)
{
    inboxes *in = inboxes_new();
    chan_host h = host_for(in, 1);
    chan_layer *l = chan_local_new(&h);
    chan_opts o = {0, 0, 10, 300};
    sink a = {0};
    chan_sub *s = chan_subscribe(l, 0, "early", &o, NULL, NULL, &a, NULL);
    CHECK(s && last_result.history && last_result.pos.offset == 0);
    chan_pos told = last_result.pos;
    for (int i = 0; i < 20000; i++) {
        char name[32];
        snprintf(name, sizeof(name), "other%d", i);
        chan_publish(l, 0, name, &o, "1", 1, NULL, NULL, NULL);
    }
    chan_publish(l, 0, "early", &o, "7", 1, NULL, on_done, NULL);
    CHECK(done_status == 0 && done_offset == 1);
    drain(l, in, 0);
    chan_unsubscribe(l, 0, s);
    told.offset = 1; /* what it was delivered */
    chan_publish(l, 0, "early", &o, "8", 1, NULL, NULL, NULL);
    s = chan_subscribe(l, 0, "early", &o, NULL, &told, &a, NULL);
    CHECK(last_result.recovered && !strcmp(last_result.pos.epoch, told.epoch) &&
          !strcmp(last_pubs, "2:8"));
    chan_unsubscribe(l, 0, s);
    drain(l, in, 0);
    chan_msg_unref(a.last); /* the sink holds what it was delivered last */
    chan_layer_destroy(l);
    inboxes_free(in);
}

static int got_presence;
static char presence_text[512];
static void on_presence(void *ud, const chan_presence *p)
{
    (void)ud;
    got_presence = p->status == 0;
    snprintf(presence_text, sizeof(presence_text), "%.*s", (int)p->len, p->clients);
}

static void test_local_presence_join_leave(void)
{
    inboxes *in = inboxes_new();
    chan_host h = host_for(in, 1);
    chan_layer *l = chan_local_new(&h);
    chan_opts o = {1, 1, 0, 0};
    sink a = {0}, b = {0};
    chan_client ca = {"n.1", "alice", "{\"name\":\"A\"}"}, cb = {"n.2", "bob", NULL};
    chan_sub *sa = chan_subscribe(l, 0, "room", &o, &ca, NULL, &a, NULL);
    drain(l, in, 0);
    chan_sub *sb = chan_subscribe(l, 0, "room", &o, &cb, NULL, &b, NULL);
    drain(l, in, 0);
    /* alice saw her own join and bob's; bob saw his */
    CHECK(a.count == 2 && b.count == 1);
    CHECK(strstr(chan_msg_payload(b.last), "\"push\":\"join\"") &&
          strstr(chan_msg_payload(b.last), "\"user\":\"bob\""));
    chan_presence_read(l, 0, "room", &o, on_presence, NULL);
    CHECK(got_presence && strstr(presence_text, "\"client\":\"n.1\"") &&
          strstr(presence_text, "\"name\":\"A\"") && strstr(presence_text, "\"user\":\"bob\""));
    chan_unsubscribe(l, 0, sb);
    drain(l, in, 0);
    CHECK(a.count == 3 && strstr(chan_msg_payload(a.last), "\"push\":\"leave\""));
    chan_presence_read(l, 0, "room", &o, on_presence, NULL);
    CHECK(!strstr(presence_text, "bob") && strstr(presence_text, "alice"));
    /* a namespace without presence says so */
    chan_presence_read(l, 0, "room", &plain, on_presence, NULL);
    CHECK(!got_presence);
    chan_unsubscribe(l, 0, sa);
    drain(l, in, 0); /* alice's leave, to nobody */
    chan_msg_unref(a.last);
    chan_msg_unref(b.last);
    chan_layer_destroy(l);
    inboxes_free(in);
}

static void test_recovered_rule(void)
{
    chan_pos since = {2, "e1"}, top = {4, "e1"};
    chan_pub full[] = {{3, "a", NULL}, {4, "b", NULL}}, hole[] = {{4, "b", NULL}};
    CHECK(chan_recovered(&since, &top, full, 2));
    CHECK(!chan_recovered(&since, &top, hole, 1));
    CHECK(!chan_recovered(&since, &top, NULL, 0));
    chan_pos same = {4, "e1"};
    CHECK(chan_recovered(&same, &top, NULL, 0));
    chan_pos other = {2, "e2"};
    CHECK(!chan_recovered(&other, &top, full, 2));
    chan_pos ahead = {9, "e1"};
    CHECK(!chan_recovered(&ahead, &top, NULL, 0));

    /* across an epoch change (the stream is in e2 from offset 2 on) */
    chan_pos top2 = {4, "e2"};
    chan_pos before = {2, "e1"}; /* saw up to the change */
    CHECK(chan_recovery_across(&before, &top2, full, 2, 2, 1) == CHAN_RECOVERY_FULL);
    /* the function did not find the position: every entry of e2 */
    CHECK(chan_recovery_across(&before, &top2, full, 2, 2, 0) == CHAN_RECOVERY_EPOCH);
    chan_pos lost = {3, "e1"}; /* saw 3 of e1, which the new master never had */
    CHECK(chan_recovery_across(&lost, &top2, full, 2, 2, 0) == CHAN_RECOVERY_EPOCH);
    /* entries that do not reach the top, or a hole: a gap */
    CHECK(chan_recovery_across(&lost, &top2, full, 1, 2, 0) == CHAN_RECOVERY_NONE);
    CHECK(chan_recovery_across(&lost, &top2, hole, 1, 2, 0) == CHAN_RECOVERY_NONE);
    /* nothing written in e2 yet */
    chan_pos top3 = {2, "e2"};
    CHECK(chan_recovery_across(&lost, &top3, NULL, 0, 2, 0) == CHAN_RECOVERY_EPOCH);
    CHECK(chan_recovery_across(&before, &top3, NULL, 0, 2, 1) == CHAN_RECOVERY_FULL);
    /* same epoch with a hole stays a gap, whatever kept says */
    CHECK(chan_recovery_across(&since, &top, hole, 1, 3, 1) == CHAN_RECOVERY_NONE);
}

static void test_parse_push(void)
{
    char err[160];
    const char ok[] = "{\"push\":\"message\",\"channel\":\"c\",\"data\":1,\"offset\":7}";
    chan_msg *m = chan_msg_parse_push(ok, sizeof(ok) - 1, "c", err, sizeof(err));
    CHECK(m && m->offset == 7 && !strcmp(m->channel, "c"));
    chan_msg_unref(m);
    const char *bad[] = {"{",
                         "[]",
                         "{\"push\":\"message\",\"channel\":\"d\",\"data\":1}",
                         "{\"push\":\"evil\",\"channel\":\"c\"}",
                         "{\"push\":\"message\",\"channel\":\"c\"}",
                         "{\"push\":\"message\",\"channel\":\"c\",\"data\":1,\"offset\":-1}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(chan_msg_parse_push(bad[i], strlen(bad[i]), "c", err, sizeof(err)) == NULL);
}

int main(void)
{
    RUN(test_pending_holds_back_and_dedupes);
    RUN(test_renewal_resets_the_baseline);
    RUN(test_local_history_and_recovery);
    RUN(test_local_early_subscriber_keeps_its_epoch);
    RUN(test_local_presence_join_leave);
    RUN(test_recovered_rule);
    RUN(test_parse_push);
    RUN(test_fanout_shares_one_buffer);
    RUN(test_swap_remove);
    RUN(test_first_last_subscriber_of_node);
    RUN(test_one_order_across_threads);
    return TEST_DONE();
}
