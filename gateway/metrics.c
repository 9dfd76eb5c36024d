/* metrics.c - Prometheus text exposition (see metrics.h). */
#include "metrics.h"

#include <stddef.h>

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

void hr_metrics_render(hr_buf *b, hr_counters *const *c, size_t n, const chan_stats *cs,
                       const char *node)
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
}
