/*
 * redis_shard.c - a shard's connections (home thread): name resolution on
 * libuv's thread pool, the two hiredis connections (cmd, sub), their setup
 * (AUTH, SELECT, CLIENT SETNAME, FUNCTION LOAD), readiness, and reconnection
 * with exponential backoff and full jitter. See redis_internal.h.
 */
#include "redis_internal.h"

#include <linux/sockios.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

/*---- Sending ---------------------------------------------------------------*/

/* hiredis copies argv into its output buffer: the strings may be freed
 * once this returns. Returns 0, or -1 when the shard is down. */
int rd_send_argv(redisAsyncContext *ac, redisCallbackFn *fn, void *priv, int argc,
                 const char **argv, const size_t *lens)
{
    if (!ac || redisAsyncCommandArgv(ac, fn, priv, argc, argv, lens) != REDIS_OK)
        return -1;
    return 0;
}

/*---- Connections (home thread) ---------------------------------------------*/

static void shard_down(shard *sh, const char *why);

void rd_shard_update_up(shard *sh)
{
    redis_layer *L = sh->L;
    int up = sh->cmd_ready && sh->sub_ready && sh->cmd && sh->sub;
    if (up == sh->up)
        return;
    sh->up = up;
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
    chan_log(&L->base, CHAN_LOG_INFO, "redis_shard_up", "redis shard %d (%s:%d) is up", sh->index,
             sh->addr.host, sh->addr.port);
    /* the Django bridge's subscriptions go out before Herald's on the same
     * connection, so a channel's confirmation implies its group's */
    if (sh->index == 0)
        dj_bridge_up(L->django, sh->cmd, sh->sub, &sh->addr, sh->ip);
    /* subscribe again to everything the node wants; announce its
     * presence entries at once (a Redis that restarted empty showed nobody
     * until the next refresh, presence_ttl/3 later) */
    const char *key, *ck;
    void *val, *entry;
    for (size_t it = 0; chan_tab_next(&sh->channels, &it, &key, NULL, &val);) {
        rchan *c = val;
        if (c->wanted) {
            c->renew = c->renew || c->have_last || c->opts.history_size == 0;
            rd_rchan_sync(c);
        }
        if (c->opts.presence)
            for (size_t jt = 0; hr_map_next(c->members, &jt, &ck, NULL, &entry);)
                rd_presence_send(L, c, ck, entry);
    }
    sh->setup_failed = 0;
}

/* A setup command (AUTH, SELECT, CLIENT SETNAME, <fn>_init) failed: the
 * shard is not usable on these connections, so both go at once and the
 * shard stays down (it was never up: no "up"/"down" flapping while Redis
 * refuses the credentials), retried with backoff; said once per streak,
 * in Redis' own words. */
static void on_setup_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    shard *sh = ac->data;
    redisReply *r = reply;
    const char *what = priv;
    if (!r || r->type != REDIS_REPLY_ERROR || (ac != sh->cmd && ac != sh->sub))
        return;
    if (!sh->setup_failed)
        chan_log(&sh->L->base, CHAN_LOG_ERROR, "redis_setup_refused",
                 "redis shard %d (%s:%d): %s: %s (retrying)", sh->index, sh->addr.host,
                 sh->addr.port, !strcmp(what, "AUTH") ? "authentication failed" : what, r->str);
    sh->setup_failed = 1;
    shard_down(sh, r->str);
}

static void on_function_loaded(redisAsyncContext *ac, void *reply, void *priv)
{
    shard *sh = ac->data;
    redisReply *r = reply;
    (void)priv;
    if (!r || ac != sh->cmd) /* a connection shard_down let go of */
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        if (!sh->setup_failed)
            chan_log(&sh->L->base, CHAN_LOG_ERROR, "redis_setup_refused",
                     "redis shard %d: FUNCTION LOAD failed: %s (retrying)", sh->index, r->str);
        sh->setup_failed = 1;
        shard_down(sh, r->str);
        return;
    }
    sh->cmd_ready = 1;
    rd_shard_update_up(sh);
}

static void send_setup(shard *sh, redisAsyncContext *ac)
{
    hr_redis_setup setup[2];
    char dbbuf[16];
    int n = hr_redis_setup_commands(&sh->addr, setup, dbbuf);
    for (int i = 0; i < n; i++)
        rd_send_argv(ac, on_setup_reply, (void *)setup[i].argv[0], setup[i].argc, setup[i].argv,
                     NULL);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    shard *sh = ac->data;
    redis_layer *L = sh->L;
    if (status != REDIS_OK) {
        /* hiredis frees ac after this; forget it (a context shard_down
         * already let go of is not ours any more) */
        int ours = ac == sh->cmd || ac == sh->sub;
        if (ac == sh->cmd)
            sh->cmd = NULL;
        else if (ac == sh->sub)
            sh->sub = NULL;
        if (ours)
            shard_down(sh, ac->errstr);
        return;
    }
    send_setup(sh, ac);
    /* CLIENT LIST then tells which node and which role each connection has */
    char *name = hr_redis_key(L->prefix, L->node_id, ac == sh->cmd ? "cmd" : "sub");
    for (char *p = name; *p; p++)
        if (*p == ' ' || *p == '\n')
            *p = '_';
    const char *setname[3] = {"CLIENT", "SETNAME", name};
    rd_send_argv(ac, on_setup_reply, "CLIENT SETNAME", 3, setname, NULL);
    free(name);
    if (ac == sh->cmd) {
        const char *argv[4] = {"FUNCTION", "LOAD", "REPLACE", L->library};
        rd_send_argv(ac, on_function_loaded, NULL, 4, argv, NULL);
        /* the history epochs' base exists before anyone reads (functions.lua) */
        char *init;
        if (asprintf(&init, "%s_init", L->fn) < 0)
            abort();
        const char *iargv[3] = {"FCALL", init, "0"};
        rd_send_argv(ac, on_setup_reply, "FCALL init", 3, iargv, NULL);
        free(init);
    } else if (sh->index == 0) {
        const char *argv[2] = {"SUBSCRIBE", L->control_topic};
        rd_send_argv(ac, rd_on_sub_reply, sh, 2, argv, NULL);
    } else {
        sh->sub_ready = 1;
        rd_shard_update_up(sh);
    }
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    shard *sh = ac->data;
    (void)status;
    if (ac != sh->cmd && ac != sh->sub)
        return; /* one shard_down already let go of */
    if (ac == sh->cmd)
        sh->cmd = NULL;
    else
        sh->sub = NULL;
    shard_down(sh, ac->errstr[0] ? ac->errstr : "connection closed");
}

/* Full jitter (AWS' "exponential backoff and jitter"): a random delay up
 * to the exponential bound, so nodes that lost Redis together do not come
 * back together. */
static uint64_t backoff_ms(shard *sh)
{
    unsigned shift = sh->attempt < 6 ? sh->attempt : 6;
    uint64_t cap = (uint64_t)BACKOFF_MIN_MS << shift;
    uint32_t r;
    if (cap > BACKOFF_MAX_MS)
        cap = BACKOFF_MAX_MS;
    hr_random_bytes(&r, sizeof(r));
    sh->attempt++;
    return BACKOFF_MIN_MS / 2 + r % cap;
}

static void on_retry(uv_timer_t *t)
{
    rd_shard_connect(t->data);
}

/* Either connection failing takes the shard down: the other one is
 * dropped too, so the shard comes back whole (functions loaded, every
 * channel subscribed again). */
static void shard_down(shard *sh, const char *why)
{
    redis_layer *L = sh->L;
    int was_up = sh->up;
    redisAsyncContext *cmd = sh->cmd, *sub = sh->sub;
    sh->cmd_ready = sh->sub_ready = 0;
    sh->cmd = sh->sub = NULL; /* before hiredis may free them below */
    rd_shard_update_up(sh);
    if (cmd)
        redisAsyncDisconnect(cmd);
    if (sub)
        redisAsyncDisconnect(sub);
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
    if (!L->stopping && !sh->cmd && !sh->sub && !sh->resolving &&
        !uv_is_active((uv_handle_t *)&sh->retry))
        uv_timer_start(&sh->retry, on_retry, backoff_ms(sh), 0);
}

static redisAsyncContext *open_conn(shard *sh)
{
    redisAsyncContext *ac = redisAsyncConnect(sh->ip, sh->addr.port);
    if (!ac)
        return NULL;
    if (ac->err) {
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = sh;
    redisLibuvAttach(ac, sh->L->uv);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return ac;
}

/* hiredis 0.14's libuv adapter drops poll errors (libuv reports a refused
 * connect as UV_EBADF, which the adapter ignores), so a failed connect is
 * never reported to on_connect: a deadline catches it, and a server that
 * accepts but never answers, too. */
static void on_connect_timeout(uv_timer_t *t)
{
    shard *sh = t->data;
    if (!sh->up && !sh->L->stopping)
        shard_down(sh, "no connection within the deadline");
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    shard *sh = req->data;
    sh->resolving = 0;
    if (status == 0 && res)
        uv_ip_name(res->ai_addr, sh->ip, sizeof(sh->ip));
    uv_freeaddrinfo(res);
    if (sh->L->stopping)
        return;
    if (status != 0 || !res) {
        shard_down(sh, "cannot resolve the host name");
        return;
    }
    sh->cmd = open_conn(sh);
    sh->sub = open_conn(sh);
    if (!sh->cmd || !sh->sub)
        shard_down(sh, "cannot connect");
    else
        uv_timer_start(&sh->connect_timer, on_connect_timeout, CONNECT_TIMEOUT_MS, 0);
}

/* Name resolution runs on libuv's thread pool: getaddrinfo may block. */
void rd_shard_connect(shard *sh)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (sh->L->stopping || sh->resolving || sh->cmd || sh->sub)
        return;
    if (sh->attempt)
        atomic_fetch_add(&sh->L->reconnects, 1);
    sh->gai.data = sh;
    sh->resolving = 1;
    if (uv_getaddrinfo(sh->L->uv, &sh->gai, on_resolved, sh->addr.host, NULL, &hints) != 0) {
        sh->resolving = 0;
        shard_down(sh, "cannot resolve the host name");
    }
}

/* Bytes Redis has sent the subscriber connections that this node has not
 * read yet: what Redis' client-output-buffer-limit would count against us
 * once the socket buffers fill. */
void rd_sample_pending(redis_layer *L)
{
    uint64_t total = 0;
    for (int i = 0; i < L->nshards; i++) {
        int n = 0;
        redisAsyncContext *ac = L->shards[i].sub;
        if (ac && ioctl(ac->c.fd, SIOCINQ, &n) == 0 && n > 0)
            total += (uint64_t)n;
        if (ac && ac->c.reader)
            total += ac->c.reader->len - ac->c.reader->pos;
    }
    atomic_store(&L->pending_bytes, total);
}
