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
 * How the store reaches its Redis (plain, Sentinel, Cluster; redirections,
 * reconnects) is store_redis_conn.c's. Needs Redis 7.0 (GETDEL, SET
 * EXAT, EXPIREAT NX/GT); init() checks.
 */
#include "auth/store_redis_internal.h"
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

#define REDIS_MIN_MAJOR 7
#define REDIS_SCHEMA_VERSION "1"

static redis_store *rs(auth_store *s)
{
    return (redis_store *)s;
}

/*---- Open, close, init -----------------------------------------------------*/

static void redis_close(auth_store *st)
{
    redis_store *s = rs(st);
    if (!s)
        return;
    rstore_disconnect(s);
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
    if (rstore_parse_url(s, url, err, errlen) < 0) {
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
    rstore_connect(s);
    return (auth_store *)s;
}

/* Major version from INFO server, or -1. */
static int server_major(redis_store *s)
{
    redisReply *r = rstore_cmd(s, "INFO server");
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
        redisReply *r = rstore_cmd(s, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            res = rstore_bad_reply(r);
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
    redisReply *r = rstore_cmd(s, "GET %s", name_key), *h = NULL;
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL))
        goto fail;
    if (r->type == REDIS_REPLY_NIL || !(user_key = rstore_key(s, "user", r->str)))
        goto done;
    h = rstore_cmd(s, "HGET %s username", user_key);
    if (!h || (h->type != REDIS_REPLY_STRING && h->type != REDIS_REPLY_NIL))
        goto fail;
    if (h->type == REDIS_REPLY_NIL || /* a registration in flight */
        auth_username_prepare(h->str, &display, &k, why, sizeof(why)) < 0 ||
        !(new_key = rstore_key(s, "username", k)))
        goto done;
    if (!strcmp(new_key, name_key)) { /* same key: only the display form */
        if (strcmp(display, h->str))
            freeReplyObject(rstore_cmd(s, "HSET %s username %s", user_key, display));
        goto done;
    }
    freeReplyObject(h);
    h = rstore_cmd(s, "EVAL %s 3 %s %s %s %s %s", rekey_script, name_key, new_key, user_key, r->str,
                   display);
    if (!h || h->type != REDIS_REPLY_INTEGER)
        goto fail;
    if (h->integer == 2) {
        out = 2;
        freeReplyObject(h);
        h = rstore_cmd(s, "GET %s", new_key);
        *taken_by = h && h->type == REDIS_REPLY_STRING ? hr_strdup(h->str) : NULL;
    }
    goto done;
fail:
    *res = rstore_bad_reply(h ? h : r);
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
    char *meta = rstore_key(s, "meta", NULL);
    auth_status res = meta ? rstore_cmd_status(rstore_cmd(s, "HSETNX %s schema_version %s", meta,
                                                          REDIS_SCHEMA_VERSION))
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
    redisReply *r = rstore_cmd(s, "SET %s %s NX EX %d", name_key, u->id, RESERVE_TTL_S);
    if (!r || r->type == REDIS_REPLY_NIL || r->type == REDIS_REPLY_ERROR) {
        auth_status st = r && r->type == REDIS_REPLY_NIL ? AUTH_TAKEN : rstore_bad_reply(r);
        freeReplyObject(r);
        return st;
    }
    freeReplyObject(r);
    char created[24];
    snprintf(created, sizeof(created), "%lld", (long long)u->created_at);
    r = rstore_cmd(s, "EVAL %s 2 %s %s %s %s %s %s %s", create_script, name_key, user_key, u->id,
                   u->username, u->password_hash, roles, created);
    auth_status st = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1 ? AUTH_OK
                     : r && r->type == REDIS_REPLY_INTEGER                  ? AUTH_UNAVAILABLE
                                                                            : rstore_bad_reply(r);
    freeReplyObject(r);
    if (st != AUTH_OK) /* best effort; else the reservation expires */
        freeReplyObject(rstore_cmd(s, "EVAL %s 1 %s %s",
                                   "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                                   "redis.call('DEL', KEYS[1]) end",
                                   name_key, u->id));
    return st;
}

static auth_status redis_create_user(auth_store *st, const auth_user *u)
{
    redis_store *s = rs(st);
    char *folded = auth_username_key(u->username);
    char *name_key = folded ? rstore_key(s, "username", folded) : NULL;
    char *user_key = rstore_key(s, "user", u->id);
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
    char *k = id ? rstore_key(s, "user", id) : NULL;
    redisReply *r = k ? rstore_cmd(s, "HGETALL %s", k) : NULL;
    auth_status res = !k                                   ? AUTH_INTERNAL
                      : !r || r->type != REDIS_REPLY_ARRAY ? rstore_bad_reply(r)
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
    char *k = rstore_key(s, "username", name_key);
    redisReply *r = k ? rstore_cmd(s, "GET %s", k) : NULL;
    auth_status res = rstore_string_reply(k, r);
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
    redisReply *r = rstore_cmd(s, "HGET %s username", user_key);
    auth_status found = rstore_string_reply(user_key, r);
    if (found != AUTH_OK) {
        freeReplyObject(r);
        return found;
    }
    char *folded = auth_username_key(r->str), *legacy = auth_username_legacy_key(r->str);
    freeReplyObject(r);
    char *name_key = folded ? rstore_key(s, "username", folded) : NULL;
    char *legacy_key = legacy ? rstore_key(s, "username", legacy) : NULL;
    char *index = rstore_key(s, "user_refresh", id);
    char *tokens = rstore_key(s, "refresh", "");
    auth_status st = AUTH_INTERNAL;
    if (name_key && legacy_key && index && tokens) {
        r = rstore_cmd(s, "EVAL %s 4 %s %s %s %s %s %s", delete_script, user_key, name_key, index,
                       legacy_key, id, tokens);
        st = r && r->type == REDIS_REPLY_INTEGER ? (r->integer ? AUTH_OK : AUTH_NOT_FOUND)
                                                 : rstore_bad_reply(r);
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
    char *user_key = rstore_key(s, "user", id);
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
    char *tk = rstore_key(s, "refresh", token_hash);
    char *index = rstore_key(s, "user_refresh", user_id);
    char exp[24];
    snprintf(exp, sizeof(exp), "%lld", (long long)expires_at);
    auth_status res =
        tk && index
            ? rstore_cmd_status(rstore_cmd(s, "EVAL %s 2 %s %s %s %s %s", put_refresh_script, tk,
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
    char *tk = rstore_key(s, "refresh", token_hash);
    redisReply *r = tk ? rstore_cmd(s, "GETDEL %s", tk) : NULL;
    auth_status res = rstore_string_reply(tk, r);
    if (res == AUTH_OK)
        *user_id = hr_strdup(r->str);
    freeReplyObject(r);
    free(tk);
    if (res == AUTH_OK) { /* keep the index small; harmless if it fails */
        char *index = rstore_key(s, "user_refresh", *user_id);
        if (index)
            freeReplyObject(rstore_cmd(s, "SREM %s %s", index, token_hash));
        free(index);
    }
    return res;
}

/*---- Revocations and metadata ----------------------------------------------*/

static auth_status redis_put_revoked(auth_store *st, const char *user_id, int64_t at)
{
    redis_store *s = rs(st);
    char *k = rstore_key(s, "revoked", NULL);
    auth_status res =
        k ? rstore_cmd_status(rstore_cmd(s, "HSET %s %s %lld", k, user_id, (long long)at))
          : AUTH_INTERNAL;
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
    char *k = rstore_key(s, "revoked", NULL);
    char cursor[32] = "0";
    auth_status res = k ? AUTH_OK : AUTH_INTERNAL;
    do {
        redisReply *r = k ? rstore_cmd(s, "HSCAN %s %s COUNT 1000", k, cursor) : NULL;
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            res = k ? rstore_bad_reply(r) : AUTH_INTERNAL;
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
    char *k = rstore_key(s, "meta", NULL);
    redisReply *r = k ? rstore_cmd(s, "HGET %s %s", k, name) : NULL;
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
    char *k = rstore_key(s, "meta", NULL);
    auth_status res =
        k ? rstore_cmd_status(rstore_cmd(s, "HSETNX %s %s %s", k, name, value)) : AUTH_INTERNAL;
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
