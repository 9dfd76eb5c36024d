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
 * in which case hr_map_free() and hr_map_clear() call it on every value. */
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

/*---- Misc ------------------------------------------------------------------*/

/* Monotonic clock in milliseconds. */
uint64_t hr_now_ms(void);
/* Constant-time comparison of two byte strings (length leaks, content not). */
int hr_secure_eq(const char *a, size_t alen, const char *b, size_t blen);

#endif
