/* common.c - hash map, byte buffer and small helpers (see common.h). */
#include "common/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*---- String-keyed hash map -------------------------------------------------*/

/* Linear probing with tombstones. The table is kept at most 3/4 full
 * (live + tombstones) so probes stay short; it doubles when it gets there. */
typedef struct hr_slot {
    char *key; /* NULL = empty; TOMB = deleted */
    size_t klen;
    uint64_t hash;
    void *val;
} hr_slot;

struct hr_map {
    hr_slot *slots;
    size_t cap; /* power of two */
    size_t count;
    size_t used; /* live + tombstones */
    hr_map_free_fn val_free;
};

static char tomb_marker;
#define TOMB (&tomb_marker)

/* Keyed (hr_hash, SipHash-2-4): keys come from clients, and with a public
 * hash they could pick keys that share one probe chain (hash flooding). */
static uint64_t hash_bytes(const char *p, size_t n)
{
    return hr_hash(p, n);
}

hr_map *hr_map_new(hr_map_free_fn val_free)
{
    hr_map *m = hr_calloc(1, sizeof(*m));
    m->cap = 16;
    m->slots = hr_calloc(m->cap, sizeof(hr_slot));
    m->val_free = val_free;
    return m;
}

void hr_map_free(hr_map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->cap; i++) {
        hr_slot *s = &m->slots[i];
        if (s->key && s->key != TOMB) {
            if (m->val_free)
                m->val_free(s->val);
            free(s->key);
        }
    }
    free(m->slots);
    free(m);
}

static hr_slot *find_slot(const hr_map *m, const char *key, size_t klen, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        hr_slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (s->key != TOMB && s->hash == h && s->klen == klen && !memcmp(s->key, key, klen))
            return s;
    }
}

void *hr_map_get(const hr_map *m, const char *key, size_t klen)
{
    hr_slot *s = find_slot(m, key, klen, hash_bytes(key, klen));
    return s ? s->val : NULL;
}

static void insert_slot(hr_slot *slots, size_t cap, hr_slot src)
{
    size_t mask = cap - 1;
    size_t i = src.hash & mask;
    while (slots[i].key && slots[i].key != TOMB)
        i = (i + 1) & mask;
    slots[i] = src;
}

static void grow(hr_map *m)
{
    size_t ncap = m->count * 2 >= m->cap / 2 ? m->cap * 2 : m->cap;
    hr_slot *ns = hr_calloc(ncap, sizeof(hr_slot));
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && m->slots[i].key != TOMB)
            insert_slot(ns, ncap, m->slots[i]);
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    m->used = m->count;
}

void hr_map_put(hr_map *m, const char *key, size_t klen, void *val)
{
    uint64_t h = hash_bytes(key, klen);
    hr_slot *s = find_slot(m, key, klen, h);
    if (s) {
        s->val = val;
        return;
    }
    if ((m->used + 1) * 4 > m->cap * 3)
        grow(m);
    char *k = hr_strndup(key, klen);
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    while (m->slots[i].key && m->slots[i].key != TOMB)
        i = (i + 1) & mask;
    if (!m->slots[i].key)
        m->used++;
    m->slots[i] = (hr_slot){k, klen, h, val};
    m->count++;
}

void *hr_map_del(hr_map *m, const char *key, size_t klen)
{
    hr_slot *s = find_slot(m, key, klen, hash_bytes(key, klen));
    if (!s)
        return NULL;
    void *v = s->val;
    free(s->key);
    s->key = TOMB;
    s->val = NULL;
    m->count--;
    return v;
}

size_t hr_map_count(const hr_map *m)
{
    return m->count;
}

int hr_map_next(const hr_map *m, size_t *it, const char **key, size_t *klen, void **val)
{
    for (; *it < m->cap; (*it)++) {
        hr_slot *s = &m->slots[*it];
        if (s->key && s->key != TOMB) {
            if (key)
                *key = s->key;
            if (klen)
                *klen = s->klen;
            if (val)
                *val = s->val;
            (*it)++;
            return 1;
        }
    }
    return 0;
}

/*---- Growable byte buffer --------------------------------------------------*/

void hr_buf_reserve(hr_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    if (b->off > 0) { /* a FIFO: reclaim what was consumed before growing */
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra + 1 <= b->cap)
            return;
    }
    size_t ncap = b->cap ? b->cap : 64;
    while (ncap < b->len + extra + 1)
        ncap *= 2;
    b->data = hr_realloc(b->data, ncap);
    b->cap = ncap;
}

void hr_buf_append(hr_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return; /* p may be NULL (lws passes an empty body that way) */
    hr_buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void hr_buf_printf(hr_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return; /* nothing to add (an encoding error cannot come from Herald's formats) */
    hr_buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void hr_buf_consume(hr_buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len) {
        b->off = b->len = 0;
        if (b->data)
            b->data[0] = '\0';
    }
}

void hr_buf_reset(hr_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = b->off = 0;
}

/*---- Misc ------------------------------------------------------------------*/

uint64_t hr_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t hr_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int hr_secure_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return 0;
    unsigned char d = 0;
    for (size_t i = 0; i < alen; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

/*---- Encodings -------------------------------------------------------------*/

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int hr_percent_decode(const char *src, size_t n, int plus_is_space, char *out, size_t outcap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)src[i];
        if (c == '+' && plus_is_space) {
            c = ' ';
        } else if (c == '%') {
            int hi = i + 2 < n ? hexval((unsigned char)src[i + 1]) : -1;
            int lo = hi >= 0 ? hexval((unsigned char)src[i + 2]) : -1;
            if (lo < 0)
                return -1;
            c = hi << 4 | lo;
            i += 2;
        }
        if (c == 0 || o + 1 >= outcap)
            return -1;
        out[o++] = (char)c;
    }
    if (outcap == 0)
        return -1;
    out[o] = '\0';
    return (int)o;
}
