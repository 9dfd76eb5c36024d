/*
 * store_redis.c - the user store of cluster mode: users in Redis, so every
 * node sees the same accounts (see auth_store_ops in auth.h).
 *
 * Synchronous hiredis on worker threads only: each worker owns one
 * connection, and a slow or dead Redis blocks a worker (at most the 2 s
 * timeout per call), never the event loop. A call that loses the
 * connection drops it and returns AUTH_UNAVAILABLE; the next call
 * connects again, so a Redis restart heals by itself.
 *
 * Keys, under the configured prefix <p>:
 *   <p>:user:<id>            hash: username, password_hash, roles (JSON), created_at
 *   <p>:username:<key>       string: the id (SET NX: the cluster-wide uniqueness lock);
 *                            <key> is auth_username_key (RFC 8265), see rekey_usernames
 *   <p>:refresh:<sha256>     string: the user id, expiring at EXAT expires_at
 *   <p>:user_refresh:<id>    set: the user's token hashes, so delete can find them
 *   <p>:revoked              hash: user id -> unix seconds of the revocation
 *   <p>:meta                 hash: small settings (generated JWT secret, schema,
 *                            username_rules once the name keys are migrated)
 * The Lua scripts below touch <p>:refresh:* keys they build themselves,
 * and several keys at once: in Redis Cluster every key of the store has
 * the prefix {<p>} (one hash tag: one slot, one master; user traffic is
 * light), so none of them is CROSSSLOT.
 *
 * Where the users are (the first URL of HERALD_REDIS_URL): redis:// its
 * server; redis+sentinel:// the master its sentinels name, checked with
 * ROLE, asked again when a command answers READONLY or the connection is
 * lost (blocking: we are on a worker); redis+cluster:// the master of the
 * users' slot, found by following MOVED (and ASK) from a seed.
 * Needs Redis 7.0 (GETDEL, SET EXAT, EXPIREAT NX/GT); init() checks.
 *
 * Why one file of ~950 lines: it is one implementation of auth_store_ops
 * (as store_sqlite.c is), each operation a short function over the same key
 * layout and reply checks described above.
 */
#include "auth/auth.h"
#include "common/common.h"
#include "common/redis_url.h"
#include "common/log.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#define REDIS_TIMEOUT_S 2
#define REDIS_MIN_MAJOR 7
#define REDIS_SCHEMA_VERSION "1"

/* The concrete store behind the opaque auth_store pointer. */
typedef struct redis_store {
    redisContext *c;        /* NULL while disconnected */
    hr_redis_target target; /* the first of HERALD_REDIS_URL */
    /* where c goes: target.node for redis://; the master the sentinels
     * named; in Redis Cluster the node that last served the users' slot
     * (NULL host: a seed) */
    char *host;
    int port;
    int asking;       /* Redis Cluster: the next command goes after ASKING (an ASK redirection) */
    char *prefix;     /* the key prefix: <p>, or {<p>} in Redis Cluster */
    char errstr[256]; /* why the last connection attempt failed */
} redis_store;

static redis_store *rs(auth_store *s)
{
    return (redis_store *)s;
}

/*---- URL parsing -----------------------------------------------------------*/

/* Users live on the first shard of HERALD_REDIS_URL: its server, the
 * master its sentinels name, or the cluster. */
static int parse_url(redis_store *s, const char *url, char *err, size_t errlen)
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

static void disconnect(redis_store *s)
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
static int connect_store(redis_store *s)
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
        disconnect(s);
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
        disconnect(s);
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
static redisReply *cmd(redis_store *s, const char *fmt, ...)
{
    redisReply *r = NULL;
    for (int tries = 0; tries < 6; tries++) {
        freeReplyObject(r);
        if (s->c && conn_stale(s->c))
            disconnect(s);
        if (!s->c && connect_store(s) < 0) {
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
        disconnect(s);
        store_warn(s->errstr);
    } else if (r->type == REDIS_REPLY_ERROR) {
        snprintf(s->errstr, sizeof(s->errstr), "redis: %.200s", r->str);
        store_warn(s->errstr);
    }
    return r;
}

/* Status for a reply that is not what the caller expected. Errors that a
 * healthy server gives while starting or failing over mean "try later". */
static auth_status bad_reply(const redisReply *r)
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
static auth_status string_reply(const char *k, const redisReply *r)
{
    if (!k)
        return AUTH_INTERNAL;
    if (r && r->type == REDIS_REPLY_NIL)
        return AUTH_NOT_FOUND;
    return !r || r->type != REDIS_REPLY_STRING ? bad_reply(r) : AUTH_OK;
}

/* Status of a command whose reply is only checked for errors. */
static auth_status cmd_status(redisReply *r)
{
    auth_status st = r && r->type != REDIS_REPLY_ERROR ? AUTH_OK : bad_reply(r);
    freeReplyObject(r);
    return st;
}

/* "<prefix>:<kind>:<name>" (name NULL: "<prefix>:<kind>"). Caller frees. */
static char *key(redis_store *s, const char *kind, const char *name)
{
    return hr_redis_key(s->prefix, kind, name);
}

/*---- Open, close, init -----------------------------------------------------*/

static void redis_close(auth_store *st)
{
    redis_store *s = rs(st);
    if (!s)
        return;
    disconnect(s);
    free(s->target.master);
    free(s->target.sentinel_user);
    free(s->target.sentinel_password);
    hr_redis_addr_clear(&s->target.node);
    hr_redis_addrs_free(s->target.hosts, s->target.nhosts);
    free(s->host);
    free(s->prefix);
    free(s);
}

/* Only parses the URL and tries to connect: an unreachable Redis is not an
 * open() error (init reports it, and later calls retry). */
static auth_store *redis_open(const char *url, const char *prefix, char *err, size_t errlen)
{
    redis_store *s = hr_calloc(1, sizeof(*s));
    /* the reason never echoes the URL: it may hold the password */
    if (parse_url(s, url, err, errlen) < 0) {
        redis_close((auth_store *)s);
        return NULL;
    }
    const char *p = prefix && *prefix ? prefix : "herald";
    if (s->target.mode == HR_REDIS_CLUSTER) {
        /* every key of the store in one slot ({<p>} is the hash tag): its
         * scripts touch several keys at once */
        if (strchr(p, '{') || strchr(p, '}')) {
            snprintf(err, errlen,
                     "HERALD_REDIS_PREFIX may not contain '{' or '}' with Redis Cluster");
            redis_close((auth_store *)s);
            return NULL;
        }
        s->prefix = hr_malloc(strlen(p) + 3);
        sprintf(s->prefix, "{%s}", p);
    } else {
        s->prefix = hr_strdup(p);
    }
    connect_store(s);
    return (auth_store *)s;
}

/* Major version from INFO server, or -1. */
static int server_major(redis_store *s)
{
    redisReply *r = cmd(s, "INFO server");
    int major = -1;
    const char *v = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "redis_version:") : NULL;
    if (v)
        major = atoi(v + strlen("redis_version:"));
    freeReplyObject(r);
    return major;
}

/*---- Username key migration ------------------------------------------------*/

#define USERNAME_RULES "rfc8265" /* <p>:meta username_rules when the keys are migrated */

static char *redis_meta_get(auth_store *st, const char *name);
static auth_status redis_meta_put_new(auth_store *st, const char *name, const char *value);

/* Moves one name to its new key, if it still points at the user, and
 * stores the display form: 1 moved, 0 gone (deleted meanwhile), 2 new key
 * taken. */
static const char rekey_script[] = "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
                                   "if not redis.call('SET', KEYS[2], ARGV[1], 'NX') then "
                                   "return 2 end "
                                   "redis.call('DEL', KEYS[1]) "
                                   "redis.call('HSET', KEYS[3], 'username', ARGV[2]) "
                                   "return 1";

/* "<prefix>:username:*" with the prefix's glob characters escaped. */
static char *name_pattern(redis_store *s)
{
    size_t n = strlen(s->prefix);
    char *p = hr_malloc(2 * n + sizeof(":username:*")), *o = p;
    for (size_t i = 0; i < n; i++) {
        if (strchr("*?[]\\", s->prefix[i]))
            *o++ = '\\';
        *o++ = s->prefix[i];
    }
    strcpy(o, ":username:*");
    return p;
}

/* Lists the name keys whose name part is not pure ASCII: the only ones the
 * new rules can move (a valid ASCII name keeps its ASCII-lowercase key; an
 * invalid one keeps its legacy key). Caller frees the list. */
static auth_status list_non_ascii_names(redis_store *s, char ***out, size_t *count)
{
    char *pattern = name_pattern(s), cursor[32] = "0";
    size_t skip = strlen(s->prefix) + strlen(":username:"), n = 0, cap = 0;
    char **v = NULL;
    auth_status res = AUTH_OK;
    while (res == AUTH_OK) {
        redisReply *r = cmd(s, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            res = bad_reply(r);
            freeReplyObject(r);
            break;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        const redisReply *keys = r->element[1];
        for (size_t i = 0; res == AUTH_OK && i < keys->elements; i++) {
            const char *k = keys->element[i]->str;
            int ascii = 1;
            for (const char *c = k && strlen(k) > skip ? k + skip : ""; *c && ascii; c++)
                ascii = (unsigned char)*c < 0x80;
            if (!k || ascii)
                continue;
            if (n == cap)
                v = hr_realloc(v, (cap = cap ? cap * 2 : 16) * sizeof(char *));
            v[n++] = hr_strdup(k);
        }
        freeReplyObject(r);
        if (!strcmp(cursor, "0"))
            break;
    }
    free(pattern);
    *out = v;
    *count = n;
    return res;
}

/* One name key: 1 moved (or nothing to do), 2 its new key is taken, else
 * -1 with *res set. Names the new rules refuse stay where they are. */
static int rekey_one(redis_store *s, const char *name_key, char **taken_by, auth_status *res)
{
    int out = 1;
    char *user_key = NULL, *display = NULL, *k = NULL, *new_key = NULL, why[200];
    redisReply *r = cmd(s, "GET %s", name_key), *h = NULL;
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL))
        goto fail;
    if (r->type == REDIS_REPLY_NIL || !(user_key = key(s, "user", r->str)))
        goto done;
    h = cmd(s, "HGET %s username", user_key);
    if (!h || (h->type != REDIS_REPLY_STRING && h->type != REDIS_REPLY_NIL))
        goto fail;
    if (h->type == REDIS_REPLY_NIL || /* a registration in flight */
        auth_username_prepare(h->str, &display, &k, why, sizeof(why)) < 0 ||
        !(new_key = key(s, "username", k)))
        goto done;
    if (!strcmp(new_key, name_key)) { /* same key: only the display form */
        if (strcmp(display, h->str))
            freeReplyObject(cmd(s, "HSET %s username %s", user_key, display));
        goto done;
    }
    freeReplyObject(h);
    h = cmd(s, "EVAL %s 3 %s %s %s %s %s", rekey_script, name_key, new_key, user_key, r->str,
            display);
    if (!h || h->type != REDIS_REPLY_INTEGER)
        goto fail;
    if (h->integer == 2) {
        out = 2;
        freeReplyObject(h);
        h = cmd(s, "GET %s", new_key);
        *taken_by = h && h->type == REDIS_REPLY_STRING ? hr_strdup(h->str) : NULL;
    }
    goto done;
fail:
    *res = bad_reply(h ? h : r);
    out = -1;
done:
    freeReplyObject(r);
    freeReplyObject(h);
    free(user_key);
    free(display);
    free(k);
    free(new_key);
    return out;
}

/* Once per store (marked in <p>:meta): names registered with the
 * ASCII-only fold move to their RFC 8265 key ("JOSÉ" from "josÉ" to
 * "josé", the key every lookup computes) and their display form. Two old
 * accounts whose names now mean the same name cannot share a key: the one
 * that moves first keeps it, the other stays under its old key and a
 * warning names both for the operator to settle. Keys are retried in
 * passes, so a name whose new key is still another name's old key waits
 * until that one has moved. Nodes starting together may both run this:
 * every step is conditional, so the second finds nothing to do. */
static auth_status rekey_usernames(redis_store *s, char *err, size_t errlen)
{
    char *done = redis_meta_get((auth_store *)s, "username_rules");
    int migrated = done && !strcmp(done, USERNAME_RULES);
    free(done);
    if (migrated)
        return AUTH_OK;
    char **names = NULL;
    size_t n = 0;
    auth_status res = list_non_ascii_names(s, &names, &n);
    for (int moved = 1; res == AUTH_OK && moved;) {
        moved = 0;
        for (size_t i = 0; res == AUTH_OK && i < n; i++) {
            char *other = NULL;
            if (names[i] && rekey_one(s, names[i], &other, &res) == 1) {
                free(names[i]);
                names[i] = NULL;
                moved = 1;
            }
            free(other);
        }
    }
    for (size_t i = 0; res == AUTH_OK && i < n; i++) { /* what is left collides */
        char *other = NULL;
        if (names[i] && rekey_one(s, names[i], &other, &res) == 2)
            hr_warn("username_collision",
                    "the user under %s and user %s have names that are now the same name "
                    "(RFC 8265): the first keeps its old key and cannot log in by name while "
                    "the other exists",
                    names[i], other ? other : "?");
        free(other);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (res == AUTH_OK)
        res = redis_meta_put_new((auth_store *)s, "username_rules", USERNAME_RULES);
    if (res != AUTH_OK)
        snprintf(err, errlen, "redis: cannot migrate username keys: %s",
                 s->errstr[0] ? s->errstr : "bad reply");
    return res;
}

/*---- Init ------------------------------------------------------------------*/

/* Checks the server is reachable and new enough, records the schema
 * version of the key layout for future migrations, and migrates the
 * username keys. */
static auth_status redis_init(auth_store *st, char *err, size_t errlen)
{
    redis_store *s = rs(st);
    int major = server_major(s);
    if (major < 0) {
        snprintf(err, errlen, "%s", s->errstr[0] ? s->errstr : "redis: INFO answered no version");
        return AUTH_UNAVAILABLE;
    }
    if (major < REDIS_MIN_MAJOR) {
        snprintf(err, errlen, "redis %d.x is too old: Herald needs Redis %d or later", major,
                 REDIS_MIN_MAJOR);
        return AUTH_INTERNAL;
    }
    char *meta = key(s, "meta", NULL);
    auth_status res =
        meta ? cmd_status(cmd(s, "HSETNX %s schema_version %s", meta, REDIS_SCHEMA_VERSION))
             : AUTH_INTERNAL;
    free(meta);
    if (res != AUTH_OK) {
        snprintf(err, errlen, "redis: cannot write %s:meta", s->prefix);
        return res;
    }
    return rekey_usernames(s, err, errlen);
}

/*---- Users -----------------------------------------------------------------*/

/* Second step of registration: fills the user hash and makes the name
 * reservation permanent, but only if the reservation is still ours (it
 * expires if this worker stalled or died mid-way). */
static const char create_script[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
    "redis.call('PERSIST', KEYS[1]) "
    "redis.call('HSET', KEYS[2], 'username', ARGV[2], 'password_hash', ARGV[3], "
    "'roles', ARGV[4], 'created_at', ARGV[5]) "
    "return 1";

/* Seconds a fresh name reservation lives before the user hash exists. */
#define RESERVE_TTL_S 60

/* SET NX on the folded name is the cluster-wide uniqueness check; the
 * reservation expires on its own if the second step never happens. */
static auth_status create_user_keys(redis_store *s, const auth_user *u, const char *name_key,
                                    const char *user_key, const char *roles)
{
    redisReply *r = cmd(s, "SET %s %s NX EX %d", name_key, u->id, RESERVE_TTL_S);
    if (!r || r->type == REDIS_REPLY_NIL || r->type == REDIS_REPLY_ERROR) {
        auth_status st = r && r->type == REDIS_REPLY_NIL ? AUTH_TAKEN : bad_reply(r);
        freeReplyObject(r);
        return st;
    }
    freeReplyObject(r);
    char created[24];
    snprintf(created, sizeof(created), "%lld", (long long)u->created_at);
    r = cmd(s, "EVAL %s 2 %s %s %s %s %s %s %s", create_script, name_key, user_key, u->id,
            u->username, u->password_hash, roles, created);
    auth_status st = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1 ? AUTH_OK
                     : r && r->type == REDIS_REPLY_INTEGER                  ? AUTH_UNAVAILABLE
                                                                            : bad_reply(r);
    freeReplyObject(r);
    if (st != AUTH_OK) /* best effort; else the reservation expires */
        freeReplyObject(cmd(s, "EVAL %s 1 %s %s",
                            "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                            "redis.call('DEL', KEYS[1]) end",
                            name_key, u->id));
    return st;
}

static auth_status redis_create_user(auth_store *st, const auth_user *u)
{
    redis_store *s = rs(st);
    char *folded = auth_username_key(u->username);
    char *name_key = folded ? key(s, "username", folded) : NULL;
    char *user_key = key(s, "user", u->id);
    char *roles = auth_roles_encode(u->roles, u->nroles);
    auth_status res = name_key && user_key && roles
                          ? create_user_keys(s, u, name_key, user_key, roles)
                          : AUTH_INTERNAL;
    free(folded);
    free(name_key);
    free(user_key);
    free(roles);
    return res;
}

/* Fills out from an HGETALL reply (field, value, field, value...). */
static auth_status parse_user(const redisReply *r, const char *id, auth_user *out)
{
    const char *roles = NULL;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *f = r->element[i]->str, *v = r->element[i + 1]->str;
        if (!f || !v)
            continue;
        if (!strcmp(f, "username"))
            out->username = hr_strdup(v);
        else if (!strcmp(f, "password_hash"))
            out->password_hash = hr_strdup(v);
        else if (!strcmp(f, "roles"))
            roles = v;
        else if (!strcmp(f, "created_at"))
            out->created_at = strtoll(v, NULL, 10);
    }
    out->id = hr_strdup(id);
    if (!out->username || !out->password_hash || auth_roles_decode(roles, out) < 0) {
        auth_user_clear(out);
        return AUTH_INTERNAL;
    }
    return AUTH_OK;
}

static auth_status redis_get_user_by_id(auth_store *st, const char *id, auth_user *out)
{
    redis_store *s = rs(st);
    memset(out, 0, sizeof(*out));
    char *k = id ? key(s, "user", id) : NULL;
    redisReply *r = k ? cmd(s, "HGETALL %s", k) : NULL;
    auth_status res = !k                                   ? AUTH_INTERNAL
                      : !r || r->type != REDIS_REPLY_ARRAY ? bad_reply(r)
                      : r->elements == 0                   ? AUTH_NOT_FOUND
                                                           : parse_user(r, id, out);
    freeReplyObject(r);
    free(k);
    return res;
}

/* The user filed under <p>:username:<name_key>. A name whose reservation
 * exists but whose hash does not yet (a registration in flight) reads as
 * not found. */
static auth_status user_by_key(redis_store *s, const char *name_key, auth_user *out)
{
    char *k = key(s, "username", name_key);
    redisReply *r = k ? cmd(s, "GET %s", k) : NULL;
    auth_status res = string_reply(k, r);
    if (res == AUTH_OK)
        res = redis_get_user_by_id((auth_store *)s, r->str, out);
    freeReplyObject(r);
    free(k);
    return res;
}

/* By the name's key; when that finds nobody, by its legacy key, which
 * only an account left there by the migration (rekey_usernames) or made
 * by an older Herald node during an upgrade has. */
static auth_status redis_get_user_by_name(auth_store *st, const char *username, auth_user *out)
{
    redis_store *s = rs(st);
    memset(out, 0, sizeof(*out));
    char *k = username ? auth_username_key(username) : NULL;
    char *legacy = username ? auth_username_legacy_key(username) : NULL;
    auth_status res = k && legacy ? user_by_key(s, k, out) : AUTH_INTERNAL;
    if (res == AUTH_NOT_FOUND && strcmp(k, legacy))
        res = user_by_key(s, legacy, out);
    free(k);
    free(legacy);
    return res;
}

/* Removes the user hash, the name (under its key or its legacy key,
 * whichever still points at this user) and every refresh token of the
 * user, atomically. */
static const char delete_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "
    "if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end "
    "if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end "
    "for _, h in ipairs(redis.call('SMEMBERS', KEYS[3])) do "
    "redis.call('DEL', ARGV[2] .. h) end "
    "redis.call('DEL', KEYS[1], KEYS[3]) "
    "return 1";

static auth_status delete_user_keys(redis_store *s, const char *id, const char *user_key)
{
    redisReply *r = cmd(s, "HGET %s username", user_key);
    auth_status found = string_reply(user_key, r);
    if (found != AUTH_OK) {
        freeReplyObject(r);
        return found;
    }
    char *folded = auth_username_key(r->str), *legacy = auth_username_legacy_key(r->str);
    freeReplyObject(r);
    char *name_key = folded ? key(s, "username", folded) : NULL;
    char *legacy_key = legacy ? key(s, "username", legacy) : NULL;
    char *index = key(s, "user_refresh", id);
    char *tokens = key(s, "refresh", "");
    auth_status st = AUTH_INTERNAL;
    if (name_key && legacy_key && index && tokens) {
        r = cmd(s, "EVAL %s 4 %s %s %s %s %s %s", delete_script, user_key, name_key, index,
                legacy_key, id, tokens);
        st = r && r->type == REDIS_REPLY_INTEGER ? (r->integer ? AUTH_OK : AUTH_NOT_FOUND)
                                                 : bad_reply(r);
        freeReplyObject(r);
    }
    free(folded);
    free(legacy);
    free(name_key);
    free(legacy_key);
    free(index);
    free(tokens);
    return st;
}

static auth_status redis_delete_user(auth_store *st, const char *id)
{
    redis_store *s = rs(st);
    char *user_key = key(s, "user", id);
    auth_status res = user_key ? delete_user_keys(s, id, user_key) : AUTH_INTERNAL;
    free(user_key);
    return res;
}

/*---- Refresh tokens --------------------------------------------------------*/

/* Stores the token and adds it to the user's index; the index lives as
 * long as its longest-lived token (EXPIREAT NX sets a first expiry, GT
 * only extends it). */
static const char put_refresh_script[] = "redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2]) "
                                         "redis.call('SADD', KEYS[2], ARGV[3]) "
                                         "redis.call('EXPIREAT', KEYS[2], ARGV[2], 'GT') "
                                         "redis.call('EXPIREAT', KEYS[2], ARGV[2], 'NX') "
                                         "return 1";

static auth_status redis_put_refresh(auth_store *st, const char *token_hash, const char *user_id,
                                     int64_t expires_at)
{
    redis_store *s = rs(st);
    char *tk = key(s, "refresh", token_hash);
    char *index = key(s, "user_refresh", user_id);
    char exp[24];
    snprintf(exp, sizeof(exp), "%lld", (long long)expires_at);
    auth_status res = tk && index
                          ? cmd_status(cmd(s, "EVAL %s 2 %s %s %s %s %s", put_refresh_script, tk,
                                           index, user_id, exp, token_hash))
                          : AUTH_INTERNAL;
    free(tk);
    free(index);
    return res;
}

/* GETDEL consumes the token in one command, so it is used once even when
 * two nodes race. Redis expires tokens itself (EXAT), by its own clock:
 * `now` is not needed here. */
static auth_status redis_take_refresh(auth_store *st, const char *token_hash, int64_t now,
                                      char **user_id)
{
    (void)now;
    redis_store *s = rs(st);
    *user_id = NULL;
    char *tk = key(s, "refresh", token_hash);
    redisReply *r = tk ? cmd(s, "GETDEL %s", tk) : NULL;
    auth_status res = string_reply(tk, r);
    if (res == AUTH_OK)
        *user_id = hr_strdup(r->str);
    freeReplyObject(r);
    free(tk);
    if (res == AUTH_OK) { /* keep the index small; harmless if it fails */
        char *index = key(s, "user_refresh", *user_id);
        if (index)
            freeReplyObject(cmd(s, "SREM %s %s", index, token_hash));
        free(index);
    }
    return res;
}

/*---- Revocations and metadata ----------------------------------------------*/

static auth_status redis_put_revoked(auth_store *st, const char *user_id, int64_t at)
{
    redis_store *s = rs(st);
    char *k = key(s, "revoked", NULL);
    auth_status res =
        k ? cmd_status(cmd(s, "HSET %s %s %lld", k, user_id, (long long)at)) : AUTH_INTERNAL;
    free(k);
    return res;
}

/* HSCAN in batches rather than HGETALL: the list only grows, and one huge
 * reply would block Redis and the worker for longer. HSCAN may report an
 * entry twice; fn must tolerate that (recording a revocation is idempotent). */
static auth_status redis_list_revoked(auth_store *st,
                                      void (*fn)(void *ud, const char *id, int64_t at), void *ud)
{
    redis_store *s = rs(st);
    char *k = key(s, "revoked", NULL);
    char cursor[32] = "0";
    auth_status res = k ? AUTH_OK : AUTH_INTERNAL;
    do {
        redisReply *r = k ? cmd(s, "HSCAN %s %s COUNT 1000", k, cursor) : NULL;
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            res = k ? bad_reply(r) : AUTH_INTERNAL;
            freeReplyObject(r);
            break;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        const redisReply *items = r->element[1];
        for (size_t i = 0; i + 1 < items->elements; i += 2)
            if (items->element[i]->str && items->element[i + 1]->str)
                fn(ud, items->element[i]->str, strtoll(items->element[i + 1]->str, NULL, 10));
        freeReplyObject(r);
    } while (strcmp(cursor, "0"));
    free(k);
    return res;
}

static char *redis_meta_get(auth_store *st, const char *name)
{
    redis_store *s = rs(st);
    char *k = key(s, "meta", NULL);
    redisReply *r = k ? cmd(s, "HGET %s %s", k, name) : NULL;
    char *val = r && r->type == REDIS_REPLY_STRING ? hr_strdup(r->str) : NULL;
    freeReplyObject(r);
    free(k);
    return val;
}

/* HSETNX: of two nodes racing to store a generated value, the first wins
 * and both read it back. */
static auth_status redis_meta_put_new(auth_store *st, const char *name, const char *value)
{
    redis_store *s = rs(st);
    char *k = key(s, "meta", NULL);
    auth_status res = k ? cmd_status(cmd(s, "HSETNX %s %s %s", k, name, value)) : AUTH_INTERNAL;
    free(k);
    return res;
}

const auth_store_ops auth_store_redis_ops = {
    .name = "redis",
    .open = redis_open,
    .close = redis_close,
    .init = redis_init,
    .create_user = redis_create_user,
    .get_user_by_id = redis_get_user_by_id,
    .get_user_by_name = redis_get_user_by_name,
    .delete_user = redis_delete_user,
    .put_refresh = redis_put_refresh,
    .take_refresh = redis_take_refresh,
    .put_revoked = redis_put_revoked,
    .list_revoked = redis_list_revoked,
    .meta_get = redis_meta_get,
    .meta_put_new = redis_meta_put_new,
};
