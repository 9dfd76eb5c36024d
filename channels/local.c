/*
 * local.c - the in-process channel layer (embedded mode).
 *
 * A hash map from channel name to a dense array of memberships. Fan-out walks
 * the array, so delivering to N subscribers touches N contiguous pointers;
 * each membership remembers its index so unsubscribe is O(1) (swap-remove).
 */
#include "channels.h"
#include "common/common.h"

#include <stdlib.h>
#include <string.h>

typedef struct local_channel {
    char *name;
    chan_sub **subs;
    size_t nsubs, cap;
} local_channel;

struct chan_sub {
    local_channel *ch;
    void *owner;
    size_t idx;
};

typedef struct local_layer {
    chan_layer base;
    hr_map *channels; /* name -> local_channel */
    uint64_t nsubs;
    uint64_t publications;
    uint64_t deliveries;
} local_layer;

static void channel_free(void *p)
{
    local_channel *ch = p;
    for (size_t i = 0; i < ch->nsubs; i++)
        free(ch->subs[i]);
    free(ch->subs);
    free(ch->name);
    free(ch);
}

/* Returns the channel, creating it on first subscribe; NULL on OOM. */
static local_channel *channel_get_or_create(local_layer *l, const char *name)
{
    size_t len = strlen(name);
    local_channel *ch = hr_map_get(l->channels, name, len);
    if (ch)
        return ch;
    ch = calloc(1, sizeof(*ch));
    if (!ch || !(ch->name = strdup(name)) || hr_map_put(l->channels, name, len, ch) < 0) {
        if (ch)
            free(ch->name);
        free(ch);
        return NULL;
    }
    return ch;
}

static chan_sub *local_subscribe(chan_layer *base, const char *channel, void *owner)
{
    local_layer *l = (local_layer *)base;
    local_channel *ch = channel_get_or_create(l, channel);
    if (!ch)
        return NULL;
    if (ch->nsubs == ch->cap) {
        size_t ncap = ch->cap ? ch->cap * 2 : 4;
        chan_sub **ns = realloc(ch->subs, ncap * sizeof(*ns));
        if (!ns)
            return NULL;
        ch->subs = ns;
        ch->cap = ncap;
    }
    chan_sub *s = malloc(sizeof(*s));
    if (!s)
        return NULL;
    *s = (chan_sub){ch, owner, ch->nsubs};
    ch->subs[ch->nsubs++] = s;
    l->nsubs++;
    return s;
}

/* Swap-remove keeps the array dense; an emptied channel is dropped so the
 * map only holds channels somebody listens to. */
static void local_unsubscribe(chan_layer *base, chan_sub *s)
{
    local_layer *l = (local_layer *)base;
    local_channel *ch = s->ch;
    chan_sub *last = ch->subs[--ch->nsubs];
    ch->subs[s->idx] = last;
    last->idx = s->idx;
    free(s);
    l->nsubs--;
    if (ch->nsubs == 0) {
        hr_map_del(l->channels, ch->name, strlen(ch->name));
        channel_free(ch);
    }
}

/* The deliver callback must not subscribe or unsubscribe (the array is being
 * walked); the gateway's only enqueues and defers any close. */
static int local_publish(chan_layer *base, const char *channel, const char *data_json,
                         size_t data_len, chan_publish_cb cb, void *ud)
{
    local_layer *l = (local_layer *)base;
    local_channel *ch = hr_map_get(l->channels, channel, strlen(channel));
    l->publications++;
    if (ch && ch->nsubs) {
        chan_msg *m = chan_msg_publication(channel, data_json, data_len, 0);
        if (!m) {
            if (cb)
                cb(ud, -1, 0);
            return -1;
        }
        for (size_t i = 0; i < ch->nsubs; i++)
            base->deliver(ch->subs[i]->owner, m);
        l->deliveries += ch->nsubs;
        chan_msg_unref(m);
    }
    if (cb)
        cb(ud, 0, 0);
    return 0;
}

static void local_stats(const chan_layer *base, chan_stats *out)
{
    const local_layer *l = (const local_layer *)base;
    out->channels = hr_map_count(l->channels);
    out->subscriptions = l->nsubs;
    out->publications = l->publications;
    out->deliveries = l->deliveries;
}

static void local_destroy(chan_layer *base)
{
    local_layer *l = (local_layer *)base;
    hr_map_free(l->channels);
    free(l);
}

static const chan_layer_ops local_ops = {
    .name = "local",
    .subscribe = local_subscribe,
    .unsubscribe = local_unsubscribe,
    .publish = local_publish,
    .stats = local_stats,
    .destroy = local_destroy,
};

chan_layer *chan_local_new(chan_deliver_fn deliver)
{
    local_layer *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->channels = hr_map_new(channel_free);
    if (!l->channels) {
        free(l);
        return NULL;
    }
    l->base.ops = &local_ops;
    l->base.deliver = deliver;
    return &l->base;
}
