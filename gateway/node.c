/*
 * node.c - the process-wide part of the gateway (see node.h): start-up and
 * tear-down, the workers and what their loops run around the server's
 * hooks, the channel layer's home, revocations, and the posts that cross
 * threads.
 */
#include "gateway/node.h"
#include "common/log.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void home_maybe_finish(hr_node *node);

/*---- Cross-thread posts ----------------------------------------------------*/

/* A publication for one loop's subscribers (p: one reference to a
 * chan_msg, dropped after delivery). */
static void run_deliver(hr_loop *l, void *p, int code)
{
    (void)code;
    hr_worker *w = hr_worker_of(l);
    chan_deliver(w->node->layer, w->index, p);
    chan_msg_unref(p);
}

static void discard_msg(void *p)
{
    chan_msg_unref(p);
}

static const hr_post_type post_deliver = {"deliver", run_deliver, discard_msg};

/* chan_host.post: a publication for one loop's subscribers. */
static void post_publication(void *ud, unsigned thread, chan_msg *m)
{
    hr_node *node = ud;
    hr_loop_post(&node->workers[thread]->loop, &post_deliver, 0, m);
}

/* The channel layer's work for one loop (p: a chan_task). */
static void run_call(hr_loop *l, void *p, int code)
{
    (void)l, (void)code;
    chan_task *t = p;
    t->run(t);
}

static void discard_call(void *p)
{
    chan_task *t = p;
    t->discard(t);
}

static const hr_post_type post_call_type = {"call", run_call, discard_call};

/* chan_host.call: the channel layer's work for one loop. */
static void post_call(void *ud, unsigned thread, chan_task *t)
{
    hr_node *node = ud;
    hr_loop_post(&node->workers[thread]->loop, &post_call_type, 0, t);
}

/* A user-store completion, from a worker thread to the submitting loop. */
static void run_auth_done(hr_loop *l, void *p, int code)
{
    (void)l, (void)code;
    auth_job_finish(p);
}

static void discard_auth_done(void *p)
{
    auth_job_discard(p);
}

static const hr_post_type post_auth_type = {"auth_done", run_auth_done, discard_auth_done};

static void post_auth_done(void *ud, auth_job *j)
{
    hr_worker *w = ud;
    hr_loop_post(&w->loop, &post_auth_type, 0, j);
}

/* Closes a user's connections on one loop (p: the malloc'ed user id). */
static void run_disconnect(hr_loop *l, void *p, int code)
{
    hr_worker *w = hr_worker_of(l);
    w->node->server->disconnect(w, p, code);
    free(p);
}

static const hr_post_type post_disconnect = {"disconnect", run_disconnect, free};

void hr_node_disconnect_user(hr_node *node, const char *user_id, int code)
{
    for (unsigned i = 0; i < node->nworkers; i++)
        hr_loop_post(&node->workers[i]->loop, &post_disconnect, code, hr_strdup(user_id));
}

/* A membership control, copied for one loop. */
typedef struct control_copy {
    chan_control c;
    char *user, *channel;
} control_copy;

static void control_copy_free(void *p)
{
    control_copy *cc = p;
    free(cc->user);
    free(cc->channel);
    free(cc);
}

static void run_control(hr_loop *l, void *p, int code)
{
    (void)code;
    hr_worker *w = hr_worker_of(l);
    control_copy *cc = p;
    w->node->server->member(w, &cc->c);
    control_copy_free(cc);
}

static const hr_post_type post_control = {"control", run_control, control_copy_free};

static void run_shutdown(hr_loop *l, void *p, int code)
{
    (void)p, (void)code;
    hr_loop_shutdown(l);
}

static const hr_post_type post_shutdown = {"shutdown", run_shutdown, NULL};

/* To loop 0: another loop has stopped. */
static void run_loop_stopped(hr_loop *l, void *p, int code)
{
    (void)p, (void)code;
    home_maybe_finish(hr_worker_of(l)->node);
}

static const hr_post_type post_loop_stopped = {"loop_stopped", run_loop_stopped, NULL};

/* Loops that failed to start are NULL (hr_node_destroy after a failed
 * start shuts down the ones that did). */
void hr_node_shutdown(hr_node *node)
{
    if (atomic_exchange(&node->shutting_down, 1))
        return;
    for (unsigned i = 0; i < node->nworkers; i++)
        if (node->workers[i])
            hr_loop_post(&node->workers[i]->loop, &post_shutdown, 0, NULL);
}

void hr_node_client_id(const hr_node *node, uint64_t n, char *buf, size_t len)
{
    snprintf(buf, len, "%s.%llu", node->cfg->node_id, (unsigned long long)n);
}

/*---- Revocations and control messages --------------------------------------*/

/* chan_host.control: a control message for this node, from any node.
 * Revocations are recorded once per node; the rest is each loop's. */
static void revocations_loaded(void *ud, auth_status st, const auth_revocation *list, size_t n);

/* Reads every revocation from the store after the control topic was away
 * (what it carried meanwhile is lost). On loop 0. */
static void reload_revocations(hr_node *node)
{
    node->reload_running = 1;
    node->reload_again = 0;
    auth_list_revocations(node->users, &node->workers[0]->auth_to, revocations_loaded, node);
}

static void reload_timer(uv_timer_t *t)
{
    hr_node *node = t->data;
    if (!node->reload_running)
        reload_revocations(node);
}

/* A reload that failed (the store's connection was the dead one, Redis is
 * still starting...) is tried again with backoff, 250 ms doubling to 5 s,
 * until it succeeds: a user deleted on another node during the outage
 * must not keep their sockets here. */
static void revocations_loaded(void *ud, auth_status st, const auth_revocation *list, size_t n)
{
    hr_node *node = ud;
    node->reload_running = 0;
    if (node->workers[0]->loop.stopped)
        return;
    if (st != AUTH_OK) {
        unsigned shift = node->reload_attempt < 5 ? node->reload_attempt : 5;
        if (node->reload_attempt++ == 0)
            hr_warn("revoke",
                    "could not reload revocations after the Redis outage (%s); "
                    "retrying, /readyz says 503 until then",
                    st == AUTH_UNAVAILABLE ? "store unreachable" : "store error");
        uint64_t ms = 250u << shift;
        uv_timer_start(&node->reload, reload_timer, ms > 5000 ? 5000 : ms, 0);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (hr_creds_revoke(node->creds, list[i].user_id, list[i].at))
            hr_node_disconnect_user(node, list[i].user_id, 4003);
    if (node->reload_again) { /* the topic went away again meanwhile */
        reload_revocations(node);
        return;
    }
    if (node->reload_attempt)
        hr_info("revoke", "revocations reloaded after %u failed attempt(s)", node->reload_attempt);
    node->reload_attempt = 0;
    atomic_store(&node->revocations_stale, 0);
}

static void on_control(void *ud, const chan_control *c)
{
    hr_node *node = ud;
    if (c->op == CHAN_CTL_RESYNC) { /* on loop 0, the layer's home */
        atomic_store(&node->revocations_stale, 1);
        if (node->reload_running)
            node->reload_again = 1;
        else if (!uv_is_active((uv_handle_t *)&node->reload))
            reload_revocations(node);
        return;
    }
    if (!c->user)
        return;
    if (c->op == CHAN_CTL_REVOKE) {
        hr_creds_revoke(node->creds, c->user, c->at);
        hr_node_disconnect_user(node, c->user, 4003);
        return;
    }
    if (c->op == CHAN_CTL_DISCONNECT) {
        hr_node_disconnect_user(node, c->user, c->code ? c->code : 4003);
        return;
    }
    if (!c->channel)
        return;
    for (unsigned i = 0; i < node->nworkers; i++) {
        control_copy *cc = hr_calloc(1, sizeof(*cc));
        cc->user = hr_strdup(c->user);
        cc->channel = hr_strdup(c->channel);
        cc->c = (chan_control){.op = c->op, .user = cc->user, .channel = cc->channel};
        hr_loop_post(&node->workers[i]->loop, &post_control, 0, cc);
    }
}

/*---- What the loops run ----------------------------------------------------*/

static void on_signal(uv_signal_t *s, int sig)
{
    (void)sig;
    hr_node_shutdown(s->data);
}

/* Loop 0 is the channel layer's home: the layer starts there (before the
 * loop serves), and closes once the last loop has stopped. Every loop then
 * starts its own part of the layer (the Redis layer: its command
 * connections). */
static void loop_started(hr_loop *l)
{
    hr_worker *w = hr_worker_of(l);
    hr_node *node = w->node;
    if (w->index == 0) {
        if (chan_layer_start(node->layer, &l->uv) == 0)
            node->layer_started = 1;
        else
            hr_error("channels", "the %s channel layer did not start",
                     chan_layer_name(node->layer));
    }
    chan_layer_thread_start(node->layer, w->index, &l->uv);
}

static void loop_flush(hr_loop *l)
{
    hr_worker *w = hr_worker_of(l);
    w->node->server->flush(w);
}

static void loop_shutdown(hr_loop *l)
{
    hr_worker *w = hr_worker_of(l);
    if (w->index == 0)
        hr_info("shutdown", "closing %u connection(s) on loop 0", w->node->server->clients(w));
    w->node->server->shutdown(w);
}

/* A loop also waits for the channel layer's answers to its requests, so
 * none is lost with the loop (the grace timer bounds the wait). */
static int loop_busy(hr_loop *l)
{
    hr_worker *w = hr_worker_of(l);
    return w->node->server->clients(w) > 0 || chan_layer_inflight(w->node->layer, w->index) > 0;
}

static void close_handle(uv_handle_t *h)
{
    if (h->loop && !uv_is_closing(h))
        uv_close(h, NULL);
}

/* Posts to loop 0 are served until the last other loop has stopped; then
 * the layer closes its connections and loop 0's inbox closes. */
static void home_maybe_finish(hr_node *node)
{
    hr_worker *home = node->workers[0];
    if (!home->loop.stopped || node->home_finished || atomic_load(&node->loops_live) != 0)
        return;
    node->home_finished = 1;
    if (node->layer_started)
        chan_layer_stop(node->layer);
    hr_loop_close_inbox(&home->loop);
}

static void loop_stopped(hr_loop *l)
{
    hr_worker *w = hr_worker_of(l);
    hr_node *node = w->node;
    node->server->worker_stop(w);
    chan_layer_thread_stop(node->layer, w->index);
    atomic_fetch_sub(&node->loops_live, 1);
    if (w->index == 0) {
        if (node->events) /* the other loops have stopped: nothing emits any more */
            hr_events_stop(node->events);
        close_handle((uv_handle_t *)&node->sigterm);
        close_handle((uv_handle_t *)&node->sigint);
        close_handle((uv_handle_t *)&node->reload);
        home_maybe_finish(node);
    } else {
        hr_loop_close_inbox(l);
        if (l->started) /* loop 0 runs until every started loop has stopped */
            hr_loop_post(&node->workers[0]->loop, &post_loop_stopped, 0, NULL);
    }
}

/* Loop 0's own handles: the signals and the revocation reload timer, none
 * of which may keep a stopped loop alive. */
static void home_handles(hr_node *node)
{
    uv_loop_t *uv = &node->workers[0]->loop.uv;
    uv_timer_init(uv, &node->reload);
    node->reload.data = node;
    uv_unref((uv_handle_t *)&node->reload);
    uv_signal_init(uv, &node->sigterm);
    uv_signal_init(uv, &node->sigint);
    node->sigterm.data = node->sigint.data = node;
    uv_signal_start(&node->sigterm, on_signal, SIGTERM);
    uv_signal_start(&node->sigint, on_signal, SIGINT);
    uv_unref((uv_handle_t *)&node->sigterm);
    uv_unref((uv_handle_t *)&node->sigint);
}

/*---- Start-up --------------------------------------------------------------*/

static void load_revocation(void *ud, const char *id, int64_t at)
{
    hr_creds_revoke(ud, id, at);
}

/* The user store: Redis when HERALD_REDIS_URL is set (every node sees the
 * same users), else the SQLite file. Revocations are loaded once here;
 * later ones arrive through hr_creds_revoke. Start-up only: blocking. */
static int start_users(hr_node *node, char *err, size_t errlen)
{
    const hr_config *cfg = node->cfg;
    auth_service_config sc = {
        .store = hr_config_store(cfg),
        .target = hr_config_store_target(cfg),
        .prefix = cfg->redis_prefix,
        .workers = cfg->auth_workers,
    };
    /* an address may fail 4x as often as one username (NAT, shared hosts) */
    int addr_max = cfg->login_max_failures > INT_MAX / 4 ? INT_MAX : cfg->login_max_failures * 4;
    int64_t window_ms = (int64_t)cfg->login_window * 1000;
    node->logins = auth_throttle_new(cfg->login_max_failures, window_ms, 100000);
    node->login_addrs = auth_throttle_new(addr_max, window_ms, 100000);
    auth_store *st = sc.store->open(sc.target, sc.prefix, err, errlen);
    if (!st)
        return -1;
    auth_status rc = sc.store->init(st, err, errlen);
    if (rc == AUTH_OK)
        rc = sc.store->list_revoked(st, load_revocation, node->creds);
    sc.store->close(st);
    if (rc != AUTH_OK) {
        if (!err[0])
            snprintf(err, errlen, "cannot read revocations from the %s store", sc.store->name);
        return -1;
    }
    node->users = auth_service_new(&sc, err, errlen);
    return node->users ? 0 : -1;
}

/* The namespaces' channel options, for the publish function the Redis
 * layer loads into Redis (it assigns offsets for backends too). */
static chan_layer *redis_layer(hr_node *node, const chan_host *host, char *err, size_t errlen)
{
    const hr_config *cfg = node->cfg;
    const char **names = hr_calloc(cfg->nnamespaces ? cfg->nnamespaces : 1, sizeof(*names));
    chan_opts *opts = hr_calloc(cfg->nnamespaces ? cfg->nnamespaces : 1, sizeof(*opts));
    for (size_t i = 0; i < cfg->nnamespaces; i++) {
        names[i] = cfg->namespaces[i].name ? cfg->namespaces[i].name : "";
        opts[i] = hr_chan_opts(&cfg->namespaces[i]);
    }
    chan_django_config dj = {
        .mode = cfg->django_channels,
        .prefix = cfg->django_prefix,
        .group_expiry = cfg->django_group_expiry,
        .expiry = cfg->django_expiry,
        .capacity = cfg->django_capacity,
        .max_message = cfg->max_body, /* what a REST publish may carry */
    };
    /* The control messages' secrets: HERALD_CLUSTER_SECRET, else the HS
     * secrets every node already shares (the primary signs; the rotation
     * keys of HERALD_JWT_KEYS verify, so nodes mid-rotation understand each
     * other). main.c refuses cluster mode with neither. */
    const char **secrets = hr_calloc(cfg->ncluster_secrets + cfg->njwt_keys + 1, sizeof(*secrets));
    size_t nsecrets = 0;
    for (size_t i = 0; i < cfg->ncluster_secrets; i++)
        secrets[nsecrets++] = cfg->cluster_secrets[i];
    if (!nsecrets && cfg->jwt_secret) {
        secrets[nsecrets++] = cfg->jwt_secret;
        for (size_t i = 0; !cfg->jwt_public_key && i < cfg->njwt_keys; i++) {
            const char *colon = strchr(cfg->jwt_keys[i], ':');
            if (colon && colon[1])
                secrets[nsecrets++] = colon + 1;
        }
    }
    chan_redis_config rc = {
        .control_secrets = secrets,
        .ncontrol_secrets = nsecrets,
        .urls = cfg->redis_url,
        .prefix = cfg->redis_prefix,
        .node_id = cfg->node_id,
        .nnamespaces = cfg->nnamespaces,
        .ns_names = names,
        .ns_opts = opts,
        .presence_ttl = cfg->presence_ttl,
        .django = cfg->django_channels ? &dj : NULL,
    };
    chan_layer *l = chan_redis_new(host, &rc, err, errlen);
    free(secrets);
    free(names);
    free(opts);
    return l;
}

/* chan_host.log: the channel layer's lines, in the configured format. */
static void layer_log(void *ud, int level, const char *event, const char *msg)
{
    (void)ud;
    hr_log(level, event, "%s", msg);
}

/* chan_host.occupancy: herald.channel.occupied / vacated. The hub is
 * made after the layer; until then (and after it is freed) there is
 * nobody to tell. */
static void on_occupancy(void *ud, const char *channel, int occupied)
{
    hr_node *node = ud;
    /* any thread: the counters are atomics, loop 0's count the drops */
    if (node->events)
        hr_events_emit(node->events, hr_event_channel(occupied, channel),
                       node->workers ? &node->workers[0]->stats : NULL);
}

/* The channel layer: Redis in cluster mode, else in-process. */
static int start_layer(hr_node *node)
{
    char err[256] = "";
    chan_host host = {
        .nthreads = node->nworkers,
        .post = post_publication,
        .call = post_call,
        .control = on_control,
        .log = layer_log,
        .occupancy =
            node->cfg->events_webhook_url || node->cfg->events_django_channel ? on_occupancy : NULL,
        .sub = node->server->sub,
        .ud = node,
    };
    node->layer =
        node->cfg->redis_url ? redis_layer(node, &host, err, sizeof(err)) : chan_local_new(&host);
    if (!node->layer) {
        hr_error("config", "%s", err);
        return -1;
    }
    return 0;
}

/*---- Lifecycle events (SPEC §8) ------------------------------------------------*/

/* The hub's Django Channels destination: each event of a batch is sent to
 * the channel as channel_layer.send() would; the batch is confirmed when
 * Redis took all of them, else retried whole (at least once). Replies come
 * back on loop 0, the hub's delivery loop. */
typedef struct dj_dest {
    chan_layer *layer;
    const char *target; /* cfg->events_django_channel */
    struct dj_batch *inflight;
} dj_dest;

typedef struct dj_batch {
    dj_dest *d; /* NULL once the destination closed: the replies are let go */
    size_t waiting;
    int failed;
    hr_events_done_fn done;
    void *token;
} dj_batch;

static void dj_event_sent(void *ud, int status)
{
    dj_batch *bt = ud;
    if (status < 0)
        bt->failed = 1;
    if (--bt->waiting)
        return;
    if (bt->d) {
        bt->d->inflight = NULL;
        bt->done(bt->token, bt->failed ? HR_EVENTS_RETRY : HR_EVENTS_DELIVERED);
    }
    free(bt);
}

static void dj_dest_deliver(void *ud, json_t *const *events, size_t n, hr_events_done_fn done,
                            void *token)
{
    dj_dest *d = ud;
    dj_batch *bt = hr_calloc(1, sizeof(*bt));
    *bt = (dj_batch){d, n + 1, 0, done, token};
    d->inflight = bt;
    for (size_t i = 0; i < n; i++) {
        char *js = json_dumps(events[i], JSON_COMPACT);
        chan_django_send(d->layer, d->target, js, strlen(js), dj_event_sent, bt);
        free(js);
    }
    dj_event_sent(bt, 0); /* the +1: done runs once every send answered */
}

static void dj_dest_close(void *ud)
{
    dj_dest *d = ud;
    if (d->inflight)
        d->inflight->d = NULL;
    free(d);
}

static const hr_events_dest_ops dj_dest_ops = {
    .name = "django",
    .deliver = dj_dest_deliver,
    .close = dj_dest_close,
};

/* The hub, with its destinations, when any is configured. */
static int start_events(hr_node *node)
{
    const hr_config *cfg = node->cfg;
    if (!cfg->events_webhook_url && !cfg->events_django_channel)
        return 0;
    hr_events_opts o = {.batch = cfg->events_batch, .queue = cfg->events_queue};
    node->events = hr_events_new(&o);
    if (cfg->events_webhook_url &&
        hr_events_add_webhook(node->events, cfg->events_webhook_url, cfg->proxy_key,
                              (long)cfg->proxy_timeout * 1000, cfg->proxy_ca_file) < 0)
        return -1;
    if (cfg->events_django_channel) {
        dj_dest *d = hr_calloc(1, sizeof(*d));
        *d = (dj_dest){node->layer, cfg->events_django_channel, NULL};
        if (hr_events_add(node->events, &dj_dest_ops, d) < 0)
            return -1;
    }
    return hr_events_start(node->events, &node->workers[0]->loop.uv, &node->workers[0]->stats);
}

/* --threads 0 (the default) means one loop per online core. */
static unsigned loop_count(const hr_config *cfg)
{
    long n = cfg->threads > 0 ? cfg->threads : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    return n > CHAN_MAX_THREADS ? CHAN_MAX_THREADS : (unsigned)n;
}

/* A worker: its loop, then the server's part of it. NULL (logged) on
 * failure, with what was made left in node->workers for hr_node_destroy. */
static hr_worker *worker_new(hr_node *node, unsigned index)
{
    hr_worker *w = hr_calloc(1, sizeof(*w));
    node->workers[index] = w;
    w->node = node;
    w->index = index;
    w->auth_to = (auth_reply_to){post_auth_done, w};
    if (index == 0)
        node->port = node->cfg->listen_port;
    if (hr_loop_init(&w->loop, index, node->cfg, &node->port, &node->handlers, &w->stats) < 0 ||
        node->server->worker_init(w) < 0)
        return NULL;
    return w;
}

static int start_workers(hr_node *node)
{
    node->nworkers = loop_count(node->cfg);
    node->workers = hr_calloc(node->nworkers, sizeof(*node->workers));
    if (start_layer(node) < 0)
        return -1;
    for (unsigned i = 0; i < node->nworkers; i++)
        if (!worker_new(node, i))
            return -1;
    home_handles(node);
    if (start_events(node) < 0)
        return -1;
    atomic_store(&node->loops_live, node->nworkers);
    /* loop 0 runs on the main thread in hr_node_run */
    for (unsigned i = 1; i < node->nworkers; i++)
        if (hr_loop_start_thread(&node->workers[i]->loop) < 0)
            return -1;
    return 0;
}

int hr_node_init(hr_node *node, const hr_config *cfg, const hr_server_hooks *server)
{
    char err[256] = "";

    memset(node, 0, sizeof(*node));
    node->cfg = cfg;
    node->server = server;
    node->handlers = (hr_loop_handlers){
        .callback = server->callback,
        .pss_size = server->pss_size,
        .rx_buffer = server->rx_buffer,
        .tx_packet = server->tx_packet,
        .extensions = server->extensions,
        .started = loop_started,
        .flush = loop_flush,
        .shutdown = loop_shutdown,
        .busy = loop_busy,
        .stopped = loop_stopped,
    };
    node->creds = hr_creds_new(cfg, &node->jwt);
    atomic_init(&node->next_client, 0);
    atomic_init(&node->shutting_down, 0);
    signal(SIGPIPE, SIG_IGN);
    if (hr_netmasks_parse(cfg->trusted_proxies, cfg->ntrusted_proxies, &node->addrs.proxies, err,
                          sizeof(err)) < 0) {
        hr_error("config", "%s", err);
        return -1;
    }
    node->addrs.nproxies = cfg->ntrusted_proxies;
    node->addrs.v4bits = cfg->ipv4_prefix;
    node->addrs.v6bits = cfg->ipv6_prefix;
    node->conns_per_addr = hr_limit_new();
    node->conns_per_user = hr_limit_new();
    node->handshakes =
        auth_throttle_new(cfg->handshake_rate > 0 ? cfg->handshake_rate : 1, 1000, 100000);
    if (start_users(node, err, sizeof(err)) < 0) {
        hr_error("store", "%s", err);
        return -1;
    }
    auth_jwt_settings js;
    hr_config_jwt_settings(cfg, &js);
    if (auth_jwt_setup(&node->jwt, &js, err, sizeof(err)) < 0) {
        hr_error("config", "%s", err);
        return -1;
    }
    if (start_workers(node) < 0)
        return -1;
    hr_info("listening",
            "herald %s listening on %s:%d with %u loop thread(s) (channel layer %s, users in %s)",
            HERALD_VERSION, cfg->listen_host, node->port, node->nworkers,
            chan_layer_name(node->layer), cfg->redis_url ? "redis" : "sqlite");
    return 0;
}

int hr_node_run(hr_node *node)
{
    hr_loop_run(&node->workers[0]->loop);
    for (unsigned i = 1; i < node->nworkers; i++)
        if (node->workers[i])
            hr_loop_join(&node->workers[i]->loop);
    hr_info("stopped", "all connections closed, exiting");
    return 0;
}

/* Order matters. A failed start may have left loop threads running: they
 * are told to stop and joined first. Workers may still post completions to
 * the loops, so they stop before the loops are freed; loops free what was
 * left in their inboxes; the channel layer goes after every loop. */
void hr_node_destroy(hr_node *node)
{
    if (node->workers && !atomic_load(&node->shutting_down) && node->nworkers > 1) {
        hr_node_shutdown(node);
        for (unsigned i = 1; i < node->nworkers; i++)
            if (node->workers[i])
                hr_loop_join(&node->workers[i]->loop);
    }
    auth_service_free(node->users);
    node->users = NULL;
    for (unsigned i = 0; node->workers && i < node->nworkers; i++) {
        hr_worker *w = node->workers[i];
        if (!w)
            continue;
        hr_loop_fini(&w->loop);
        node->server->worker_free(w);
        free(w);
    }
    free(node->workers);
    node->workers = NULL;
    chan_layer_destroy(node->layer); /* answers (or drops) the event sends still out */
    hr_events_free(node->events);
    node->events = NULL;
    node->layer = NULL;
    auth_jwt_config_clear(&node->jwt);
    auth_throttle_free(node->logins);
    auth_throttle_free(node->login_addrs);
    hr_creds_free(node->creds);
    hr_limit_free(node->conns_per_addr);
    hr_limit_free(node->conns_per_user);
    auth_throttle_free(node->handshakes);
    free(node->addrs.proxies);
}
