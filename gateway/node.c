/*
 * node.c - the process-wide part of the gateway (see node.h): start-up and
 * tear-down, the loop threads, request credentials, revocations, and the
 * posts that cross threads.
 */
#include "gateway/node.h"
#include "common/log.h"
#include "gateway/ws.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*---- Cross-thread posts ----------------------------------------------------*/

void hr_post_discard(hr_post_kind kind, void *p)
{
    switch (kind) {
    case HR_POST_DELIVER:
        chan_msg_unref(p);
        break;
    case HR_POST_AUTH_DONE:
        auth_job_discard(p);
        break;
    case HR_POST_DISCONNECT:
        free(p);
        break;
    case HR_POST_SHUTDOWN:
    case HR_POST_LOOP_STOPPED:
        break;
    case HR_POST_CALL: {
        chan_task *t = p;
        t->discard(t);
        break;
    }
    case HR_POST_CONTROL:
        hr_control_free(p);
        break;
    }
}

void hr_control_free(hr_control *c)
{
    if (!c)
        return;
    free(c->user);
    free(c->channel);
    free(c);
}

/* The wake-up is sent under the inbox lock: the loop closes its async
 * handle under the same lock, so a post never touches a closed handle. */
void hr_node_post(hr_loop *loop, hr_post_kind kind, int code, void *p)
{
    hr_inbox *in = &loop->inbox;
    pthread_mutex_lock(&in->mu);
    if (loop->closing) {
        pthread_mutex_unlock(&in->mu);
        hr_post_discard(kind, p);
        return;
    }
    if (in->n == in->cap) {
        in->cap = in->cap ? in->cap * 2 : 64;
        in->items = hr_realloc(in->items, in->cap * sizeof(*in->items));
    }
    in->items[in->n++] = (hr_post){kind, code, p};
    if (in->n == 1)
        uv_async_send(&in->wake);
    pthread_mutex_unlock(&in->mu);
}

/* chan_host.post: a publication for one loop's subscribers. */
static void post_publication(void *ud, unsigned thread, chan_msg *m)
{
    hr_node *node = ud;
    hr_node_post(node->loops[thread], HR_POST_DELIVER, 0, m);
}

void hr_node_disconnect_user(hr_node *node, const char *user_id, int code)
{
    for (unsigned i = 0; i < node->nloops; i++)
        hr_node_post(node->loops[i], HR_POST_DISCONNECT, code, hr_strdup(user_id));
}

/* chan_host.call: the channel layer's work for one loop. */
static void post_call(void *ud, unsigned thread, chan_task *t)
{
    hr_node *node = ud;
    hr_node_post(node->loops[thread], HR_POST_CALL, 0, t);
}

/* chan_host.control: a control message for this node, from any node.
 * Revocations are recorded once per node; the rest is each loop's. */
static void revocations_loaded(void *ud, auth_status st, const auth_revocation *list, size_t n);

/* Reads every revocation from the store after the control topic was away
 * (what it carried meanwhile is lost). On loop 0. */
static void reload_revocations(hr_node *node)
{
    node->reload_running = 1;
    node->reload_again = 0;
    auth_list_revocations(node->users, &node->loops[0]->auth_to, revocations_loaded, node);
}

void hr_node_reload_revocations(uv_timer_t *t)
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
    hr_loop *home = node->loops[0];
    node->reload_running = 0;
    if (home->stopped)
        return;
    if (st != AUTH_OK) {
        unsigned shift = node->reload_attempt < 5 ? node->reload_attempt : 5;
        if (node->reload_attempt++ == 0)
            hr_warn("revoke",
                    "could not reload revocations after the Redis outage (%s); "
                    "retrying, /readyz says 503 until then",
                    st == AUTH_UNAVAILABLE ? "store unreachable" : "store error");
        uint64_t ms = 250u << shift;
        uv_timer_start(&home->reload, hr_node_reload_revocations, ms > 5000 ? 5000 : ms, 0);
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
        else if (!uv_is_active((uv_handle_t *)&node->loops[0]->reload))
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
    for (unsigned i = 0; i < node->nloops; i++) {
        hr_control *copy = hr_calloc(1, sizeof(*copy));
        copy->op = c->op;
        copy->user = hr_strdup(c->user);
        copy->channel = c->channel ? hr_strdup(c->channel) : NULL;
        if (!copy->channel) {
            hr_control_free(copy);
            return;
        }
        hr_node_post(node->loops[i], HR_POST_CONTROL, 0, copy);
    }
}

/* Loops that failed to start are NULL (hr_node_destroy after a failed
 * start shuts down the ones that did). */
void hr_node_shutdown(hr_node *node)
{
    if (atomic_exchange(&node->shutting_down, 1))
        return;
    for (unsigned i = 0; i < node->nloops; i++)
        if (node->loops[i])
            hr_node_post(node->loops[i], HR_POST_SHUTDOWN, 0, NULL);
}

void hr_node_client_id(const hr_node *node, uint64_t n, char *buf, size_t len)
{
    snprintf(buf, len, "%s.%llu", node->cfg->node_id, (unsigned long long)n);
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

/* The channel layer: Redis in cluster mode, else in-process. */
static int start_layer(hr_node *node)
{
    char err[256] = "";
    chan_host host = {
        .nthreads = node->nloops,
        .post = post_publication,
        .call = post_call,
        .control = on_control,
        .sub = {hr_ws_deliver, hr_ws_subscribed},
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

/* --threads 0 (the default) means one loop per online core. */
static unsigned loop_count(const hr_config *cfg)
{
    long n = cfg->threads > 0 ? cfg->threads : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    return n > CHAN_MAX_THREADS ? CHAN_MAX_THREADS : (unsigned)n;
}

static int start_loops(hr_node *node)
{
    node->nloops = loop_count(node->cfg);
    node->loops = hr_calloc(node->nloops, sizeof(*node->loops));
    if (start_layer(node) < 0)
        return -1;
    for (unsigned i = 0; i < node->nloops; i++)
        if (!(node->loops[i] = hr_loop_new(node, i)))
            return -1;
    atomic_store(&node->loops_live, node->nloops);
    /* loop 0 runs on the main thread in hr_node_run */
    for (unsigned i = 1; i < node->nloops; i++)
        if (hr_loop_start_thread(node->loops[i]) < 0)
            return -1;
    return 0;
}

int hr_node_init(hr_node *node, const hr_config *cfg)
{
    char err[256] = "";

    memset(node, 0, sizeof(*node));
    node->cfg = cfg;
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
    if (start_loops(node) < 0)
        return -1;
    hr_info("listening",
            "herald %s listening on %s:%d with %u loop thread(s) (channel layer %s, users in %s)",
            HERALD_VERSION, cfg->listen_host, node->port, node->nloops,
            chan_layer_name(node->layer), cfg->redis_url ? "redis" : "sqlite");
    return 0;
}

int hr_node_run(hr_node *node)
{
    hr_loop_run(node->loops[0]);
    for (unsigned i = 1; i < node->nloops; i++)
        if (node->loops[i] && node->loops[i]->started)
            pthread_join(node->loops[i]->thread, NULL);
    hr_info("stopped", "all connections closed, exiting");
    return 0;
}

/* Order matters. A failed start may have left loop threads running: they
 * are told to stop and joined first. Workers may still post completions to
 * the loops, so they stop before the loops are freed; loops free what was
 * left in their inboxes; the channel layer goes after every loop. */
void hr_node_destroy(hr_node *node)
{
    if (node->loops && !atomic_load(&node->shutting_down) && node->nloops > 1) {
        hr_node_shutdown(node);
        for (unsigned i = 1; i < node->nloops; i++)
            if (node->loops[i] && node->loops[i]->started)
                pthread_join(node->loops[i]->thread, NULL);
    }
    auth_service_free(node->users);
    node->users = NULL;
    for (unsigned i = 0; node->loops && i < node->nloops; i++)
        hr_loop_free(node->loops[i]);
    free(node->loops);
    node->loops = NULL;
    chan_layer_destroy(node->layer);
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
