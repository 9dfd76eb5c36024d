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

/* Returns a new empty map (never NULL: allocation aborts, see "Memory"). */
hr_map *hr_map_new(hr_map_free_fn val_free);
/* Frees the map, its key copies and (with a destructor) its values. NULL ok. */
void hr_map_free(hr_map *m);
/* Returns the value stored under key, or NULL. */
void *hr_map_get(const hr_map *m, const char *key, size_t klen);
/* Stores val under key (copying key). Replaces an existing value without
 * freeing it. */
void hr_map_put(hr_map *m, const char *key, size_t klen, void *val);
/* Removes key and returns its value (not freed), or NULL if absent. */
void *hr_map_del(hr_map *m, const char *key, size_t klen);
size_t hr_map_count(const hr_map *m);

/* Iteration: for (size_t it = 0; hr_map_next(m, &it, &k, &kl, &v);) ...
 * The map must not be modified during iteration. */
int hr_map_next(const hr_map *m, size_t *it, const char **key, size_t *klen, void **val);

/*---- Growable byte buffer --------------------------------------------------*/

/* Bytes [off, len) are the buffer's content; [0, off) were consumed from
 * the front (hr_buf_consume: a buffer used as a FIFO, such as an outbound
 * queue) and are reclaimed when an append needs room. A buffer nobody
 * consumes from keeps off 0, so data is its content. Zero-initialise
 * (hr_buf b = {0}); memory is allocated on first append. */
typedef struct hr_buf {
    char *data; /* append and printf keep it NUL-terminated */
    size_t len;
    size_t cap;
    size_t off;
} hr_buf;

/* Appends n bytes (p may be NULL when n is 0). */
void hr_buf_append(hr_buf *b, const void *p, size_t n);
/* Appends printf-formatted text. */
void hr_buf_printf(hr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Makes room for extra more bytes at data + len (the caller writes them
 * and adds to len), reclaiming consumed bytes first. */
void hr_buf_reserve(hr_buf *b, size_t extra);
/* Drops n bytes from the front of the content; an emptied buffer starts
 * over at offset 0 (keeping its memory). */
void hr_buf_consume(hr_buf *b, size_t n);
/* Frees the storage and resets the buffer to empty. */
void hr_buf_reset(hr_buf *b);
/* The content not yet consumed. */
static inline char *hr_buf_head(const hr_buf *b)
{
    return b->data + b->off;
}
static inline size_t hr_buf_pending(const hr_buf *b)
{
    return b->len - b->off;
}

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

/* Length of the well-formed UTF-8 sequence at p (n > 0 bytes left, RFC
 * 3629), its code point in *cp (NULL: not wanted); 0 for anything
 * malformed: a stray continuation byte, a truncated sequence, an overlong
 * form, a surrogate, a value above U+10FFFF. Pure. */
size_t hr_utf8_decode(const unsigned char *p, size_t n, uint32_t *cp);
/* Is s[0..n) well-formed UTF-8? Returns 1 if so. */
int hr_utf8_valid(const void *s, size_t n);

/*---- Misc ------------------------------------------------------------------*/

/* Monotonic clock in milliseconds. */
uint64_t hr_now_ms(void);
/* Monotonic clock in microseconds. */
uint64_t hr_now_us(void);
/* Constant-time comparison of two byte strings (length leaks, content not). */
int hr_secure_eq(const char *a, size_t alen, const char *b, size_t blen);

#endif
