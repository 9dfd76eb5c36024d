/*
 * throttle.c - failed-login throttling (see auth.h).
 *
 * A fixed window per key: the first failure opens a window of window_s
 * seconds; max_failures failures inside it block the key until the window
 * closes. Fixed windows are coarse but need one small record per key and
 * make Retry-After exact.
 */
#include "auth.h"
#include "common/common.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry {
    int64_t window_end;
    int failures;
} entry;

struct auth_throttle {
    hr_map *keys; /* key -> entry */
    int max_failures;
    int window_s;
    size_t max_keys;
};

auth_throttle *auth_throttle_new(int max_failures, int window_s, size_t max_keys)
{
    auth_throttle *t = calloc(1, sizeof(*t));
    if (!t || !(t->keys = hr_map_new(free))) {
        free(t);
        return NULL;
    }
    t->max_failures = max_failures;
    t->window_s = window_s;
    t->max_keys = max_keys;
    return t;
}

void auth_throttle_free(auth_throttle *t)
{
    if (t) {
        hr_map_free(t->keys);
        free(t);
    }
}

/* Drops every entry whose window has closed. Collects keys first because
 * the map must not change while it is iterated. */
static void prune(auth_throttle *t, int64_t now)
{
    size_t n = 0, it = 0;
    const char *k;
    size_t kl;
    void *v;
    char **dead = malloc(hr_map_count(t->keys) * sizeof(char *));
    size_t *lens = malloc(hr_map_count(t->keys) * sizeof(size_t));
    if (!dead || !lens)
        goto out;
    while (hr_map_next(t->keys, &it, &k, &kl, &v))
        if (((entry *)v)->window_end <= now) {
            dead[n] = (char *)k;
            lens[n++] = kl;
        }
    for (size_t i = 0; i < n; i++) {
        char *copy = strndup(dead[i], lens[i]);
        if (copy) {
            free(hr_map_del(t->keys, copy, lens[i]));
            free(copy);
        }
    }
out:
    free(dead);
    free(lens);
}

int auth_throttle_check(auth_throttle *t, const char *key, int64_t now)
{
    entry *e = hr_map_get(t->keys, key, strlen(key));
    if (!e || e->window_end <= now || e->failures < t->max_failures)
        return 0;
    return (int)(e->window_end - now);
}

void auth_throttle_fail(auth_throttle *t, const char *key, int64_t now)
{
    size_t kl = strlen(key);
    entry *e = hr_map_get(t->keys, key, kl);
    if (!e) {
        if (hr_map_count(t->keys) >= t->max_keys)
            prune(t, now);
        if (hr_map_count(t->keys) >= t->max_keys || !(e = calloc(1, sizeof(*e))))
            return; /* full of live entries: fail open rather than grow */
        if (hr_map_put(t->keys, key, kl, e) < 0) {
            free(e);
            return;
        }
    }
    if (e->window_end <= now) {
        e->window_end = now + t->window_s;
        e->failures = 0;
    }
    e->failures++;
}

void auth_throttle_reset(auth_throttle *t, const char *key)
{
    free(hr_map_del(t->keys, key, strlen(key)));
}
