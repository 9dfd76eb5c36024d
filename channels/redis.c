/*
 * redis.c - the channel layer of cluster mode (redis_internal.h says how its
 * files divide the work and which thread runs what): Redis pub/sub carries
 * every publication to every node with subscribers; Redis keeps history,
 * presence and the control channel. This file: the layer's creation, its
 * ops table, start and stop (the home's and each loop's), the periodic
 * tick, and the function library.
 */
#include "functions_lua.h" /* channels/functions.lua, embedded at build time */
#include "redis_internal.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Logs an error reply in Redis' own words (NOPERM, OOM, ...), at most once
 * a second: a command that fails for every request must not flood the
 * log. Any thread: the loop that wins the second logs. */
void rd_log_reply_error(redis_layer *L, const char *what, const redisReply *r)
{
    uint64_t now = hr_now_ms(), last = atomic_load(&L->err_logged_ms);
    if (!r || r->type != REDIS_REPLY_ERROR || (last && now - last < 1000) ||
        !atomic_compare_exchange_strong(&L->err_logged_ms, &last, now))
        return;
    chan_log(&L->base, CHAN_LOG_WARN, "redis_error", "redis %s failed: %s", what, r->str);
}

/*---- Shards ------------------------------------------------------------------*/

/* FNV-1a 64: stable across nodes, processes and languages (backends that
 * publish through Redis compute it too). Not for hash tables: a chosen
 * name can only pick its shard, which any name can. */
static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

shard *rd_shard_of(redis_layer *L, const char *channel)
{
    if (L->nshards == 1)
        return &L->shards[0];
    return &L->shards[fnv1a64(channel) % (uint64_t)L->nshards];
}

char *rd_topic(redis_layer *L, const char *channel)
{
    return rd_key(L, "ch", channel);
}

char *rd_key(redis_layer *L, const char *kind, const char *channel)
{
    if (L->mode == HR_REDIS_CLUSTER)
        return chan_tagged_key(L->prefix, kind, channel);
    return hr_redis_key(L->prefix, kind, channel);
}

const char *rd_publish_cmd(const redis_layer *L)
{
    return L->mode == HR_REDIS_CLUSTER ? "SPUBLISH" : "PUBLISH";
}

int rd_fcall(redis_layer *L, const char **argv, const char *fn, const char *channel, char **key)
{
    argv[0] = "FCALL";
    argv[1] = fn;
    *key = NULL;
    if (L->mode != HR_REDIS_CLUSTER || !channel) {
        argv[2] = "0";
        return 3;
    }
    /* The keys the function touches, declared: besides routing the call
     * to the channel's slot, this is what makes a slot migration safe.
     * While a slot is MIGRATING, its old owner runs the call when all of
     * them are still there, answers ASK when none is (the new owner runs
     * it) and TRYAGAIN in between; a key it does not know of would send
     * every call to the new owner at once, which would start a stream
     * there and make the migration of the old one fail (BUSYKEY). Both
     * names in one block (*key), freed by the caller. */
    int pres = fn == L->f_presence || fn == L->f_presence_set;
    char *k1 = rd_key(L, pres ? "presence" : "history-meta", channel);
    char *k2 = rd_key(L, pres ? "presence-exp" : "history", channel);
    size_t l1 = strlen(k1) + 1, l2 = strlen(k2) + 1;
    *key = hr_malloc(l1 + l2);
    memcpy(*key, k1, l1);
    memcpy(*key + l1, k2, l2);
    free(k1);
    free(k2);
    argv[2] = "2";
    argv[3] = *key;
    argv[4] = *key + l1;
    return 5;
}

void rd_pubs_free(chan_pub *p, size_t n)
{
    for (size_t i = 0; p && i < n; i++) {
        free(p[i].data);
        free(p[i].from);
    }
    free(p);
}

void rd_to_home(redis_layer *L, chan_task *t)
{
    L->base.host.call(L->base.host.ud, 0, t);
}

void rd_to_loop(redis_layer *L, unsigned thread, chan_task *t)
{
    L->base.host.call(L->base.host.ud, thread, t);
}

/* "<fn>_<name>" (malloc'ed). */
static char *fn_name(const char *fn, const char *name)
{
    size_t a = strlen(fn), b = strlen(name);
    char *s = hr_malloc(a + b + 2);
    memcpy(s, fn, a);
    s[a] = '_';
    memcpy(s + a + 1, name, b + 1);
    return s;
}

/* The home's periodic work (presence is refreshed by each loop for its
 * own subscribers, redis_loop.c). */
static void on_tick(uv_timer_t *t)
{
    redis_layer *L = t->data;
    unsigned every = (unsigned)(L->presence_ttl * 1000 / 3 / TICK_MS);
    /* history metas live at least 60 s: renewed at least every 20 s,
     * whatever presence_ttl says (and as often as presence entries) */
    unsigned touch_every = every && every < TOUCH_TICKS ? every : TOUCH_TICKS;
    rd_sample_pending(L);
    uint64_t now = hr_now_us();
    for (size_t i = 0; i < (size_t)L->base.host.nthreads * (size_t)L->nshards; i++)
        rd_own_expire(&L->own[i], now);
    if (++L->touch_ticks >= touch_every) {
        L->touch_ticks = 0;
        rd_touch_history(L);
    }
}

/*---- Life cycle ------------------------------------------------------------*/

static int redis_start(chan_layer *l, void *uv_loop)
{
    redis_layer *L = rd_layer(l);
    L->uv = uv_loop;
    dj_bridge_start(L->django, uv_loop);
    uv_timer_init(L->uv, &L->tick);
    L->tick.data = L;
    uv_timer_start(&L->tick, on_tick, TICK_MS, TICK_MS);
    for (int i = 0; i < L->nshards; i++) {
        uv_timer_init(L->uv, &L->shards[i].retry);
        L->shards[i].retry.data = &L->shards[i];
        uv_timer_init(L->uv, &L->shards[i].connect_timer);
        L->shards[i].connect_timer.data = &L->shards[i];
    }
    if (L->mode == HR_REDIS_CLUSTER) {
        rd_cluster_start(L);
    } else if (L->mode == HR_REDIS_SENTINEL) {
        rd_sentinels_start(L); /* each shard connects once its master is known */
    } else {
        for (int i = 0; i < L->nshards; i++)
            rd_shard_connect(&L->shards[i]);
    }
    return 0;
}

static void redis_stop(chan_layer *l)
{
    redis_layer *L = rd_layer(l);
    if (!L->uv || L->stopping)
        return;
    L->stopping = 1;
    dj_bridge_stop(L->django); /* while the first shard can still take its cleanup */
    uv_close((uv_handle_t *)&L->tick, NULL);
    for (int i = 0; i < L->nshards; i++)
        rd_shard_stop(&L->shards[i]);
    rd_cluster_stop(L);
}

static int redis_thread_start(chan_layer *l, unsigned thread, void *uv_loop)
{
    return rd_loop_start(&rd_layer(l)->loops[thread], uv_loop);
}

static void redis_thread_stop(chan_layer *l, unsigned thread)
{
    rd_loop_stop(&rd_layer(l)->loops[thread]);
}

static int redis_ready(chan_layer *l)
{
    redis_layer *L = rd_layer(l);
    return atomic_load(&L->shards_up) == L->nshards;
}

static void redis_stats(chan_layer *l, chan_stats *out)
{
    redis_layer *L = rd_layer(l);
    out->redis_shards = (uint64_t)L->nshards;
    out->redis_connected = (uint64_t)atomic_load(&L->shards_up);
    out->redis_reconnects = atomic_load(&L->reconnects);
    out->redis_pending_bytes = atomic_load(&L->pending_bytes);
    out->bad_messages = atomic_load(&L->bad_messages);
    out->control_rejected = atomic_load(&L->control_rejected);
    dj_bridge_stats(L->django, out);
}

static void redis_destroy(chan_layer *l)
{
    redis_layer *L = rd_layer(l);
    dj_bridge_free(L->django);
    for (int i = 0; i < L->nshards; i++) {
        chan_tab_clear(&L->shards[i].channels, rd_rchan_free);
        hr_redis_addr_clear(&L->shards[i].addr);
        pthread_mutex_destroy(&L->shards[i].addr_mu);
    }
    hr_redis_targets_free(L->targets, L->nshards);
    for (unsigned t = 0; t < L->base.host.nthreads; t++)
        rd_loop_free(&L->loops[t]);
    for (size_t i = 0; L->own && i < (size_t)L->base.host.nthreads * (size_t)L->nshards; i++)
        rd_own_clear(&L->own[i]);
    free(L->own);
    free(L->loops);
    free(L->shards);
    free(L->prefix);
    free(L->fn);
    free(L->f_publish);
    free(L->f_history);
    free(L->f_touch);
    free(L->f_init);
    free(L->f_presence);
    free(L->f_presence_set);
    free(L->library);
    free(L->control_topic);
    free(L->node_id);
    free(L->ctl_keys);
    hr_map_free(L->ctl_seen);
    free(L);
}

static void redis_django_forward(chan_layer *l, unsigned thread, const char *target,
                                 const char *channel, const char *user, const char *client,
                                 const char *data_json, size_t data_len)
{
    (void)thread;
    dj_forward(rd_layer(l)->django, target, channel, user, client, data_json, data_len);
}

static void redis_django_send(chan_layer *l, const char *target, const char *json, size_t len,
                              chan_status_cb cb, void *ud)
{
    dj_send(rd_layer(l)->django, target, json, len, cb, ud);
}

static const chan_layer_ops redis_ops = {
    .name = "redis",
    .start = redis_start,
    .stop = redis_stop,
    .thread_start = redis_thread_start,
    .thread_stop = redis_thread_stop,
    .publish = rd_publish,
    .channel_open = rd_channel_open,
    .channel_close = rd_channel_close,
    .subscribe = rd_subscribe,
    .unsubscribe = rd_unsubscribe,
    .history = rd_history,
    .presence = rd_presence,
    .control = rd_control,
    .django_forward = redis_django_forward,
    .django_send = redis_django_send,
    .ready = redis_ready,
    .stats = redis_stats,
    .destroy = redis_destroy,
};

/*---- The function library ----------------------------------------------------*/

/* Appends s as a Lua long-bracket-free quoted string. */
static void lua_quote(hr_buf *b, const char *s)
{
    hr_buf_append(b, "'", 1);
    for (; *s; s++) {
        if (*s == '\'' || *s == '\\')
            hr_buf_append(b, "\\", 1);
        hr_buf_append(b, s, 1);
    }
    hr_buf_append(b, "'", 1);
}

/* The library is generated from the configuration: the prefix and every
 * namespace's history settings (so the publish function a backend calls
 * keeps history exactly as the nodes do). Every node loads it with
 * FUNCTION LOAD REPLACE at each (re)connect; nodes of one deployment must
 * share their namespace configuration. */
static char *build_library(const char *fn, const char *prefix, int cluster,
                           const chan_redis_config *cfg)
{
    hr_buf b = {0};
    int have_default = 0;
    hr_buf_printf(&b, "#!lua name=%s\nlocal P = ", fn);
    lua_quote(&b, prefix);
    hr_buf_printf(&b, "\nlocal CLUSTER = %s\nlocal NS = {}\n", cluster ? "true" : "false");
    for (size_t i = 0; i < cfg->nnamespaces; i++) {
        hr_buf_printf(&b, "NS[");
        lua_quote(&b, cfg->ns_names[i]);
        hr_buf_printf(&b, "] = {%d, %d}\n", cfg->ns_opts[i].history_size,
                      cfg->ns_opts[i].history_ttl);
        have_default |= cfg->ns_names[i][0] == '\0';
    }
    if (!have_default)
        hr_buf_printf(&b, "NS[''] = {0, 0}\n");
    hr_buf_append(&b, (const char *)hr_functions_lua, hr_functions_lua_len);
    hr_buf_printf(&b,
                  "redis.register_function('%s_publish', publish)\n"
                  "redis.register_function('%s_history', history)\n"
                  "redis.register_function('%s_touch', touch)\n"
                  "redis.register_function('%s_init', init)\n"
                  "redis.register_function('%s_presence', presence)\n"
                  "redis.register_function('%s_presence_set', presence_set)\n",
                  fn, fn, fn, fn, fn, fn);
    char *s = hr_strndup(b.data, b.len);
    hr_buf_reset(&b);
    return s;
}

chan_layer *chan_redis_new(const chan_host *host, const chan_redis_config *cfg, char *err,
                           size_t errlen)
{
    hr_redis_target *targets;
    if (!cfg->ncontrol_secrets) {
        snprintf(err, errlen, "cluster mode needs a secret shared by the nodes (control messages)");
        return NULL;
    }
    int n = hr_redis_targets_parse(cfg->urls, &targets, err, errlen);
    if (n < 0)
        return NULL;
    const char *prefix = cfg->prefix && *cfg->prefix ? cfg->prefix : "herald";
    if (targets[0].mode == HR_REDIS_CLUSTER && !chan_tag_prefix_valid(prefix)) {
        snprintf(err, errlen,
                 "HERALD_REDIS_PREFIX may not contain '{' or '}' with Redis Cluster (it would "
                 "become the keys' hash tag)");
        hr_redis_targets_free(targets, n);
        return NULL;
    }
    if (targets[0].mode == HR_REDIS_CLUSTER && cfg->django && cfg->django->mode) {
        snprintf(err, errlen,
                 "HERALD_DJANGO_CHANNELS cannot be used with Redis Cluster: channels_redis does "
                 "not support Redis Cluster (use redis:// or redis+sentinel:// for the bridge)");
        hr_redis_targets_free(targets, n);
        return NULL;
    }
    redis_layer *L = hr_calloc(1, sizeof(*L));
    chan_layer_init(&L->base, &redis_ops, host);
    L->mode = targets[0].mode;
    L->targets = targets;
    L->prefix = hr_strdup(prefix);
    L->fn = hr_strdup(L->prefix);
    for (char *p = L->fn; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            *p = '_';
    L->library = build_library(L->fn, L->prefix, L->mode == HR_REDIS_CLUSTER, cfg);
    L->f_publish = fn_name(L->fn, "publish");
    L->f_history = fn_name(L->fn, "history");
    L->f_touch = fn_name(L->fn, "touch");
    L->f_init = fn_name(L->fn, "init");
    L->f_presence = fn_name(L->fn, "presence");
    L->f_presence_set = fn_name(L->fn, "presence_set");
    L->control_topic = hr_redis_key(L->prefix, "control", NULL);
    L->node_id = hr_strdup(cfg->node_id && *cfg->node_id ? cfg->node_id : "node");
    L->presence_ttl = cfg->presence_ttl > 0 ? cfg->presence_ttl : 25;
    /* a key of its own per secret: the JWT secret is not used as-is for a
     * second purpose */
    L->nctl_keys = cfg->ncontrol_secrets;
    L->ctl_keys = hr_calloc(L->nctl_keys, sizeof(*L->ctl_keys));
    for (size_t i = 0; i < L->nctl_keys; i++) {
        static const char label[] = "herald control v1";
        unsigned int mlen = 0;
        const char *sec = cfg->control_secrets[i];
        HMAC(EVP_sha256(), sec, (int)strlen(sec), (const unsigned char *)label, sizeof(label) - 1,
             L->ctl_keys[i], &mlen);
    }
    L->ctl_seen = hr_map_new(NULL);
    L->ctl_sweep_at = 1024;
    L->nshards = n;
    L->shards = hr_calloc((size_t)n, sizeof(*L->shards));
    for (int i = 0; i < n; i++) {
        shard *sh = &L->shards[i];
        sh->L = L;
        sh->index = i;
        sh->target = &targets[i];
        if (L->mode == HR_REDIS_DIRECT) {
            sh->addr = targets[i].node;
            sh->addr.host = hr_strdup(targets[i].node.host);
        } else { /* credentials and db for the master (sentinel); host set when known */
            sh->addr.port = 0;
            sh->addr.db = targets[i].node.db;
        }
        sh->addr.user = targets[i].node.user ? hr_strdup(targets[i].node.user) : NULL;
        sh->addr.password = targets[i].node.password ? hr_strdup(targets[i].node.password) : NULL;
        pthread_mutex_init(&sh->addr_mu, NULL);
        atomic_init(&sh->gen, 0);
        atomic_init(&sh->recheck_asked, 0);
        chan_tab_init(&sh->channels);
        atomic_init(&sh->up_seen, 0);
    }
    L->own = hr_calloc((size_t)host->nthreads * (size_t)n, sizeof(*L->own));
    for (size_t i = 0; i < (size_t)host->nthreads * (size_t)n; i++) {
        atomic_init(&L->own[i].head, 0);
        atomic_init(&L->own[i].tail, 0);
    }
    L->loops = hr_calloc(host->nthreads, sizeof(*L->loops));
    for (unsigned t = 0; t < host->nthreads; t++)
        rd_loop_init(&L->loops[t], L, t);
    atomic_init(&L->shards_up, 0);
    if (cfg->django && cfg->django->mode &&
        !(L->django = dj_bridge_new(&L->base, cfg->django, L->prefix, L->node_id, err, errlen))) {
        chan_layer_destroy(&L->base);
        return NULL;
    }
    return &L->base;
}
