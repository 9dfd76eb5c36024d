/*
 * store_redis_conn.c - how the Redis user store (store_redis.c) reaches
 * its Redis: the first URL of HERALD_REDIS_URL; redis:// its server;
 * redis+sentinel:// the master its sentinels name, checked with ROLE and
 * asked again when a command answers READONLY or the connection is lost;
 * redis+cluster:// the master of the users' slot, found by following MOVED
 * (and ASK) from a seed. Blocking hiredis: worker threads and start-up
 * only. A lost connection is dropped and the next command connects again.
 */
#include "auth/store_redis_internal.h"
#include "common/common.h"
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

/*---- URL parsing -----------------------------------------------------------*/

/* Users live on the first shard of HERALD_REDIS_URL: its server, the
 * master its sentinels name, or the cluster. */
int rstore_parse_url(redis_store *s, const char *url, char *err, size_t errlen)
{
    hr_redis_target *t;
    int n = hr_redis_targets_parse(url, &t, err, errlen);
    if (n < 0)
        return -1;
    s->target = t[0];
    memset(&t[0], 0, sizeof(t[0]));
    hr_redis_targets_free(t, n);
    return 0;
}

/*---- Connection ------------------------------------------------------------*/

void rstore_disconnect(redis_store *s)
{
    redisFree(s->c);
    s->c = NULL;
}

/* Runs a command on a connection that is being set up; 0 if the reply is
 * not an error. */
static int setup_command(redis_store *s, redisContext *c, const char *what, redisReply *r)
{
    int ok = r && r->type != REDIS_REPLY_ERROR;
    if (!ok)
        snprintf(s->errstr, sizeof(s->errstr), "redis %s: %.120s", what, r ? r->str : c->errstr);
    freeReplyObject(r);
    return ok ? 0 : -1;
}

/* Connects to host:port and sends a's AUTH and SELECT. Returns the
 * context, or NULL (s->errstr). */
static redisContext *connect_node(redis_store *s, const char *host, int port,
                                  const hr_redis_addr *a)
{
    struct timeval tv = {REDIS_TIMEOUT_S, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot connect to redis at %.64s:%d: %.120s", host,
                 port, c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    int rc = redisSetTimeout(c, tv) == REDIS_OK ? 0 : -1;
    hr_redis_setup setup[2];
    char dbbuf[16];
    int nsetup = hr_redis_setup_commands(a, setup, dbbuf);
    for (int i = 0; rc == 0 && i < nsetup; i++)
        rc = setup_command(s, c, setup[i].argv[0],
                           redisCommandArgv(c, setup[i].argc, setup[i].argv, NULL));
    if (rc < 0) {
        redisFree(c);
        return NULL;
    }
    return c;
}

/* redis+sentinel://: asks the sentinels in turn for the master and checks
 * it with ROLE (a stale sentinel may name a replica). Blocking: worker
 * threads and start-up only. */
static redisContext *connect_sentinel_master(redis_store *s)
{
    const hr_redis_target *t = &s->target;
    hr_redis_addr sauth = {.user = t->sentinel_user, .password = t->sentinel_password};
    char why[256] = "no sentinel answered";
    for (int i = 0; i < t->nhosts; i++) {
        redisContext *q = connect_node(s, t->hosts[i].host, t->hosts[i].port, &sauth);
        if (!q) {
            snprintf(why, sizeof(why), "%s", s->errstr);
            continue;
        }
        redisReply *r = redisCommand(q, "SENTINEL get-master-addr-by-name %s", t->master);
        redisFree(q);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_STRING) {
            snprintf(why, sizeof(why), "sentinel %.48s:%d does not name master %.48s%s%.80s",
                     t->hosts[i].host, t->hosts[i].port, t->master,
                     r && r->type == REDIS_REPLY_ERROR ? ": " : "",
                     r && r->type == REDIS_REPLY_ERROR ? r->str : "");
            freeReplyObject(r);
            continue;
        }
        char host[256];
        snprintf(host, sizeof(host), "%s", r->element[0]->str);
        int port = atoi(r->element[1]->str);
        freeReplyObject(r);
        redisContext *c = connect_node(s, host, port, &t->node);
        if (!c) {
            snprintf(why, sizeof(why), "%s", s->errstr);
            continue;
        }
        r = redisCommand(c, "ROLE");
        int master = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                     r->element[0]->type == REDIS_REPLY_STRING &&
                     !strcmp(r->element[0]->str, "master");
        freeReplyObject(r);
        if (master) {
            free(s->host);
            s->host = hr_strdup(host);
            s->port = port;
            return c;
        }
        redisFree(c);
        snprintf(why, sizeof(why), "%.48s:%d, named master %.48s by sentinel %.48s:%d, is not one",
                 host, port, t->master, t->hosts[i].host, t->hosts[i].port);
    }
    snprintf(s->errstr, sizeof(s->errstr), "%s", why);
    return NULL;
}

/* redis+cluster://: the node that served the users' slot last, else the
 * seeds in turn (a MOVED then says where to go). */
static redisContext *connect_cluster_node(redis_store *s)
{
    const hr_redis_target *t = &s->target;
    if (s->host) {
        redisContext *c = connect_node(s, s->host, s->port, &t->node);
        if (c)
            return c;
        free(s->host);
        s->host = NULL;
    }
    for (int i = 0; i < t->nhosts; i++) {
        redisContext *c = connect_node(s, t->hosts[i].host, t->hosts[i].port, &t->node);
        if (c)
            return c;
    }
    return NULL;
}

/* Connects, authenticates and selects the database. 0 or -1 (s->errstr). */
int rstore_connect(redis_store *s)
{
    redisContext *c;
    switch (s->target.mode) {
    case HR_REDIS_SENTINEL:
        c = connect_sentinel_master(s);
        break;
    case HR_REDIS_CLUSTER:
        c = connect_cluster_node(s);
        break;
    default:
        c = connect_node(s, s->target.node.host, s->target.node.port, &s->target.node);
        break;
    }
    if (!c)
        return -1;
    s->c = c;
    if (s->asking) {
        s->asking = 0;
        freeReplyObject(redisCommand(c, "ASKING"));
    }
    return 0;
}

/* A connection Redis closed while it sat idle (a restart, CLIENT KILL,
 * its timeout) reads as EOF; bytes nobody asked for mean it is out of step.
 * Either way it is replaced before a command is sent on it: otherwise the
 * first command after an outage failed for nothing - and that command was
 * the reload of the revocations missed during the outage. */
static int conn_stale(redisContext *c)
{
    char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Logs why the store could not do its work - Redis' own words (WRONGPASS,
 * NOPERM, DENIED ... protected mode) - at most once a second for the
 * process: a Redis that refuses everything must not flood the log. */
static void store_warn(const char *why)
{
    static _Atomic long long last;
    long long now = (long long)time(NULL);
    long long prev = atomic_load(&last);
    if (now != prev && atomic_compare_exchange_strong(&last, &prev, now))
        hr_warn("store", "user store: %s", why);
}

/* An answer that says the command ran nowhere and where to send it: a
 * Redis Cluster redirection (MOVED, ASK: s->host/port and s->asking set;
 * TRYAGAIN during a migration), or READONLY from a demoted master (the
 * sentinels are asked again). 1 if so (the connection is dropped). */
static int redirected(redis_store *s, const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ERROR)
        return 0;
    if (s->target.mode == HR_REDIS_SENTINEL && !strncmp(r->str, "READONLY", 8)) {
        rstore_disconnect(s);
        return 1;
    }
    if (s->target.mode != HR_REDIS_CLUSTER)
        return 0;
    int ask = !strncmp(r->str, "ASK ", 4);
    if (ask || !strncmp(r->str, "MOVED ", 6)) {
        /* "MOVED <slot> <host>:<port>" (an empty host: the one asked) */
        const char *addr = strchr(strchr(r->str, ' ') + 1, ' ');
        const char *colon = addr ? strrchr(addr, ':') : NULL;
        if (!colon)
            return 0;
        char host[256];
        size_t hl = (size_t)(colon - addr - 1);
        if (hl >= sizeof(host))
            return 0;
        memcpy(host, addr + 1, hl);
        host[hl] = '\0';
        if (!hl && s->host)
            snprintf(host, sizeof(host), "%s", s->host);
        if (!host[0])
            return 0;
        free(s->host);
        s->host = hr_strdup(host);
        s->port = atoi(colon + 1);
        s->asking = ask;
        rstore_disconnect(s);
        return 1;
    }
    if (!strncmp(r->str, "TRYAGAIN", 8)) {
        struct timespec ts = {0, 50 * 1000000L}; /* a worker thread: waiting is fine */
        nanosleep(&ts, NULL);
        return 1;
    }
    return 0;
}

/* Sends one command (hiredis format: each %s is one argument, spaces and
 * quotes included). Returns the reply (caller frees), or NULL when Redis is
 * unreachable: the connection is dropped and the next call reconnects. An
 * error reply's text is kept in errstr (and logged) for whoever reports the
 * failure. A command that Redis did not run (a redirection, READONLY) is
 * sent again where it belongs, a few times at most; one whose connection
 * was lost is not (it may have run). */
redisReply *rstore_cmd(redis_store *s, const char *fmt, ...)
{
    redisReply *r = NULL;
    for (int tries = 0; tries < 6; tries++) {
        freeReplyObject(r);
        if (s->c && conn_stale(s->c))
            rstore_disconnect(s);
        if (!s->c && rstore_connect(s) < 0) {
            store_warn(s->errstr);
            return NULL;
        }
        va_list ap;
        va_start(ap, fmt);
        r = redisvCommand(s->c, fmt, ap);
        va_end(ap);
        if (!redirected(s, r))
            break;
    }
    if (!r) {
        snprintf(s->errstr, sizeof(s->errstr), "redis: %.120s", s->c ? s->c->errstr : "lost");
        rstore_disconnect(s);
        store_warn(s->errstr);
    } else if (r->type == REDIS_REPLY_ERROR) {
        snprintf(s->errstr, sizeof(s->errstr), "redis: %.200s", r->str);
        store_warn(s->errstr);
    }
    return r;
}

/* Status for a reply that is not what the caller expected. Errors that a
 * healthy server gives while starting or failing over mean "try later". */
auth_status rstore_bad_reply(const redisReply *r)
{
    static const char *const transient[] = {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN",
                                            "READONLY"};
    if (!r)
        return AUTH_UNAVAILABLE;
    for (size_t i = 0; r->type == REDIS_REPLY_ERROR && i < 5; i++)
        if (!strncmp(r->str, transient[i], strlen(transient[i])))
            return AUTH_UNAVAILABLE;
    return AUTH_INTERNAL;
}

/* The status of r, the reply to a GET-like command on key k (NULL: the key
 * could not be built, nothing was sent): AUTH_OK when it is a string. */
auth_status rstore_string_reply(const char *k, const redisReply *r)
{
    if (!k)
        return AUTH_INTERNAL;
    if (r && r->type == REDIS_REPLY_NIL)
        return AUTH_NOT_FOUND;
    return !r || r->type != REDIS_REPLY_STRING ? rstore_bad_reply(r) : AUTH_OK;
}

/* Status of a command whose reply is only checked for errors. */
auth_status rstore_cmd_status(redisReply *r)
{
    auth_status st = r && r->type != REDIS_REPLY_ERROR ? AUTH_OK : rstore_bad_reply(r);
    freeReplyObject(r);
    return st;
}

/* "<prefix>:<kind>:<name>" (name NULL: "<prefix>:<kind>"). Caller frees. */
char *rstore_key(redis_store *s, const char *kind, const char *name)
{
    return hr_redis_key(s->prefix, kind, name);
}
