/*
 * core.c - the part of the channel layer every implementation shares: the
 * node-level registry (which threads have subscribers of which channel) and
 * the per-thread shards (which connections of a thread are subscribed).
 * See channels.h for the threading and ordering model.
 */
#include "layer_internal.h"

#include <stdlib.h>
#include <string.h>

/* One channel in one thread's shard: a dense array of memberships, so
 * fan-out walks contiguous pointers; each membership remembers its index so
 * unsubscribe is O(1) (swap-remove). */
typedef struct shard_channel {
    char *name;
    chan_sub **subs;
    size_t nsubs, cap;
} shard_channel;

struct chan_sub {
    shard_channel *ch;
    void *owner;
    size_t idx;
};

/*---- Registry --------------------------------------------------------------*/

/* The process-keyed hash picks the stripe, so chosen names cannot crowd
 * one lock either. */
static chan_stripe *stripe_of(chan_layer *l, const char *channel)
{
    return &l->stripes[hr_hash(channel, strlen(channel)) % CHAN_STRIPES];
}

static uint64_t mask_get(chan_stripe *st, const char *channel, size_t len)
{
    return (uint64_t)(uintptr_t)hr_map_get(st->threads, channel, len);
}

/* Marks `thread` as holding subscribers of channel; on the node's first,
 * tells the implementation (under the stripe lock, so open and close of a
 * channel reach it in the order they happened). */
static void registry_add(chan_layer *l, unsigned thread, const char *channel)
{
    chan_stripe *st = stripe_of(l, channel);
    size_t len = strlen(channel);
    pthread_mutex_lock(&st->mu);
    uint64_t mask = mask_get(st, channel, len);
    hr_map_put(st->threads, channel, len, (void *)(uintptr_t)(mask | 1ull << thread));
    if (!mask) {
        atomic_fetch_add_explicit(&l->nchannels, 1, memory_order_relaxed);
        if (l->ops->channel_open)
            l->ops->channel_open(l, channel);
    }
    pthread_mutex_unlock(&st->mu);
}

static void registry_remove(chan_layer *l, unsigned thread, const char *channel)
{
    chan_stripe *st = stripe_of(l, channel);
    size_t len = strlen(channel);
    pthread_mutex_lock(&st->mu);
    uint64_t mask = mask_get(st, channel, len) & ~(1ull << thread);
    if (mask) {
        hr_map_put(st->threads, channel, len, (void *)(uintptr_t)mask);
    } else {
        hr_map_del(st->threads, channel, len);
        atomic_fetch_sub_explicit(&l->nchannels, 1, memory_order_relaxed);
        if (l->ops->channel_close)
            l->ops->channel_close(l, channel);
    }
    pthread_mutex_unlock(&st->mu);
}

/* The stripe lock is held while the reference is posted to every thread,
 * so two publications of one channel enter all inboxes in the same order. */
void chan_dispatch(chan_layer *l, chan_msg *m)
{
    chan_stripe *st = stripe_of(l, m->channel);
    pthread_mutex_lock(&st->mu);
    uint64_t mask = mask_get(st, m->channel, strlen(m->channel));
    for (unsigned t = 0; mask; t++, mask >>= 1)
        if (mask & 1)
            l->host.post(l->host.ud, t, chan_msg_ref(m));
    pthread_mutex_unlock(&st->mu);
}

unsigned chan_channel_threads(chan_layer *l, const char *channel)
{
    chan_stripe *st = stripe_of(l, channel);
    pthread_mutex_lock(&st->mu);
    uint64_t mask = mask_get(st, channel, strlen(channel));
    pthread_mutex_unlock(&st->mu);
    return (unsigned)__builtin_popcountll(mask);
}

/*---- Shards (one per loop thread, touched only by it) ----------------------*/

static void shard_channel_free(void *p)
{
    shard_channel *ch = p;
    for (size_t i = 0; i < ch->nsubs; i++)
        free(ch->subs[i]);
    free(ch->subs);
    free(ch->name);
    free(ch);
}

chan_sub *chan_subscribe(chan_layer *l, unsigned thread, const char *channel, void *owner)
{
    chan_shard *sh = &l->shards[thread];
    size_t len = strlen(channel);
    shard_channel *ch = hr_map_get(sh->channels, channel, len);
    if (!ch) {
        ch = hr_calloc(1, sizeof(*ch));
        ch->name = hr_strdup(channel);
        hr_map_put(sh->channels, channel, len, ch);
        registry_add(l, thread, channel);
    }
    if (ch->nsubs == ch->cap) {
        ch->cap = ch->cap ? ch->cap * 2 : 4;
        ch->subs = hr_realloc(ch->subs, ch->cap * sizeof(*ch->subs));
    }
    chan_sub *s = hr_malloc(sizeof(*s));
    *s = (chan_sub){ch, owner, ch->nsubs};
    ch->subs[ch->nsubs++] = s;
    atomic_fetch_add_explicit(&sh->subscriptions, 1, memory_order_relaxed);
    return s;
}

/* Swap-remove keeps the array dense; an emptied channel leaves the shard
 * (and, if it was the node's last, the registry). */
void chan_unsubscribe(chan_layer *l, unsigned thread, chan_sub *s)
{
    chan_shard *sh = &l->shards[thread];
    shard_channel *ch = s->ch;
    chan_sub *last = ch->subs[--ch->nsubs];
    ch->subs[s->idx] = last;
    last->idx = s->idx;
    free(s);
    atomic_fetch_sub_explicit(&sh->subscriptions, 1, memory_order_relaxed);
    if (ch->nsubs == 0) {
        registry_remove(l, thread, ch->name);
        hr_map_del(sh->channels, ch->name, strlen(ch->name));
        shard_channel_free(ch);
    }
}

void chan_deliver(chan_layer *l, unsigned thread, chan_msg *m)
{
    chan_shard *sh = &l->shards[thread];
    shard_channel *ch = hr_map_get(sh->channels, m->channel, strlen(m->channel));
    if (!ch)
        return; /* the last subscriber left after the publication was routed */
    for (size_t i = 0; i < ch->nsubs; i++)
        l->host.deliver(ch->subs[i]->owner, m);
    atomic_fetch_add_explicit(&sh->deliveries, ch->nsubs, memory_order_relaxed);
}

/*---- The layer -------------------------------------------------------------*/

void chan_layer_init(chan_layer *l, const chan_layer_ops *ops, const chan_host *host)
{
    l->ops = ops;
    l->host = *host;
    if (l->host.nthreads < 1 || l->host.nthreads > CHAN_MAX_THREADS)
        abort(); /* a caller bug: the gateway clamps --threads */
    for (size_t i = 0; i < CHAN_STRIPES; i++) {
        pthread_mutex_init(&l->stripes[i].mu, NULL);
        l->stripes[i].threads = hr_map_new(NULL);
    }
    atomic_init(&l->nchannels, 0);
    l->shards = hr_calloc(l->host.nthreads, sizeof(*l->shards));
    for (unsigned t = 0; t < l->host.nthreads; t++)
        l->shards[t].channels = hr_map_new(shard_channel_free);
}

int chan_publish(chan_layer *l, unsigned thread, const char *channel, const char *data_json,
                 size_t data_len, chan_publish_cb cb, void *ud)
{
    atomic_fetch_add_explicit(&l->shards[thread].publications, 1, memory_order_relaxed);
    return l->ops->publish(l, thread, channel, data_json, data_len, cb, ud);
}

const char *chan_layer_name(const chan_layer *l)
{
    return l->ops->name;
}

void chan_layer_stats(chan_layer *l, chan_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->channels = atomic_load_explicit(&l->nchannels, memory_order_relaxed);
    for (unsigned t = 0; t < l->host.nthreads; t++) {
        chan_shard *sh = &l->shards[t];
        out->subscriptions += atomic_load_explicit(&sh->subscriptions, memory_order_relaxed);
        out->deliveries += atomic_load_explicit(&sh->deliveries, memory_order_relaxed);
        out->publications += atomic_load_explicit(&sh->publications, memory_order_relaxed);
    }
}

/* Every thread has stopped, so remaining memberships are freed without
 * telling anyone. The implementation's destroy frees the struct that embeds
 * the layer, so it runs after the shared parts are gone. */
void chan_layer_destroy(chan_layer *l)
{
    if (!l)
        return;
    unsigned n = l->host.nthreads;
    chan_shard *shards = l->shards;
    for (size_t i = 0; i < CHAN_STRIPES; i++) {
        hr_map_free(l->stripes[i].threads);
        pthread_mutex_destroy(&l->stripes[i].mu);
    }
    l->ops->destroy(l);
    for (unsigned t = 0; t < n; t++)
        hr_map_free(shards[t].channels);
    free(shards);
}
