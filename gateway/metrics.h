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

#include "channels/channels.h"
#include "common/common.h"
#include "gateway/proxy.h"

#include <stdatomic.h>
#include <stdint.h>

/* Histogram buckets (upper bounds, microseconds); the last is +Inf. */
#define HR_HIST_BUCKETS 15
/* Labels a histogram or counter family can carry per loop. */
#define HR_MAX_ROUTES 24
#define HR_MAX_NS 32 /* namespaces with their own series; the rest count as "other" */

/* A Prometheus histogram written by one thread (its loop): plain adds on
 * relaxed atomics, no locked instructions on the delivery path. */
typedef struct hr_hist {
    atomic_ullong bucket[HR_HIST_BUCKETS]; /* not cumulative; rendered cumulative */
    atomic_ullong sum_us;
    atomic_ullong count;
} hr_hist;

/* Single-writer add: a load and a store, not a lock-prefixed add. */
#define HR_ADD1(a, n)                                                                              \
    atomic_store_explicit((a), atomic_load_explicit((a), memory_order_relaxed) + (n),              \
                          memory_order_relaxed)

/* Records one observation of us microseconds (by the owning thread). */
void hr_hist_observe(hr_hist *h, uint64_t us);

/* One proxy kind's calls (SPEC §8), counted by the loop that made them
 * (gateway/proxy_call.c). Every call ends in exactly one of the outcome
 * counters; latency is observed for every call that was sent. */
typedef struct hr_proxy_stats {
    atomic_ullong requests; /* calls made, rejected ones included */
    atomic_ullong results;  /* answered {"result": ...} */
    atomic_ullong refusals; /* answered {"error": ...} or {"disconnect": ...} */
    atomic_ullong errors;   /* unavailable: failed, bad status, not a valid answer, too large */
    atomic_ullong timeouts; /* unavailable: no answer within HERALD_PROXY_TIMEOUT */
    atomic_ullong rejected; /* unavailable: in-flight and queue bounds reached, never sent */
    hr_hist latency;        /* call made -> answer (queueing included) */
} hr_proxy_stats;

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
    atomic_llong loop_lag_us;        /* gauge: how late the loop's 500 ms timer last fired */
    hr_hist delivery;                /* publication created on this node -> frame written */
    hr_hist handshake;               /* upgrade request -> WebSocket established */
    hr_hist http[HR_MAX_ROUTES + 1]; /* per route; the last: no route matched */
    atomic_ullong ns_publications[HR_MAX_NS + 1]; /* per namespace; the last: other */
    atomic_ullong ns_deliveries[HR_MAX_NS + 1];
    hr_proxy_stats proxy[HR_PROXY_NKINDS]; /* by hr_proxy_kind */
    atomic_llong proxy_inflight;           /* gauge: this loop's calls running */
    atomic_llong proxy_queued;             /* gauge: this loop's calls waiting for a slot */
    atomic_ullong events_sent;             /* lifecycle events delivered (per destination) */
    atomic_ullong events_dropped;          /* ... dropped: queue full, refused, shutdown */
    atomic_ullong events_retries;          /* failed deliveries of a batch, retried */

    /* permessage-deflate (ws_deflate.c) */
    atomic_ullong ws_deflates;        /* messages compressed */
    atomic_ullong ws_frames_deflated; /* compressed frames sent */

    char _pad[64]; /* keeps two loops' counters off one cache line */
} hr_counters;

/* What the renderer needs to name labels. */
typedef struct hr_metric_labels {
    const char *const *routes; /* "METHOD PATTERN" of each route */
    size_t nroutes;
    const char *const *namespaces; /* namespace names ("" = default) */
    size_t nnamespaces;
} hr_metric_labels;

/* Bumps a counter of one loop's hr_counters (by its owning thread). */
#define HR_INC(counters, field, n)                                                                 \
    atomic_fetch_add_explicit(&(counters)->field, (n), memory_order_relaxed)

/* Appends the Prometheus exposition text for every metric to out, summing
 * the n counter sets. */
void hr_metrics_render(hr_buf *out, hr_counters *const *counters, size_t n, const chan_stats *cs,
                       const char *node, const hr_metric_labels *labels);

#endif
