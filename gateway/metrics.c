/* metrics.c - Prometheus text exposition (see metrics.h). */
#include "metrics.h"

#include <inttypes.h>

hr_metrics hr_stats;

/* One HELP/TYPE header and one sample per metric, all labelled with the node
 * so several gateways can be scraped into one series set. */
static int metric(hr_buf *b, const char *name, const char *type, const char *help, const char *node,
                  unsigned long long v)
{
    return hr_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s{node=\"%s\"} %llu\n", name, help, name,
                         type, name, node, v);
}

int hr_metrics_render(hr_buf *b, const chan_stats *cs, const char *node)
{
    long long conns = atomic_load(&hr_stats.connections);
    struct {
        const char *name, *type, *help;
        unsigned long long v;
    } rows[] = {
        {"herald_connections", "gauge", "Open WebSocket connections.",
         (unsigned long long)(conns < 0 ? 0 : conns)},
        {"herald_connections_total", "counter", "WebSocket connections accepted.",
         atomic_load(&hr_stats.connections_total)},
        {"herald_subscriptions", "gauge", "Channel subscriptions held by local connections.",
         cs->subscriptions},
        {"herald_channels", "gauge", "Channels with at least one local subscriber.", cs->channels},
        {"herald_messages_received_total", "counter", "WebSocket messages received from clients.",
         atomic_load(&hr_stats.messages_in)},
        {"herald_messages_sent_total", "counter", "WebSocket messages sent to clients.",
         atomic_load(&hr_stats.messages_out)},
        {"herald_bytes_received_total", "counter", "WebSocket payload bytes received.",
         atomic_load(&hr_stats.bytes_in)},
        {"herald_bytes_sent_total", "counter", "WebSocket bytes sent (frames).",
         atomic_load(&hr_stats.bytes_out)},
        {"herald_publications_total", "counter", "Publications accepted (WebSocket and REST).",
         atomic_load(&hr_stats.publications)},
        {"herald_deliveries_total", "counter", "Publications handed to local subscribers.",
         cs->deliveries},
        {"herald_slow_consumer_closes_total", "counter",
         "Connections closed with 4008 because their outbound queue overflowed.",
         atomic_load(&hr_stats.slow_consumer_closes)},
        {"herald_rate_limit_closes_total", "counter",
         "Connections closed with 4029 for exceeding the inbound rate.",
         atomic_load(&hr_stats.rate_limit_closes)},
        {"herald_auth_failures_total", "counter", "Refused tokens and API keys.",
         atomic_load(&hr_stats.auth_failures)},
        {"herald_http_requests_total", "counter", "HTTP requests served.",
         atomic_load(&hr_stats.http_requests)},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        if (metric(b, rows[i].name, rows[i].type, rows[i].help, node, rows[i].v) < 0)
            return -1;
    return 0;
}
