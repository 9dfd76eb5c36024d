/*
 * layer_internal.h - what the implementations of the channel layer share:
 * the node-level registry and the per-thread shards (core.c). Not for use
 * outside channels/.
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

/* Initialises the shared part of a layer that an implementation embeds as
 * its first member. */
void chan_layer_init(chan_layer *l, const chan_layer_ops *ops, const chan_host *host);

#endif
