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

/* The registry is split into stripes, each with its own lock and map, so
 * publications to different channels rarely contend. A stripe is chosen by
 * the process-keyed hash of the name (hr_hash), like hr_map's buckets. */
#define CHAN_STRIPES 64

typedef struct chan_stripe {
    pthread_mutex_t mu;
    hr_map *threads; /* channel -> (uintptr_t) bitmask of threads with subscribers */
} chan_stripe;

/* Per-thread counters, written by their thread only and read by whoever
 * renders metrics: relaxed atomics, each on its own cache line. */
typedef struct chan_shard {
    hr_map *channels; /* channel -> shard_channel, this thread's memberships */
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
void chan_notify_resubscribed(chan_layer *l, unsigned thread, const char *channel,
                              const chan_sub_result *r);
/* Counts a request of `thread` taken (+1) or answered (-1). */
static inline void chan_inflight(chan_layer *l, unsigned thread, int delta)
{
    atomic_fetch_add_explicit(&l->shards[thread].inflight, (unsigned)delta, memory_order_relaxed);
}
/* Logs a line through the host (chan_host.log). Any thread. */
void chan_log(chan_layer *l, int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A bitmask of the threads with subscribers of channel. */
uint64_t chan_channel_mask(chan_layer *l, const char *channel);
/* The held-back bytes a pending subscription may accumulate; over it the
 * subscription is marked lost (its recovery reports recovered: false). */
#define CHAN_HELD_MAX (1u << 20)

#endif
