/*
 * throttle.c - rate limits per key (see auth.h): login attempts per username
 * and per address, WebSocket handshakes per address.
 *
 * A token bucket per key, kept as one timestamp (GCRA, the "generic cell
 * rate algorithm"): each admitted attempt costs one token, a full bucket
 * holds `burst` tokens and one token comes back every period/burst. The
 * entry stores the time at which the key's bucket is full again (tat, the
 * "theoretical arrival time"): an attempt is admitted while tat, pushed one
 * token further, stays within burst tokens of now. This replaced fixed
 * windows of whole seconds (time(NULL)), under which a burst straddling a
 * second boundary got twice the configured rate: in any interval of length
 * d a key now gets at most burst + d * burst / period attempts, whatever
 * the phase of the clock. The caller passes a monotonic clock in
 * milliseconds, so the tests can drive it exactly and wall-clock steps
 * change nothing.
 *
 * Time is kept in nanoseconds so that period/burst is exact (or a
 * nanosecond short) for every configurable rate: no drift from rounding.
 *
 * Attempts are counted when admitted, not when they fail: a failure is
 * known only after Argon2id (~60 ms on a worker), and counting then let a
 * burst of concurrent guesses all pass the check before the first one was
 * recorded. Each call holds the throttle's mutex for the whole
 * check-and-count, so threads sharing one throttle cannot race either.
 */
#include "auth/auth.h"
#include "common/common.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_MS INT64_C(1000000)
#define NS_PER_S INT64_C(1000000000)

typedef struct entry {
    int64_t tat; /* ns: when the bucket is full again (at or before now: full) */
} entry;

struct auth_throttle {
    pthread_mutex_t mu;
    hr_map *keys; /* locked: key -> entry */
    int64_t cost; /* ns of refill one token takes: period / burst, at least 1 */
    int64_t span; /* ns: burst * cost, how far ahead of now tat may run */
    size_t max_keys;
    /* locked: no entry's bucket is full before this, so pruning earlier
     * finds nothing. Without it, a table full of live keys would be scanned
     * on every new key, with every loop thread waiting on the mutex. */
    int64_t next_prune;
};

auth_throttle *auth_throttle_new(int burst, int64_t period_ms, size_t max_keys)
{
    if (burst < 1)
        burst = 1;
    if (period_ms < 1)
        period_ms = 1;
    auth_throttle *t = hr_calloc(1, sizeof(*t));
    t->keys = hr_map_new(free);
    pthread_mutex_init(&t->mu, NULL);
    /* period_ms <= 2^63 / 10^6 ns for any period a config can hold (days) */
    t->cost = period_ms * NS_PER_MS / burst;
    if (t->cost < 1)
        t->cost = 1;
    t->span = t->cost * burst;
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

/* Drops every entry whose bucket is full again (it holds nothing a fresh
 * entry would not) and records when the next one fills. Collects keys first
 * because the map must not change while it is iterated. Called with t->mu
 * held. */
static void prune(auth_throttle *t, int64_t now)
{
    size_t n = 0, it = 0;
    const char *k;
    size_t kl;
    void *v;
    /* survivors fill by now + span; entries touched later fill after that */
    int64_t next = now + t->span;
    char **dead = hr_calloc(hr_map_count(t->keys), sizeof(char *));
    size_t *lens = hr_calloc(hr_map_count(t->keys), sizeof(size_t));
    while (hr_map_next(t->keys, &it, &k, &kl, &v)) {
        int64_t full = ((entry *)v)->tat;
        if (full <= now) {
            dead[n] = (char *)k;
            lens[n++] = kl;
        } else if (full < next) {
            next = full;
        }
    }
    for (size_t i = 0; i < n; i++) {
        char *copy = hr_strndup(dead[i], lens[i]);
        free(hr_map_del(t->keys, copy, lens[i]));
        free(copy);
    }
    t->next_prune = next;
    free(dead);
    free(lens);
}

/* The key's entry, created (full) when absent; NULL when the table is full
 * of live entries. Called with t->mu held. */
static entry *entry_for(auth_throttle *t, const char *key, size_t kl, int64_t now)
{
    entry *e = hr_map_get(t->keys, key, kl);
    if (e)
        return e;
    if (hr_map_count(t->keys) >= t->max_keys && now >= t->next_prune)
        prune(t, now);
    if (hr_map_count(t->keys) >= t->max_keys)
        return NULL;
    e = hr_calloc(1, sizeof(*e));
    hr_map_put(t->keys, key, kl, e);
    e->tat = now;
    return e;
}

int auth_throttle_admit(auth_throttle *t, const char *key, int64_t now_ms)
{
    int64_t now = now_ms * NS_PER_MS, wait = 0;
    pthread_mutex_lock(&t->mu);
    entry *e = entry_for(t, key, strlen(key), now);
    /* No entry: the table is full of live keys. Admit uncounted (fail open)
     * rather than grow without bound or lock every new key out. */
    if (e) {
        int64_t tat = (e->tat > now ? e->tat : now) + t->cost;
        if (tat - now <= t->span)
            e->tat = tat;
        else
            wait = tat - now - t->span; /* until one token has come back */
    }
    pthread_mutex_unlock(&t->mu);
    if (!wait)
        return 0;
    /* whole seconds for Retry-After, rounded up: never too early */
    int64_t s = (wait + NS_PER_S - 1) / NS_PER_S;
    return s > INT32_MAX ? INT32_MAX : (int)s;
}

void auth_throttle_release(auth_throttle *t, const char *key, int64_t now_ms)
{
    int64_t now = now_ms * NS_PER_MS;
    pthread_mutex_lock(&t->mu);
    entry *e = hr_map_get(t->keys, key, strlen(key));
    /* A full bucket has nothing left to give back. */
    if (e && e->tat > now)
        e->tat = e->tat - t->cost > now ? e->tat - t->cost : now;
    pthread_mutex_unlock(&t->mu);
}

void auth_throttle_reset(auth_throttle *t, const char *key)
{
    pthread_mutex_lock(&t->mu);
    free(hr_map_del(t->keys, key, strlen(key)));
    pthread_mutex_unlock(&t->mu);
}
