/*
 * proxy_call.c - a proxy call from request to checked answer (see
 * proxy_call.h).
 *
 * A backend that is down or overwhelmed makes every call fail the same
 * way, often thousands a second in a connect storm: one warning per kind
 * and second is logged, with how many were left out, and the counters
 * keep the exact numbers.
 */
#include "gateway/proxy_call.h"
#include "gateway/backend.h"
#include "common/common.h"
#include "common/log.h"

#include <stdlib.h>
#include <string.h>

struct hr_proxy_client {
    const hr_config *cfg;
    hr_counters *stats;
    hr_backend *http;
    hr_proxy_limits limits;
    uint64_t last_log_ms[HR_PROXY_NKINDS]; /* last "unavailable" warning per kind */
    unsigned long quiet[HR_PROXY_NKINDS];  /* warnings left out since */
    int ncalls;                            /* started, callback not yet run */
    int depth;                             /* inside close or a call's callback */
    int closing;                           /* freed once ncalls and depth are 0 */
};

struct hr_proxy_call {
    hr_proxy_client *pc;
    hr_proxy_kind kind;
    hr_backend_req *req;
    hr_proxy_done_cb cb;
    void *ud;
};

/* Stats of one kind, and the gauges after every change of the queue. */
static hr_proxy_stats *kstats(hr_proxy_client *pc, hr_proxy_kind k)
{
    return &pc->stats->proxy[k];
}

static void update_gauges(hr_proxy_client *pc)
{
    atomic_store_explicit(&pc->stats->proxy_inflight, hr_backend_inflight(pc->http),
                          memory_order_relaxed);
    atomic_store_explicit(&pc->stats->proxy_queued, hr_backend_queued(pc->http),
                          memory_order_relaxed);
}

/* At most one warning per kind and second (see the file comment). */
static void warn_unavailable(hr_proxy_client *pc, hr_proxy_kind k, const char *why)
{
    uint64_t now = hr_now_ms();
    if (pc->last_log_ms[k] && now - pc->last_log_ms[k] < 1000) {
        pc->quiet[k]++;
        return;
    }
    if (pc->quiet[k])
        hr_warn("proxy_unavailable", "%s proxy: %s (and %lu more like it in the last second)",
                hr_proxy_kind_name(k), why, pc->quiet[k]);
    else
        hr_warn("proxy_unavailable", "%s proxy: %s", hr_proxy_kind_name(k), why);
    pc->last_log_ms[k] = now;
    pc->quiet[k] = 0;
}

/* Counts the outcome of an answered (or failed) call. */
static void count_answer(hr_proxy_client *pc, hr_proxy_kind k, const hr_proxy_answer *a,
                         hr_backend_status st)
{
    hr_proxy_stats *s = kstats(pc, k);
    switch (a->outcome) {
    case HR_PROXY_RESULT:
        HR_ADD1(&s->results, 1);
        break;
    case HR_PROXY_ERROR:
    case HR_PROXY_DISCONNECT:
        HR_ADD1(&s->refusals, 1);
        break;
    case HR_PROXY_UNAVAILABLE:
        if (st == HR_BACKEND_TIMEOUT)
            HR_ADD1(&s->timeouts, 1);
        else if (st == HR_BACKEND_OVERLOADED)
            HR_ADD1(&s->rejected, 1);
        else
            HR_ADD1(&s->errors, 1);
        warn_unavailable(pc, k, a->why);
        break;
    }
}

hr_proxy_client *hr_proxy_client_new(uv_loop_t *uv, const hr_config *cfg, unsigned nloops,
                                     hr_counters *stats)
{
    hr_proxy_client *pc = hr_calloc(1, sizeof(*pc));
    int share = cfg->proxy_max_inflight / (int)(nloops ? nloops : 1);
    hr_backend_opts o = {
        .timeout_ms = cfg->proxy_timeout * 1000L,
        .max_inflight = share > 0 ? share : 1,
        .max_queue = cfg->proxy_max_queue,
        .max_body = cfg->proxy_max_response,
        .ca_file = cfg->proxy_ca_file,
    };
    pc->cfg = cfg;
    pc->stats = stats;
    pc->limits = (hr_proxy_limits){cfg->max_channel_len, (size_t)cfg->max_subscriptions};
    if (!(pc->http = hr_backend_new(uv, &o))) {
        free(pc);
        return NULL;
    }
    return pc;
}

/* Frees pc once closing and nothing can reach it any more. */
static void maybe_free(hr_proxy_client *pc)
{
    if (pc->closing && !pc->ncalls && !pc->depth)
        free(pc);
}

/* The HTTP client answers what is outstanding through on_done: at once, or
 * (closed from inside a callback) when that callback's batch is done; pc
 * stays until the last of them has run. The HTTP client frees itself. */
void hr_proxy_client_close(hr_proxy_client *pc)
{
    if (!pc || pc->closing)
        return;
    pc->closing = 1;
    pc->depth++;
    hr_backend_close(pc->http);
    pc->depth--;
    maybe_free(pc);
}

int hr_proxy_configured(const hr_config *cfg)
{
    return cfg->proxy_connect_url || cfg->proxy_refresh_url || cfg->proxy_subscribe_url ||
           cfg->proxy_publish_url || cfg->proxy_rpc_url || cfg->nproxy_rpc_methods;
}

const char *hr_proxy_url(const hr_config *cfg, hr_proxy_kind kind, const char *method)
{
    switch (kind) {
    case HR_PROXY_CONNECT:
        return cfg->proxy_connect_url;
    case HR_PROXY_REFRESH:
        return cfg->proxy_refresh_url;
    case HR_PROXY_SUBSCRIBE:
        return cfg->proxy_subscribe_url;
    case HR_PROXY_PUBLISH:
        return cfg->proxy_publish_url;
    case HR_PROXY_RPC:
        return hr_config_rpc_url(cfg, method);
    }
    return NULL;
}

/* The HTTP client's completion: the answer checked, counted, handed over. */
static void on_done(void *ud, const hr_backend_result *r)
{
    hr_proxy_call *c = ud;
    hr_proxy_client *pc = c->pc;
    hr_proxy_answer a;
    memset(&a, 0, sizeof(a));
    switch (r->status) {
    case HR_BACKEND_OK:
        hr_proxy_parse(c->kind, r->http_status, r->body, r->body_len, &pc->limits, &a);
        break;
    case HR_BACKEND_TIMEOUT:
        hr_proxy_unavailable(&a, "no answer within %d s (HERALD_PROXY_TIMEOUT)",
                             pc->cfg->proxy_timeout);
        break;
    case HR_BACKEND_TOO_LARGE:
        hr_proxy_unavailable(&a, "the answer is over %zu bytes (HERALD_PROXY_MAX_RESPONSE)",
                             pc->cfg->proxy_max_response);
        break;
    case HR_BACKEND_CANCELLED:
        hr_proxy_unavailable(&a, "Herald is shutting down");
        break;
    default:
        hr_proxy_unavailable(&a, "cannot reach the backend: %s", r->error ? r->error : "?");
        break;
    }
    hr_hist_observe(&kstats(pc, c->kind)->latency, r->elapsed_us);
    count_answer(pc, c->kind, &a, r->status);
    if (!pc->closing)
        update_gauges(pc);
    pc->depth++;
    c->cb(c->ud, &a);
    pc->depth--;
    hr_proxy_answer_clear(&a);
    free(c);
    pc->ncalls--;
    maybe_free(pc);
}

hr_proxy_call *hr_proxy_call_start(hr_proxy_client *pc, const hr_proxy_request *rq,
                                   const hr_proxy_headers *h, hr_proxy_done_cb cb, void *ud,
                                   hr_proxy_answer *now)
{
    hr_proxy_kind k = rq->kind;
    memset(now, 0, sizeof(*now));
    if ((unsigned)k >= HR_PROXY_NKINDS || pc->closing) {
        hr_proxy_unavailable(now, pc->closing ? "Herald is shutting down" : "unknown proxy kind");
        return NULL;
    }
    HR_ADD1(&kstats(pc, k)->requests, 1);
    const char *url = hr_proxy_url(pc->cfg, k, rq->method);
    size_t len = 0;
    char *body = url ? hr_proxy_request_body(rq, &len) : NULL;
    if (!url || !body) {
        hr_proxy_unavailable(now, url ? "the request cannot be encoded as JSON"
                                      : "no URL is configured for this proxy");
        count_answer(pc, k, now, HR_BACKEND_FAILED);
        return NULL;
    }
    hr_proxy_call *c = hr_calloc(1, sizeof(*c));
    *c = (hr_proxy_call){.pc = pc, .kind = k, .cb = cb, .ud = ud};
    hr_backend_status why = HR_BACKEND_FAILED;
    c->req = hr_backend_post(pc->http, url, h ? h->line : NULL, h ? h->n : 0, body, len, on_done, c,
                             &why);
    free(body);
    if (!c->req) {
        free(c);
        if (why == HR_BACKEND_OVERLOADED)
            hr_proxy_unavailable(now,
                                 "%d calls in flight and %d waiting on this loop "
                                 "(HERALD_PROXY_MAX_INFLIGHT, HERALD_PROXY_MAX_QUEUE)",
                                 hr_backend_inflight(pc->http), hr_backend_queued(pc->http));
        else
            hr_proxy_unavailable(now, "the call could not start");
        count_answer(pc, k, now, why);
        return NULL;
    }
    pc->ncalls++;
    update_gauges(pc);
    return c;
}

void hr_proxy_call_cancel(hr_proxy_call *c)
{
    if (!c)
        return;
    hr_proxy_client *pc = c->pc;
    hr_backend_cancel(c->req);
    free(c);
    pc->ncalls--;
    if (!pc->closing)
        update_gauges(pc);
    maybe_free(pc);
}
