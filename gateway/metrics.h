/*
 * metrics.h - counters rendered in Prometheus text format.
 *
 * Each loop thread has its own hr_counters and is the only writer of it, so
 * counting never contends between threads; /metrics sums every loop's
 * counters at scrape time (relaxed atomic loads: a scrape is a snapshot, not
 * a transaction). What the channel layer already counts (channels,
 * subscriptions, publications, deliveries) comes from chan_stats rather
 * than being tracked twice.
 */
#ifndef HR_METRICS_H
#define HR_METRICS_H

#include "../channels/channels.h"
#include "../common/common.h"

#include <stdatomic.h>
#include <stdint.h>

typedef struct hr_counters {
    atomic_llong connections;        /* gauge: open WebSocket connections */
    atomic_ullong connections_total; /* accepted WebSocket connections */
    atomic_ullong messages_in;       /* client frames received */
    atomic_ullong messages_out;      /* frames written to clients */
    atomic_ullong writes;            /* socket writes (one per burst of frames) */
    atomic_ullong bytes_in;
    atomic_ullong bytes_out;
    atomic_ullong slow_consumer_closes;
    atomic_ullong rate_limit_closes;
    atomic_ullong auth_failures;
    atomic_ullong http_requests;
    atomic_ullong inbox_wakeups;
    char _pad[64]; /* keeps two loops' counters off one cache line */
} hr_counters;

/* Bumps a counter of one loop's hr_counters (by its owning thread). */
#define HR_INC(counters, field, n)                                                                 \
    atomic_fetch_add_explicit(&(counters)->field, (n), memory_order_relaxed)

/* Appends the Prometheus exposition text for every metric to out, summing
 * the n counter sets. */
void hr_metrics_render(hr_buf *out, hr_counters *const *counters, size_t n, const chan_stats *cs,
                       const char *node);

#endif
