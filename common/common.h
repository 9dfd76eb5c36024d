/*
 * common.h - small data structures shared by every Herald module.
 *
 * Herald's modules (gateway, channels, auth) must not depend on each other's
 * internals, yet all of them need a string-keyed hash map and a growable
 * byte buffer. Those live here, with no I/O and no library dependencies, so
 * they can be unit-tested and fuzzed in isolation.
 */
#ifndef HR_COMMON_H
#define HR_COMMON_H

#include <stddef.h>
#include <stdint.h>

/*---- String-keyed hash map -------------------------------------------------*/

/* Open-addressing map from byte-string keys to void* values. Keys are copied
 * into the map; values are owned by the caller unless a destructor is given,
 * in which case hr_map_free() and hr_map_clear() call it on every value.
 * Keys are hashed with hr_hash (keyed, see below), so clients choosing keys
 * (channel names, user ids) cannot aim them all at one probe chain. A map
 * is not locked: one thread at a time, or the caller's lock. */
typedef struct hr_map hr_map;

typedef void (*hr_map_free_fn)(void *val);

/* Returns a new empty map, or NULL on allocation failure. */
hr_map *hr_map_new(hr_map_free_fn val_free);
/* Frees the map, its key copies and (with a destructor) its values. NULL ok. */
void hr_map_free(hr_map *m);
/* Returns the value stored under key, or NULL. */
void *hr_map_get(const hr_map *m, const char *key, size_t klen);
/* Stores val under key (copying key). Replaces an existing value without
 * freeing it. Returns 0, or -1 on allocation failure. */
int hr_map_put(hr_map *m, const char *key, size_t klen, void *val);
/* Removes key and returns its value (not freed), or NULL if absent. */
void *hr_map_del(hr_map *m, const char *key, size_t klen);
size_t hr_map_count(const hr_map *m);

/* Iteration: for (size_t it = 0; hr_map_next(m, &it, &k, &kl, &v);) ...
 * The map must not be modified during iteration. */
int hr_map_next(const hr_map *m, size_t *it, const char **key, size_t *klen, void **val);

/*---- Growable byte buffer --------------------------------------------------*/

typedef struct hr_buf {
    char *data; /* NUL-terminated while len < cap */
    size_t len;
    size_t cap;
} hr_buf;

/* Appends n bytes; returns 0 or -1 on allocation failure (buffer unchanged). */
int hr_buf_append(hr_buf *b, const void *p, size_t n);
/* Appends printf-formatted text; returns 0 or -1. */
int hr_buf_printf(hr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Frees the storage and resets the buffer to empty. */
void hr_buf_reset(hr_buf *b);

/*---- Memory ----------------------------------------------------------------*/

/* Out-of-memory policy: these abort the process with a message instead of
 * returning NULL (as Redis' zmalloc does), so callers have no untested
 * recovery branches. Free with free(). */
void *hr_malloc(size_t n);
void *hr_calloc(size_t count, size_t size);
void *hr_realloc(void *p, size_t n);
char *hr_strdup(const char *s);
/* Copies n bytes of s and a NUL. */
char *hr_strndup(const char *s, size_t n);
/* Points jansson at the same policy; call once at start-up. */
void hr_alloc_init(void);

/*---- Hashing ---------------------------------------------------------------*/

/* SipHash-2-4 (Aumasson & Bernstein, 2012) of n bytes under a 128-bit key:
 * a keyed PRF, so without the key nobody can compute, or search offline
 * for, inputs that collide. Pure; p may be NULL when n is 0. */
uint64_t hr_siphash24(const unsigned char key[16], const void *p, size_t n);
/* SipHash-2-4 under this process's key: 128 bits from getrandom(2), drawn
 * once on first use (thread-safe) and never exposed, so hash values differ
 * between runs and must never be stored or sent. Aborts with a message if
 * the kernel gives no randomness, as hr_malloc does on OOM. */
uint64_t hr_hash(const void *p, size_t n);

/*---- Randomness ------------------------------------------------------------*/

/* n bytes from the kernel's CSPRNG (getrandom(2)). Aborts with a message if
 * the kernel gives none: no caller can do anything safer. */
void hr_random_bytes(void *out, size_t n);
/* 2 * nbytes lowercase hex digits of fresh randomness and a NUL into out
 * (which holds 2 * nbytes + 1 bytes): ids, token ids, secrets. */
void hr_random_hex(char *out, size_t nbytes);

/*---- Encodings -------------------------------------------------------------*/

/* Decodes %XX escapes (and, when plus_is_space, '+' as a space: form
 * bodies) from src[0..n) into out, NUL-terminated. Returns the decoded
 * length, or -1 on a malformed escape, a decoded NUL byte, or a result that
 * does not fit in outcap - 1 bytes. Pure. */
int hr_percent_decode(const char *src, size_t n, int plus_is_space, char *out, size_t outcap);

/*---- Redis addresses (shared by the user store and the channel layer) -----*/

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

/*---- Misc ------------------------------------------------------------------*/

/* Monotonic clock in milliseconds. */
uint64_t hr_now_ms(void);
/* Monotonic clock in microseconds. */
uint64_t hr_now_us(void);
/* Constant-time comparison of two byte strings (length leaks, content not). */
int hr_secure_eq(const char *a, size_t alen, const char *b, size_t blen);

#endif
