/*
 * redis_url.h - HERALD_REDIS_URL: the Redis servers, Sentinels and Cluster
 * seeds a node talks to (SPEC §5), parsed without any I/O; shared by the
 * user store (auth/store_redis.c) and the channel layer (channels/redis*.c).
 * Unit tested (tests/unit/common/redis_url.c) and fuzzed
 * (fuzz/fuzz_redis_url.c).
 */
#ifndef HR_REDIS_URL_H
#define HR_REDIS_URL_H

#include <stddef.h>

/* One Redis server of HERALD_REDIS_URL. */
typedef struct hr_redis_addr {
    char *host; /* name or address (no brackets) */
    int port;
    char *user;     /* ACL user, or NULL */
    char *password; /* or NULL */
    int db;
} hr_redis_addr;

/* Parses redis://[[user]:password@]host[:port][/db] (%XX-escapes in user
 * and password; [v6]:port). Fills *out (free with hr_redis_addr_clear).
 * Returns 0 or -1; never echoes the URL (it may hold a password). */
int hr_redis_url_parse(const char *url, size_t len, hr_redis_addr *out);
/* Parses a comma-separated list of such URLs: the shards, in order.
 * Returns the count (>= 1) with *out a malloc'ed array, or -1 (also for
 * a list with redis+sentinel:// or redis+cluster:// URLs: callers that
 * follow failovers use hr_redis_targets_parse). */
int hr_redis_urls_parse(const char *list, hr_redis_addr **out);

/* How one shard of HERALD_REDIS_URL reaches its Redis (SPEC section 5). */
typedef enum hr_redis_mode {
    HR_REDIS_DIRECT = 0, /* redis://: one server */
    HR_REDIS_SENTINEL,   /* redis+sentinel://: the master that sentinels name */
    HR_REDIS_CLUSTER,    /* redis+cluster://: a Redis Cluster, from seed nodes */
} hr_redis_mode;

typedef struct hr_redis_target {
    hr_redis_mode mode;
    /* The data nodes' credentials and database (user, password, db); for
     * HR_REDIS_DIRECT also the server's host and port, so `node` is what
     * hr_redis_url_parse gives. Otherwise host is NULL and port 0. */
    hr_redis_addr node;
    /* Sentinel: the sentinels (default port 26379); cluster: the seed
     * nodes (6379); direct: none. Host and port only: the URL's
     * credentials are the data nodes', not the sentinels'. */
    hr_redis_addr *hosts;
    int nhosts;
    char *master; /* sentinel: the monitored master's name; else NULL */
    /* sentinel: the sentinels' own credentials (?sentinel_password=P
     * &sentinel_user=U), or NULL: sentinels without requirepass */
    char *sentinel_user, *sentinel_password;
} hr_redis_target;

/* Parses HERALD_REDIS_URL: one or several comma-separated URLs, each
 *   redis://[[user]:password@]host[:port][/db]
 *   redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db]
 *       [?sentinel_password=P[&sentinel_user=U]]
 *   redis+cluster://[[user]:password@]host[:port][,host[:port]...]
 * A comma followed by "<scheme>://" starts the next URL; any other comma
 * separates hosts. Several redis:// or redis+sentinel:// URLs are shards
 * (all of one scheme); redis+cluster:// stands alone (the cluster shards
 * itself) and has database 0 only. Returns the count (>= 1) with *out a
 * malloc'ed array (free with hr_redis_targets_free), or -1 with a reason
 * in err that never quotes the URL (it may hold a password). */
int hr_redis_targets_parse(const char *list, hr_redis_target **out, char *err, size_t errlen);
void hr_redis_targets_free(hr_redis_target *t, int n);
/* HERALD_REDIS_URL with the sentinels' password (HERALD_REDIS_SENTINEL_
 * PASSWORD) given to every redis+sentinel:// URL of the list that has no
 * parameters of its own (?sentinel_password=, %XX-escaped). Returns a
 * malloc'ed list (caller frees); the others are copied as they are. Pure;
 * aborts on allocation failure. */
char *hr_redis_urls_with_sentinel_password(const char *list, const char *password);
void hr_redis_addr_clear(hr_redis_addr *a);
void hr_redis_addrs_free(hr_redis_addr *a, int n);
/* The commands a new connection sends before anything else: AUTH (when a
 * password is set) and SELECT (when db != 0), as argv arrays for hiredis'
 * *CommandArgv. Returns how many (0..2); dbbuf holds SELECT's argument. */
typedef struct hr_redis_setup {
    int argc;
    const char *argv[3];
} hr_redis_setup;
int hr_redis_setup_commands(const hr_redis_addr *a, hr_redis_setup out[2], char dbbuf[16]);
/* Herald's key and topic names: "<prefix>:<kind>:<name>", or
 * "<prefix>:<kind>" when name is NULL. Returns a malloc'ed string (caller
 * frees); aborts on allocation failure. */
char *hr_redis_key(const char *prefix, const char *kind, const char *name);

#endif
