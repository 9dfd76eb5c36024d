/*
 * events.c - lifecycle events and their delivery (see events.h).
 *
 * Per destination, two halves: a ring of queued events shared by every
 * emitting thread (under the hub's mutex: a push is a few stores), and the
 * delivery state that only the delivery loop touches - the batch being
 * sent, whether a delivery is pending, the retry timer. The loop moves
 * events from the ring into a batch when it is free to send: on its flush
 * tick, when an emitter fills a batch (it wakes the loop), and right after
 * a confirmed batch while more are queued.
 */
#include "gateway/events.h"
#include "common/common.h"
#include "common/log.h"
#include "gateway/proxy.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- The events ------------------------------------------------------------*/

/* Adds key = s (JSON null for NULL); returns 0, or -1 for a non-UTF-8 s. */
static int put_str(json_t *o, const char *key, const char *s)
{
    json_t *v = s ? json_string(s) : json_null();
    return v ? json_object_set_new(o, key, v) : -1;
}

/* Returns o, or NULL (o freed) when bad. */
static json_t *checked(json_t *o, int bad)
{
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *hr_event_connect(const char *client, const char *user, const char *transport,
                         const char *node)
{
    json_t *o = json_object();
    int bad = put_str(o, "type", "herald.connect") | put_str(o, "client", client) |
              put_str(o, "user", user) | put_str(o, "transport", transport) |
              put_str(o, "node", node);
    return checked(o, bad);
}

json_t *hr_event_disconnect(const char *client, const char *user, int code, uint64_t duration_ms,
                            const char *node)
{
    json_t *o = json_object();
    int bad = put_str(o, "type", "herald.disconnect") | put_str(o, "client", client) |
              put_str(o, "user", user) | json_object_set_new(o, "code", json_integer(code)) |
              json_object_set_new(o, "duration_ms", json_integer((json_int_t)duration_ms)) |
              put_str(o, "node", node);
    return checked(o, bad);
}

json_t *hr_event_subscription(int subscribed, const char *client, const char *user,
                              const char *channel)
{
    json_t *o = json_object();
    int bad = put_str(o, "type", subscribed ? "herald.subscribe" : "herald.unsubscribe") |
              put_str(o, "client", client) | put_str(o, "user", user) |
              put_str(o, "channel", channel);
    return checked(o, bad);
}

json_t *hr_event_channel(int occupied, const char *channel)
{
    json_t *o = json_object();
    int bad = put_str(o, "type", occupied ? "herald.channel.occupied" : "herald.channel.vacated") |
              put_str(o, "channel", channel);
    return checked(o, bad);
}

char *hr_events_webhook_body(json_t *const *events, size_t n, size_t *len)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append(arr, events[i]);
    json_t *o = json_object();
    json_object_set_new(o, "events", arr);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        hr_fatal("out_of_memory", "cannot encode a webhook body");
    if (len)
        *len = strlen(s);
    return s;
}

/*---- Delivery --------------------------------------------------------------*/

typedef struct dest {
    hr_events *ev;
    const hr_events_dest_ops *ops;
    void *ud;
    /* the queue: a ring, under ev->mu */
    json_t **ring;
    size_t cap, head, n;
    /* the delivery loop's */
    json_t **batch;
    size_t nbatch;
    int busy;       /* a delivery is pending */
    int in_deliver; /* inside ops->deliver: a done now is handled after it */
    int sync_done;  /* ... and it came */
    hr_events_result sync_result;
    int retry_pending; /* waiting for the retry timer */
    int backoff_ms;
    uv_timer_t retry;
} dest;

struct hr_events {
    hr_events_opts o;
    pthread_mutex_t mu;
    dest *dests[HR_EVENTS_MAX_DESTS];
    int ndests;
    int started, stopped; /* under mu */
    /* the delivery loop's */
    uv_loop_t *uv;
    hr_counters *stats;
    uv_timer_t tick;
    uv_async_t wake;
    /* drops by emitters, logged at most once a second (any thread) */
    atomic_ullong drop_log_ms;
    atomic_ullong drops_unlogged;
};

hr_events *hr_events_new(const hr_events_opts *opts)
{
    hr_events *ev = hr_calloc(1, sizeof(*ev));
    ev->o = *opts;
    if (ev->o.batch <= 0)
        ev->o.batch = 100;
    if (ev->o.queue <= 0)
        ev->o.queue = 10000;
    if (ev->o.flush_ms <= 0)
        ev->o.flush_ms = 1000;
    if (ev->o.backoff_min_ms <= 0)
        ev->o.backoff_min_ms = 100;
    if (ev->o.backoff_max_ms < ev->o.backoff_min_ms)
        ev->o.backoff_max_ms = ev->o.backoff_min_ms > 30000 ? ev->o.backoff_min_ms : 30000;
    pthread_mutex_init(&ev->mu, NULL);
    return ev;
}

int hr_events_add(hr_events *ev, const hr_events_dest_ops *ops, void *ud)
{
    if (ev->ndests == HR_EVENTS_MAX_DESTS || ev->started) {
        ops->close(ud);
        return -1;
    }
    dest *d = hr_calloc(1, sizeof(*d));
    d->ev = ev;
    d->ops = ops;
    d->ud = ud;
    d->cap = (size_t)ev->o.queue;
    d->ring = hr_calloc(d->cap, sizeof(*d->ring));
    d->batch = hr_calloc((size_t)ev->o.batch, sizeof(*d->batch));
    d->backoff_ms = ev->o.backoff_min_ms;
    ev->dests[ev->ndests++] = d;
    return 0;
}

/* Counts drops of emitters and logs them, at most once a second. */
static void emit_dropped(hr_events *ev, hr_counters *stats, unsigned n)
{
    if (!n)
        return;
    if (stats)
        HR_INC(stats, events_dropped, n);
    unsigned long long now = hr_now_ms(), last = atomic_load(&ev->drop_log_ms);
    unsigned long long quiet = atomic_fetch_add(&ev->drops_unlogged, n) + n;
    if (now - last >= 1000 && atomic_compare_exchange_strong(&ev->drop_log_ms, &last, now)) {
        quiet = atomic_exchange(&ev->drops_unlogged, 0);
        hr_warn("events_dropped",
                "%llu lifecycle event(s) dropped: a destination's queue is full "
                "(HERALD_EVENTS_QUEUE) or delivery is not running",
                quiet);
    }
}

void hr_events_emit(hr_events *ev, json_t *event, hr_counters *stats)
{
    unsigned dropped = 0;
    int wake = 0;
    if (!event)
        return;
    pthread_mutex_lock(&ev->mu);
    for (int i = 0; i < ev->ndests; i++) {
        dest *d = ev->dests[i];
        if (!ev->started || ev->stopped || d->n == d->cap) {
            dropped++;
            continue;
        }
        d->ring[(d->head + d->n) % d->cap] = json_incref(event);
        if (++d->n == (size_t)ev->o.batch)
            wake = 1;
    }
    /* under the lock: hr_events_stop closes the handle under it too */
    if (wake)
        uv_async_send(&ev->wake);
    pthread_mutex_unlock(&ev->mu);
    json_decref(event);
    emit_dropped(ev, stats, dropped);
}

size_t hr_events_queued(hr_events *ev)
{
    size_t most = 0;
    pthread_mutex_lock(&ev->mu);
    for (int i = 0; i < ev->ndests; i++)
        if (ev->dests[i]->n > most)
            most = ev->dests[i]->n;
    pthread_mutex_unlock(&ev->mu);
    return most;
}

/* Fills the (empty) batch from the head of the ring. */
static void take_batch(dest *d)
{
    pthread_mutex_lock(&d->ev->mu);
    while (d->n && d->nbatch < (size_t)d->ev->o.batch) {
        d->batch[d->nbatch++] = d->ring[d->head];
        d->ring[d->head] = NULL;
        d->head = (d->head + 1) % d->cap;
        d->n--;
    }
    pthread_mutex_unlock(&d->ev->mu);
}

static void drop_batch(dest *d)
{
    for (size_t i = 0; i < d->nbatch; i++)
        json_decref(d->batch[i]);
    d->nbatch = 0;
}

static void on_retry(uv_timer_t *t);
static void dest_done(void *token, hr_events_result r);

/* A random delay in [backoff/2, backoff], then the backoff doubles: many
 * nodes that lost the same webhook do not come back in step. */
static void schedule_retry(dest *d)
{
    uint32_t r;
    hr_random_bytes(&r, sizeof(r));
    uint64_t delay = (uint64_t)d->backoff_ms / 2 + r % ((uint32_t)d->backoff_ms / 2 + 1);
    d->backoff_ms =
        d->backoff_ms >= d->ev->o.backoff_max_ms / 2 ? d->ev->o.backoff_max_ms : d->backoff_ms * 2;
    d->retry_pending = 1;
    uv_timer_start(&d->retry, on_retry, delay, 0);
}

/* What a finished delivery means for the batch. */
static void apply_result(dest *d, hr_events_result r)
{
    hr_events *ev = d->ev;
    d->busy = 0;
    switch (r) {
    case HR_EVENTS_DELIVERED:
        HR_INC(ev->stats, events_sent, d->nbatch);
        drop_batch(d);
        d->backoff_ms = ev->o.backoff_min_ms;
        break;
    case HR_EVENTS_REFUSED:
        HR_INC(ev->stats, events_dropped, d->nbatch);
        hr_warn("events_dropped", "the %s refused a batch of %zu lifecycle event(s): dropped",
                d->ops->name, d->nbatch);
        drop_batch(d);
        d->backoff_ms = ev->o.backoff_min_ms;
        break;
    case HR_EVENTS_RETRY:
        HR_INC(ev->stats, events_retries, 1);
        schedule_retry(d);
        break;
    }
}

/* Sends while there is something to send and nothing pending; a loop, not
 * recursion, since destinations may answer synchronously. */
static void pump(dest *d)
{
    while (!d->busy && !d->retry_pending && !d->ev->stopped) {
        if (!d->nbatch)
            take_batch(d);
        if (!d->nbatch)
            return;
        d->busy = 1;
        d->in_deliver = 1;
        d->sync_done = 0;
        d->ops->deliver(d->ud, d->batch, d->nbatch, dest_done, d);
        d->in_deliver = 0;
        if (!d->sync_done)
            return; /* dest_done will come */
        apply_result(d, d->sync_result);
    }
}

/* hr_events_done_fn given to destinations (the token is the dest). */
static void dest_done(void *token, hr_events_result r)
{
    dest *d = token;
    if (!d->busy || d->ev->stopped)
        return; /* a stray or late call: nothing is pending */
    if (d->in_deliver) {
        d->sync_done = 1;
        d->sync_result = r;
        return;
    }
    apply_result(d, r);
    pump(d);
}

static void on_retry(uv_timer_t *t)
{
    dest *d = t->data;
    d->retry_pending = 0;
    pump(d);
}

static void pump_all(hr_events *ev)
{
    for (int i = 0; i < ev->ndests; i++)
        pump(ev->dests[i]);
}

static void on_tick(uv_timer_t *t)
{
    pump_all(t->data);
}

static void on_wake(uv_async_t *a)
{
    pump_all(a->data);
}

int hr_events_start(hr_events *ev, uv_loop_t *uv, hr_counters *stats)
{
    ev->uv = uv;
    ev->stats = stats;
    for (int i = 0; i < ev->ndests; i++) {
        dest *d = ev->dests[i];
        if (d->ops->start && d->ops->start(d->ud, uv) < 0) {
            hr_error("events", "the %s destination of lifecycle events did not start",
                     d->ops->name);
            return -1;
        }
    }
    uv_timer_init(uv, &ev->tick);
    ev->tick.data = ev;
    uv_timer_start(&ev->tick, on_tick, (uint64_t)ev->o.flush_ms, (uint64_t)ev->o.flush_ms);
    uv_unref((uv_handle_t *)&ev->tick); /* must not keep a stopping loop alive */
    uv_async_init(uv, &ev->wake, on_wake);
    ev->wake.data = ev;
    uv_unref((uv_handle_t *)&ev->wake);
    for (int i = 0; i < ev->ndests; i++) {
        uv_timer_init(uv, &ev->dests[i]->retry);
        ev->dests[i]->retry.data = ev->dests[i];
        uv_unref((uv_handle_t *)&ev->dests[i]->retry);
    }
    pthread_mutex_lock(&ev->mu);
    ev->started = 1;
    pthread_mutex_unlock(&ev->mu);
    return 0;
}

void hr_events_stop(hr_events *ev)
{
    pthread_mutex_lock(&ev->mu);
    int was_running = ev->started && !ev->stopped;
    ev->stopped = 1;
    if (was_running)
        uv_close((uv_handle_t *)&ev->wake, NULL);
    pthread_mutex_unlock(&ev->mu);
    if (!was_running)
        return;
    uv_close((uv_handle_t *)&ev->tick, NULL);
    for (int i = 0; i < ev->ndests; i++) {
        dest *d = ev->dests[i];
        uv_close((uv_handle_t *)&d->retry, NULL);
        d->ops->close(d->ud); /* a pending done will not come */
        d->ud = NULL;
        pthread_mutex_lock(&ev->mu);
        size_t left = d->nbatch + d->n;
        while (d->n) {
            json_decref(d->ring[d->head]);
            d->head = (d->head + 1) % d->cap;
            d->n--;
        }
        pthread_mutex_unlock(&ev->mu);
        drop_batch(d);
        if (left) {
            HR_INC(ev->stats, events_dropped, left);
            hr_warn("events_dropped", "%zu lifecycle event(s) for the %s not delivered at shutdown",
                    left, d->ops->name);
        }
    }
}

void hr_events_free(hr_events *ev)
{
    if (!ev)
        return;
    for (int i = 0; i < ev->ndests; i++) {
        dest *d = ev->dests[i];
        if (d->ud) /* never started: the destination was not closed yet */
            d->ops->close(d->ud);
        for (size_t k = 0; k < d->n; k++)
            json_decref(d->ring[(d->head + k) % d->cap]);
        drop_batch(d);
        free(d->ring);
        free(d->batch);
        free(d);
    }
    pthread_mutex_destroy(&ev->mu);
    free(ev);
}

/*---- The webhook -----------------------------------------------------------*/

typedef struct webhook {
    char *url;
    hr_proxy_headers *headers; /* X-Herald-Proxy-Key, when set */
    hr_backend_opts opts;
    char *ca_file;
    hr_backend *http;
    hr_backend_req *req; /* the batch in flight */
    void *token;
    uint64_t last_log_ms;
} webhook;

static int webhook_start(void *ud, uv_loop_t *uv)
{
    webhook *w = ud;
    w->http = hr_backend_new(uv, &w->opts);
    return w->http ? 0 : -1;
}

/* Failures are logged at most once a second (a dead webhook retries on). */
static void webhook_warn(webhook *w, const char *what, long status, const char *error)
{
    uint64_t now = hr_now_ms();
    if (w->last_log_ms && now - w->last_log_ms < 1000)
        return;
    w->last_log_ms = now;
    if (status)
        hr_warn("events_webhook", "the events webhook answered %ld: %s", status, what);
    else
        hr_warn("events_webhook", "the events webhook failed (%s): %s", error ? error : "?", what);
}

static void webhook_answered(void *ud, const hr_backend_result *r)
{
    webhook *w = ud;
    w->req = NULL;
    if (r->status == HR_BACKEND_CANCELLED)
        return; /* closing: the hub no longer waits */
    hr_events_result res = HR_EVENTS_RETRY;
    if (r->status == HR_BACKEND_OK && r->http_status >= 200 && r->http_status < 300) {
        res = HR_EVENTS_DELIVERED;
    } else if (r->status == HR_BACKEND_OK && r->http_status >= 400 && r->http_status < 500 &&
               r->http_status != 408 && r->http_status != 429) {
        res = HR_EVENTS_REFUSED; /* logged by the hub */
    } else {
        webhook_warn(w, "retrying", r->status == HR_BACKEND_OK ? r->http_status : 0, r->error);
    }
    dest_done(w->token, res);
}

static void webhook_deliver(void *ud, json_t *const *events, size_t n, hr_events_done_fn done,
                            void *token)
{
    webhook *w = ud;
    size_t len = 0;
    char *body = hr_events_webhook_body(events, n, &len);
    hr_backend_status why;
    (void)done; /* always dest_done: the webhook is this file's own */
    w->token = token;
    w->req = hr_backend_post(w->http, w->url, w->headers->line, w->headers->n, body, len,
                             webhook_answered, w, &why);
    free(body);
    if (!w->req)
        dest_done(token, HR_EVENTS_RETRY);
}

static void webhook_close(void *ud)
{
    webhook *w = ud;
    if (w->req)
        hr_backend_cancel(w->req);
    hr_backend_close(w->http);
    free(w->url);
    free(w->headers);
    free(w->ca_file);
    free(w);
}

static const hr_events_dest_ops webhook_ops = {
    .name = "webhook",
    .start = webhook_start,
    .deliver = webhook_deliver,
    .close = webhook_close,
};

int hr_events_add_webhook(hr_events *ev, const char *url, const char *key, long timeout_ms,
                          const char *ca_file)
{
    webhook *w = hr_calloc(1, sizeof(*w));
    w->url = hr_strdup(url);
    w->headers = hr_proxy_headers_build(NULL, 0, NULL, 0, key);
    w->ca_file = ca_file ? hr_strdup(ca_file) : NULL;
    /* one batch at a time; the answer's body is not used */
    w->opts = (hr_backend_opts){.timeout_ms = timeout_ms > 0 ? timeout_ms : 5000,
                                .max_inflight = 1,
                                .max_queue = 0,
                                .max_body = 65536,
                                .ca_file = w->ca_file};
    return hr_events_add(ev, &webhook_ops, w);
}
