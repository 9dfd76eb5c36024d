/*
 * metrics.h - process-wide counters rendered in Prometheus text format.
 *
 * Counters are atomics so future loop threads can bump them without locks;
 * gauges that the channel layer already knows (channels, subscriptions) are
 * read from chan_stats at scrape time rather than tracked twice.
 */
#ifndef HR_METRICS_H
#define HR_METRICS_H

#include "../channels/channels.h"
#include "../common/common.h"

#include <stdatomic.h>
#include <stdint.h>

typedef struct hr_metrics {
    atomic_llong connections;        /* gauge: open WebSocket connections */
    atomic_ullong connections_total; /* accepted WebSocket connections */
    atomic_ullong messages_in;       /* client frames received */
    atomic_ullong messages_out;      /* frames written to clients */
    atomic_ullong bytes_in;
    atomic_ullong bytes_out;
    atomic_ullong slow_consumer_closes;
    atomic_ullong rate_limit_closes;
    atomic_ullong auth_failures;
    atomic_ullong http_requests;
    atomic_ullong publications; /* accepted publish requests (WS + REST) */
} hr_metrics;

extern hr_metrics hr_stats;

#define HR_INC(field, n) atomic_fetch_add_explicit(&hr_stats.field, (n), memory_order_relaxed)

/* Appends the Prometheus exposition text for every metric to out. Returns 0
 * or -1 on allocation failure. */
int hr_metrics_render(hr_buf *out, const chan_stats *cs, const char *node);

#endif
