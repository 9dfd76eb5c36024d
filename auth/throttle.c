/*
 * throttle.c - login throttling (see auth.h).
 *
 * A fixed window per key: the first admitted attempt opens a window of
 * window_s seconds; max_attempts admitted attempts inside it block the key
 * until the window closes. Fixed windows are coarse but need one small
 * record per key and make Retry-After exact.
 *
 * Attempts are counted when admitted, not when they fail: a failure is
 * known only after Argon2id (~60 ms on a worker), and counting then let a
 * burst of concurrent guesses all pass the check before the first one was
 * recorded. Each call holds the throttle's mutex for the whole
 * check-and-count, so threads sharing one throttle cannot race either.
 */
#include "auth.h"
#include "common/common.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    int64_t window_end;
    int attempts; /* admitted in the current window, minus releases */
} entry;

struct auth_throttle {
    pthread_mutex_t mu;
    hr_map *keys; /* locked: key -> entry */
    int max_attempts;
    int window_s;
    size_t max_keys;
    /* locked: no entry's window ends before this, so pruning earlier finds
     * nothing. Without it, a table full of live keys would be scanned on
     * every new key, with every loop thread waiting on the mutex. */
    int64_t next_prune;
};

auth_throttle *auth_throttle_new(int max_attempts, int window_s, size_t max_keys)
{
    auth_throttle *t = calloc(1, sizeof(*t));
    if (!t || !(t->keys = hr_map_new(free))) {
        free(t);
        return NULL;
    }
    if (pthread_mutex_init(&t->mu, NULL) != 0) {
        hr_map_free(t->keys);
        free(t);
        return NULL;
    }
    t->max_attempts = max_attempts;
    t->window_s = window_s;
    t->max_keys = max_keys;
    return t;
}

void auth_throttle_free(auth_throttle *t)
{
    if (t) {
        pthread_mutex_destroy(&t->mu);
        hr_map_free(t->keys);
        free(t);
    }
}

/* Drops every entry whose window has closed and records when the next one
 * closes. Collects keys first because the map must not change while it is
 * iterated. Called with t->mu held. */
static void prune(auth_throttle *t, int64_t now)
{
    size_t n = 0, it = 0;
    const char *k;
    size_t kl;
    void *v;
    /* Survivors end by now + window_s; entries opened or renewed later end
     * at now + window_s or after. */
    int64_t next = now + t->window_s;
    char **dead = malloc(hr_map_count(t->keys) * sizeof(char *));
    size_t *lens = malloc(hr_map_count(t->keys) * sizeof(size_t));
    if (!dead || !lens)
        goto out;
    while (hr_map_next(t->keys, &it, &k, &kl, &v)) {
        int64_t end = ((entry *)v)->window_end;
        if (end <= now) {
            dead[n] = (char *)k;
            lens[n++] = kl;
        } else if (end < next) {
            next = end;
        }
    }
    for (size_t i = 0; i < n; i++) {
        char *copy = strndup(dead[i], lens[i]);
        if (copy) {
            free(hr_map_del(t->keys, copy, lens[i]));
            free(copy);
        }
    }
    t->next_prune = next;
out:
    free(dead);
    free(lens);
}

/* The key's entry, created when absent; NULL when the table is full of live
 * entries (or memory ran out). Called with t->mu held. */
static entry *entry_for(auth_throttle *t, const char *key, size_t kl, int64_t now)
{
    entry *e = hr_map_get(t->keys, key, kl);
    if (e)
        return e;
    if (hr_map_count(t->keys) >= t->max_keys && now >= t->next_prune)
        prune(t, now);
    if (hr_map_count(t->keys) >= t->max_keys || !(e = calloc(1, sizeof(*e))))
        return NULL;
    if (hr_map_put(t->keys, key, kl, e) < 0) {
        free(e);
        return NULL;
    }
    return e;
}

int auth_throttle_admit(auth_throttle *t, const char *key, int64_t now)
{
    int wait = 0;
    pthread_mutex_lock(&t->mu);
    entry *e = entry_for(t, key, strlen(key), now);
    /* No entry: the table is full of live keys. Admit uncounted (fail open)
     * rather than grow without bound or lock every new key out. */
    if (e) {
        if (e->window_end <= now) {
            e->window_end = now + t->window_s;
            e->attempts = 0;
        }
        if (e->attempts < t->max_attempts)
            e->attempts++;
        else
            wait = (int)(e->window_end - now);
    }
    pthread_mutex_unlock(&t->mu);
    return wait;
}

void auth_throttle_release(auth_throttle *t, const char *key, int64_t now)
{
    pthread_mutex_lock(&t->mu);
    entry *e = hr_map_get(t->keys, key, strlen(key));
    /* A closed window has nothing left to give back. */
    if (e && e->window_end > now && e->attempts > 0)
        e->attempts--;
    pthread_mutex_unlock(&t->mu);
}

void auth_throttle_reset(auth_throttle *t, const char *key)
{
    pthread_mutex_lock(&t->mu);
    free(hr_map_del(t->keys, key, strlen(key)));
    pthread_mutex_unlock(&t->mu);
}
