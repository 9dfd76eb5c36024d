/* metrics.c - Prometheus text exposition (see metrics.h). */
#include "gateway/metrics.h"

#include <stddef.h>
#include <stdio.h>

/* One HELP/TYPE header and one sample per metric, all labelled with the node
 * so several gateways can be scraped into one series set. */
static void metric(hr_buf *b, const char *name, const char *type, const char *help,
                   const char *node, unsigned long long v)
{
    hr_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s{node=\"%s\"} %llu\n", name, help, name, type,
                  name, node, v);
}

/* Sums one field (at byte offset off) over every loop's counters. */
static unsigned long long sum(hr_counters *const *c, size_t n, size_t off)
{
    unsigned long long v = 0;
    for (size_t i = 0; i < n; i++)
        v += atomic_load_explicit((atomic_ullong *)((char *)c[i] + off), memory_order_relaxed);
    return v;
}

#define SUM(field) sum(c, n, offsetof(hr_counters, field))

static const uint64_t bucket_us[HR_HIST_BUCKETS - 1] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
};

void hr_hist_observe(hr_hist *h, uint64_t us)
{
    size_t i = 0;
    while (i < HR_HIST_BUCKETS - 1 && us > bucket_us[i])
        i++;
    HR_ADD1(&h->bucket[i], 1);
    HR_ADD1(&h->sum_us, us);
    HR_ADD1(&h->count, 1);
}

/* Writes one histogram's series (buckets summed over every loop) with the
 * extra label text (may be ""). The histogram sits at byte offset off of
 * hr_counters. */
static void hist_series(hr_buf *b, const char *name, const char *node, const char *label,
                        hr_counters *const *c, size_t n, size_t off)
{
    unsigned long long cum = 0, sum_us = 0, count = 0;
    for (size_t k = 0; k < HR_HIST_BUCKETS; k++) {
        for (size_t i = 0; i < n; i++) {
            const hr_hist *h = (const hr_hist *)((const char *)c[i] + off);
            cum += atomic_load_explicit(&h->bucket[k], memory_order_relaxed);
        }
        if (k < HR_HIST_BUCKETS - 1)
            hr_buf_printf(b, "%s_bucket{node=\"%s\"%s,le=\"%g\"} %llu\n", name, node, label,
                          (double)bucket_us[k] / 1e6, cum);
        else
            hr_buf_printf(b, "%s_bucket{node=\"%s\"%s,le=\"+Inf\"} %llu\n", name, node, label, cum);
    }
    for (size_t i = 0; i < n; i++) {
        const hr_hist *h = (const hr_hist *)((const char *)c[i] + off);
        sum_us += atomic_load_explicit(&h->sum_us, memory_order_relaxed);
        count += atomic_load_explicit(&h->count, memory_order_relaxed);
    }
    hr_buf_printf(b, "%s_sum{node=\"%s\"%s} %.6f\n%s_count{node=\"%s\"%s} %llu\n", name, node,
                  label, (double)sum_us / 1e6, name, node, label, count);
}

static void hist_head(hr_buf *b, const char *name, const char *help)
{
    hr_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
}

static void render_histograms(hr_buf *b, hr_counters *const *c, size_t n, const char *node,
                              const hr_metric_labels *labels)
{
    char label[320];
    hist_head(b, "herald_delivery_latency_seconds",
              "From a publication's arrival on this node (accepted, or received from Redis) "
              "to its frame written to a subscriber's socket.");
    hist_series(b, "herald_delivery_latency_seconds", node, "", c, n,
                offsetof(hr_counters, delivery));
    hist_head(b, "herald_handshake_duration_seconds",
              "From a WebSocket upgrade request to the connection established.");
    hist_series(b, "herald_handshake_duration_seconds", node, "", c, n,
                offsetof(hr_counters, handshake));
    hist_head(b, "herald_http_request_duration_seconds",
              "From a REST request's headers to its response, by route.");
    size_t nr = labels && labels->nroutes < HR_MAX_ROUTES ? labels->nroutes : HR_MAX_ROUTES;
    for (size_t r = 0; r <= nr; r++) {
        snprintf(label, sizeof(label), ",route=\"%s\"", r < nr ? labels->routes[r] : "none");
        size_t idx = r < nr ? r : HR_MAX_ROUTES;
        hist_series(b, "herald_http_request_duration_seconds", node, label, c, n,
                    offsetof(hr_counters, http) + idx * sizeof(hr_hist));
    }
}

/* Per-namespace counters: namespace "" is the default one. */
static void render_namespaces(hr_buf *b, hr_counters *const *c, size_t n, const char *node,
                              const hr_metric_labels *labels)
{
    static const struct {
        const char *name, *help;
        size_t off;
    } fams[] = {
        {"herald_namespace_publications_total", "Publications accepted on this node, by namespace.",
         offsetof(hr_counters, ns_publications)},
        {"herald_namespace_deliveries_total",
         "Publications written to subscribers on this node, by namespace.",
         offsetof(hr_counters, ns_deliveries)},
    };
    size_t nn = labels && labels->nnamespaces < HR_MAX_NS ? labels->nnamespaces : HR_MAX_NS;
    for (size_t f = 0; f < 2; f++) {
        hr_buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", fams[f].name, fams[f].help,
                      fams[f].name);
        for (size_t k = 0; k <= nn; k++) {
            size_t idx = k < nn ? k : HR_MAX_NS;
            unsigned long long v = sum(c, n, fams[f].off + idx * sizeof(atomic_ullong));
            if (k == nn && labels && labels->nnamespaces <= HR_MAX_NS)
                break; /* no "other": every namespace has its own series */
            hr_buf_printf(b, "%s{node=\"%s\",namespace=\"%s\"} %llu\n", fams[f].name, node,
                          k < nn ? labels->namespaces[k] : "(other)", v);
        }
    }
}

/* SPEC §8: per proxy kind (label kind) the calls and how they ended, the
 * latency histogram, and the lifecycle events. Families are rendered even
 * when nothing is configured (all zero), so dashboards need no special case. */
static void render_proxy(hr_buf *b, hr_counters *const *c, size_t n, const char *node)
{
    static const struct {
        const char *name, *help;
        size_t off;
    } fams[] = {
        {"herald_proxy_requests_total", "Backend proxy calls made, by kind.",
         offsetof(hr_proxy_stats, requests)},
        {"herald_proxy_results_total", "Backend proxy calls answered with a result.",
         offsetof(hr_proxy_stats, results)},
        {"herald_proxy_refusals_total",
         "Backend proxy calls answered with an error or a disconnect.",
         offsetof(hr_proxy_stats, refusals)},
        {"herald_proxy_errors_total",
         "Backend proxy calls without a usable answer (connection failed, status not 200, "
         "invalid or oversized body): unavailable for the client.",
         offsetof(hr_proxy_stats, errors)},
        {"herald_proxy_timeouts_total",
         "Backend proxy calls not answered within HERALD_PROXY_TIMEOUT: unavailable.",
         offsetof(hr_proxy_stats, timeouts)},
        {"herald_proxy_rejected_total",
         "Backend proxy calls refused at once: in-flight and queue bounds reached.",
         offsetof(hr_proxy_stats, rejected)},
    };
    char label[64];
    for (size_t f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
        hr_buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", fams[f].name, fams[f].help,
                      fams[f].name);
        for (size_t k = 0; k < HR_PROXY_NKINDS; k++)
            hr_buf_printf(
                b, "%s{node=\"%s\",kind=\"%s\"} %llu\n", fams[f].name, node,
                hr_proxy_kind_name((hr_proxy_kind)k),
                sum(c, n, offsetof(hr_counters, proxy) + k * sizeof(hr_proxy_stats) + fams[f].off));
    }
    hist_head(b, "herald_proxy_duration_seconds",
              "From a backend proxy call to its answer (waiting for a slot included), by kind.");
    for (size_t k = 0; k < HR_PROXY_NKINDS; k++) {
        snprintf(label, sizeof(label), ",kind=\"%s\"", hr_proxy_kind_name((hr_proxy_kind)k));
        hist_series(b, "herald_proxy_duration_seconds", node, label, c, n,
                    offsetof(hr_counters, proxy) + k * sizeof(hr_proxy_stats) +
                        offsetof(hr_proxy_stats, latency));
    }
    long long inflight = 0, queued = 0;
    for (size_t i = 0; i < n; i++) {
        inflight += atomic_load_explicit(&c[i]->proxy_inflight, memory_order_relaxed);
        queued += atomic_load_explicit(&c[i]->proxy_queued, memory_order_relaxed);
    }
    metric(b, "herald_proxy_inflight", "gauge", "Backend proxy calls running.", node,
           (unsigned long long)(inflight < 0 ? 0 : inflight));
    metric(b, "herald_proxy_queued", "gauge", "Backend proxy calls waiting for a free slot.", node,
           (unsigned long long)(queued < 0 ? 0 : queued));
    metric(b, "herald_events_sent_total", "counter",
           "Lifecycle events delivered (counted once per destination).", node, SUM(events_sent));
    metric(b, "herald_events_dropped_total", "counter",
           "Lifecycle events dropped: destination queue full, refused by the webhook, or left "
           "at shutdown.",
           node, SUM(events_dropped));
    metric(b, "herald_events_retries_total", "counter",
           "Failed deliveries of a batch of lifecycle events (each is retried with backoff).", node,
           SUM(events_retries));
}

void hr_metrics_render(hr_buf *b, hr_counters *const *c, size_t n, const chan_stats *cs,
                       const char *node, const hr_metric_labels *labels)
{
    long long conns = 0;
    for (size_t i = 0; i < n; i++)
        conns += atomic_load_explicit(&c[i]->connections, memory_order_relaxed);
    struct {
        const char *name, *type, *help;
        unsigned long long v;
    } rows[] = {
        {"herald_connections", "gauge", "Open WebSocket connections.",
         (unsigned long long)(conns < 0 ? 0 : conns)},
        {"herald_connections_total", "counter", "WebSocket connections accepted.",
         SUM(connections_total)},
        {"herald_subscriptions", "gauge", "Channel subscriptions held by local connections.",
         cs->subscriptions},
        {"herald_channels", "gauge", "Channels with at least one local subscriber.", cs->channels},
        {"herald_messages_received_total", "counter", "WebSocket messages received from clients.",
         SUM(messages_in)},
        {"herald_messages_sent_total", "counter", "WebSocket messages sent to clients.",
         SUM(messages_out)},
        {"herald_socket_writes_total", "counter",
         "Socket writes to WebSocket clients (one per burst of queued frames).", SUM(writes)},
        {"herald_bytes_received_total", "counter", "WebSocket payload bytes received.",
         SUM(bytes_in)},
        {"herald_bytes_sent_total", "counter", "WebSocket bytes sent (frames).", SUM(bytes_out)},
        {"herald_publications_total", "counter", "Publications accepted (WebSocket and REST).",
         cs->publications},
        {"herald_deliveries_total", "counter", "Publications handed to local subscribers.",
         cs->deliveries},
        {"herald_slow_consumer_closes_total", "counter",
         "Connections closed with 4008 because their outbound queue overflowed.",
         SUM(slow_consumer_closes)},
        {"herald_rate_limit_closes_total", "counter",
         "Connections closed with 4029 for exceeding the inbound rate.", SUM(rate_limit_closes)},
        {"herald_auth_failures_total", "counter", "Refused tokens and API keys.",
         SUM(auth_failures)},
        {"herald_http_requests_total", "counter", "HTTP requests served.", SUM(http_requests)},
        {"herald_ws_deflates_total", "counter",
         "Messages compressed for permessage-deflate: once per message, whatever its number of "
         "compressing subscribers (at most once per loop thread).",
         SUM(ws_deflates)},
        {"herald_ws_compressed_frames_sent_total", "counter",
         "WebSocket frames sent compressed (permessage-deflate).", SUM(ws_frames_deflated)},
        {"herald_inbox_wakeups_total", "counter",
         "Times a loop thread woke up to drain its inbox (cross-thread work).", SUM(inbox_wakeups)},
        {"herald_loop_threads", "gauge", "Event-loop threads in this process.", n},
        {"herald_redis_shards", "gauge", "Redis servers the channel layer uses (cluster mode).",
         cs->redis_shards},
        {"herald_redis_shards_connected", "gauge",
         "Redis shards whose connections are up; below herald_redis_shards, /readyz is 503.",
         cs->redis_connected},
        {"herald_redis_reconnects_total", "counter", "Reconnection attempts to Redis shards.",
         cs->redis_reconnects},
        {"herald_redis_pending_bytes", "gauge",
         "Bytes Redis sent the subscriber connections that are not processed yet.",
         cs->redis_pending_bytes},
        {"herald_redis_bad_messages_total", "counter",
         "Malformed pushes or control messages received from Redis and dropped.", cs->bad_messages},
        {"herald_redis_control_rejected_total", "counter",
         "Control messages dropped: not signed with the cluster secret, outside the time window, "
         "or replayed.",
         cs->control_rejected},
        {"herald_django_messages_total", "counter",
         "Django Channels group messages handed to local subscribers.", cs->django_received},
        {"herald_django_bad_messages_total", "counter",
         "Messages from Django Channels dropped: malformed, encrypted or not convertible to JSON.",
         cs->django_bad},
        {"herald_django_forwarded_total", "counter",
         "Client publications sent to a namespace's django_channel.", cs->django_forwarded},
        {"herald_django_forward_failures_total", "counter",
         "Client publications a django_channel did not get (channel full, no receiver, Redis "
         "unreachable).",
         cs->django_forward_failed},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        metric(b, rows[i].name, rows[i].type, rows[i].help, node, rows[i].v);
    /* how the kernel (SO_REUSEPORT) spread connections over the loops */
    hr_buf_printf(b, "# HELP herald_loop_connections Open WebSocket connections per loop thread.\n"
                     "# TYPE herald_loop_connections gauge\n");
    for (size_t i = 0; i < n; i++) {
        long long v = atomic_load_explicit(&c[i]->connections, memory_order_relaxed);
        hr_buf_printf(b, "herald_loop_connections{node=\"%s\",loop=\"%zu\"} %lld\n", node, i,
                      v < 0 ? 0 : v);
    }
    hr_buf_printf(b, "# HELP herald_loop_lag_seconds How late each loop thread's 500 ms timer "
                     "fired last: time the loop was busy or blocked.\n"
                     "# TYPE herald_loop_lag_seconds gauge\n");
    for (size_t i = 0; i < n; i++) {
        long long v = atomic_load_explicit(&c[i]->loop_lag_us, memory_order_relaxed);
        hr_buf_printf(b, "herald_loop_lag_seconds{node=\"%s\",loop=\"%zu\"} %.6f\n", node, i,
                      (double)(v < 0 ? 0 : v) / 1e6);
    }
    render_histograms(b, c, n, node, labels);
    render_namespaces(b, c, n, node, labels);
    render_proxy(b, c, n, node);
}
