/*
 * redis_shard.c - a shard's home connections (home thread): `cmd` (setup,
 * subscriptions' reads, presence, control) and `sub` (SUBSCRIBE), both
 * chan_rconn (redis_topo.h), their setup (AUTH, SELECT, CLIENT SETNAME by
 * chan_rconn; FUNCTION LOAD and <fn>_init here), readiness, and
 * reconnection with exponential backoff and full jitter. See
 * redis_internal.h.
 *
 * Why chan_rconn and not hiredis' async API with its libuv adapter: the
 * adapter drops poll errors (a refused connect was never reported: a
 * deadline had to catch it), redisAsyncConnect resolves host names with a
 * blocking getaddrinfo (this file resolved them itself first), and the
 * async API aborts the process on sharded pub/sub, which the Redis Cluster
 * mode to come needs (docs/internals/redis-ha.md). chan_rconn keeps
 * hiredis' parser and formatter, reports every failure with Redis' own
 * words, resolves on libuv's thread pool, and writes everything queued in
 * one loop iteration with one write.
 */
#include "redis_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void shard_down(shard *sh, const char *why);

/*---- Commands -------------------------------------------------------------------*/

int rd_cmd(shard *sh, const char *channel, chan_rconn_reply_fn cb, void *priv, int argc,
           const char **argv, const size_t *lens)
{
    if (sh->L->mode == HR_REDIS_CLUSTER)
        return rd_cluster_cmd(sh->L, sh->L->cl, channel, cb, priv, argc, argv, lens);
    if (!sh->cmd || chan_rconn_command(sh->cmd, cb, priv, argc, argv, lens) < 0)
        return -EAGAIN;
    return 0;
}

int rd_sub_cmd(shard *sh, int argc, const char **argv)
{
    if (!sh->sub || chan_rconn_command(sh->sub, rd_sub_cmd_reply, sh, argc, argv, NULL) < 0)
        return -EAGAIN;
    return 0;
}

chan_rconn *rd_shard_open(shard *sh, uv_loop_t *uv, chan_rconn_config *cfg, unsigned *gen)
{
    pthread_mutex_lock(&sh->addr_mu);
    cfg->host = sh->addr.host ? sh->addr.host : "";
    cfg->port = sh->addr.port;
    cfg->user = sh->addr.user;
    cfg->password = sh->addr.password;
    cfg->db = sh->addr.db;
    *gen = atomic_load(&sh->gen);
    chan_rconn *c = chan_rconn_open(uv, cfg); /* copies the strings */
    pthread_mutex_unlock(&sh->addr_mu);
    return c;
}

/*---- Following the sentinels (redis+sentinel://) -------------------------------------*/

static void shard_connect_later(shard *sh);

/* Home: the shard's master is in doubt (its connection was lost, or it
 * answered READONLY): the sentinels are asked again. The shard goes down
 * through the `master(NULL)` callback. */
static void sentinel_recheck(shard *sh)
{
    if (sh->sentinel && !sh->L->stopping)
        chan_sentinel_recheck(sh->sentinel);
}

typedef struct recheck_task {
    chan_task task;
    shard *sh;
} recheck_task;

static void recheck_run(chan_task *ct)
{
    recheck_task *t = (recheck_task *)ct;
    shard *sh = t->sh;
    free(t);
    atomic_store(&sh->recheck_asked, 0);
    chan_log(&sh->L->base, CHAN_LOG_WARN, "redis_readonly",
             "redis shard %d (%s:%d) answered READONLY (no longer the master): asking the "
             "sentinels again",
             sh->index, sh->addr.host ? sh->addr.host : "?", sh->addr.port);
    sentinel_recheck(sh);
}

static void recheck_discard(chan_task *ct)
{
    free(ct);
}

int rd_reply_check(shard *sh, const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ERROR || r->len < 8 || memcmp(r->str, "READONLY", 8))
        return 0;
    if (sh->L->mode == HR_REDIS_SENTINEL && !atomic_exchange(&sh->recheck_asked, 1)) {
        recheck_task *t = hr_calloc(1, sizeof(*t));
        t->task = (chan_task){recheck_run, recheck_discard};
        t->sh = sh;
        rd_to_home(sh->L, &t->task);
    }
    return 1;
}

/* The sentinels' answer (home thread): a checked master, or NULL while
 * it changes. */
static void on_master(void *ud, const char *host, int port)
{
    shard *sh = ud;
    redis_layer *L = sh->L;
    sh->have_master = 0; /* shard_down below is no failure of a master */
    uv_timer_stop(&sh->retry);
    if (!host) {
        /* down at once: the old master may be alive and partitioned, and
         * what is written there now would be lost */
        if (sh->cmd || sh->sub || sh->up)
            shard_down(sh, "the master is changing (sentinels)");
        return;
    }
    int same = sh->addr.host && sh->addr.port == port && !strcmp(sh->addr.host, host);
    if (!same) {
        if (sh->cmd || sh->sub)
            shard_down(sh, "another master (sentinels)");
        pthread_mutex_lock(&sh->addr_mu);
        free(sh->addr.host);
        sh->addr.host = hr_strdup(host);
        sh->addr.port = port;
        atomic_fetch_add(&sh->gen, 1);
        pthread_mutex_unlock(&sh->addr_mu);
        sh->attempt = 0; /* a new master: at once */
    }
    sh->have_master = 1;
    if (L->stopping)
        return;
    shard_connect_later(sh);
}

static void sentinel_log(void *ud, int level, const char *event, const char *msg)
{
    shard *sh = ud;
    chan_log(&sh->L->base, level, event, "redis shard %d: %s", sh->index, msg);
}

void rd_sentinels_start(redis_layer *L)
{
    for (int i = 0; i < L->nshards; i++) {
        shard *sh = &L->shards[i];
        const hr_redis_target *t = sh->target;
        char *name = rd_conn_name(L, "sentinel");
        chan_sentinel_config cfg = {
            .sentinels = t->hosts,
            .nsentinels = t->nhosts,
            .master_name = t->master,
            .sentinel_user = t->sentinel_user,
            .sentinel_password = t->sentinel_password,
            .user = t->node.user,
            .password = t->node.password,
            .client_name = name,
            .connect_timeout_ms = CONNECT_TIMEOUT_MS,
            .master = on_master,
            .log = sentinel_log,
            .ud = sh,
        };
        sh->sentinel = chan_sentinel_start(L->uv, &cfg);
        free(name);
    }
}

char *rd_conn_name(redis_layer *L, const char *role)
{
    /* CLIENT LIST then tells which node and which role each connection has */
    char *name = hr_redis_key(L->prefix, L->node_id, role);
    for (char *p = name; *p; p++)
        if (*p == ' ' || *p == '\n')
            *p = '_';
    return name;
}

/*---- Letting a command connection go ---------------------------------------------*/

/* A command connection the shard let go of (down, or stopping) still
 * answers what was sent on it, as hiredis' redisAsyncDisconnect did: a
 * PING goes last and its answer closes it; RETIRE_MS bounds the wait for
 * a server that stopped answering. */
#define RETIRE_MS 2000

struct rd_retired {
    chan_rconn *c;
    uv_timer_t timer;
    rd_retired **list;
    int closing;
    rd_retired *prev, *next;
};

static void retired_freed(uv_handle_t *h)
{
    free(h->data);
}

static void retired_close(rd_retired *r)
{
    if (r->closing)
        return;
    r->closing = 1;
    if (r->prev)
        r->prev->next = r->next;
    else
        *r->list = r->next;
    if (r->next)
        r->next->prev = r->prev;
    chan_rconn_close(r->c); /* the PING's answer (r NULL) sees `closing` */
    uv_close((uv_handle_t *)&r->timer, retired_freed);
}

static void retired_pinged(chan_rconn *c, void *priv, const redisReply *reply, const char *err)
{
    (void)c, (void)reply, (void)err;
    retired_close(priv);
}

static void retired_timeout(uv_timer_t *t)
{
    retired_close(t->data);
}

void rd_retire(uv_loop_t *uv, rd_retired **list, chan_rconn *c)
{
    if (!c)
        return;
    if (!chan_rconn_ready(c) || !chan_rconn_waiting(c)) {
        chan_rconn_close(c);
        return;
    }
    rd_retired *r = hr_calloc(1, sizeof(*r));
    r->c = c;
    r->list = list;
    if (chan_rconn_command(c, retired_pinged, r, 1, (const char *[]){"PING"}, NULL) < 0) {
        chan_rconn_close(c);
        free(r);
        return;
    }
    uv_timer_init(uv, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, retired_timeout, RETIRE_MS, 0);
    r->next = *list;
    if (r->next)
        r->next->prev = r;
    *list = r;
}

/*---- Readiness ------------------------------------------------------------------*/

void rd_shard_update_up(shard *sh)
{
    redis_layer *L = sh->L;
    int up = sh->cmd_ready && sh->sub_ready && sh->cmd && sh->sub;
    if (up == sh->up)
        return;
    sh->up = up;
    atomic_store_explicit(&sh->up_seen, up, memory_order_release);
    atomic_fetch_add(&L->shards_up, up ? 1 : -1);
    if (!up) {
        if (sh->index == 0)
            dj_bridge_down(L->django);
        return;
    }
    if (sh->index == 0 && sh->was_up) {
        chan_control resync = {.op = CHAN_CTL_RESYNC};
        L->base.host.control(L->base.host.ud, &resync);
    }
    sh->was_up = 1;
    sh->attempt = 0;
    uv_timer_stop(&sh->connect_timer);
    chan_log(&L->base, CHAN_LOG_INFO, "redis_shard_up", "redis shard %d (%s:%d) is up", sh->index,
             sh->addr.host, sh->addr.port);
    /* the Django bridge's subscriptions go out before Herald's on the same
     * connection, so a channel's confirmation implies its group's */
    if (sh->index == 0)
        dj_bridge_up(L->django, sh->cmd, sh->sub, &sh->addr);
    /* subscribe again to everything the node wants */
    const char *key;
    void *val;
    for (size_t it = 0; chan_tab_next(&sh->channels, &it, &key, NULL, &val);) {
        rchan *c = val;
        if (c->wanted) {
            c->renew = c->renew || c->have_last || c->opts.history_size == 0;
            rd_rchan_sync(c);
        }
    }
    /* every loop announces its subscribers' presence entries at once (a
     * Redis that restarted empty showed nobody until the next refresh,
     * presence_ttl/3 later) */
    rd_loops_shard_up(L, sh);
    sh->setup_failed = 0;
}

/* A setup step failed (AUTH, SELECT, CLIENT SETNAME refused: chan_rconn
 * closed the connection; FUNCTION LOAD, <fn>_init refused): the shard is
 * not usable on these connections, so both go at once and the shard stays
 * down (it was never up: no "up"/"down" flapping while Redis refuses the
 * credentials), retried with backoff; said once per streak, in Redis' own
 * words. */
static void setup_refused(shard *sh, const char *what, const char *text)
{
    if (sh->sentinel && !strncmp(text, "READONLY", 8)) {
        /* FUNCTION LOAD on a replica: the master moved since ROLE said so */
        shard_down(sh, text);
        sentinel_recheck(sh);
        return;
    }
    if (!sh->setup_failed)
        chan_log(&sh->L->base, CHAN_LOG_ERROR, "redis_setup_refused",
                 "redis shard %d (%s:%d): %s: %s (retrying)", sh->index, sh->addr.host,
                 sh->addr.port, !strcmp(what, "AUTH") ? "authentication failed" : what, text);
    sh->setup_failed = 1;
    shard_down(sh, text);
}

static void on_init_reply(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    shard *sh = priv;
    (void)err;
    if (r && c == sh->cmd && r->type == REDIS_REPLY_ERROR)
        setup_refused(sh, "FCALL init", r->str);
}

static void on_function_loaded(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    shard *sh = priv;
    (void)err;
    if (!r || c != sh->cmd) /* a connection shard_down let go of */
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        setup_refused(sh, "FUNCTION LOAD", r->str);
        return;
    }
    sh->cmd_ready = 1;
    rd_shard_update_up(sh);
}

/*---- Connections ------------------------------------------------------------------*/

static void conn_ready(chan_rconn *c, void *ud)
{
    shard *sh = ud;
    redis_layer *L = sh->L;
    if (c == sh->cmd) {
        const char *argv[4] = {"FUNCTION", "LOAD", "REPLACE", L->library};
        chan_rconn_command(c, on_function_loaded, sh, 4, argv, NULL);
        /* the history epochs' base exists before anyone reads (functions.lua) */
        const char *iargv[3] = {"FCALL", L->f_init, "0"};
        chan_rconn_command(c, on_init_reply, sh, 3, iargv, NULL);
    } else if (c == sh->sub && sh->index == 0) {
        const char *argv[2] = {"SUBSCRIBE", L->control_topic};
        rd_sub_cmd(sh, 2, argv); /* sub_ready once confirmed (rd_sub_push) */
    } else if (c == sh->sub) {
        sh->sub_ready = 1;
        rd_shard_update_up(sh);
    }
}

static void conn_closed(chan_rconn *c, void *ud, const char *why)
{
    shard *sh = ud;
    const char *text = NULL, *what = chan_rconn_refused(c, &text);
    char reason[300];
    snprintf(reason, sizeof(reason), "%s", what ? text : why);
    if (c == sh->cmd)
        sh->cmd = NULL;
    else if (c == sh->sub)
        sh->sub = NULL;
    chan_rconn_close(c);
    if (what)
        setup_refused(sh, what, reason);
    else
        shard_down(sh, reason);
}

chan_rconn *rd_conn_open(shard *sh, uv_loop_t *uv, const char *role, int pubsub,
                         const chan_rconn_ops *ops, void *ud, unsigned *gen)
{
    char *name = rd_conn_name(sh->L, role);
    chan_rconn_config cfg = {
        .client_name = name,
        .pubsub = pubsub,
        .connect_timeout_ms = CONNECT_TIMEOUT_MS,
        .ops = ops,
        .ud = ud,
    };
    chan_rconn *c = rd_shard_open(sh, uv, &cfg, gen);
    free(name); /* chan_rconn_open copied it */
    return c;
}

static chan_rconn *open_conn(shard *sh, int pubsub)
{
    static const chan_rconn_ops cmd_ops = {conn_ready, conn_closed, NULL};
    static const chan_rconn_ops sub_ops = {conn_ready, conn_closed, rd_sub_push};
    unsigned gen; /* the shard's own connections follow sh->gen themselves */
    return rd_conn_open(sh, sh->L->uv, pubsub ? "sub" : "cmd", pubsub, pubsub ? &sub_ops : &cmd_ops,
                        sh, &gen);
}

static void on_retry(uv_timer_t *t)
{
    rd_shard_connect(t->data);
}

/* Sentinel: connects to the master just named, at once the first time,
 * after a backoff when connections to it failed since it was last up (a
 * master that ROLE confirms but refuses us must not be hammered). */
static void shard_connect_later(shard *sh)
{
    if (sh->L->stopping || sh->cmd || sh->sub || uv_is_active((uv_handle_t *)&sh->retry))
        return;
    if (!sh->attempt)
        rd_shard_connect(sh);
    else
        uv_timer_start(&sh->retry, on_retry, chan_backoff_ms(sh->attempt - 1), 0);
}

/* Either connection failing takes the shard down: the other one is
 * dropped too, so the shard comes back whole (functions loaded, every
 * channel subscribed again). */
static void shard_down(shard *sh, const char *why)
{
    redis_layer *L = sh->L;
    int was_up = sh->up;
    chan_rconn *cmd = sh->cmd, *sub = sh->sub;
    sh->cmd_ready = sh->sub_ready = 0;
    sh->cmd = sh->sub = NULL; /* before their callbacks may run below */
    uv_timer_stop(&sh->connect_timer);
    rd_shard_update_up(sh);
    rd_retire(L->uv, &L->retired, cmd);
    chan_rconn_close(sub);
    if (was_up)
        chan_log(&L->base, CHAN_LOG_WARN, "redis_shard_down", "redis shard %d (%s:%d) is down: %s",
                 sh->index, sh->addr.host, sh->addr.port, why);
    const char *key;
    void *val;
    for (size_t it = 0; chan_tab_next(&sh->channels, &it, &key, NULL, &val);) {
        rchan *c = val;
        c->on_redis = c->confirmed = 0;
        c->inflight = 0;
        if (c->recovering) {
            c->recovering = 0;
            rd_dispatch_held(L, c);
        }
        rd_run_waiters(L, c, 0);
    }
    if (sh->sentinel) {
        /* a failure with a master: not blindly to the same address again,
         * the sentinels say where (the same master again after a mere
         * glitch); a lost connection may mean a dead master. (on_master
         * clears have_master before it takes the shard down.) */
        if (sh->have_master && !L->stopping) {
            sh->attempt++;
            chan_sentinel_recheck(sh->sentinel); /* on_master(NULL), then the master */
        }
        return;
    }
    if (!L->stopping && !sh->cmd && !sh->sub && !uv_is_active((uv_handle_t *)&sh->retry))
        uv_timer_start(&sh->retry, on_retry, chan_backoff_ms(sh->attempt++), 0);
}

/* A shard not up within the deadline (a server that accepts but never
 * answers FUNCTION LOAD, say) is torn down and tried again. */
static void on_connect_timeout(uv_timer_t *t)
{
    shard *sh = t->data;
    if (!sh->up && !sh->L->stopping)
        shard_down(sh, "not up within the deadline");
}

void rd_shard_connect(shard *sh)
{
    if (sh->L->stopping || sh->cmd || sh->sub || (sh->sentinel && !sh->have_master))
        return;
    if (sh->attempt)
        atomic_fetch_add(&sh->L->reconnects, 1);
    sh->cmd = open_conn(sh, 0);
    sh->sub = open_conn(sh, 1);
    uv_timer_start(&sh->connect_timer, on_connect_timeout, CONNECT_TIMEOUT_MS, 0);
}

void rd_shard_stop(shard *sh)
{
    redis_layer *L = sh->L;
    chan_rconn *cmd = sh->cmd, *sub = sh->sub;
    sh->cmd = sh->sub = NULL;
    uv_close((uv_handle_t *)&sh->retry, NULL);
    uv_close((uv_handle_t *)&sh->connect_timer, NULL);
    rd_retire(L->uv, &L->retired, cmd); /* what the Django bridge's stop queued still goes out */
    chan_rconn_close(sub);
    chan_sentinel_stop(sh->sentinel);
    sh->sentinel = NULL;
}

/* Bytes Redis has sent the subscriber connections that this node has not
 * read yet: what Redis' client-output-buffer-limit would count against us
 * once the socket buffers fill. */
void rd_sample_pending(redis_layer *L)
{
    uint64_t total = 0;
    for (int i = 0; i < L->nshards; i++)
        if (L->shards[i].sub)
            total += chan_rconn_unread(L->shards[i].sub);
    atomic_store(&L->pending_bytes, total);
}
