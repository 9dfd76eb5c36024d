/*
 * store_redis_internal.h - what store_redis.c (the user operations) takes
 * from store_redis_conn.c (reaching the users' Redis: the URL, plain,
 * Sentinel or Cluster, redirections, replies); not part of the module's
 * interface (auth.h). Worker threads only: every call may block up to
 * REDIS_TIMEOUT_S per attempt.
 */
#ifndef HR_STORE_REDIS_INTERNAL_H
#define HR_STORE_REDIS_INTERNAL_H

#include "auth/auth.h"
#include "common/redis_url.h"

#include <hiredis/hiredis.h>

#define REDIS_TIMEOUT_S 2

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

/* Reads the first target of url (HERALD_REDIS_URL) into s->target. 0, or
 * -1 with err set (never echoing the URL: it may hold a password). */
int rstore_parse_url(redis_store *s, const char *url, char *err, size_t errlen);
/* Drops s's connection (none: nothing to do). */
void rstore_disconnect(redis_store *s);
/* Connects, authenticates and selects the database. 0 or -1 (s->errstr). */
int rstore_connect(redis_store *s);
/* Sends one command (hiredis format: each %s is one argument). Returns the
 * reply (caller frees), or NULL when Redis is unreachable (the next call
 * reconnects); redirections and READONLY are followed, an error's text is
 * kept in s->errstr. */
redisReply *rstore_cmd(redis_store *s, const char *fmt, ...);
/* The status of a reply that is not what the caller expected:
 * AUTH_UNAVAILABLE for "try later" (none, LOADING, READONLY...), else
 * AUTH_INTERNAL. */
auth_status rstore_bad_reply(const redisReply *r);
/* The status of a GET-like reply r on key k (NULL: nothing was sent):
 * AUTH_OK for a string, AUTH_NOT_FOUND for nil. */
auth_status rstore_string_reply(const char *k, const redisReply *r);
/* The status of a command only checked for errors; frees r. */
auth_status rstore_cmd_status(redisReply *r);
/* "<prefix>:<kind>:<name>" (name NULL: "<prefix>:<kind>"). Caller frees. */
char *rstore_key(redis_store *s, const char *kind, const char *name);

#endif
