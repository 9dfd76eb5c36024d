/*
 * layer_internal.h - what the implementations of the channel layer share:
 * the node-level registry, the per-thread shards and the subscription
 * record (core.c). Not for use outside channels/.
 */
#ifndef HR_CHANNELS_LAYER_INTERNAL_H
#define HR_CHANNELS_LAYER_INTERNAL_H

#include "channels.h"
#include "common/common.h"

#include <pthread.h>

/*---- Channel names hashed once (tab.c) --------------------------------------*/

/* The hash of a channel name for the layer's tables: hr_hash (SipHash under
 * the process' key, so chosen names cannot flood a probe chain). Computed
 * once per publication or subscription and passed along (chan_msg.hash,
 * chan_sub.hash). */
static inline uint64_t chan_hash(const char *name, size_t len)
{
    return hr_hash(name, len);
}

/* A table keyed by channel name whose hash the caller gives: open
 * addressing, linear probing, tombstones (as hr_map). Keys are copied;
 * values are the caller's. One thread at a time, or the caller's lock.
 * Allocation aborts on OOM (hr_malloc). */
typedef struct chan_tab_slot {
    char *key;
    size_t klen;
    uint64_t hash;
    void *val;
} chan_tab_slot;

typedef struct chan_tab {
    chan_tab_slot *slots;
    size_t cap; /* power of two */
    size_t count;
    size_t used; /* live + tombstones */
} chan_tab;

void chan_tab_init(chan_tab *t);
/* Frees the slots and key copies; val_free (may be NULL) on every value. */
void chan_tab_clear(chan_tab *t, void (*val_free)(void *val));
void *chan_tab_get(const chan_tab *t, const char *key, size_t klen, uint64_t h);
/* Stores (replacing without freeing) val under key. */
void chan_tab_put(chan_tab *t, const char *key, size_t klen, uint64_t h, void *val);
/* Removes key; returns its value (not freed), or NULL. */
void *chan_tab_del(chan_tab *t, const char *key, size_t klen, uint64_t h);
static inline size_t chan_tab_count(const chan_tab *t)
{
    return t->count;
}
/* for (size_t it = 0; chan_tab_next(t, &it, &key, &h, &val);) - key, h,
 * val may be NULL. The table must not change meanwhile. */
int chan_tab_next(const chan_tab *t, size_t *it, const char **key, uint64_t *h, void **val);

/* Messages whose channel's hash is known (msg.c): as chan_msg_publication,
 * chan_msg_for_channel and chan_msg_parse_push, with m->hash = h. */
chan_msg *chan_msg_publication_h(const char *channel, uint64_t h, const char *data_json,
                                 size_t data_len, uint64_t offset, const char *from);
chan_msg *chan_msg_for_channel_h(const char *json, size_t len, const char *channel, uint64_t h,
                                 uint64_t offset);
chan_msg *chan_msg_parse_push_h(const char *json, size_t len, const char *channel, uint64_t h,
                                char *err, size_t errlen);
/* Where ",\"offset\":O" goes in a publication's text without one (the
 * publication of a channel named in clen bytes, data_len bytes of data):
 * the byte after the data. */
size_t chan_publication_offset_at(size_t clen, size_t data_len);

/*---- The registry and the per-thread shards (core.c) --------------------------*/

/* The registry is split into stripes, each with its own lock and table, so
 * publications to different channels rarely contend. A stripe is chosen by
 * the high bits of the name's hash (the tables use the low ones). */
#define CHAN_STRIPE_BITS 6
#define CHAN_STRIPES (1u << CHAN_STRIPE_BITS)

typedef struct chan_stripe {
    pthread_mutex_t mu;
    chan_tab threads; /* channel -> (uintptr_t) bitmask of threads with subscribers */
} chan_stripe;

/* Per-thread counters, written by their thread only and read by whoever
 * renders metrics: relaxed atomics, each on its own cache line. */
typedef struct chan_shard {
    chan_tab channels; /* channel -> shard_channel, this thread's memberships */
    atomic_ullong subscriptions;
    atomic_ullong deliveries;
    atomic_ullong publications;
    atomic_uint inflight; /* requests of this thread the implementation holds */
    char _pad[64];
} chan_shard;

struct chan_layer {
    const chan_layer_ops *ops;
    chan_host host;
    /* process-wide, each stripe under its own lock */
    chan_stripe stripes[CHAN_STRIPES];
    atomic_ullong nchannels; /* channels with subscribers on this node */
    /* one per loop thread */
    chan_shard *shards;
};

typedef struct shard_channel shard_channel;

/* One membership. Touched only by its thread. While `pending`, what is
 * delivered to it is held back (held[]) until the implementation calls
 * chan_sub_complete. */
struct chan_sub {
    shard_channel *ch;
    const char *channel; /* the channel name (the shard's copy) */
    uint64_t hash;       /* chan_hash(channel) */
    void *owner;
    void *req; /* the caller's, until completion */
    size_t idx;
    unsigned thread;
    int refs; /* 1 for the membership + 1 per implementation request */
    unsigned pending : 1, removed : 1, lost : 1, has_since : 1;
    uint64_t last; /* highest offset handed to the owner */
    chan_opts opts;
    chan_pos since;
    char *client, *user, *info; /* presence and join/leave only */
    void *impl;                 /* the implementation's, on this thread (a request in flight) */
    chan_msg **held;
    size_t nheld, capheld, heldbytes;
};

/* Initialises the shared part of a layer that an implementation embeds as
 * its first member. */
void chan_layer_init(chan_layer *l, const chan_layer_ops *ops, const chan_host *host);

/* On s's thread: keeps s alive across an asynchronous request. */
void chan_sub_hold(chan_sub *s);
/* On s's thread: drops that reference (frees a removed s). */
void chan_sub_release(chan_sub *s);
/* On s's thread: completes a pending subscription (a no-op for one that
 * was removed meanwhile). With r->status < 0 the membership is removed.
 * r's contents are borrowed for the call. */
void chan_sub_complete(chan_layer *l, chan_sub *s, const chan_sub_result *r);
/* On loop thread `thread`: tells every completed subscriber of channel
 * there that its subscription was renewed (after an outage). */
void chan_notify_resubscribed(chan_layer *l, unsigned thread, const char *channel, uint64_t h,
                              const chan_sub_result *r);
/* Counts a request of `thread` taken (+1) or answered (-1). */
static inline void chan_inflight(chan_layer *l, unsigned thread, int delta)
{
    atomic_fetch_add_explicit(&l->shards[thread].inflight, (unsigned)delta, memory_order_relaxed);
}
/* Logs a line through the host (chan_host.log). Any thread. */
void chan_log(chan_layer *l, int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A bitmask of the threads with subscribers of channel (h: its hash). */
uint64_t chan_channel_mask(chan_layer *l, const char *channel, uint64_t h);
/* The held-back bytes a pending subscription may accumulate; over it the
 * subscription is marked lost (its recovery reports recovered: false). */
#define CHAN_HELD_MAX (1u << 20)

#endif
