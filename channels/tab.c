/*
 * tab.c - chan_tab, the channel layer's table of channels (layer_internal.h):
 * hr_map's open addressing with linear probing and tombstones, but the
 * caller passes the name's hash. A publication's channel name is hashed
 * once (chan_hash) and the hash travels with it (chan_msg.hash) through
 * every table on its way: the Redis layer's channel state, the registry
 * stripe, each loop thread's subscribers.
 *
 * The slot is taken from the hash's low bits; the registry's stripe from
 * its high bits (chan_stripe_of), so the names in one stripe do not crowd
 * one corner of its table.
 */
#include "layer_internal.h"

#include <stdlib.h>
#include <string.h>

static char tomb;
#define TOMB (&tomb)
#define MIN_CAP 8

void chan_tab_init(chan_tab *t)
{
    t->cap = MIN_CAP;
    t->slots = hr_calloc(t->cap, sizeof(*t->slots));
    t->count = t->used = 0;
}

void chan_tab_clear(chan_tab *t, void (*val_free)(void *val))
{
    for (size_t i = 0; t->slots && i < t->cap; i++) {
        chan_tab_slot *s = &t->slots[i];
        if (s->key && s->key != TOMB) {
            if (val_free)
                val_free(s->val);
            free(s->key);
        }
    }
    free(t->slots);
    t->slots = NULL;
    t->cap = t->count = t->used = 0;
}

static chan_tab_slot *find(const chan_tab *t, const char *key, size_t klen, uint64_t h)
{
    size_t mask = t->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        chan_tab_slot *s = &t->slots[i];
        if (!s->key)
            return NULL;
        if (s->key != TOMB && s->hash == h && s->klen == klen && !memcmp(s->key, key, klen))
            return s;
    }
}

void *chan_tab_get(const chan_tab *t, const char *key, size_t klen, uint64_t h)
{
    chan_tab_slot *s = find(t, key, klen, h);
    return s ? s->val : NULL;
}

/* Rehashes into a table twice as large, or as large when tombstones are
 * most of what fills it. */
static void grow(chan_tab *t)
{
    size_t ncap = t->count * 2 >= t->cap / 2 ? t->cap * 2 : t->cap;
    chan_tab_slot *ns = hr_calloc(ncap, sizeof(*ns));
    for (size_t i = 0; i < t->cap; i++) {
        chan_tab_slot s = t->slots[i];
        if (!s.key || s.key == TOMB)
            continue;
        size_t j = s.hash & (ncap - 1);
        while (ns[j].key)
            j = (j + 1) & (ncap - 1);
        ns[j] = s;
    }
    free(t->slots);
    t->slots = ns;
    t->cap = ncap;
    t->used = t->count;
}

void chan_tab_put(chan_tab *t, const char *key, size_t klen, uint64_t h, void *val)
{
    chan_tab_slot *s = find(t, key, klen, h);
    if (s) {
        s->val = val;
        return;
    }
    if ((t->used + 1) * 4 > t->cap * 3)
        grow(t);
    size_t mask = t->cap - 1, i = h & mask;
    while (t->slots[i].key && t->slots[i].key != TOMB)
        i = (i + 1) & mask;
    if (!t->slots[i].key)
        t->used++;
    t->slots[i] = (chan_tab_slot){hr_strndup(key, klen), klen, h, val};
    t->count++;
}

void *chan_tab_del(chan_tab *t, const char *key, size_t klen, uint64_t h)
{
    chan_tab_slot *s = find(t, key, klen, h);
    if (!s)
        return NULL;
    void *v = s->val;
    free(s->key);
    *s = (chan_tab_slot){TOMB, 0, 0, NULL};
    t->count--;
    return v;
}

int chan_tab_next(const chan_tab *t, size_t *it, const char **key, uint64_t *h, void **val)
{
    for (; *it < t->cap; (*it)++) {
        chan_tab_slot *s = &t->slots[*it];
        if (s->key && s->key != TOMB) {
            if (key)
                *key = s->key;
            if (h)
                *h = s->hash;
            if (val)
                *val = s->val;
            (*it)++;
            return 1;
        }
    }
    return 0;
}
