/*
 * core.c - the part of the channel layer every implementation shares: the
 * node-level registry (which threads have subscribers of which channel),
 * the per-thread shards (which connections of a thread are subscribed),
 * and the life of a subscription (pending, completed, removed).
 * See channels.h for the threading and ordering model.
 */
#include "layer_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One channel in one thread's shard: a dense array of memberships, so
 * fan-out walks contiguous pointers; each membership remembers its index so
 * unsubscribe is O(1) (swap-remove). */
struct shard_channel {
    char *name;
    uint64_t hash; /* chan_hash(name) */
    chan_sub **subs;
    size_t nsubs, cap;
};

/*---- Registry --------------------------------------------------------------*/

/* The high bits of the name's keyed hash pick the stripe (the tables use
 * the low ones), so chosen names cannot crowd one lock either. */
static chan_stripe *stripe_of(chan_layer *l, uint64_t h)
{
    return &l->stripes[h >> (64 - CHAN_STRIPE_BITS)];
}

static uint64_t mask_get(chan_stripe *st, const char *channel, size_t len, uint64_t h)
{
    return (uint64_t)(uintptr_t)chan_tab_get(&st->threads, channel, len, h);
}

/* Marks `thread` as holding subscribers of channel; on the node's first,
 * tells the implementation (under the stripe lock, so open and close of a
 * channel reach it in the order they happened). */
static void registry_add(chan_layer *l, unsigned thread, const char *channel, uint64_t h)
{
    chan_stripe *st = stripe_of(l, h);
    size_t len = strlen(channel);
    pthread_mutex_lock(&st->mu);
    uint64_t mask = mask_get(st, channel, len, h);
    chan_tab_put(&st->threads, channel, len, h, (void *)(uintptr_t)(mask | 1ull << thread));
    if (!mask) {
        atomic_fetch_add_explicit(&l->nchannels, 1, memory_order_relaxed);
        if (l->ops->channel_open)
            l->ops->channel_open(l, channel, h);
        else if (l->host.occupancy) /* one node: its first is the first anywhere */
            l->host.occupancy(l->host.ud, channel, 1);
    }
    pthread_mutex_unlock(&st->mu);
}

static void registry_remove(chan_layer *l, unsigned thread, const char *channel, uint64_t h)
{
    chan_stripe *st = stripe_of(l, h);
    size_t len = strlen(channel);
    pthread_mutex_lock(&st->mu);
    uint64_t mask = mask_get(st, channel, len, h) & ~(1ull << thread);
    if (mask) {
        chan_tab_put(&st->threads, channel, len, h, (void *)(uintptr_t)mask);
    } else {
        chan_tab_del(&st->threads, channel, len, h);
        atomic_fetch_sub_explicit(&l->nchannels, 1, memory_order_relaxed);
        if (l->ops->channel_close)
            l->ops->channel_close(l, channel, h);
        else if (l->host.occupancy)
            l->host.occupancy(l->host.ud, channel, 0);
    }
    pthread_mutex_unlock(&st->mu);
}

/* The stripe lock is held while the reference is posted to every thread,
 * so two publications of one channel enter all inboxes in the same order. */
void chan_dispatch(chan_layer *l, chan_msg *m)
{
    chan_stripe *st = stripe_of(l, m->hash);
    pthread_mutex_lock(&st->mu);
    uint64_t mask = mask_get(st, m->channel, strlen(m->channel), m->hash);
    for (unsigned t = 0; mask; t++, mask >>= 1)
        if (mask & 1)
            l->host.post(l->host.ud, t, chan_msg_ref(m));
    pthread_mutex_unlock(&st->mu);
}

uint64_t chan_channel_mask(chan_layer *l, const char *channel, uint64_t h)
{
    chan_stripe *st = stripe_of(l, h);
    pthread_mutex_lock(&st->mu);
    uint64_t mask = mask_get(st, channel, strlen(channel), h);
    pthread_mutex_unlock(&st->mu);
    return mask;
}

unsigned chan_channel_threads(chan_layer *l, const char *channel)
{
    uint64_t mask = chan_channel_mask(l, channel, chan_hash(channel, strlen(channel)));
    return (unsigned)__builtin_popcountll(mask);
}

/*---- Subscriptions (each touched only by its thread) -----------------------*/

static void held_drop(chan_sub *s)
{
    for (size_t i = 0; i < s->nheld; i++)
        chan_msg_unref(s->held[i]);
    free(s->held);
    s->held = NULL;
    s->nheld = s->capheld = s->heldbytes = 0;
}

static void sub_free(chan_sub *s)
{
    held_drop(s);
    free(s->client);
    free(s->user);
    free(s->info);
    free(s);
}

void chan_sub_hold(chan_sub *s)
{
    s->refs++;
}

void chan_sub_release(chan_sub *s)
{
    if (--s->refs == 0)
        sub_free(s);
}

/* Holds a push back while the subscription is pending. Past the bound the
 * subscriber has lost publications: its completion says not recovered. */
static void held_push(chan_sub *s, chan_msg *m)
{
    size_t flen;
    chan_msg_frame(m, &flen);
    if (s->lost || s->heldbytes + flen > CHAN_HELD_MAX) {
        s->lost = 1;
        held_drop(s);
        return;
    }
    if (s->nheld == s->capheld) {
        s->capheld = s->capheld ? s->capheld * 2 : 4;
        s->held = hr_realloc(s->held, s->capheld * sizeof(*s->held));
    }
    s->held[s->nheld++] = chan_msg_ref(m);
    s->heldbytes += flen;
}

/* Hands m to a completed subscriber unless it is older than what it has
 * (offsets only grow on a channel, so this drops exactly the duplicates
 * between a history read and the live stream). Returns 1 if delivered. */
static int sub_deliver(chan_layer *l, chan_sub *s, chan_msg *m)
{
    if (m->offset) {
        if (m->offset <= s->last)
            return 0;
        s->last = m->offset;
    }
    l->host.sub.deliver(s->owner, m);
    return 1;
}

/* Takes s out of its shard (and the registry, if it was the thread's
 * last of the channel). The caller drops the membership's reference. */
static void sub_detach(chan_layer *l, chan_sub *s)
{
    chan_shard *sh = &l->shards[s->thread];
    shard_channel *ch = s->ch;
    chan_sub *last = ch->subs[--ch->nsubs];
    ch->subs[s->idx] = last;
    last->idx = s->idx;
    s->removed = 1;
    s->ch = NULL;
    held_drop(s);
    atomic_fetch_sub_explicit(&sh->subscriptions, 1, memory_order_relaxed);
    if (ch->nsubs == 0) {
        registry_remove(l, s->thread, ch->name, ch->hash);
        chan_tab_del(&sh->channels, ch->name, strlen(ch->name), ch->hash);
        free(ch->subs);
        free(ch->name);
        free(ch);
    }
    s->channel = NULL;
}

static shard_channel *shard_channel_get(chan_layer *l, unsigned thread, const char *channel,
                                        uint64_t h)
{
    chan_shard *sh = &l->shards[thread];
    size_t len = strlen(channel);
    shard_channel *ch = chan_tab_get(&sh->channels, channel, len, h);
    if (!ch) {
        ch = hr_calloc(1, sizeof(*ch));
        ch->name = hr_strndup(channel, len);
        ch->hash = h;
        chan_tab_put(&sh->channels, channel, len, h, ch);
        registry_add(l, thread, channel, h);
    }
    return ch;
}

static void sub_copy_client(chan_sub *s, const chan_client *who)
{
    if (!who || !(s->opts.presence || s->opts.join_leave))
        return;
    s->client = hr_strdup(who->client ? who->client : "");
    s->user = hr_strdup(who->user ? who->user : "");
    s->info = who->info_json ? hr_strdup(who->info_json) : NULL;
}

chan_sub *chan_subscribe(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                         const chan_client *who, const chan_pos *since, void *owner, void *req)
{
    shard_channel *ch = shard_channel_get(l, thread, channel, chan_hash(channel, strlen(channel)));
    if (ch->nsubs == ch->cap) {
        ch->cap = ch->cap ? ch->cap * 2 : 4;
        ch->subs = hr_realloc(ch->subs, ch->cap * sizeof(*ch->subs));
    }
    chan_sub *s = hr_calloc(1, sizeof(*s));
    s->ch = ch;
    s->channel = ch->name;
    s->hash = ch->hash;
    s->owner = owner;
    s->req = req;
    s->idx = ch->nsubs;
    s->thread = thread;
    s->refs = 2; /* the membership, and this call until it returns */
    s->pending = 1;
    s->opts = *o;
    if (since) {
        s->since = *since;
        s->has_since = 1;
    }
    sub_copy_client(s, who);
    ch->subs[ch->nsubs++] = s;
    atomic_fetch_add_explicit(&l->shards[thread].subscriptions, 1, memory_order_relaxed);
    l->ops->subscribe(l, thread, s);
    /* a synchronous failure has already removed it */
    chan_sub *ret = s->removed ? NULL : s;
    chan_sub_release(s);
    return ret;
}

void chan_sub_complete(chan_layer *l, chan_sub *s, const chan_sub_result *r)
{
    if (s->removed || !s->pending)
        return;
    s->pending = 0;
    void *req = s->req;
    s->req = NULL;
    const char *channel = s->channel;
    if (r->status < 0) {
        l->host.sub.subscribed(s->owner, req, channel, r);
        sub_detach(l, s);
        chan_sub_release(s);
        return;
    }
    chan_sub_result res = *r;
    if (s->lost)
        res.recovered = 0;
    s->last = r->pos.offset;
    for (size_t i = 0; i < r->npubs; i++)
        if (r->pubs[i].offset > s->last)
            s->last = r->pubs[i].offset;
    l->host.sub.subscribed(s->owner, req, channel, &res);
    /* what arrived meanwhile, minus what the reply already covered */
    size_t n = 0;
    for (size_t i = 0; i < s->nheld && !s->removed; i++)
        n += (size_t)sub_deliver(l, s, s->held[i]);
    atomic_fetch_add_explicit(&l->shards[s->thread].deliveries, n, memory_order_relaxed);
    if (!s->removed)
        held_drop(s);
}

/* A pending subscription is answered -ECANCELED so the owner can free its
 * request; either way the implementation hears of it (presence, leave,
 * a completion still in flight). */
void chan_unsubscribe(chan_layer *l, unsigned thread, chan_sub *s)
{
    (void)thread;
    if (s->pending) {
        chan_sub_result r = {.status = -ECANCELED};
        s->pending = 0;
        void *req = s->req;
        s->req = NULL;
        l->host.sub.subscribed(s->owner, req, s->channel, &r);
    }
    if (l->ops->unsubscribe)
        l->ops->unsubscribe(l, s->thread, s);
    sub_detach(l, s);
    chan_sub_release(s);
}

const char *chan_sub_channel(const chan_sub *s)
{
    return s->channel;
}

void chan_deliver(chan_layer *l, unsigned thread, chan_msg *m)
{
    chan_shard *sh = &l->shards[thread];
    shard_channel *ch = chan_tab_get(&sh->channels, m->channel, strlen(m->channel), m->hash);
    size_t n = 0;
    if (!ch)
        return; /* the last subscriber left after the publication was routed */
    for (size_t i = 0; i < ch->nsubs; i++) {
        chan_sub *s = ch->subs[i];
        if (s->pending)
            held_push(s, m);
        else
            n += (size_t)sub_deliver(l, s, m);
    }
    atomic_fetch_add_explicit(&sh->deliveries, n, memory_order_relaxed);
}

void chan_notify_resubscribed(chan_layer *l, unsigned thread, const char *channel, uint64_t h,
                              const chan_sub_result *r)
{
    shard_channel *ch = chan_tab_get(&l->shards[thread].channels, channel, strlen(channel), h);
    if (!ch)
        return;
    /* the owner may not unsubscribe from inside the callback, so the array
     * is stable */
    for (size_t i = 0; i < ch->nsubs; i++) {
        chan_sub *s = ch->subs[i];
        if (s->pending)
            continue; /* its own completion is on the way */
        /* not recovered: the stream may have a new epoch whose offsets
         * start again below what this subscriber saw, so the baseline is
         * the new top, not the larger of the two */
        if (!r->recovered || r->pos.offset > s->last)
            s->last = r->pos.offset;
        l->host.sub.subscribed(s->owner, NULL, channel, r);
    }
}

/*---- Recovery rule ---------------------------------------------------------*/

/* Recovered when the epoch is the same and the publications read run
 * without a hole from since.offset + 1 up to the top. */
int chan_recovered(const chan_pos *since, const chan_pos *top, const chan_pub *pubs, size_t n)
{
    if (strcmp(since->epoch, top->epoch) != 0 || since->offset > top->offset)
        return 0;
    if (since->offset == top->offset)
        return 1;
    if (n == 0 || pubs[0].offset != since->offset + 1 || pubs[n - 1].offset != top->offset)
        return 0;
    for (size_t i = 1; i < n; i++)
        if (pubs[i].offset != pubs[i - 1].offset + 1)
            return 0;
    return 1;
}

chan_recovery chan_recovery_across(const chan_pos *since, const chan_pos *top, const chan_pub *pubs,
                                   size_t n, uint64_t after, int kept)
{
    if (chan_recovered(since, top, pubs, n))
        return CHAN_RECOVERY_FULL;
    if (!strcmp(since->epoch, top->epoch) || after > top->offset)
        return CHAN_RECOVERY_NONE;
    if (n ? pubs[0].offset != after + 1 || pubs[n - 1].offset != top->offset : after != top->offset)
        return CHAN_RECOVERY_NONE;
    for (size_t i = 1; i < n; i++)
        if (pubs[i].offset != pubs[i - 1].offset + 1)
            return CHAN_RECOVERY_NONE;
    return kept && after == since->offset ? CHAN_RECOVERY_FULL : CHAN_RECOVERY_EPOCH;
}

/*---- The layer -------------------------------------------------------------*/

void chan_log(chan_layer *l, int level, const char *event, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (l->host.log)
        l->host.log(l->host.ud, level, event, msg);
    else
        fprintf(stderr, "herald: %s\n", msg);
}

void chan_layer_init(chan_layer *l, const chan_layer_ops *ops, const chan_host *host)
{
    l->ops = ops;
    l->host = *host;
    if (l->host.nthreads < 1 || l->host.nthreads > CHAN_MAX_THREADS)
        abort(); /* a caller bug: the gateway clamps --threads */
    for (size_t i = 0; i < CHAN_STRIPES; i++) {
        pthread_mutex_init(&l->stripes[i].mu, NULL);
        chan_tab_init(&l->stripes[i].threads);
    }
    atomic_init(&l->nchannels, 0);
    l->shards = hr_calloc(l->host.nthreads, sizeof(*l->shards));
    for (unsigned t = 0; t < l->host.nthreads; t++)
        chan_tab_init(&l->shards[t].channels);
}

void chan_publish(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                  const char *data_json, size_t data_len, const char *from, chan_publish_cb cb,
                  void *ud)
{
    atomic_fetch_add_explicit(&l->shards[thread].publications, 1, memory_order_relaxed);
    l->ops->publish(l, thread, channel, o, data_json, data_len, from, cb, ud);
}

void chan_history_read(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                       const chan_pos *since, int64_t limit, chan_history_cb cb, void *ud)
{
    if (o->history_size <= 0) {
        chan_history h = {.status = -ENOENT};
        cb(ud, &h);
        return;
    }
    l->ops->history(l, thread, channel, o, since, limit, cb, ud);
}

void chan_presence_read(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                        chan_presence_cb cb, void *ud)
{
    if (!o->presence) {
        chan_presence p = {.status = -ENOENT};
        cb(ud, &p);
        return;
    }
    l->ops->presence(l, thread, channel, o, cb, ud);
}

void chan_django_forward(chan_layer *l, unsigned thread, const char *target, const char *channel,
                         const char *user, const char *client, const char *data_json,
                         size_t data_len)
{
    if (l->ops->django_forward)
        l->ops->django_forward(l, thread, target, channel, user, client, data_json, data_len);
}

void chan_django_send(chan_layer *l, const char *target, const char *json, size_t len,
                      chan_status_cb cb, void *ud)
{
    if (l->ops->django_send)
        l->ops->django_send(l, target, json, len, cb, ud);
    else if (cb)
        cb(ud, -ENOTSUP);
}

void chan_control_send(chan_layer *l, unsigned thread, const chan_control *c, chan_status_cb cb,
                       void *ud)
{
    l->ops->control(l, thread, c, cb, ud);
}

unsigned chan_layer_inflight(chan_layer *l, unsigned thread)
{
    return atomic_load_explicit(&l->shards[thread].inflight, memory_order_relaxed);
}

const char *chan_layer_name(const chan_layer *l)
{
    return l->ops->name;
}

int chan_layer_start(chan_layer *l, void *uv_loop)
{
    return l->ops->start ? l->ops->start(l, uv_loop) : 0;
}

void chan_layer_stop(chan_layer *l)
{
    if (l->ops->stop)
        l->ops->stop(l);
}

int chan_layer_thread_start(chan_layer *l, unsigned thread, void *uv_loop)
{
    return l->ops->thread_start ? l->ops->thread_start(l, thread, uv_loop) : 0;
}

void chan_layer_thread_stop(chan_layer *l, unsigned thread)
{
    if (l->ops->thread_stop)
        l->ops->thread_stop(l, thread);
}

int chan_layer_ready(chan_layer *l)
{
    return l->ops->ready ? l->ops->ready(l) : 1;
}

int chan_layer_synchronous(const chan_layer *l)
{
    return l->ops->start == NULL;
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
    if (l->ops->stats)
        l->ops->stats(l, out);
}

/* Every thread has stopped, so remaining memberships are freed without
 * telling anyone. The implementation's destroy frees the struct that embeds
 * the layer, so it runs after the shared parts are gone. */
static void shard_channel_free(void *p)
{
    shard_channel *ch = p;
    for (size_t i = 0; i < ch->nsubs; i++)
        sub_free(ch->subs[i]);
    free(ch->subs);
    free(ch->name);
    free(ch);
}

void chan_layer_destroy(chan_layer *l)
{
    if (!l)
        return;
    unsigned n = l->host.nthreads;
    chan_shard *shards = l->shards;
    for (size_t i = 0; i < CHAN_STRIPES; i++) {
        chan_tab_clear(&l->stripes[i].threads, NULL);
        pthread_mutex_destroy(&l->stripes[i].mu);
    }
    l->ops->destroy(l);
    for (unsigned t = 0; t < n; t++)
        chan_tab_clear(&shards[t].channels, shard_channel_free);
    free(shards);
}
