/*
 * backend_tool.c - herald-backend-tool: drives Herald's backend modules on
 * one libuv loop against a real HTTP server, for
 * tests/integration/test_backend_client.py (with backend_fixture.py).
 *
 * The connection paths do not call the proxies yet, so this is how the HTTP
 * client (gateway/backend.c), the proxy calls (gateway/proxy_call.c, with
 * the configuration read from the environment exactly as herald reads it)
 * and the events webhook (gateway/events.c) run against a real backend.
 * Each mode prints one JSON object on stdout and exits 0; the exit status
 * is 3 when the loop did not close cleanly (a handle left open).
 *
 *   post URL [--count N] [--timeout-ms MS] [--max-inflight N] [--max-queue N (N)]
 *            [--max-body BYTES] [--ca FILE] [--header LINE]... [--body TEXT]
 *            [--body-size BYTES]
 *            [--close-after N] [--cancel-after N] [--cancel-one-after N]
 *       N POSTs at once through hr_backend; after --close-after completions
 *       the client is closed (the rest answer "cancelled"); after
 *       --cancel-after completions every outstanding request is cancelled
 *       (their callbacks must not run); after --cancel-one-after completions,
 *       only the first outstanding one is.
 *   call KIND [--count N] [--loops N] [--client ID] [--user U] [--channel C]
 *            [--method M] [--data JSON] [--transport T] [--remote-addr A]
 *            [--header "Name: value"]... [--close-after N]
 *       N proxy calls of KIND (connect, refresh, subscribe, publish, rpc)
 *       through hr_proxy_client; --header lines are the client's request
 *       headers (filtered by HERALD_PROXY_HEADERS).
 *   events N [--threads K] [--concurrent 1] [--flush-ms MS] [--backoff-ms MS]
 *            [--wait-ms MS] [--stop-after-sent M] [--stop-after-retries R]
 *       N herald.connect events emitted from K threads (before the loop
 *       runs; with --concurrent 1, while it delivers) to the webhook of
 *       HERALD_EVENTS_WEBHOOK_URL; runs until all are sent or dropped (or
 *       --wait-ms passes, M are sent or R deliveries failed), then stops
 *       the hub (what is left counts as dropped).
 */
#include "common/common.h"
#include "gateway/backend.h"
#include "gateway/config.h"
#include "gateway/events.h"
#include "common/log.h"
#include "gateway/proxy_call.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

extern char **environ;

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "herald-backend-tool: ");
    fprintf(stderr, fmt, arg ? arg : "");
    fprintf(stderr, "\n");
    exit(2);
}

/*---- Options ---------------------------------------------------------------*/

typedef struct opts {
    const char *url, *ca, *body, *kind;
    const char *client, *user, *channel, *method, *data, *transport, *remote_addr;
    const char *headers[64];
    int nheaders;
    long count, timeout_ms, max_inflight, max_queue, max_body, close_after, cancel_after;
    long cancel_one_after, body_size;
    long loops, threads, flush_ms, backoff_ms, wait_ms, stop_after_sent, stop_after_retries;
    long concurrent;
} opts;

static long num(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0)
        die("not a number: %s", s);
    return v;
}

static void parse(int argc, char **argv, int first, opts *o)
{
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            die("missing value for %s", a);
        const char *v = argv[++i];
#define STR(name, field)                                                                           \
    if (!strcmp(a, name)) {                                                                        \
        o->field = v;                                                                              \
        continue;                                                                                  \
    }
#define NUM(name, field)                                                                           \
    if (!strcmp(a, name)) {                                                                        \
        o->field = num(v);                                                                         \
        continue;                                                                                  \
    }
        STR("--ca", ca)
        STR("--body", body)
        STR("--client", client)
        STR("--user", user)
        STR("--channel", channel)
        STR("--method", method)
        STR("--data", data)
        STR("--transport", transport)
        STR("--remote-addr", remote_addr)
        NUM("--count", count)
        NUM("--timeout-ms", timeout_ms)
        NUM("--max-inflight", max_inflight)
        NUM("--max-queue", max_queue)
        NUM("--max-body", max_body)
        NUM("--close-after", close_after)
        NUM("--cancel-after", cancel_after)
        NUM("--cancel-one-after", cancel_one_after)
        NUM("--body-size", body_size)
        NUM("--loops", loops)
        NUM("--threads", threads)
        NUM("--flush-ms", flush_ms)
        NUM("--backoff-ms", backoff_ms)
        NUM("--wait-ms", wait_ms)
        NUM("--stop-after-sent", stop_after_sent)
        NUM("--stop-after-retries", stop_after_retries)
        NUM("--concurrent", concurrent)
        if (!strcmp(a, "--header")) {
            if (o->nheaders == 64)
                die("too many headers%s", NULL);
            o->headers[o->nheaders++] = v;
            continue;
        }
        die("unknown option %s", a);
    }
}

static long max_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Closes the loop; 1 when nothing was left open. */
static int loop_closed(uv_loop_t *uv)
{
    uv_run(uv, UV_RUN_DEFAULT);
    return uv_loop_close(uv) == 0;
}

static void print(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    puts(s);
    free(s);
    json_decref(o);
}

static void bump(json_t *counts, const char *key, json_int_t n)
{
    json_t *v = json_object_get(counts, key);
    json_object_set_new(counts, key, json_integer((v ? json_integer_value(v) : 0) + n));
}

/*---- post ------------------------------------------------------------------*/

typedef struct post_run post_run;

/* One request: its handle (NULL once done or cancelled) and the run. */
typedef struct post_slot {
    post_run *run;
    hr_backend_req *req;
} post_slot;

struct post_run {
    opts *o;
    hr_backend *b;
    post_slot *slots;
    long done, outstanding;
    json_t *status, *http, *bodies, *errors;
    long new_conns, max_elapsed_ms;
    int closed;
};

/* Cancels up to n requests still outstanding (the caller gave up on them). */
static void cancel_outstanding(post_run *run, long n)
{
    for (long i = 0; i < run->o->count && n > 0; i++)
        if (run->slots[i].req) {
            hr_backend_cancel(run->slots[i].req);
            run->slots[i].req = NULL;
            run->outstanding--;
            bump(run->status, "cancelled_by_caller", 1);
            n--;
        }
}

static void post_done(void *ud, const hr_backend_result *r)
{
    post_slot *slot = ud;
    post_run *run = slot->run;
    if (!slot->req)
        bump(run->status, "callback_after_cancel", 1); /* must never happen */
    slot->req = NULL;
    run->done++;
    run->outstanding--;
    bump(run->status, hr_backend_status_name(r->status), 1);
    run->new_conns += r->new_connections;
    if ((long)(r->elapsed_us / 1000) > run->max_elapsed_ms)
        run->max_elapsed_ms = (long)(r->elapsed_us / 1000);
    if (r->status == HR_BACKEND_OK) {
        char code[16];
        snprintf(code, sizeof(code), "%ld", r->http_status);
        bump(run->http, code, 1);
        if (json_object_size(run->bodies) < 5 || json_object_get(run->bodies, r->body)) {
            char key[201];
            snprintf(key, sizeof(key), "%.*s", (int)(r->body_len < 200 ? r->body_len : 200),
                     r->body);
            json_t *s = json_string(key);
            bump(run->bodies, s ? key : "(not utf-8)", 1);
            json_decref(s);
        }
    } else if (r->error && json_array_size(run->errors) < 5) {
        json_array_append_new(run->errors, json_string(r->error));
    }
    if (run->o->close_after && run->done == run->o->close_after && !run->closed) {
        run->closed = 1;
        hr_backend_close(run->b);
    }
    if (run->o->cancel_after && run->done == run->o->cancel_after)
        cancel_outstanding(run, run->o->count);
    if (run->o->cancel_one_after && run->done == run->o->cancel_one_after)
        cancel_outstanding(run, 1);
    if (!run->outstanding && !run->closed) {
        run->closed = 1;
        hr_backend_close(run->b);
    }
}

static int mode_post(opts *o)
{
    if (!o->count)
        o->count = 1;
    uv_loop_t uv;
    uv_loop_init(&uv);
    hr_backend_opts bo = {.timeout_ms = o->timeout_ms ? o->timeout_ms : 5000,
                          .max_inflight = o->max_inflight ? (int)o->max_inflight : 8,
                          .max_queue = o->max_queue >= 0 ? (int)o->max_queue : (int)o->count,
                          .max_body = o->max_body ? (size_t)o->max_body : 65536,
                          .ca_file = o->ca};
    post_run run = {.o = o,
                    .status = json_object(),
                    .http = json_object(),
                    .bodies = json_object(),
                    .errors = json_array()};
    run.b = hr_backend_new(&uv, &bo);
    if (!run.b)
        die("hr_backend_new failed%s", NULL);
    run.slots = hr_calloc((size_t)o->count, sizeof(*run.slots));
    json_t *refused = json_object();
    const char *body = o->body ? o->body : "{\"hello\":\"backend\"}";
    char *made = NULL;
    if (o->body_size >= 10) { /* {"pad":"xxx..."} of exactly body_size bytes */
        made = hr_malloc((size_t)o->body_size + 1);
        memset(made, 'x', (size_t)o->body_size);
        memcpy(made, "{\"pad\":\"", 8);
        memcpy(made + o->body_size - 2, "\"}", 2);
        made[o->body_size] = 0;
        body = made;
    }
    for (long i = 0; i < o->count; i++) {
        hr_backend_status why;
        run.slots[i].run = &run;
        run.slots[i].req = hr_backend_post(run.b, o->url, o->headers, (size_t)o->nheaders, body,
                                           strlen(body), post_done, &run.slots[i], &why);
        if (run.slots[i].req)
            run.outstanding++;
        else
            bump(refused, hr_backend_status_name(why), 1);
    }
    json_t *out = json_object();
    json_object_set_new(out, "inflight_after_post", json_integer(hr_backend_inflight(run.b)));
    json_object_set_new(out, "queued_after_post", json_integer(hr_backend_queued(run.b)));
    if (!run.outstanding) {
        run.closed = 1;
        hr_backend_close(run.b);
    }
    int clean = loop_closed(&uv);
    json_object_set_new(out, "posted", json_integer(o->count));
    json_object_set_new(out, "refused", refused);
    json_object_set_new(out, "callbacks", json_integer(run.done));
    json_object_set_new(out, "status", run.status);
    json_object_set_new(out, "http", run.http);
    json_object_set_new(out, "bodies", run.bodies);
    json_object_set_new(out, "errors", run.errors);
    json_object_set_new(out, "new_connections", json_integer(run.new_conns));
    json_object_set_new(out, "max_elapsed_ms", json_integer(run.max_elapsed_ms));
    json_object_set_new(out, "max_rss_kb", json_integer(max_rss_kb()));
    json_object_set_new(out, "clean", json_boolean(clean));
    print(out);
    free(run.slots);
    free(made);
    return clean ? 0 : 3;
}

/*---- call ------------------------------------------------------------------*/

typedef struct call_run {
    opts *o;
    hr_proxy_client *pc;
    long done, outstanding;
    json_t *answers, *outcomes;
    int closed;
} call_run;

static const char *outcome_name(hr_proxy_outcome o)
{
    static const char *const names[] = {"result", "error", "disconnect", "unavailable"};
    return (unsigned)o < 4 ? names[o] : "?";
}

static json_t *strings(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

/* Every field of the answer, as the gateway would see it. */
static json_t *answer_json(const hr_proxy_answer *a)
{
    json_t *o = json_object();
    json_object_set_new(o, "outcome", json_string(outcome_name(a->outcome)));
    if (a->user)
        json_object_set_new(o, "user", json_string(a->user));
    if (a->expire_at)
        json_object_set_new(o, "expire_at", json_integer(a->expire_at));
    if (a->info)
        json_object_set(o, "info", a->info);
    if (a->roles)
        json_object_set_new(o, "roles", strings(a->roles, a->nroles));
    if (a->channels)
        json_object_set_new(o, "channels", strings(a->channels, a->nchannels));
    if (a->expired)
        json_object_set_new(o, "expired", json_true());
    if (a->data)
        json_object_set(o, "data", a->data);
    if (a->code)
        json_object_set_new(o, "code", json_string(a->code));
    if (a->message)
        json_object_set_new(o, "message", json_string(a->message));
    if (a->close_code)
        json_object_set_new(o, "close_code", json_integer(a->close_code));
    if (a->reason)
        json_object_set_new(o, "reason", json_string(a->reason));
    if (a->why[0])
        json_object_set_new(o, "why", json_string(a->why));
    return o;
}

static void record(call_run *run, const hr_proxy_answer *a)
{
    bump(run->outcomes, outcome_name(a->outcome), 1);
    if (json_array_size(run->answers) < 20)
        json_array_append_new(run->answers, answer_json(a));
}

static void call_done(void *ud, hr_proxy_answer *a)
{
    call_run *run = ud;
    run->done++;
    run->outstanding--;
    record(run, a);
    if (run->o->close_after && run->done == run->o->close_after && !run->closed) {
        run->closed = 1;
        hr_proxy_client_close(run->pc);
    }
    if (!run->outstanding && !run->closed) {
        run->closed = 1;
        hr_proxy_client_close(run->pc);
    }
}

static int kind_of(const char *s)
{
    for (int k = 0; k < HR_PROXY_NKINDS; k++)
        if (!strcmp(s, hr_proxy_kind_name((hr_proxy_kind)k)))
            return k;
    die("unknown proxy kind %s", s);
    return -1;
}

static json_t *stats_json(const hr_proxy_stats *s)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "requests", (json_int_t)s->requests,
                     "results", (json_int_t)s->results, "refusals", (json_int_t)s->refusals,
                     "errors", (json_int_t)s->errors, "timeouts", (json_int_t)s->timeouts,
                     "rejected", (json_int_t)s->rejected, "latency_count",
                     (json_int_t)s->latency.count);
}

static int mode_call(opts *o, const hr_config *cfg)
{
    uv_loop_t uv;
    uv_loop_init(&uv);
    hr_counters *stats = hr_calloc(1, sizeof(*stats));
    call_run run = {.o = o, .answers = json_array(), .outcomes = json_object()};
    if (!o->count)
        o->count = 1;
    run.pc = hr_proxy_client_new(&uv, cfg, o->loops ? (unsigned)o->loops : 1, stats);
    if (!run.pc)
        die("hr_proxy_client_new failed%s", NULL);
    /* the client's request headers, "Name: value" */
    hr_header hdrs[64];
    char *copies[64];
    for (int i = 0; i < o->nheaders; i++) {
        copies[i] = hr_strdup(o->headers[i]);
        char *colon = strchr(copies[i], ':');
        if (!colon)
            die("a header needs a colon: %s", o->headers[i]);
        *colon = 0;
        hdrs[i] = (hr_header){copies[i], colon + 1 + strspn(colon + 1, " ")};
    }
    hr_proxy_headers *h = hr_proxy_headers_build(cfg->proxy_headers, cfg->nproxy_headers, hdrs,
                                                 (size_t)o->nheaders, cfg->proxy_key);
    json_t *data = NULL;
    if (o->data && !(data = json_loads(o->data, JSON_DECODE_ANY, NULL)))
        die("--data is not JSON: %s", o->data);
    hr_proxy_request rq = {.kind = (hr_proxy_kind)kind_of(o->kind),
                           .client = o->client ? o->client : "test.1",
                           .user = o->user,
                           .transport = o->transport ? o->transport : "websocket",
                           .remote_addr = o->remote_addr ? o->remote_addr : "127.0.0.1",
                           .channel = o->channel,
                           .method = o->method,
                           .data = data};
    long immediate = 0;
    for (long i = 0; i < o->count; i++) {
        hr_proxy_answer now;
        if (hr_proxy_call_start(run.pc, &rq, h, call_done, &run, &now)) {
            run.outstanding++;
        } else {
            immediate++;
            record(&run, &now);
            hr_proxy_answer_clear(&now);
        }
    }
    if (!run.outstanding) {
        run.closed = 1;
        hr_proxy_client_close(run.pc);
    }
    int clean = loop_closed(&uv);
    json_t *out = json_object();
    json_object_set_new(out, "answers", run.answers);
    json_object_set_new(out, "outcomes", run.outcomes);
    json_object_set_new(out, "immediate", json_integer(immediate));
    json_object_set_new(out, "stats", stats_json(&stats->proxy[rq.kind]));
    json_object_set_new(out, "headers", strings((char **)h->line, h->n));
    json_object_set_new(out, "clean", json_boolean(clean));
    print(out);
    json_decref(data);
    free(h);
    for (int i = 0; i < o->nheaders; i++)
        free(copies[i]);
    free(stats);
    return clean ? 0 : 3;
}

/*---- events ----------------------------------------------------------------*/

typedef struct events_run {
    opts *o;
    hr_events *ev;
    hr_counters *stats;   /* the delivery loop's */
    hr_counters *emitter; /* the emitting threads' drops (HR_INC: atomic adds) */
    uv_timer_t check;
    uint64_t deadline_ms;
    long emitted;
    long nthreads;
    atomic_long threads_done;
    int stopped;
} events_run;

typedef struct emitter {
    events_run *run;
    long from, to;
} emitter;

static void *emit_thread(void *arg)
{
    emitter *e = arg;
    for (long i = e->from; i < e->to; i++) {
        char client[32];
        snprintf(client, sizeof(client), "t.%ld", i);
        hr_events_emit(e->run->ev, hr_event_connect(client, "u", "websocket", "t"),
                       e->run->emitter);
    }
    atomic_fetch_add(&e->run->threads_done, 1);
    return NULL;
}

static unsigned long long get(atomic_ullong *a)
{
    return atomic_load(a);
}

/* Polls the counters (a tool's loop, not a test's sleep): done when every
 * emitted event is sent or dropped, --stop-after-sent reached, or the
 * deadline passed. */
static void on_check(uv_timer_t *t)
{
    events_run *run = t->data;
    if (atomic_load(&run->threads_done) < run->nthreads)
        return;
    unsigned long long sent = get(&run->stats->events_sent),
                       dropped =
                           get(&run->stats->events_dropped) + get(&run->emitter->events_dropped);
    int done = sent + dropped >= (unsigned long long)run->emitted ||
               (run->o->stop_after_sent && sent >= (unsigned long long)run->o->stop_after_sent) ||
               (run->o->stop_after_retries && get(&run->stats->events_retries) >=
                                                  (unsigned long long)run->o->stop_after_retries) ||
               hr_now_ms() > run->deadline_ms;
    if (done && !run->stopped) {
        run->stopped = 1;
        hr_events_stop(run->ev);
        uv_close((uv_handle_t *)t, NULL);
    }
}

static int mode_events(opts *o, const hr_config *cfg)
{
    uv_loop_t uv;
    uv_loop_init(&uv);
    if (!cfg->events_webhook_url)
        die("set HERALD_EVENTS_WEBHOOK_URL%s", NULL);
    events_run run = {.o = o};
    run.stats = hr_calloc(1, sizeof(*run.stats));
    run.emitter = hr_calloc(1, sizeof(*run.emitter));
    hr_events_opts eo = {.batch = cfg->events_batch,
                         .queue = cfg->events_queue,
                         .flush_ms = (int)o->flush_ms,
                         .backoff_min_ms = (int)o->backoff_ms,
                         .backoff_max_ms = o->backoff_ms ? (int)o->backoff_ms * 4 : 0};
    run.ev = hr_events_new(&eo);
    hr_events_add_webhook(run.ev, cfg->events_webhook_url, cfg->proxy_key,
                          cfg->proxy_timeout * 1000L, cfg->proxy_ca_file);
    if (hr_events_start(run.ev, &uv, run.stats) < 0)
        die("hr_events_start failed%s", NULL);
    run.emitted = o->count;
    run.deadline_ms = hr_now_ms() + (uint64_t)(o->wait_ms ? o->wait_ms : 30000);
    long nthreads = o->threads ? o->threads : 1;
    pthread_t th[16];
    emitter em[16];
    if (nthreads > 16)
        die("at most 16 threads%s", NULL);
    run.nthreads = nthreads;
    for (long i = 0; i < nthreads; i++) {
        em[i] = (emitter){&run, o->count * i / nthreads, o->count * (i + 1) / nthreads};
        pthread_create(&th[i], NULL, emit_thread, &em[i]);
    }
    if (!o->concurrent) /* everything is queued before delivery starts */
        for (long i = 0; i < nthreads; i++)
            pthread_join(th[i], NULL);
    uv_timer_init(&uv, &run.check);
    run.check.data = &run;
    uv_timer_start(&run.check, on_check, 5, 5);
    int clean = loop_closed(&uv);
    if (o->concurrent)
        for (long i = 0; i < nthreads; i++)
            pthread_join(th[i], NULL);
    json_t *out =
        json_pack("{s:I,s:I,s:I,s:I,s:I,s:b}", "emitted", (json_int_t)run.emitted, "sent",
                  (json_int_t)get(&run.stats->events_sent), "dropped",
                  (json_int_t)(get(&run.stats->events_dropped) + get(&run.emitter->events_dropped)),
                  "dropped_by_emitters", (json_int_t)get(&run.emitter->events_dropped), "retries",
                  (json_int_t)get(&run.stats->events_retries), "clean", clean);
    print(out);
    hr_events_free(run.ev);
    free(run.stats);
    free(run.emitter);
    return clean ? 0 : 3;
}

int main(int argc, char **argv)
{
    opts o = {.max_queue = -1}; /* post: every request may wait unless told */
    hr_alloc_init();
    hr_log_init(HR_LOG_TEXT, HR_LOG_INFO, "tool");
    if (argc < 3)
        die("usage: herald-backend-tool post URL | call KIND | events N [options]%s", NULL);
    const char *mode = argv[1];
    hr_config cfg;
    char err[512];
    /* HERALD_* from the environment, as herald reads them */
    hr_config_defaults(&cfg);
    if (hr_config_load(&cfg, 0, NULL, environ, err, sizeof(err)))
        die("%s", err);
    int rc;
    if (!strcmp(mode, "post")) {
        o.url = argv[2];
        parse(argc, argv, 3, &o);
        rc = mode_post(&o);
    } else if (!strcmp(mode, "call")) {
        o.kind = argv[2];
        parse(argc, argv, 3, &o);
        rc = mode_call(&o, &cfg);
    } else if (!strcmp(mode, "events")) {
        o.count = num(argv[2]);
        parse(argc, argv, 3, &o);
        rc = mode_events(&o, &cfg);
    } else {
        die("unknown mode %s", mode);
        rc = 2;
    }
    hr_config_clear(&cfg);
    return rc;
}
